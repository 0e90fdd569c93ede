"""The client's signal buffer and its report: buckets, batching, put back when no
replica took it, bounded memory. Injected time, no server."""

from __future__ import annotations

import math

import grpc
import pytest

from bulwark import UnavailableError
from bulwark._core import ClientPolicy
from bulwark._settings import ClientOptions
from bulwark._signals import MAX_INDEX, MIN_INDEX, SignalBuffer, bucket_of
from bulwark.errors import BulwarkError


def policy(**options: object) -> ClientPolicy:
    return ClientPolicy(["a:1"], ClientOptions(**options), "test", jitter=lambda: 0.0)


@pytest.mark.parametrize("ms", [0.01, 0.5, 1.0, 1.19, 20.0, 999.0, 60_000.0])
def test_a_latency_falls_in_the_bucket_whose_bounds_hold_it(ms: float) -> None:
    index = bucket_of(ms / 1000)
    assert 2 ** (index / 4) < ms * (1 + 1e-12)
    assert ms <= 2 ** ((index + 1) / 4) * (1 + 1e-12)


def test_latencies_beyond_the_range_fall_into_the_end_buckets() -> None:
    assert bucket_of(0.0) == MIN_INDEX
    assert bucket_of(-1.0) == MIN_INDEX
    assert bucket_of(1e-12) == MIN_INDEX
    assert bucket_of(1e9) == MAX_INDEX
    assert bucket_of(math.inf) == MAX_INDEX
    assert bucket_of(math.nan) == MIN_INDEX


def test_calls_are_counted_per_service_and_taken_as_one_report_each() -> None:
    buffer = SignalBuffer(interval=1.0)
    for i in range(10):
        buffer.add("db", failed=i < 3, latency_s=0.010)
    buffer.add("db", failed=False, latency_s=0.100)
    buffer.add("cache", failed=False, latency_s=0.001)
    assert buffer.due(5.0)
    reports = buffer.take(5.0)
    assert not buffer.pending and not buffer.due(5.5)
    assert [r.service for r in reports] == ["cache", "db"]
    db = reports[1].counts
    assert (db.calls, db.errors) == (11, 3)
    assert sum(db.latency.counts) == 11
    assert db.latency.offset == bucket_of(0.010)
    assert db.latency.counts[0] == 10
    assert db.latency.counts[-1] == 1
    assert db.latency.offset + len(db.latency.counts) - 1 == bucket_of(0.100)


def test_a_report_put_back_merges_with_what_came_since() -> None:
    buffer = SignalBuffer()
    buffer.add("db", failed=True, latency_s=0.010)
    taken = buffer.take(1.0)
    buffer.add("db", failed=False, latency_s=0.010)
    buffer.restore(taken)
    (again,) = buffer.take(2.0)
    assert (again.counts.calls, again.counts.errors) == (2, 1)
    assert list(again.counts.latency.counts) == [2]


def test_services_beyond_the_cap_are_dropped_and_counted() -> None:
    buffer = SignalBuffer(max_services=2)
    for service in ("a", "b", "c", "c"):
        buffer.add(service, failed=False, latency_s=0.001)
    assert buffer.dropped == 2
    assert [r.service for r in buffer.take(1.0)] == ["a", "b"]


def test_the_policy_sends_signals_once_a_second_under_the_service_name() -> None:
    p = policy(service="web")
    p.record_call("db", failed=False, latency=0.005)
    first = p.next_report(10.0, drain=False)
    assert first is not None and first.method == "ReportSignals"
    assert first.request.reporter == "web"
    assert [r.service for r in first.request.reports] == ["db"]
    p.record_call("db", failed=False, latency=0.005)
    assert p.next_report(10.5, drain=False) is None  # within the second
    assert p.next_report(10.5, drain=True) is not None  # closing: everything goes


def test_a_report_no_replica_took_is_put_back_and_one_that_failed_otherwise_is_not() -> None:
    p = policy()
    p.record_call("db", failed=True, latency=0.005)
    report = p.next_report(10.0, drain=False)
    assert report is not None and report.request.reporter == "unnamed"
    with pytest.raises(BulwarkError):
        report.failed(UnavailableError(grpc.StatusCode.UNAVAILABLE, "down"), 10.0)
    again = p.next_report(11.0, drain=False)
    assert again is not None and again.request.reports[0].counts.errors == 1
    with pytest.raises(BulwarkError):
        again.failed(BulwarkError(grpc.StatusCode.INVALID_ARGUMENT, "bad"), 11.0)
    assert p.next_report(13.0, drain=True) is None


def test_record_call_needs_a_service() -> None:
    with pytest.raises(ValueError, match="service"):
        policy().record_call("", failed=False, latency=0.1)
