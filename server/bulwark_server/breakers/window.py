"""The sliding window of recent call outcomes that decides whether a CLOSED breaker trips.

Outcomes arrive as batches of counts (one report every ~100 ms per caller), not
one call at a time, so the window stores buckets of counts rather than a ring
of individual calls. Pure: the caller passes ``now`` (Unix seconds).

COUNT_BASED keeps the last ``size`` calls. When a batch pushes the total over
``size``, calls are evicted from the oldest bucket; its failures and slow calls
are scaled down in proportion, in integers, so the totals stay exact.

TIME_BASED keeps one bucket per whole second and counts the buckets whose
second is greater than ``now - size``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from bulwark.v1 import breaker_pb2

COUNT_BASED = breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED
TIME_BASED = breaker_pb2.SLIDING_WINDOW_TYPE_TIME_BASED

Bucket = tuple[float, int, int, int]
"""(time, calls, failures, slow) as checkpointed: the add time, or the whole second."""


@dataclass(slots=True)
class _Bucket:
    at: float
    calls: int
    failures: int
    slow: int


class SlidingWindow:
    """Counts of the last ``size`` calls (COUNT_BASED) or seconds (TIME_BASED)."""

    def __init__(self, kind: int, size: int) -> None:
        if kind not in (COUNT_BASED, TIME_BASED):
            raise ValueError(f"unknown sliding window type {kind}")
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.kind = kind
        self.size = size
        # Oldest first; TIME_BASED buckets are also in increasing second order.
        self._buckets: deque[_Bucket] = deque()
        self._calls = 0
        self._failures = 0
        self._slow = 0

    def add(self, calls: int, failures: int, slow: int, now: float) -> None:
        """Count a batch of ``calls`` outcomes: ``failures`` failed, ``slow`` were slow."""
        if calls < 0 or not 0 <= failures <= calls or not 0 <= slow <= calls:
            raise ValueError(
                f"need 0 <= failures, slow <= calls; got calls={calls} "
                f"failures={failures} slow={slow}"
            )
        if calls == 0:
            return
        if self.kind == COUNT_BASED:
            self._buckets.append(_Bucket(now, calls, failures, slow))
            self._total(calls, failures, slow)
            self._evict_over_size()
        else:
            self._add_to_second(float(math.floor(now)), calls, failures, slow)
            self._drop_expired(now)

    def stats(self, now: float, minimum_calls: int) -> breaker_pb2.WindowStats:
        """Totals and rates in percent; rates are -1 below the effective minimum of calls.

        For COUNT_BASED the minimum is capped at the window size, as in resilience4j:
        a window of 10 calls with a minimum of 100 is evaluated once it holds 10.
        """
        calls, failures, slow = self._calls, self._failures, self._slow
        if self.kind == TIME_BASED:
            # Don't prune here: clocks of different machines differ slightly, and a
            # read at a later ``now`` must not lose buckets an earlier writer still counts.
            cutoff = now - self.size
            for bucket in self._buckets:
                if bucket.at > cutoff:
                    break
                calls -= bucket.calls
                failures -= bucket.failures
                slow -= bucket.slow
            minimum = minimum_calls
        else:
            minimum = min(minimum_calls, self.size)
        out = breaker_pb2.WindowStats(calls=calls, failures=failures, slow_calls=slow)
        if calls == 0 or calls < minimum:
            out.failure_rate = -1.0
            out.slow_call_rate = -1.0
        else:
            # Multiply first: one correctly rounded division keeps 5 of 10 at exactly 50.0.
            out.failure_rate = failures * 100.0 / calls
            out.slow_call_rate = slow * 100.0 / calls
        return out

    def reset(self) -> None:
        """Forget every call, as resilience4j does when a breaker (re)enters CLOSED."""
        self._buckets.clear()
        self._calls = self._failures = self._slow = 0

    def to_buckets(self) -> list[Bucket]:
        """The buckets, oldest first, for a checkpoint that ``from_buckets`` restores."""
        return [(b.at, b.calls, b.failures, b.slow) for b in self._buckets]

    @classmethod
    def from_buckets(cls, kind: int, size: int, buckets: list[Bucket]) -> SlidingWindow:
        """A window rebuilt from ``to_buckets`` output; a smaller ``size`` evicts as usual."""
        window = cls(kind, size)
        for at, calls, failures, slow in buckets:
            window.add(calls, failures, slow, at)
        return window

    def _total(self, calls: int, failures: int, slow: int) -> None:
        self._calls += calls
        self._failures += failures
        self._slow += slow

    def _evict_over_size(self) -> None:
        excess = self._calls - self.size
        while excess > 0:
            oldest = self._buckets[0]
            if oldest.calls <= excess:
                self._buckets.popleft()
                self._total(-oldest.calls, -oldest.failures, -oldest.slow)
                excess -= oldest.calls
                continue
            keep = oldest.calls - excess
            failures = _scale(oldest.failures, keep, oldest.calls)
            slow = _scale(oldest.slow, keep, oldest.calls)
            self._total(-excess, failures - oldest.failures, slow - oldest.slow)
            oldest.calls, oldest.failures, oldest.slow = keep, failures, slow
            excess = 0

    def _add_to_second(self, second: float, calls: int, failures: int, slow: int) -> None:
        self._total(calls, failures, slow)
        # Reports normally arrive in time order, so scanning from the newest end is O(1);
        # a late report (clock skew between replicas) lands in its own second.
        index = len(self._buckets)
        while index > 0 and self._buckets[index - 1].at > second:
            index -= 1
        if index > 0 and self._buckets[index - 1].at == second:
            bucket = self._buckets[index - 1]
            bucket.calls += calls
            bucket.failures += failures
            bucket.slow += slow
        else:
            self._buckets.insert(index, _Bucket(second, calls, failures, slow))

    def _drop_expired(self, now: float) -> None:
        cutoff = now - self.size
        while self._buckets and self._buckets[0].at <= cutoff:
            old = self._buckets.popleft()
            self._total(-old.calls, -old.failures, -old.slow)


def _scale(part: int, keep: int, whole: int) -> int:
    """``part * keep / whole`` rounded half up, in integers; within [0, min(part, keep)]."""
    return (2 * part * keep + whole) // (2 * whole)
