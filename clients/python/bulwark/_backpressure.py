"""The interceptors' client-side backpressure: one limiter and one throttle per downstream.

I/O-free, like ``_guard``: the interceptors read the clock and make the calls, this module
only decides and counts. It drives the cores of ``bulwark._adaptive``:

* ``Guard.adaptive`` puts a ``Gradient2Limiter`` (Netflix concurrency-limits' Gradient2;
  ``adaptive=True`` keeps its defaults: initial and minimum limit 20, maximum 200,
  smoothing 0.2, RTT tolerance 1.5, long window 600 samples, queue size 4) in front of
  the downstream. A call over the limit is refused at once with RESOURCE_EXHAUSTED and
  ``bulwark-rejected-by: concurrency``; nothing waits.
* ``Guard.throttle`` puts an ``AdaptiveThrottle`` (Google SRE book, chapter 21: reject
  with probability ``max(0, (requests - K * accepts) / (requests + 1))``, K = 2, a
  two-minute window) in front of it. A rejected call fails with RESOURCE_EXHAUSTED and
  ``bulwark-rejected-by: throttle``.

**Which downstream.** State is kept per downstream key: the Guard's ``service`` when it
has one, else the rule's own key (``"/pkg.Service/"`` or ``"/pkg.Service/Method"``).
Rules naming the same ``service`` share one limiter and one throttle, so they must agree
on the settings. Keys come from the rules, never from the methods called, so the state is
bounded by the number of rules and built once, up front.

**What an answer means.** For the limiter (as Netflix's gRPC client interceptor, plus
timeouts): OK is a sample of the downstream's RTT; UNAVAILABLE, RESOURCE_EXHAUSTED and
DEADLINE_EXCEEDED are drops (the downstream refused the call or did not answer in time;
the limit takes a multiplicative cut and the RTT stays out of the average); any other
status, a cancelled call and an exception that is no gRPC answer free the slot without a
sample (a fast INVALID_ARGUMENT says nothing about how loaded the downstream is). For the
throttle: UNAVAILABLE and RESOURCE_EXHAUSTED are refusals, every other answer an accept;
a call cancelled by its caller or that never got an answer is not counted at all.

**Priority.** A call's ``bulwark-priority`` metadata (``critical``, ``default``,
``sheddable``; none: ``default``), the class Bulwark's own shedding reads, counts here
too: a sheddable call is refused by the limiter from half the limit in flight, so the
rest of the limit stays for the others; a critical call is never throttled locally
(the throttle still counts its answer).

Not thread-safe by itself: the synchronous interceptor hands in a lock, held for each
short decision or count; the asyncio one runs on a single event loop and needs none.
"""

from __future__ import annotations

import contextlib
import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from bulwark._adaptive import (
    AdaptiveThrottle,
    Gradient2Limiter,
    Gradient2Settings,
    Permit,
    ThrottleSettings,
)
from bulwark._guard import Refusal

if TYPE_CHECKING:
    from bulwark._guard import Guard

__all__ = [
    "DROPPED_CODES",
    "PRIORITY_KEY",
    "REFUSED_CODES",
    "Backpressure",
    "Downstream",
    "DownstreamState",
    "Flight",
    "adaptive_settings",
    "priority_of",
    "throttle_settings",
]

#: Answers by which the downstream refused work: the throttle counts them as refusals.
REFUSED_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
#: Answers that make the limiter cut its limit: refusals and timeouts.
DROPPED_CODES: frozenset[grpc.StatusCode] = REFUSED_CODES | {grpc.StatusCode.DEADLINE_EXCEEDED}

#: The call's class, as Bulwark's shedding reads it (``bulwark-priority`` metadata).
PRIORITY_KEY = "bulwark-priority"
CRITICAL, DEFAULT, SHEDDABLE = "critical", "default", "sheddable"
#: Sheddable calls may use this share of the adaptive limit.
SHEDDABLE_SHARE = 0.5

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED


def adaptive_settings(value: Gradient2Settings | bool | None) -> Gradient2Settings | None:
    """``Guard.adaptive`` as settings: True is Gradient2's defaults, False or None is off."""
    if value is True:
        return Gradient2Settings()
    return value or None


def throttle_settings(value: ThrottleSettings | bool | None) -> ThrottleSettings | None:
    """``Guard.throttle`` as settings: True is the SRE book's defaults, False or None is off."""
    if value is True:
        return ThrottleSettings()
    return value or None


@dataclass(frozen=True, slots=True)
class DownstreamState:
    """What one downstream's backpressure looks like at a moment (for metrics and tests).

    ``limit`` and ``in_flight`` are None without ``adaptive``; ``reject_probability`` is
    None without ``throttle``.
    """

    limit: int | None
    in_flight: int | None
    reject_probability: float | None


class Downstream:
    """The limiter and throttle of one downstream key; either may be None."""

    __slots__ = ("_lock", "key", "limiter", "throttle")

    def __init__(
        self,
        key: str,
        limiter: Gradient2Limiter | None,
        throttle: AdaptiveThrottle | None,
        lock: contextlib.AbstractContextManager[object],
    ) -> None:
        self.key = key
        self.limiter = limiter
        self.throttle = throttle
        self._lock = lock

    def check_throttle(self, now: float, priority: str = DEFAULT) -> None:
        """The throttle's step: raise a ``Refusal`` when it rejects the call locally."""
        throttle = self.throttle
        if throttle is None or priority == CRITICAL:
            return
        with self._lock:
            if not throttle.should_reject(now):
                return
            requests, accepts = throttle.counts(now)
            probability = throttle.reject_probability(now)
        window = throttle.settings.window_seconds
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"adaptive throttle of {self.key!r} rejected the call locally "
            f"(p={probability:.2f}: {accepts} of {requests} requests accepted in {window}s)",
            "throttle",
        )

    def admit(self, now: float, priority: str = DEFAULT) -> Flight:
        """The concurrency step: a ``Flight`` to finish or abandon, or a ``Refusal``."""
        limiter = self.limiter
        if limiter is None:
            return Flight(self, None, now)
        with self._lock:
            limit = limiter.limit
            shed = priority == SHEDDABLE and limiter.in_flight >= limit * SHEDDABLE_SHARE
            permit = None if shed else limiter.try_acquire(now)
        if shed:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"adaptive concurrency limit of {self.key!r}: sheddable calls are refused "
                f"from {limit * SHEDDABLE_SHARE:g} in flight (limit {limit})",
                "concurrency",
            )
        if permit is None:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"adaptive concurrency limit of {self.key!r} reached: {limit} calls in flight",
                "concurrency",
            )
        return Flight(self, permit, now)

    def state(self, now: float) -> DownstreamState:
        with self._lock:
            limiter, throttle = self.limiter, self.throttle
            return DownstreamState(
                limit=limiter.limit if limiter is not None else None,
                in_flight=limiter.in_flight if limiter is not None else None,
                reject_probability=(
                    throttle.reject_probability(now) if throttle is not None else None
                ),
            )


class Flight:
    """One admitted call, from admission to its answer; ends exactly once.

    ``finish`` or ``abandon`` may both be reached on some paths (an exception after a
    done-callback, say): the first one counts, the rest do nothing.
    """

    __slots__ = ("_downstream", "_open", "_permit", "_sent")

    def __init__(self, downstream: Downstream, permit: Permit | None, now: float) -> None:
        self._downstream = downstream
        self._permit = permit
        self._open = True
        self._sent = now

    def sent(self, now: float) -> None:
        """The call leaves now: its RTT is measured from here, not from the admission.

        The steps between (the breaker's decision) are the client's time, not the
        downstream's, and would otherwise inflate its RTT.
        """
        self._sent = now

    def finish(self, code: grpc.StatusCode, now: float) -> None:
        """The downstream answered ``code`` at ``now``: release the slot and count it."""
        downstream = self._downstream
        with downstream._lock:
            if not self._open:
                return
            self._open = False
            permit = self._permit
            limiter = downstream.limiter
            if permit is not None and limiter is not None:
                # The limiter measures from the admission: shift the end by the time
                # spent between admission and sending, so the RTT is the call's alone.
                end = now - (self._sent - permit.started)
                if code == _OK:
                    limiter.release(permit, end)
                elif code in DROPPED_CODES:
                    limiter.release(permit, end, dropped=True)
                else:
                    limiter.forget(permit)
            throttle = downstream.throttle
            if throttle is not None and code != _CANCELLED:
                throttle.record(now, accepted=code not in REFUSED_CODES)

    def abandon(self) -> None:
        """No answer (cancelled, refused by a later step, or failed locally): free the slot."""
        downstream = self._downstream
        with downstream._lock:
            if not self._open:
                return
            self._open = False
            if self._permit is not None and downstream.limiter is not None:
                downstream.limiter.forget(self._permit)


class Backpressure:
    """Every downstream's limiter and throttle for one interceptor, built from its rules."""

    def __init__(
        self,
        rules: Mapping[str, Guard],
        *,
        lock: contextlib.AbstractContextManager[object] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        shared_lock = lock if lock is not None else contextlib.nullcontext()
        draw = random if random is not None else _random.random
        settings: dict[str, tuple[Gradient2Settings | None, ThrottleSettings | None]] = {}
        by_key: dict[str, Downstream] = {}
        self._by_rule: dict[str, Downstream] = {}
        for rule, guard in rules.items():
            adaptive = adaptive_settings(guard.adaptive)
            throttle = throttle_settings(guard.throttle)
            if adaptive is None and throttle is None:
                continue
            key = guard.service if guard.service is not None else rule
            known = settings.setdefault(key, (adaptive, throttle))
            if known != (adaptive, throttle):
                raise ValueError(
                    f"rule {rule!r}: downstream {key!r} has other adaptive/throttle settings "
                    "in another rule; rules sharing a service must agree"
                )
            if key not in by_key:
                by_key[key] = Downstream(
                    key,
                    Gradient2Limiter(adaptive) if adaptive is not None else None,
                    AdaptiveThrottle(throttle, random=draw) if throttle is not None else None,
                    shared_lock,
                )
            self._by_rule[rule] = by_key[key]
        self._by_key = by_key

    def for_rule(self, rule: str) -> Downstream | None:
        """The downstream guarded by the rule keyed ``rule``; None when it has neither."""
        return self._by_rule.get(rule)

    def downstream(self, key: str) -> Downstream | None:
        """The downstream of key ``key`` (a service name or a rule's key)."""
        return self._by_key.get(key)

    def states(self, now: float) -> dict[str, DownstreamState]:
        """Every downstream's limit, calls in flight and reject probability at ``now``."""
        return {key: downstream.state(now) for key, downstream in self._by_key.items()}


def priority_of(metadata: object) -> str:
    """The class a call's metadata claims (``default`` when none or unknown)."""
    for item in metadata or ():  # type: ignore[attr-defined]
        key, value = item
        if key == PRIORITY_KEY and value in (CRITICAL, DEFAULT, SHEDDABLE):
            return str(value)
    return DEFAULT
