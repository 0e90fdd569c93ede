"""Bulwark's fault rules (``ChaosService``) as a process that opted in applies them.

I/O-free: the drivers sleep and fail; this module decides, per call, whether a rule
applies and what it does. The semantics follow Envoy's fault filter and gRPC's xDS
fault injection (gRFC A33):

* A rule applies to a call when every target field it sets matches: the calling
  service and instance (this client's), the downstream (an interceptor rule's
  ``service``, else its ``breaker``; a ``breaker()`` block's name), the method (exact,
  or a prefix ending in ``/``; ``breaker()`` blocks have none) and request metadata.
  Of several matching rules the first in name order applies, one per call.
* The delay, then the abort, each on its own draw against its percentage. With
  ``header_controlled`` the amount comes from the request's headers
  (``x-envoy-fault-delay-request`` in milliseconds, ``x-envoy-fault-abort-grpc-request``
  a status code) and the share is the lower of the rule's and the header's
  (``...-percentage``); no header, no fault.
* At most ``max_active_faults`` calls under one rule's fault at once in the process
  (a call is under a fault while it is delayed); past it, calls go unfaulted.
* A rule stops at its ``expires_at`` by this process's wall clock, whether or not
  its deletion has arrived.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from bulwark._caches import _WatchedMap
from bulwark.errors import FaultInjectedError
from bulwark.v1 import chaos_pb2

__all__ = ["Fault", "FaultInjector", "FaultRuleCache"]

log = logging.getLogger("bulwark")

DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENTAGE_HEADER = "x-envoy-fault-delay-request-percentage"
ABORT_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENTAGE_HEADER = "x-envoy-fault-abort-request-percentage"
MAX_DELAY_S = 3600.0


class FaultRuleCache(_WatchedMap[str, chaos_pb2.FaultRule]):
    """The fault rules as seen through WatchFaultRules (read without the client's lock:
    ``version`` and the swapped-in snapshot are each read atomically)."""

    def __init__(self) -> None:
        super().__init__()
        #: Moves with every change of the live view, so readers notice one cheaply.
        self.version = 0
        #: Whether a driver has started the watch (it starts on first use).
        self.followed = False

    def apply(self, event: chaos_pb2.WatchFaultRulesResponse, now: float) -> None:
        if self._apply(event.type, event.rule.name, event.rule, event.revision, now):
            self.version += 1

    def rules(self) -> list[chaos_pb2.FaultRule]:
        # A copy first (one C call, whole under the GIL): the watch changes _items in
        # place on its own thread, and a rule deleted between listing the names and
        # reading them would raise KeyError into the caller's RPC.
        items = dict(self._items)
        return [items[name] for name in sorted(items)]


class Fault:
    """What one call gets: a delay (seconds, maybe 0) and maybe an abort. ``release``
    once its delay is over (it frees the rule's active-fault slot)."""

    __slots__ = ("_done", "_injector", "code", "delay", "details", "rule")

    def __init__(
        self,
        injector: FaultInjector,
        rule: str,
        delay: float,
        code: grpc.StatusCode | None,
        details: str,
    ) -> None:
        self._injector = injector
        self._done = False
        self.rule = rule
        self.delay = delay
        self.code = code
        self.details = details

    def error(self) -> FaultInjectedError:
        return FaultInjectedError(self.code or grpc.StatusCode.UNKNOWN, self.details, self.rule)

    def raise_abort(self) -> None:
        """Raise the abort, if this fault has one (``client.breaker()`` blocks)."""
        if self.code is not None:
            raise self.error()

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._injector._release(self.rule)


def _code(number: int) -> grpc.StatusCode | None:
    return next((c for c in grpc.StatusCode if c.value[0] == number), None)


def _header(headers: dict[str, str], name: str) -> float | None:
    try:
        value = float(headers[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _code_header(headers: dict[str, str], name: str) -> int | None:
    """A status code header: an integer, else ignored (as Envoy does; gRFC A33 ignores an
    invalid header) rather than "14.9" or "1e1" read as some other code."""
    value = headers.get(name, "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _headers(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            out.setdefault(key.lower(), value)
    return out


class _Compiled:
    """A rule made ready for matching."""

    __slots__ = ("expires", "headers", "method", "prefix", "rule")

    def __init__(self, rule: chaos_pb2.FaultRule) -> None:
        self.rule = rule
        self.expires = rule.expires_at.ToNanoseconds() / 1e9
        self.method = rule.target.method
        self.prefix = rule.target.method.endswith("/")
        self.headers = dict(rule.target.headers)

    def matches(
        self, service: str, instance: str, downstream: str, method: str, headers: dict[str, str]
    ) -> bool:
        target = self.rule.target
        if target.source_service and target.source_service != service:
            return False
        if target.source_instance and target.source_instance != instance:
            return False
        if target.downstream and target.downstream != downstream:
            return False
        if self.method:
            if not method:
                return False
            if not (method.startswith(self.method) if self.prefix else method == self.method):
                return False
        return all(headers.get(k) == v for k, v in self.headers.items())

    @property
    def reads_headers(self) -> bool:
        rule = self.rule
        return bool(
            self.headers
            or (rule.HasField("delay") and rule.delay.header_controlled)
            or (rule.HasField("abort") and rule.abort.header_controlled)
        )


class FaultInjector:
    """Decides each call's fault from the cache (see the module docstring).

    Thread-safe: the sync client's calls decide on their own threads. ``wall`` is the
    wall clock the rules' expiry is read against; ``rng`` draws the percentages.
    """

    def __init__(
        self,
        cache: FaultRuleCache,
        service: str,
        instance: str,
        *,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cache = cache
        self.service = service
        self.instance = instance
        self._wall = wall
        self._random = rng or random.Random()
        self._lock = threading.Lock()
        # (cache version, its rules compiled), replaced whole: two threads compiling at
        # once must not leave one's rules paired with the other's newer version, which
        # would keep stale rules (a deleted one applied) until the next change.
        self._compiled: tuple[int, list[_Compiled]] = (-1, [])
        self._active: dict[str, int] = {}
        self._counts: dict[str, list[int]] = {}  # rule -> [delayed, aborted]

    def _rules(self) -> list[_Compiled]:
        compiled = self._compiled
        version = self.cache.version
        if version != compiled[0]:
            compiled = (version, [_Compiled(rule) for rule in self.cache.rules()])
            self._compiled = compiled
        return compiled[1]

    def decide(
        self,
        downstream: str,
        method: str = "",
        metadata: Iterable[tuple[str, Any]] | None = None,
    ) -> Fault | None:
        """The fault for one call to ``downstream`` (``method`` for gRPC calls), or None."""
        rules = self._rules()
        if not rules:
            return None
        now = self._wall()
        headers: dict[str, str] | None = None
        for compiled in rules:
            if compiled.expires <= now:
                continue
            if headers is None and compiled.reads_headers:
                headers = _headers(metadata)
            if compiled.matches(self.service, self.instance, downstream, method, headers or {}):
                return self._draw(compiled.rule, headers or {})
        return None

    def _draw(self, rule: chaos_pb2.FaultRule, headers: dict[str, str]) -> Fault | None:
        delay = 0.0
        code: grpc.StatusCode | None = None
        with self._lock:
            if rule.max_active_faults and self._active.get(rule.name, 0) >= rule.max_active_faults:
                return None
            if rule.HasField("delay"):
                delay = self._delay(rule.delay, headers)
            if rule.HasField("abort"):
                code = self._abort(rule.abort, headers)
            if not delay and code is None:
                return None
            self._active[rule.name] = self._active.get(rule.name, 0) + 1
            counts = self._counts.setdefault(rule.name, [0, 0])
            if delay:
                counts[0] += 1
            if code is not None:
                counts[1] += 1
        details = rule.abort.message or f"fault injected by Bulwark rule {rule.name}"
        return Fault(self, rule.name, delay, code, details)

    def _delay(self, delay: chaos_pb2.FaultDelay, headers: dict[str, str]) -> float:
        share = delay.percentage
        if delay.header_controlled:
            amount = _header(headers, DELAY_HEADER)
            if amount is None:
                return 0.0
            seconds = min(amount / 1000, MAX_DELAY_S)
            asked = _header(headers, DELAY_PERCENTAGE_HEADER)
            share = min(share, asked) if asked is not None else share
        else:
            kind = delay.WhichOneof("delay")
            if kind == "fixed":
                seconds = delay.fixed.ToNanoseconds() / 1e9
            elif kind == "uniform":
                low = delay.uniform.min.ToNanoseconds() / 1e9
                high = delay.uniform.max.ToNanoseconds() / 1e9
                seconds = low + (high - low) * self._random.random()
            elif kind == "exponential_mean":
                mean = delay.exponential_mean.ToNanoseconds() / 1e9
                seconds = min(self._random.expovariate(1 / mean), MAX_DELAY_S)
            else:
                return 0.0
        if self._random.random() * 100 >= share:
            return 0.0
        return seconds

    def _abort(
        self, abort: chaos_pb2.FaultAbort, headers: dict[str, str]
    ) -> grpc.StatusCode | None:
        share = abort.percentage
        number = abort.code
        if abort.header_controlled:
            asked = _code_header(headers, ABORT_HEADER)
            if asked is None:
                return None
            number = asked
            shared = _header(headers, ABORT_PERCENTAGE_HEADER)
            share = min(share, shared) if shared is not None else share
        code = _code(number)
        if code is None or code is grpc.StatusCode.OK:
            return None
        return code if self._random.random() * 100 < share else None

    def _release(self, rule: str) -> None:
        with self._lock:
            left = self._active.get(rule, 0) - 1
            if left > 0:
                self._active[rule] = left
            else:
                self._active.pop(rule, None)

    def counts(self) -> dict[str, dict[str, int]]:
        """Faults applied in this process so far, by rule: ``delayed`` and ``aborted``
        calls (a call can be both), and ``active`` now."""
        with self._lock:
            return {
                name: {"delayed": d, "aborted": a, "active": self._active.get(name, 0)}
                for name, (d, a) in sorted(self._counts.items())
            }
