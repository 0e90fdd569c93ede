"""Adaptive overload protection decided in-process: a concurrency limit and a local throttle.

Two independent mechanisms, one per downstream, both I/O-free and not thread-safe (the
drivers serialize access, as for the rest of the core). Neither reads a clock: every
time-dependent method takes ``now`` (seconds from ``time.monotonic()``), and the throttle's
randomness is injected so that tests are deterministic.

``Gradient2Limiter`` follows Netflix concurrency-limits' ``Gradient2Limit``
(concurrency-limits-core/src/main/java/com/netflix/concurrency/limits/limit/Gradient2Limit.java).
Its builder defaults: initialLimit 20, minLimit 20, maxConcurrency 200, smoothing 0.2,
queueSize a constant 4 (``concurrency -> 4``; the square-root queue size is the older
``GradientLimit``'s default, not Gradient2's), longWindow 600 samples, rttTolerance 1.5
(``NETFLIX_GRADIENT2`` here). ``Gradient2Settings()``, Bulwark's client defaults, keeps
them but two, because Netflix tuned them for a server's own limit, not for a client in
front of one downstream:

* ``min_limit`` 1, not 20. A floor of 20 calls is more than a small downstream has in
  flight at its best, so the limit could never hold it near its normal level. With a
  floor of 1 the limit settles, while the RTT stays high, where Gradient2's own
  arithmetic puts it (the ``limit / 2 + queueSize`` fixed point: 8 with queue size 4).
* ``long_window`` 6,000 samples, not 600. The long-term RTT is the baseline a slowdown is
  measured against; at a few hundred calls a second, 600 samples are a second or two, so
  a slowdown becomes the new normal before it is over and the limit climbs back into it
  (``benchmarks/RESULTS.md``, "Backpressure": with Netflix's defaults the in-flight of a
  downstream slowing tenfold climbs to about six times its level within five seconds).
  6,000 samples keep the baseline for tens of seconds at such rates (at 10 calls a
  second, for ten minutes): a slowdown that long is a new normal.

Per completed call::

    longRtt   = exponential average of RTTs (plain mean over the first 10 samples,
                then factor 2 / (longWindow + 1))
    if longRtt / rtt > 2: longRtt *= 0.95     # the long average went stale after load
    if inFlight < limit / 2: keep the limit    # app-limited: no evidence either way
    gradient  = max(0.5, min(1.0, rttTolerance * longRtt / rtt))
    newLimit  = limit * gradient + queueSize
    limit     = clamp(limit * (1 - smoothing) + newLimit * smoothing, minLimit, maxLimit)

One deliberate difference: Gradient2 ignores its ``didDrop`` flag. Here a dropped call (the
downstream refused it or it timed out) takes ``GradientLimit``'s drop rule, ``newLimit =
limit / 2`` (then smoothed and clamped), and its RTT stays out of the long average: a
timeout's RTT is the deadline and a refusal's is a fast failure, neither the downstream's
service time, and a deadline-sized sample would make real queueing look normal.

``AdaptiveThrottle`` is the client-side adaptive throttling of Google's *Site Reliability
Engineering*, chapter 21 "Handling Overload": over the last two minutes (configurable) each
attempt is rejected locally with probability ``max(0, (requests - K * accepts) /
(requests + 1))``, K = 2 by default.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "NETFLIX_GRADIENT2",
    "AdaptiveThrottle",
    "Gradient2Limiter",
    "Gradient2Settings",
    "Permit",
    "ThrottleSettings",
]

# Gradient2Limit's fixed constants (not builder options there either).
_WARMUP_SAMPLES = 10  # ExpAvgMeasurement(longWindow, 10): a plain mean before the EMA
_DRIFT_RATIO = 2.0  # longRtt / shortRtt above this: the long average is stale
_DRIFT_DECAY = 0.95  # ...and is pulled down by this factor per sample
_MIN_GRADIENT = 0.5  # the limit never shrinks by more than half of one step

# A coarse clock can measure a fast call as 0 s; one nanosecond (Java's resolution) keeps
# the long/short ratio finite without changing any real measurement.
_MIN_RTT = 1e-9


def _check(ok: bool, field: str, requirement: str) -> None:
    if not ok:
        raise ValueError(f"{field} {requirement}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Gradient2Settings:
    """Settings of one downstream's ``Gradient2Limiter``: Bulwark's client defaults.

    Gradient2Limit's, but ``min_limit`` 1 and ``long_window`` 6,000 (why: the module's
    docstring; Netflix's own are ``NETFLIX_GRADIENT2``). ``max_limit`` is Gradient2's
    ``maxConcurrency``.
    """

    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 200
    smoothing: float = 0.2
    rtt_tolerance: float = 1.5
    long_window: int = 6_000
    queue_size: float = 4.0

    def __post_init__(self) -> None:
        # Each check states the valid range, so NaN, which fails every comparison, is refused.
        _check(
            _is_int(self.min_limit) and self.min_limit >= 1, "min_limit", "must be an integer >= 1"
        )
        _check(
            _is_int(self.max_limit) and self.max_limit >= self.min_limit,
            "max_limit",
            "must be an integer >= min_limit",
        )
        _check(
            _is_int(self.initial_limit) and self.min_limit <= self.initial_limit <= self.max_limit,
            "initial_limit",
            "must be an integer between min_limit and max_limit",
        )
        _check(0.0 < self.smoothing <= 1.0, "smoothing", "must be in (0, 1]")
        _check(1.0 <= self.rtt_tolerance < math.inf, "rtt_tolerance", "must be finite and >= 1.0")
        _check(
            _is_int(self.long_window) and self.long_window >= 1,
            "long_window",
            "must be an integer >= 1",
        )
        _check(0.0 <= self.queue_size < math.inf, "queue_size", "must be finite and >= 0")


#: Netflix concurrency-limits' Gradient2Limit builder defaults, all of them.
NETFLIX_GRADIENT2 = Gradient2Settings(min_limit=20, long_window=600)


class Permit:
    """One call admitted by ``Gradient2Limiter.try_acquire``; give it back exactly once."""

    __slots__ = ("_open", "_owner", "in_flight", "started")

    def __init__(self, owner: Gradient2Limiter, started: float, in_flight: int) -> None:
        self._owner = owner
        self._open = True
        #: When the call started (the ``now`` given to ``try_acquire``).
        self.started = started
        #: Calls in flight when this one started, itself included.
        self.in_flight = in_flight


class Gradient2Limiter:
    """An adaptive concurrency limit for one downstream (Netflix's Gradient2).

    ``try_acquire`` admits a call while fewer than ``limit`` are in flight; ``release``
    frees its slot and feeds its RTT to the algorithm; ``forget`` frees the slot without a
    sample (a call the caller cancelled says nothing about the downstream). Refusing fast,
    with a typed error, is the driver's job: the core only says no.
    """

    def __init__(self, settings: Gradient2Settings | None = None) -> None:
        self.settings = settings if settings is not None else Gradient2Settings()
        self._estimate = float(self.settings.initial_limit)
        self._long_rtt: float | None = None
        self._long_samples = 0
        self._in_flight = 0

    @property
    def limit(self) -> int:
        """Calls allowed in flight at once (the estimate, truncated as Java's ``(int)``)."""
        return int(self._estimate)

    @property
    def estimate(self) -> float:
        """The unrounded limit estimate."""
        return self._estimate

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released or forgotten."""
        return self._in_flight

    @property
    def long_rtt(self) -> float | None:
        """The long-term RTT average in seconds; None before the first sample."""
        return self._long_rtt

    def reconfigure(self, settings: Gradient2Settings) -> None:
        """Take new settings (a central policy changed), keeping what was learned.

        The calls in flight and the long-term RTT carry over; the estimate is clamped into
        the new bounds (and starts again from ``initial_limit`` only in a new limiter).
        """
        self.settings = settings
        self._estimate = max(settings.min_limit, min(settings.max_limit, self._estimate))

    def try_acquire(self, now: float) -> Permit | None:
        """Admit one call started at ``now``, or None when ``limit`` calls are in flight."""
        if self._in_flight >= self.limit:
            return None
        self._in_flight += 1
        return Permit(self, now, self._in_flight)

    def release(self, permit: Permit, now: float, dropped: bool = False) -> None:
        """The call finished at ``now``: free its slot and sample its RTT.

        ``dropped``: the downstream refused the call or it timed out (the driver decides
        which errors count); see the module docstring for what a drop does.
        """
        self._close(permit)
        self.sample(now - permit.started, permit.in_flight, dropped)

    def forget(self, permit: Permit) -> None:
        """Free the call's slot without sampling it (Netflix's ``onIgnore``)."""
        self._close(permit)

    def _close(self, permit: Permit) -> None:
        if permit._owner is not self:
            raise ValueError("permit was issued by another limiter")
        if not permit._open:
            raise ValueError("permit was already released")
        permit._open = False
        self._in_flight -= 1

    def sample(self, rtt: float, in_flight: int, dropped: bool = False) -> None:
        """One completed call: ``rtt`` seconds, ``in_flight`` calls when it started."""
        if not 0.0 <= rtt < math.inf:
            raise ValueError(f"rtt must be finite and >= 0, got {rtt!r}")
        rtt = max(rtt, _MIN_RTT)
        settings = self.settings
        gradient = _MIN_GRADIENT
        if not dropped:
            long_rtt = self._add_long(rtt)
            if long_rtt / rtt > _DRIFT_RATIO:
                # After a long overload the average lags far above the recovered RTT;
                # decaying it now, as Gradient2 does, brings back the steady state sooner.
                self._long_rtt = long_rtt * _DRIFT_DECAY
            # Computed from the average before the decay, as in the Java code.
            gradient = max(_MIN_GRADIENT, min(1.0, settings.rtt_tolerance * long_rtt / rtt))
        if in_flight < self._estimate / 2:
            # App-limited: so few calls say nothing about how many the downstream can take,
            # and growing on them would let the limit drift up unchecked.
            return
        if dropped:
            target = self._estimate * _MIN_GRADIENT
        else:
            target = self._estimate * gradient + settings.queue_size
        smoothed = self._estimate * (1.0 - settings.smoothing) + target * settings.smoothing
        self._estimate = max(settings.min_limit, min(settings.max_limit, smoothed))

    def _add_long(self, rtt: float) -> float:
        if self._long_rtt is None:
            self._long_samples = 1
            self._long_rtt = rtt
        elif self._long_samples < _WARMUP_SAMPLES:
            # A running mean: the first few samples weigh equally, so one odd first call
            # does not set the baseline for the next hundreds of samples.
            self._long_samples += 1
            self._long_rtt += (rtt - self._long_rtt) / self._long_samples
        else:
            factor = 2.0 / (self.settings.long_window + 1)
            self._long_rtt = self._long_rtt * (1.0 - factor) + rtt * factor
        return self._long_rtt


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """Settings of one downstream's ``AdaptiveThrottle``.

    ``k``: how many requests per accept the client may send before rejecting locally (the
    book's K; 2 by default, lower is more aggressive, and below 1 even a healthy downstream
    would be throttled). ``window_seconds``: how much history counts (the book's two
    minutes), kept as that many one-second buckets.
    """

    k: float = 2.0
    window_seconds: int = 120

    def __post_init__(self) -> None:
        _check(1.0 <= self.k < math.inf, "k", "must be finite and >= 1.0")
        _check(
            _is_int(self.window_seconds) and self.window_seconds >= 1,
            "window_seconds",
            "must be an integer >= 1",
        )


class AdaptiveThrottle:
    """Client-side adaptive throttling (SRE book, "Handling Overload") for one downstream.

    Call ``should_reject(now)`` before each attempt; when it says False, send the call and
    ``record(now, accepted)`` its answer (accepted: the downstream did not refuse it for
    overload; the driver decides which status codes are refusals).

    Every attempt counts once as a request, rejected ones included, as the book defines
    ``requests`` ("attempted by the application layer ... on top of the adaptive throttling
    system"): if local rejections did not count, rejecting would shrink ``requests`` and
    drive the probability back down while the downstream is still refusing. A sent call is
    counted when its answer is recorded, not when it is attempted (as gRPC's RLS throttler
    does): counting it at the attempt would make every call still in flight look like a
    refusal, so a cold burst of concurrent calls to a healthy downstream would be throttled.
    Memory is ``window_seconds`` buckets of two counters, whatever the call rate.
    """

    def __init__(
        self,
        settings: ThrottleSettings | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings if settings is not None else ThrottleSettings()
        self._random = random
        size = self.settings.window_seconds
        self._requests = [0] * size
        self._accepts = [0] * size
        # Running totals over the ring, so no decision sums the whole window.
        self._total_requests = 0
        self._total_accepts = 0
        # The newest whole second the ring holds; None until the first call.
        self._second: int | None = None

    @property
    def bucket_count(self) -> int:
        """Buckets held: always ``window_seconds``, however many calls are counted."""
        return len(self._requests)

    def counts(self, now: float) -> tuple[int, int]:
        """``(requests, accepts)`` over the window ending at ``now``."""
        self._advance(now)
        return self._total_requests, self._total_accepts

    def reject_probability(self, now: float) -> float:
        """The chance that an attempt at ``now`` is rejected locally."""
        self._advance(now)
        return self._probability()

    def should_reject(self, now: float) -> bool:
        """Decide one attempt; a rejected attempt is counted as a (refused) request."""
        index = self._advance(now)
        # random() is in [0, 1): probability 0 never rejects, probability 1 always does.
        if self._random() >= self._probability():
            return False
        self._count(index, accepted=False)
        return True

    def record(self, now: float, accepted: bool) -> None:
        """The answer to a sent call: one more request, and one more accept if ``accepted``."""
        self._count(self._advance(now), accepted)

    def _probability(self) -> float:
        requests = self._total_requests
        return max(0.0, (requests - self.settings.k * self._total_accepts) / (requests + 1))

    def _count(self, index: int, accepted: bool) -> None:
        self._requests[index] += 1
        self._total_requests += 1
        if accepted:
            self._accepts[index] += 1
            self._total_accepts += 1

    def _advance(self, now: float) -> int:
        """Expire the buckets older than the window ending at ``now``; the newest's index."""
        size = len(self._requests)
        second = math.floor(now)
        if self._second is None:
            self._second = second
        elif second > self._second:
            if second - self._second >= size:
                self._requests = [0] * size
                self._accepts = [0] * size
                self._total_requests = self._total_accepts = 0
            else:
                for expired in range(self._second + 1, second + 1):
                    index = expired % size
                    self._total_requests -= self._requests[index]
                    self._total_accepts -= self._accepts[index]
                    self._requests[index] = self._accepts[index] = 0
            self._second = second
        # A stale ``now`` (never from a monotonic clock) counts in the newest bucket rather
        # than erasing newer history.
        return self._second % size
