"""The signal buffer: calls, errors and latency per service called, waiting to be reported.

I/O-free and not thread-safe. A call adds to its service's counts and to one bucket
of a latency histogram (OpenTelemetry's exponential buckets at scale 2, in
milliseconds: bucket ``i`` holds ``(2^(i/4), 2^((i+1)/4)]``, about 19 % wide), so
memory is one small entry per service called, never per call. Reported about once a
second (``ReportSignals``): Bulwark sums them per service for playbooks, scaling and
anyone asking (``GetServiceSignals``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from bulwark.v1 import signals_pb2

__all__ = ["MAX_INDEX", "MIN_INDEX", "SignalBuffer", "bucket_of"]

MIN_INDEX = -40  # about 1 µs
MAX_INDEX = 99  # about 8.7 h
SCALE = 4  # buckets per doubling
#: At most this many services are counted between two reports; calls to others
#: are not counted until the next report makes room.
MAX_SERVICES = 1000


def bucket_of(latency_s: float) -> int:
    """The histogram bucket of a latency in seconds (the end buckets take the rest)."""
    ms = latency_s * 1000.0
    if not ms > 0 or math.isinf(ms):
        return MIN_INDEX if not ms > 0 else MAX_INDEX
    return min(MAX_INDEX, max(MIN_INDEX, math.ceil(math.log2(ms) * SCALE) - 1))


class _Counts:
    __slots__ = ("buckets", "calls", "errors")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.buckets: dict[int, int] = {}

    def merge(self, calls: int, errors: int, buckets: Iterable[tuple[int, int]]) -> None:
        self.calls += calls
        self.errors += errors
        for index, count in buckets:
            self.buckets[index] = self.buckets.get(index, 0) + count


class SignalBuffer:
    """Counts waiting to be reported, per service called."""

    def __init__(self, interval: float = 1.0, max_services: int = MAX_SERVICES) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._max = max_services
        self._counts: dict[str, _Counts] = {}
        self._last = -math.inf
        #: Calls not counted for want of room (services beyond ``max_services``).
        self.dropped = 0

    @property
    def pending(self) -> bool:
        return bool(self._counts)

    def add(self, service: str, failed: bool, latency_s: float) -> None:
        """Count one call to ``service`` that took ``latency_s`` seconds."""
        counts = self._counts.get(service)
        if counts is None:
            if len(self._counts) >= self._max:
                self.dropped += 1
                return
            counts = self._counts[service] = _Counts()
        counts.calls += 1
        counts.errors += failed
        index = bucket_of(latency_s)
        counts.buckets[index] = counts.buckets.get(index, 0) + 1

    def due(self, now: float) -> bool:
        return self.pending and now - self._last >= self.interval

    def take(self, now: float) -> list[signals_pb2.SignalReport]:
        """Everything counted since the last report, as reports (and the buffer empty)."""
        self._last = now
        counts, self._counts = self._counts, {}
        return [_report(service, c) for service, c in sorted(counts.items())]

    def restore(self, reports: Iterable[signals_pb2.SignalReport]) -> None:
        """Put back a report that reached no replica: merged into what came since."""
        for report in reports:
            counts = self._counts.get(report.service)
            if counts is None:
                if len(self._counts) >= self._max:
                    self.dropped += report.counts.calls
                    continue
                counts = self._counts[report.service] = _Counts()
            latency = report.counts.latency
            counts.merge(
                report.counts.calls,
                report.counts.errors,
                ((latency.offset + i, n) for i, n in enumerate(latency.counts) if n),
            )


def _report(service: str, counts: _Counts) -> signals_pb2.SignalReport:
    report = signals_pb2.SignalReport(service=service)
    report.counts.calls = counts.calls
    report.counts.errors = counts.errors
    if counts.buckets:
        low, high = min(counts.buckets), max(counts.buckets)
        report.counts.latency.offset = low
        report.counts.latency.counts.extend(counts.buckets.get(i, 0) for i in range(low, high + 1))
    return report
