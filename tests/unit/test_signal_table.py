"""The signal table: sums by window and pair, percentiles from the buckets, bounded memory."""

from __future__ import annotations

import math

import pytest

from bulwark.v1 import signals_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.signals import rules
from bulwark_server.signals.manager import SignalsManager
from bulwark_server.signals.table import (
    BUCKETS,
    MAX_INDEX,
    MIN_INDEX,
    SignalTable,
    Sums,
    histogram_pairs,
    total,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bucket(ms: float) -> int:
    """The exponential bucket (scale 2) holding ``ms``: (2^(i/4), 2^((i+1)/4)]."""
    return math.ceil(math.log2(ms) * 4) - 1


def test_a_window_sums_the_slots_that_began_within_it() -> None:
    clock = Clock()
    table = SignalTable(clock, slot_s=5, retention_s=300)
    table.add("web", "db", 10, 1, [(bucket(10), 10)])
    clock.now += 30
    table.add("web", "db", 20, 4, [(bucket(10), 20)])
    assert total(table.inbound("db", 10)).calls == 20
    assert total(table.inbound("db", 60)).calls == 30
    assert total(table.inbound("db", 60)).errors == 5
    clock.now += 306  # both slots ended before the retention
    assert total(table.inbound("db", 300)).calls == 0


def test_inbound_is_by_caller_and_downstream_by_service_called() -> None:
    table = SignalTable(Clock())
    table.add("web", "db", 4, 0, [])
    table.add("batch", "db", 6, 3, [])
    table.add("db", "disk", 2, 2, [])
    assert {k: v.calls for k, v in table.inbound("db", 60).items()} == {"batch": 6, "web": 4}
    assert {k: v.calls for k, v in table.downstream("db", 60).items()} == {"disk": 2}
    assert table.services() == ["batch", "db", "disk", "web"]


def test_percentiles_are_within_a_bucket_of_the_truth() -> None:
    latencies = [1.0 + i * 0.5 for i in range(1000)]  # 1 ms to 500.5 ms, evenly
    sums = Sums()
    counts: dict[int, int] = {}
    for ms in latencies:
        counts[bucket(ms)] = counts.get(bucket(ms), 0) + 1
    sums.add(len(latencies), 0, counts.items())
    for q in (0.5, 0.9, 0.99):
        truth = sorted(latencies)[int(q * len(latencies)) - 1]
        estimate = sums.quantile(q)
        assert estimate is not None
        assert abs(estimate - truth) / truth < 0.19, (q, estimate, truth)
    assert Sums().quantile(0.5) is None


def test_histogram_indexes_outside_the_range_fall_into_the_end_buckets() -> None:
    assert histogram_pairs(MIN_INDEX - 5, [1, 0, 2]) == [(MIN_INDEX, 1), (MIN_INDEX, 2)]
    assert histogram_pairs(MAX_INDEX, [1, 3]) == [(MAX_INDEX, 1), (MAX_INDEX, 3)]


def test_pairs_are_capped_the_oldest_reported_going_first() -> None:
    table = SignalTable(Clock(), max_pairs=2)
    assert table.add("a", "s", 1, 0, [])
    assert table.add("b", "s", 1, 0, [])
    assert table.add("a", "s", 1, 0, [])  # "a" is now the newest
    assert table.add("c", "s", 1, 0, [])  # "b" goes
    assert len(table) == 2
    assert sorted(table.inbound("s", 60)) == ["a", "c"]


def test_covered_says_how_much_of_a_window_the_table_has_seen() -> None:
    clock = Clock()
    table = SignalTable(clock, slot_s=5)
    assert table.covered(60) == 5  # at least a slot
    clock.now += 20
    assert table.covered(60) == 20
    clock.now += 100
    assert table.covered(60) == 60


class Instances:
    def serving_load(self, service: str) -> tuple[int, int]:
        return (3, 42) if service == "db" else (0, 0)


def test_the_manager_answers_rates_errors_latency_and_load() -> None:
    clock = Clock()
    manager = SignalsManager(Instances(), clock)
    clock.now += 100
    request = signals_pb2.ReportSignalsRequest(reporter="web")
    report = request.reports.add(service="db")
    report.counts.calls = 600
    report.counts.errors = 60
    report.counts.latency.offset = bucket(20)
    report.counts.latency.counts.append(600)
    assert manager.report(request) == 1
    signals = manager.signals("db", 60)
    assert signals.inbound.calls == 600
    assert signals.inbound.calls_per_second == pytest.approx(10.0)
    assert signals.inbound.error_rate == pytest.approx(0.1)
    p50 = signals.inbound.latency_p50.ToNanoseconds() / 1e6
    assert 2 ** (bucket(20) / 4) < p50 <= 2 ** ((bucket(20) + 1) / 4)
    assert list(signals.by_caller) == ["web"]
    assert (signals.serving_instances, signals.in_flight) == (3, 42)
    assert signals.window.ToSeconds() == 60
    quiet = manager.signals("cache", 60)
    assert quiet.inbound.calls == 0 and not quiet.inbound.HasField("latency_p50")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "reporter", ""), "reporter"),
        (lambda r: setattr(r.reports[0], "service", "bad name"), "reports[0].service"),
        (lambda r: setattr(r.reports[0].counts, "errors", 11), "reports[0].counts.errors"),
        (
            lambda r: r.reports[0].counts.latency.counts.extend([11]),
            "reports[0].counts.latency.counts",
        ),
        (
            lambda r: r.reports[0].counts.latency.counts.extend([0] * (BUCKETS + 1)),
            "reports[0].counts.latency.counts",
        ),
    ],
)
def test_a_bad_report_names_its_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    request = signals_pb2.ReportSignalsRequest(reporter="web")
    request.reports.add(service="db").counts.calls = 10
    rules.check_report(request)
    change(request)
    with pytest.raises(InvalidArgument) as caught:
        rules.check_report(request)
    assert caught.value.field == field


def test_watched_services_and_windows_are_checked() -> None:
    assert rules.check_watched(["b", "a", "b"]) == ["a", "b"]
    with pytest.raises(InvalidArgument, match="services"):
        rules.check_watched([])
    assert rules.window_of(signals_pb2.GetServiceSignalsRequest().window, False) == 60.0
    too_long = signals_pb2.GetServiceSignalsRequest()
    too_long.window.FromSeconds(301)
    with pytest.raises(InvalidArgument, match="window"):
        rules.window_of(too_long.window, True)
