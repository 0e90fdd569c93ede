"""What a signal report and a signals question must be. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2

from bulwark.v1 import signals_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.signals.table import BUCKETS
from bulwark_server.validation import duration_seconds, validate_name

MAX_REPORTS = 1000
MAX_WATCHED = 100
DEFAULT_WINDOW_S = 60.0
MAX_WINDOW_S = 300.0
DEFAULT_INTERVAL_S = 10.0
# Counts a report may carry for one service: far above any real batch, low enough
# that sums of a window stay exact in a double.
MAX_CALLS = 10**12


def check_report(request: signals_pb2.ReportSignalsRequest) -> None:
    """InvalidArgument naming the first field that is wrong."""
    validate_name(request.reporter, "reporter")
    if len(request.reports) > MAX_REPORTS:
        raise InvalidArgument("reports", f"at most {MAX_REPORTS} per request")
    for i, report in enumerate(request.reports):
        where = f"reports[{i}]"
        validate_name(report.service, f"{where}.service")
        counts = report.counts
        if counts.calls > MAX_CALLS:
            raise InvalidArgument(f"{where}.counts.calls", f"at most {MAX_CALLS}")
        if counts.errors > counts.calls:
            raise InvalidArgument(f"{where}.counts.errors", "must not exceed calls")
        latency = counts.latency
        if len(latency.counts) > BUCKETS:
            raise InvalidArgument(f"{where}.counts.latency.counts", f"at most {BUCKETS} buckets")
        if sum(latency.counts) > counts.calls:
            raise InvalidArgument(
                f"{where}.counts.latency.counts", "must not hold more calls than calls"
            )


def window_of(value: duration_pb2.Duration, present: bool, field: str = "window") -> float:
    """Seconds of a window (default ``DEFAULT_WINDOW_S``), 1 s to ``MAX_WINDOW_S``."""
    if not present:
        return DEFAULT_WINDOW_S
    return duration_seconds(value, field, minimum=1.0, maximum=MAX_WINDOW_S)


def interval_of(value: duration_pb2.Duration, present: bool) -> float:
    """Seconds between a watch's messages (default ``DEFAULT_INTERVAL_S``)."""
    if not present:
        return DEFAULT_INTERVAL_S
    return duration_seconds(value, "interval", minimum=1.0, maximum=MAX_WINDOW_S)


def check_watched(services: Sequence[str]) -> list[str]:
    """The services a watch follows: 1 to ``MAX_WATCHED`` valid names, once each."""
    if not services:
        raise InvalidArgument("services", "name at least one service")
    if len(services) > MAX_WATCHED:
        raise InvalidArgument("services", f"at most {MAX_WATCHED}")
    for i, service in enumerate(services):
        validate_name(service, f"services[{i}]")
    return sorted(set(services))
