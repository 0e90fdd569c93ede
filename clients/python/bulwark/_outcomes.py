"""The outcome buffer: counts waiting to be reported, aggregated per breaker.

I/O-free and not thread-safe. Bounded memory: one entry per breaker however
many calls are recorded, and counts saturate instead of growing without limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import islice

from bulwark.v1 import breaker_pb2

__all__ = ["COUNT_CAP", "MAX_REPORT_ENTRIES", "OutcomeBuffer"]

#: Per-breaker outcome counts saturate here, so counts kept while Bulwark is
#: unreachable stay bounded (and well inside int64) however long the outage.
COUNT_CAP = 10**9

#: ReportOutcomesRequest accepts at most this many entries.
MAX_REPORT_ENTRIES = 1000


class OutcomeBuffer:
    """Outcome counts waiting to be reported, aggregated per breaker.

    Memory is one small entry per breaker name, never per call.
    """

    def __init__(self, max_batch: int = 500, interval: float = 0.1) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.max_batch = max_batch
        self.interval = interval
        # name -> [successes, failures, slow_calls]
        self._counts: dict[str, list[int]] = {}
        self._pending = 0
        # -inf: the first outcomes are reported without waiting a whole interval.
        self.last_flush = -math.inf
        # The last take left breakers behind (more than fit one report).
        self._backlog = False

    def __len__(self) -> int:
        """Breakers with pending counts."""
        return len(self._counts)

    @property
    def pending(self) -> int:
        """Calls counted and not yet taken."""
        return self._pending

    def add(self, name: str, success: bool, slow: bool = False) -> None:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = [0, 0, 0]
        index = 0 if success else 1
        if counts[index] < COUNT_CAP:
            counts[index] += 1
            self._pending += 1
        if slow and counts[2] < COUNT_CAP:
            counts[2] += 1

    def due(self, now: float) -> bool:
        """True when a report should be sent now."""
        if not self._counts:
            return False
        return (
            self._backlog
            or self._pending >= self.max_batch
            or now - self.last_flush >= self.interval
        )

    def take(
        self, now: float, limit: int = MAX_REPORT_ENTRIES
    ) -> list[breaker_pb2.BreakerOutcomes]:
        """Remove and return up to ``limit`` breakers' counts, oldest first.

        When more breakers are pending than fit one report, ``due`` stays true so
        the rest goes out in the next report right away.
        """
        out: list[breaker_pb2.BreakerOutcomes] = []
        for name in list(islice(self._counts, max(1, limit))):
            successes, failures, slow = self._counts.pop(name)
            self._pending -= successes + failures
            out.append(
                breaker_pb2.BreakerOutcomes(
                    name=name,
                    counts=breaker_pb2.OutcomeCounts(
                        successes=successes, failures=failures, slow_calls=slow
                    ),
                )
            )
        self.last_flush = now
        self._backlog = bool(self._counts)
        return out

    def restore(self, items: Iterable[breaker_pb2.BreakerOutcomes]) -> None:
        """Put back a batch whose report failed, merged with counts added since."""
        for item in items:
            counts = self._counts.get(item.name)
            if counts is None:
                counts = self._counts[item.name] = [0, 0, 0]
            before = counts[0] + counts[1]
            counts[0] = min(COUNT_CAP, counts[0] + max(0, item.counts.successes))
            counts[1] = min(COUNT_CAP, counts[1] + max(0, item.counts.failures))
            counts[2] = min(COUNT_CAP, counts[2] + max(0, item.counts.slow_calls))
            self._pending += counts[0] + counts[1] - before
