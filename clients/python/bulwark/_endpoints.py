"""Which Bulwark replica to call: per-address backoff, retry safety, one call's attempts.

I/O-free and not thread-safe; deterministic (no jitter: a driver wanting
jitter adds it to its sleeps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc

__all__ = ["AWAY", "CallPlan", "Endpoints", "retryable"]

#: Codes meaning "this endpoint did not answer": back it off, count Bulwark as away.
AWAY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Endpoints:
    """The Bulwark replicas to try, with an exponential backoff per address.

    Deterministic (no jitter): a client wanting jitter adds it to its sleeps.
    """

    def __init__(
        self, addresses: Sequence[str], base_backoff: float = 0.1, max_backoff: float = 5.0
    ) -> None:
        unique = list(dict.fromkeys(a for a in addresses if a))
        if not unique:
            raise ValueError("at least one address is needed")
        self.addresses = unique
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._index = 0
        self._backoff: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}

    def current(self) -> str:
        return self.addresses[self._index]

    def backoff(self, address: str) -> float:
        """The backoff last applied to ``address`` (0 when healthy)."""
        return self._backoff.get(address, 0.0)

    def failed(self, address: str, now: float) -> None:
        """``address`` failed at ``now``: back it off and move on to the next one."""
        if address not in self.addresses:
            return
        previous = self._backoff.get(address)
        if previous is not None and now < self._retry_at.get(address, 0.0):
            # Already backing off: the watches, the reporter and callers all report
            # one outage, which must double the wait once, not once per reporter.
            delay = previous
        else:
            delay = self.base_backoff if previous is None else min(self.max_backoff, previous * 2)
            self._retry_at[address] = now + delay
        self._backoff[address] = delay
        if self.current() == address:
            self._index = (self._index + 1) % len(self.addresses)

    def healthy(self, address: str, now: float) -> bool:
        """True when ``address`` is not backing off after a failure."""
        return now >= self._retry_at.get(address, 0.0)

    def succeeded(self, address: str) -> None:
        """``address`` answered: clear its backoff and stick to it."""
        if address not in self.addresses:
            return
        self._backoff.pop(address, None)
        self._retry_at.pop(address, None)
        self._index = self.addresses.index(address)

    def next_healthy(self, now: float) -> str | None:
        """The first address from the current one on whose backoff has passed.

        None when all are backing off: wait ``wait_time(now)`` and ask again.
        """
        count = len(self.addresses)
        for step in range(count):
            index = (self._index + step) % count
            if self._retry_at.get(self.addresses[index], -math.inf) <= now:
                self._index = index
                return self.addresses[index]
        return None

    def wait_time(self, now: float) -> float:
        """Seconds until some address may be tried again (0 when one may be now)."""
        soonest = min(self._retry_at.get(a, -math.inf) for a in self.addresses)
        return max(0.0, soonest - now)


_IDEMPOTENT_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def retryable(code: grpc.StatusCode, idempotent: bool) -> bool:
    """Whether a failed call may be sent again (to this or another replica).

    UNAVAILABLE always: the request never reached a replica's logic, or it was
    refused during a leader change. DEADLINE_EXCEEDED, ABORTED and
    RESOURCE_EXHAUSTED may have been applied, so only idempotent calls repeat.
    """
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return idempotent and code in _IDEMPOTENT_RETRY_CODES


class CallPlan:
    """The attempts of one unary call: which endpoint next, and whether to go on.

    Each endpoint is tried at most once per call, in order from the first
    healthy one (or the current one when all are backing off: a call never
    gives up without trying). Whether a later endpoint is worth a deadline is
    decided when its turn comes, at that moment's ``now``: a replica whose
    backoff ended while an earlier attempt timed out is tried, one that another
    caller saw fail meanwhile is skipped.
    """

    __slots__ = ("_endpoints", "_first", "_next", "_order", "idempotent", "last_code")

    def __init__(self, endpoints: Endpoints, idempotent: bool, now: float) -> None:
        self._endpoints = endpoints
        self.idempotent = idempotent
        first = endpoints.next_healthy(now) or endpoints.current()
        addresses = endpoints.addresses
        start = addresses.index(first)
        self._order = addresses[start:] + addresses[:start]
        self._first = first
        self._next = 0
        #: The status of the last failed attempt (None: no attempt failed).
        self.last_code: grpc.StatusCode | None = None

    def next_address(self, now: float) -> str | None:
        """The endpoint to try now, or None when every one has had its turn."""
        order = self._order
        while self._next < len(order):
            address = order[self._next]
            self._next += 1
            if address == self._first or self._endpoints.healthy(address, now):
                return address
        return None

    def failed(self, address: str, code: grpc.StatusCode, now: float) -> bool:
        """The attempt on ``address`` failed with ``code``: True to try the next endpoint."""
        self.last_code = code
        if code in AWAY:
            self._endpoints.failed(address, now)
        return retryable(code, self.idempotent)
