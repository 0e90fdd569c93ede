"""What a load test measured: every call's record, and the statistics drawn from them.

``CallLog`` keeps four compact arrays (start, latency, status code, error) so a
call costs a few appends and a million calls about 20 MB; the percentiles are exact
(nearest rank over every successful call), as the benchmark harness computes them.
``summarize`` follows ghz: ``count`` and ``rps`` cover every call, ``average`` every
call's latency, and ``fastest``, ``slowest``, the percentiles and the histogram the
successful (OK) calls only.
"""

from __future__ import annotations

import array
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

# Percentages the report lists (ghz's, and p99.9).
PERCENTAGES: tuple[float, ...] = (10, 25, 50, 75, 90, 95, 99, 99.9)
HISTOGRAM_BUCKETS = 10
# Distinct error messages kept apart; the rest are counted under OTHER_ERRORS, so a
# server that puts a request id in each message cannot grow the report without bound.
MAX_ERROR_MESSAGES = 100
OTHER_ERRORS = "(other errors)"
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
OK = 0
UNKNOWN = 2


@dataclass
class CallLog:
    """Every call made: when it started (seconds from the run's start: its scheduled
    send time in rate mode when that came first, else the send), how long it took, its
    status code and its error (an index into ``messages``; 0 for none)."""

    starts: array.array[float] = field(default_factory=lambda: array.array("d"))
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    codes: array.array[int] = field(default_factory=lambda: array.array("B"))
    errors: array.array[int] = field(default_factory=lambda: array.array("H"))
    messages: list[str] = field(default_factory=lambda: [""])
    _ids: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.latencies)

    def add(self, start: float, latency: float, code: int, message: str | None) -> None:
        """Record one call (``message`` None for a success)."""
        self.starts.append(start)
        self.latencies.append(latency)
        self.codes.append(code)
        self.errors.append(0 if message is None else self.error_id(message))

    def error_id(self, message: str) -> int:
        known = self._ids.get(message)
        if known is not None:
            return known
        if len(self.messages) > MAX_ERROR_MESSAGES:
            message = OTHER_ERRORS
            known = self._ids.get(message)
            if known is not None:
                return known
        self._ids[message] = len(self.messages)
        self.messages.append(message)
        return self._ids[message]

    def extend(self, other: CallLog) -> None:
        """Append another log's calls (a worker process's), their errors renumbered."""
        ids = [0] + [self.error_id(message) for message in other.messages[1:]]
        self.starts.extend(other.starts)
        self.latencies.extend(other.latencies)
        self.codes.extend(other.codes)
        self.errors.extend(ids[i] for i in other.errors)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ascending values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Bucket:
    """One histogram bar: calls with latency at most ``mark`` seconds (and above the
    previous mark); ``frequency`` is their share of the successful calls."""

    mark: float
    count: int
    frequency: float


def histogram(sorted_values: Sequence[float], buckets: int = HISTOGRAM_BUCKETS) -> list[Bucket]:
    """ghz's histogram: ``buckets`` + 1 marks evenly from fastest to slowest, each
    counting the values above the previous mark and up to its own."""
    if not sorted_values:
        return []
    fastest, slowest = sorted_values[0], sorted_values[-1]
    width = (slowest - fastest) / buckets
    marks = [fastest + width * i for i in range(buckets)] + [slowest]
    counts = [0] * len(marks)
    index = 0
    for value in sorted_values:
        while value > marks[index] and index < len(marks) - 1:
            index += 1
        counts[index] += 1
    total = len(sorted_values)
    return [Bucket(mark, count, count / total) for mark, count in zip(marks, counts, strict=True)]


@dataclass(frozen=True)
class Summary:
    """The run's numbers; durations in seconds (NaN where no call gives one)."""

    count: int
    errors: int
    total: float
    rps: float
    average: float
    fastest: float
    slowest: float
    percentiles: dict[float, float]
    histogram: list[Bucket]
    status_codes: dict[str, int]
    error_messages: dict[str, int]

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else math.nan

    def metric_values(self) -> dict[str, float | None]:
        """Every ``--fail-if`` metric by name, in the threshold's units."""
        values: dict[str, float | None] = {
            "p50": self.percentiles[50],
            "p90": self.percentiles[90],
            "p95": self.percentiles[95],
            "p99": self.percentiles[99],
            "p999": self.percentiles[99.9],
            "average": self.average,
            "fastest": self.fastest,
            "slowest": self.slowest,
            "rps": self.rps,
            "error_rate": self.error_rate,
            "errors": float(self.errors),
            "count": float(self.count),
        }
        return {k: (None if v is None or math.isnan(v) else v) for k, v in values.items()}


def summarize(log: CallLog, total: float) -> Summary:
    """The statistics of ``log`` for a run of ``total`` seconds (ghz's rules, see above)."""
    ok = sorted(
        latency for latency, code in zip(log.latencies, log.codes, strict=True) if code == OK
    )
    count = len(log)
    codes = Counter(log.codes)
    errors = count - codes.get(OK, 0)
    messages = Counter(log.errors)
    messages.pop(0, None)
    return Summary(
        count=count,
        errors=errors,
        total=total,
        rps=count / total if total > 0 else math.nan,
        average=math.fsum(log.latencies) / count if count else math.nan,
        fastest=ok[0] if ok else math.nan,
        slowest=ok[-1] if ok else math.nan,
        percentiles={pct: percentile(ok, pct) for pct in PERCENTAGES},
        histogram=histogram(ok),
        status_codes={
            CODE_NAMES.get(code, str(code)): n for code, n in sorted(codes.items(), key=_by_code)
        },
        error_messages={log.messages[i]: n for i, n in messages.most_common()},
    )


def _by_code(item: tuple[int, int]) -> int:
    return item[0]
