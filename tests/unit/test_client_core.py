"""Unit tests for bulwark._core: the I/O-free logic shared by Client and AsyncClient."""

from __future__ import annotations

import math
import subprocess
import sys

import grpc
import pytest

from bulwark import _core
from bulwark._core import (
    COUNT_CAP,
    BreakerCache,
    BreakerView,
    Decision,
    Endpoints,
    FeatureCache,
    InstanceCache,
    LocalBreaker,
    OutcomeBuffer,
    PrimaryCache,
    QuotaBucket,
    monotonic_from_wall,
    per_second,
    retryable,
)
from bulwark.v1 import breaker_pb2, feature_pb2, ratelimit_pb2, registry_pb2, watch_pb2

SNAPSHOT = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT = watch_pb2.WATCH_EVENT_TYPE_PUT
DELETE = watch_pb2.WATCH_EVENT_TYPE_DELETE

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = breaker_pb2.BREAKER_STATE_DISABLED
METRICS_ONLY = breaker_pb2.BREAKER_STATE_METRICS_ONLY

MONO = 1000.0  # an arbitrary time.monotonic()
WALL = 1_700_000_000.0  # the time.time() read at the same moment


def breaker(
    name: str,
    state: int = CLOSED,
    revision: int = 1,
    open_until: float | None = None,
    wait: float | None = 30.0,
) -> breaker_pb2.CircuitBreaker:
    b = breaker_pb2.CircuitBreaker(name=name, revision=revision)
    b.status.state = state
    if open_until is not None:
        b.status.open_until.FromNanoseconds(int(open_until * 1e9))
    if wait is not None:
        b.config.wait_duration_in_open_state.FromNanoseconds(int(wait * 1e9))
    return b


def bevent(kind: int, b: breaker_pb2.CircuitBreaker | None = None, revision: int = 0):
    return breaker_pb2.WatchBreakersResponse(type=kind, breaker=b, revision=revision)


def synced_cache(*breakers: breaker_pb2.CircuitBreaker, revision: int = 10) -> BreakerCache:
    cache = BreakerCache()
    for b in breakers:
        cache.apply(bevent(SNAPSHOT, b, b.revision), MONO, WALL)
    cache.apply(bevent(SYNCED, revision=revision), MONO, WALL)
    return cache


# -- helpers -------------------------------------------------------------------


def test_core_is_io_free_and_never_imports_the_server() -> None:
    code = (
        "import sys, bulwark._core; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bulwark_server'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    with open(_core.__file__, encoding="utf-8") as f:
        source = f.read()
    forbidden_imports = ("bulwark_server", "asyncio", "threading", "time")
    for forbidden in forbidden_imports:
        assert f"import {forbidden}" not in source
        assert f"from {forbidden}" not in source
    assert set(_core.__all__) <= set(dir(_core))


def test_wall_to_monotonic_and_rate_units() -> None:
    assert monotonic_from_wall(WALL + 5, MONO, WALL) == MONO + 5
    assert monotonic_from_wall(WALL - 2, MONO, WALL) == MONO - 2
    assert per_second(120, ratelimit_pb2.RATE_UNIT_MINUTE) == 2.0
    assert per_second(7, ratelimit_pb2.RATE_UNIT_SECOND) == 7.0
    assert per_second(7200, ratelimit_pb2.RATE_UNIT_HOUR) == 2.0
    assert per_second(86400, ratelimit_pb2.RATE_UNIT_DAY) == 1.0
    with pytest.raises(ValueError):
        per_second(1, ratelimit_pb2.RATE_UNIT_UNSPECIFIED)


# -- BreakerView -----------------------------------------------------------------


def test_breaker_view_uses_resilience4j_defaults_for_unset_config() -> None:
    view = BreakerView.from_proto(breaker_pb2.CircuitBreaker(name="db"), MONO, WALL)
    assert view.name == "db"
    assert view.state == breaker_pb2.BREAKER_STATE_UNSPECIFIED
    assert view.open_until_monotonic is None
    assert view.failure_rate_threshold == 50.0
    assert view.minimum_number_of_calls == 100
    assert view.sliding_window_size == 100
    assert view.wait_duration_in_open_state == 60.0


def test_breaker_view_reads_config_and_converts_open_until() -> None:
    b = breaker("payments", OPEN, revision=42, open_until=WALL + 12.5, wait=30.0)
    b.config.failure_rate_threshold = 25.0
    b.config.minimum_number_of_calls = 5
    b.config.sliding_window_size = 20
    view = BreakerView.from_proto(b, MONO, WALL)
    assert view.state == OPEN
    assert view.revision == 42
    assert view.open_until_monotonic == pytest.approx(MONO + 12.5)
    assert (view.failure_rate_threshold, view.minimum_number_of_calls) == (25.0, 5)
    assert view.sliding_window_size == 20
    assert view.wait_duration_in_open_state == 30.0


def test_breaker_view_caps_open_until_at_the_wait_when_our_clock_is_behind() -> None:
    # The server's wall clock is an hour ahead of ours: never refuse longer than the wait.
    b = breaker("payments", OPEN, open_until=WALL + 3600 + 10, wait=30.0)
    view = BreakerView.from_proto(b, MONO, WALL)
    assert view.open_until_monotonic == pytest.approx(MONO + 30.0)


# -- BreakerCache ---------------------------------------------------------------


def test_cache_is_infinitely_stale_and_undecided_before_the_first_snapshot() -> None:
    cache = BreakerCache()
    assert cache.staleness(MONO) == math.inf
    assert cache.revision == 0
    assert cache.decide("payments", MONO) == Decision(
        False, breaker_pb2.BREAKER_STATE_UNSPECIFIED, "remote-needed", None
    )


def test_snapshot_is_invisible_until_synced() -> None:
    cache = BreakerCache()
    cache.apply(bevent(SNAPSHOT, breaker("a", revision=3), 3), MONO, WALL)
    assert cache.get("a") is None
    assert cache.revision == 0  # resuming from a half snapshot would skip objects
    cache.apply(bevent(SYNCED, revision=9), MONO + 1, WALL + 1)
    assert cache.get("a") is not None
    assert cache.revision == 9
    assert cache.synced_at == MONO + 1


def test_new_snapshot_replaces_the_whole_view() -> None:
    cache = synced_cache(breaker("a"), breaker("b"), breaker("c"))
    assert cache.names() == ["a", "b", "c"]
    # A fresh snapshot (fell behind, or reconnected) without "b": b is gone.
    cache.apply(
        bevent(SNAPSHOT, breaker("a", OPEN, revision=20, open_until=WALL + 5), 20), MONO, WALL
    )
    cache.apply(bevent(SNAPSHOT, breaker("c", revision=21), 21), MONO, WALL)
    # Until SYNCED the old view still answers.
    assert cache.get("b") is not None
    assert cache.get("a").state == CLOSED
    cache.apply(bevent(SYNCED, revision=30), MONO, WALL)
    assert cache.names() == ["a", "c"]
    assert cache.get("b") is None
    assert cache.get("a").state == OPEN
    assert cache.decide("b", MONO).source == "remote-needed"
    assert cache.revision == 30


def test_empty_snapshot_clears_everything() -> None:
    cache = synced_cache(breaker("a"), breaker("b"))
    cache.apply(bevent(SYNCED, revision=50), MONO, WALL)
    assert len(cache) == 0
    assert cache.revision == 50


def test_put_and_delete_after_sync() -> None:
    cache = synced_cache(breaker("a"), revision=10)
    cache.apply(bevent(PUT, breaker("b", revision=11), 11), MONO + 2, WALL + 2)
    assert cache.get("b").revision == 11
    assert cache.revision == 11
    assert cache.synced_at == MONO + 2
    cache.apply(bevent(DELETE, breaker_pb2.CircuitBreaker(name="a"), 12), MONO + 3, WALL + 3)
    assert cache.get("a") is None
    assert cache.revision == 12
    # Deleting what is not there is harmless.
    cache.apply(bevent(DELETE, breaker_pb2.CircuitBreaker(name="zz"), 13), MONO, WALL)
    assert cache.names() == ["b"]


def test_older_put_does_not_overwrite_a_newer_state() -> None:
    cache = synced_cache(breaker("a", OPEN, revision=20, open_until=WALL + 5))
    cache.apply(bevent(PUT, breaker("a", CLOSED, revision=15), 15), MONO, WALL)
    assert cache.get("a").state == OPEN
    assert cache.get("a").revision == 20


def test_decide_allowing_states_come_from_the_cache() -> None:
    cache = synced_cache(breaker("c", CLOSED), breaker("d", DISABLED), breaker("m", METRICS_ONLY))
    for name, state in (("c", CLOSED), ("d", DISABLED), ("m", METRICS_ONLY)):
        assert cache.decide(name, MONO) == Decision(True, state, "cache", None)


def test_decide_forced_open_refuses_without_retry_time() -> None:
    cache = synced_cache(breaker("f", FORCED_OPEN))
    assert cache.decide("f", MONO + 1e6) == Decision(False, FORCED_OPEN, "cache", None)


def test_decide_open_refuses_until_open_until_then_needs_remote() -> None:
    cache = synced_cache(breaker("p", OPEN, open_until=WALL + 10, wait=30))
    decision = cache.decide("p", MONO + 4)
    assert decision.allowed is False
    assert decision.source == "cache"
    assert decision.state == OPEN
    assert decision.retry_after == pytest.approx(6.0)
    # The wait is over: the server's Allow moves the breaker to HALF_OPEN.
    after = cache.decide("p", MONO + 10)
    assert after == Decision(False, OPEN, "remote-needed", None)
    assert cache.decide("p", MONO + 100).source == "remote-needed"


def test_decide_open_without_open_until_and_half_open_need_remote() -> None:
    cache = synced_cache(breaker("p", OPEN), breaker("h", HALF_OPEN))
    assert cache.decide("p", MONO) == Decision(False, OPEN, "remote-needed", None)
    assert cache.decide("h", MONO) == Decision(False, HALF_OPEN, "remote-needed", None)


def test_staleness_zero_while_live_and_growing_after_disconnect() -> None:
    cache = synced_cache(breaker("a"))
    # A live stream pushes every change: a quiet hour is not staleness.
    assert cache.staleness(MONO + 3600) == 0.0
    cache.mark_disconnected()
    assert cache.staleness(MONO + 5) == pytest.approx(5.0)
    assert cache.staleness(MONO + 50) == pytest.approx(50.0)
    # The data is kept and still decides.
    assert cache.decide("a", MONO + 50).allowed is True
    # A new SNAPSHOT..SYNCED replaces and is fresh again.
    cache.apply(bevent(SNAPSHOT, breaker("b", revision=40), 40), MONO + 60, WALL + 60)
    assert cache.staleness(MONO + 61) == pytest.approx(61.0)
    cache.apply(bevent(SYNCED, revision=41), MONO + 62, WALL + 62)
    assert cache.staleness(MONO + 62) == 0.0
    assert cache.names() == ["b"]


def test_disconnect_with_time_counts_from_the_break() -> None:
    cache = synced_cache(breaker("a"))
    cache.mark_disconnected(MONO + 100)
    assert cache.staleness(MONO + 103) == pytest.approx(3.0)


def test_disconnect_drops_a_half_received_snapshot() -> None:
    cache = synced_cache(breaker("a"), revision=10)
    cache.apply(bevent(SNAPSHOT, breaker("x", revision=30), 30), MONO, WALL)
    cache.mark_disconnected()
    # The resumed stream sends only changes, then no SYNCED.
    cache.apply(bevent(PUT, breaker("b", revision=11), 11), MONO + 1, WALL + 1)
    assert cache.names() == ["a", "b"]
    assert cache.revision == 11
    assert cache.staleness(MONO + 5) == 0.0  # an event proves the stream is live


def test_resumed_stream_marked_connected() -> None:
    cache = synced_cache(breaker("a"))
    cache.mark_disconnected(MONO + 1)
    cache.mark_connected(MONO + 7)
    assert cache.staleness(MONO + 100) == 0.0
    never = BreakerCache()
    never.mark_connected(MONO)
    assert never.staleness(MONO) == math.inf


# -- OutcomeBuffer ------------------------------------------------------------


def counts_by_name(items: list[breaker_pb2.BreakerOutcomes]) -> dict[str, tuple[int, int, int]]:
    return {i.name: (i.counts.successes, i.counts.failures, i.counts.slow_calls) for i in items}


def test_outcomes_aggregate_per_breaker() -> None:
    buffer = OutcomeBuffer()
    assert not buffer.due(MONO)
    buffer.add("a", True, False)
    buffer.add("a", False, True)
    buffer.add("a", True, True)
    buffer.add("b", False, False)
    assert buffer.pending == 4
    assert len(buffer) == 2
    items = buffer.take(MONO)
    assert counts_by_name(items) == {"a": (2, 1, 2), "b": (0, 1, 0)}
    assert buffer.pending == 0
    assert len(buffer) == 0
    assert buffer.take(MONO) == []


def test_due_by_interval_or_batch_size() -> None:
    buffer = OutcomeBuffer(max_batch=3, interval=0.1)
    buffer.add("a", True, False)
    assert buffer.due(MONO)  # nothing reported yet: no need to wait
    buffer.take(MONO)
    buffer.add("a", True, False)
    assert not buffer.due(MONO + 0.05)
    assert buffer.due(MONO + 0.1)
    buffer.add("a", True, False)
    buffer.add("b", True, False)
    assert buffer.due(MONO + 0.01)  # three pending: a full batch
    buffer.take(MONO + 0.2)
    assert not buffer.due(MONO + 10)  # nothing pending


def test_a_million_adds_stay_one_entry_per_breaker() -> None:
    buffer = OutcomeBuffer()
    names = ("a", "b", "c")
    for i in range(1_000_000):
        buffer.add(names[i % 3], i % 4 != 0, i % 10 == 0)
    assert len(buffer) == 3
    assert len(buffer._counts) == 3
    assert buffer.pending == 1_000_000
    items = buffer.take(MONO)
    assert len(items) == 3
    totals = counts_by_name(items)
    assert sum(s + f for s, f, _ in totals.values()) == 1_000_000
    assert sum(f for _, f, _ in totals.values()) == 250_000
    assert sum(slow for *_, slow in totals.values()) == 100_000


def test_restore_merges_with_newer_counts() -> None:
    buffer = OutcomeBuffer()
    buffer.add("a", True, False)
    buffer.add("b", False, True)
    failed = buffer.take(MONO)
    buffer.add("a", False, False)
    buffer.add("c", True, False)
    buffer.restore(failed)
    assert buffer.pending == 4
    assert counts_by_name(buffer.take(MONO)) == {
        "a": (1, 1, 0),
        "b": (0, 1, 1),
        "c": (1, 0, 0),
    }


def test_counts_saturate_so_an_outage_stays_bounded() -> None:
    buffer = OutcomeBuffer()
    big = breaker_pb2.BreakerOutcomes(
        name="a",
        counts=breaker_pb2.OutcomeCounts(
            successes=COUNT_CAP - 5, failures=COUNT_CAP, slow_calls=COUNT_CAP - 1
        ),
    )
    buffer.restore([big])
    for _ in range(10):
        buffer.add("a", True, True)
        buffer.add("a", False, False)
    buffer.restore([big, big])
    [item] = buffer.take(MONO)
    assert (item.counts.successes, item.counts.failures, item.counts.slow_calls) == (
        COUNT_CAP,
        COUNT_CAP,
        COUNT_CAP,
    )
    assert buffer.pending == 0


def test_take_respects_the_report_entry_limit() -> None:
    buffer = OutcomeBuffer(max_batch=10**6, interval=60)
    for i in range(1500):
        buffer.add(f"b{i}", True, False)
    first = buffer.take(MONO)
    assert len(first) == 1000
    assert first[0].name == "b0"
    assert buffer.due(MONO)  # the rest goes right away, not after the interval
    second = buffer.take(MONO)
    assert len(second) == 500
    assert not buffer.due(MONO)
    assert buffer.pending == 0


# -- LocalBreaker -------------------------------------------------------------


def test_local_breaker_trips_at_the_threshold_after_the_minimum() -> None:
    local = LocalBreaker(
        failure_rate_threshold=50,
        minimum_number_of_calls=4,
        sliding_window_size=10,
        wait_duration_in_open_state=5,
    )
    for _ in range(3):
        local.record(False, MONO)
    assert local.state == CLOSED  # three calls: below the minimum
    assert local.failure_rate == -1.0
    local.record(True, MONO)
    # 3 of 4 failed: 75 % >= 50 %.
    assert local.state == OPEN
    assert not local.allowed(MONO + 1)
    assert local.retry_after(MONO + 1) == pytest.approx(4.0)
    assert local.decide(MONO + 1) == Decision(False, OPEN, "local", pytest.approx(4.0))


def test_local_breaker_does_not_trip_below_the_threshold() -> None:
    local = LocalBreaker(50, 4, 10, 5)
    for success in (True, True, False, True, True, False):
        local.record(success, MONO)
    assert local.failure_rate == pytest.approx(100 / 3)
    assert local.state == CLOSED
    assert local.allowed(MONO)


def test_local_breaker_window_forgets_old_outcomes() -> None:
    local = LocalBreaker(50, 4, 4, 5)
    local.record(False, MONO)
    for _ in range(4):
        local.record(True, MONO)
    assert local.calls == 4
    assert local.failure_rate == 0.0  # the failure fell out of the window
    local.record(False, MONO)
    local.record(False, MONO)
    assert local.state == OPEN  # 2 of the last 4: 50 %


def test_local_breaker_half_open_lets_one_trial_then_closes() -> None:
    local = LocalBreaker(50, 2, 10, 5)
    local.record(False, MONO)
    local.record(False, MONO)
    assert local.state == OPEN
    assert not local.allowed(MONO + 4.9)
    assert local.allowed(MONO + 5)  # the one trial
    assert local.state == HALF_OPEN
    assert not local.allowed(MONO + 5.1)  # only one
    local.record(True, MONO + 5.2)
    assert local.state == CLOSED
    assert local.calls == 0
    assert local.allowed(MONO + 5.3)


def test_local_breaker_failed_trial_reopens() -> None:
    local = LocalBreaker(50, 2, 10, 5)
    local.record(False, MONO)
    local.record(False, MONO)
    assert local.allowed(MONO + 5)
    local.record(False, MONO + 6)
    assert local.state == OPEN
    assert not local.allowed(MONO + 10.9)
    assert local.allowed(MONO + 11)


def test_local_breaker_lost_trial_does_not_block_forever() -> None:
    local = LocalBreaker(50, 2, 10, 5)
    local.record(False, MONO)
    local.record(False, MONO)
    assert local.allowed(MONO + 5)
    assert not local.allowed(MONO + 9)
    assert local.allowed(MONO + 10)


def test_local_breaker_ignores_late_outcomes_while_open_and_resets() -> None:
    local = LocalBreaker(50, 2, 10, 5)
    local.record(False, MONO)
    local.record(False, MONO)
    local.record(True, MONO + 1)
    assert local.state == OPEN
    local.reset()
    assert local.state == CLOSED
    assert local.calls == 0
    assert local.allowed(MONO + 1)


def test_local_breaker_from_view_caps_minimum_at_window() -> None:
    view = BreakerView("a", CLOSED, None, 1, 50.0, 100, 10, 7.0)
    local = LocalBreaker.from_view(view)
    assert local.minimum_number_of_calls == 10
    assert local.wait_duration_in_open_state == 7.0
    for _ in range(10):
        local.record(False, MONO)
    assert local.state == OPEN


# -- FeatureCache -------------------------------------------------------------


def feature(name: str, status: int, fallback: str = "") -> feature_pb2.FeatureView:
    return feature_pb2.FeatureView(
        feature=feature_pb2.Feature(name=name, fallback=fallback), effective_status=status
    )


def fevent(kind: int, view: feature_pb2.FeatureView | None = None, revision: int = 0):
    return feature_pb2.WatchFeaturesResponse(type=kind, feature=view, revision=revision)


def test_feature_availability_and_fallback() -> None:
    cache = FeatureCache()
    assert cache.available("search") is None
    assert cache.staleness(MONO) == math.inf
    cache.apply(fevent(SNAPSHOT, feature("search", feature_pb2.FEATURE_STATUS_AVAILABLE), 5), MONO)
    cache.apply(
        fevent(SNAPSHOT, feature("email", feature_pb2.FEATURE_STATUS_DEGRADED, "sms"), 5), MONO
    )
    cache.apply(fevent(SNAPSHOT, feature("beta", feature_pb2.FEATURE_STATUS_DISABLED), 5), MONO)
    cache.apply(
        fevent(SNAPSHOT, feature("legacy", feature_pb2.FEATURE_STATUS_UNSPECIFIED), 5), MONO
    )
    assert cache.available("search") is None  # not synced yet
    cache.apply(fevent(SYNCED, revision=5), MONO)
    assert cache.available("search") is True
    assert cache.available("legacy") is True  # unset means AVAILABLE
    assert cache.available("email") is False
    assert cache.available("beta") is False
    assert cache.available("unknown") is None
    assert cache.fallback("email") == "sms"
    assert cache.fallback("search") is None
    assert cache.fallback("unknown") is None
    assert cache.get("email").feature.fallback == "sms"
    assert cache.revision == 5
    assert cache.staleness(MONO + 10) == 0.0


def test_feature_put_replaces_even_when_only_the_effective_status_changed() -> None:
    cache = FeatureCache()
    cache.apply(fevent(SNAPSHOT, feature("search", feature_pb2.FEATURE_STATUS_AVAILABLE), 5), MONO)
    cache.apply(fevent(SYNCED, revision=5), MONO)
    cache.apply(fevent(PUT, feature("search", feature_pb2.FEATURE_STATUS_DISABLED), 8), MONO)
    assert cache.available("search") is False
    assert cache.revision == 8
    cache.apply(fevent(SNAPSHOT, feature("other", feature_pb2.FEATURE_STATUS_AVAILABLE), 9), MONO)
    cache.apply(fevent(SYNCED, revision=9), MONO)
    assert cache.available("search") is None  # absent from the new snapshot


# -- PrimaryCache -------------------------------------------------------------


def primary(service: str, instance_id: str, epoch: int, revision: int = 1) -> registry_pb2.Primary:
    return registry_pb2.Primary(
        service=service, instance_id=instance_id, epoch=epoch, revision=revision
    )


def pevent(kind: int, p: registry_pb2.Primary | None = None, revision: int = 0):
    return registry_pb2.WatchPrimaryResponse(type=kind, primary=p, revision=revision)


def test_primary_changes_are_reported() -> None:
    cache = PrimaryCache()
    assert cache.apply(pevent(SNAPSHOT, primary("db", "db-1", 3), 1), MONO) == []
    assert cache.apply(pevent(SNAPSHOT, primary("kv", "kv-1", 1), 2), MONO) == []
    assert cache.apply(pevent(SYNCED, revision=5), MONO) == ["db", "kv"]  # first seen
    assert cache.get("db").instance_id == "db-1"
    # Same primary and epoch, other fields changed: not a change of primary.
    same = primary("db", "db-1", 3, revision=6)
    same.reason = "still primary"
    assert cache.apply(pevent(PUT, same, 6), MONO) == []
    assert cache.get("db").reason == "still primary"
    # A failover.
    assert cache.apply(pevent(PUT, primary("db", "db-2", 4, revision=7), 7), MONO) == ["db"]
    assert cache.get("db").epoch == 4
    # The same instance re-promoted in a new epoch is a change too.
    assert cache.apply(pevent(PUT, primary("db", "db-2", 5, revision=8), 8), MONO) == ["db"]
    assert cache.revision == 8


def test_primary_older_epoch_is_ignored() -> None:
    cache = PrimaryCache()
    cache.apply(pevent(SNAPSHOT, primary("db", "db-2", 4, revision=7), 7), MONO)
    cache.apply(pevent(SYNCED, revision=7), MONO)
    assert cache.apply(pevent(PUT, primary("db", "db-1", 3, revision=9), 9), MONO) == []
    assert cache.get("db").instance_id == "db-2"


def test_primary_new_snapshot_reports_changed_and_vanished_services() -> None:
    cache = PrimaryCache()
    cache.apply(pevent(SNAPSHOT, primary("db", "db-1", 3), 1), MONO)
    cache.apply(pevent(SNAPSHOT, primary("kv", "kv-1", 1), 2), MONO)
    cache.apply(pevent(SNAPSHOT, primary("mq", "mq-1", 1), 2), MONO)
    cache.apply(pevent(SYNCED, revision=5), MONO)
    cache.apply(pevent(SNAPSHOT, primary("db", "db-1", 3), 1), MONO)
    cache.apply(pevent(SNAPSHOT, primary("kv", "kv-2", 2, revision=9), 9), MONO)
    assert cache.apply(pevent(SYNCED, revision=10), MONO) == ["kv", "mq"]
    assert cache.get("mq") is None
    assert cache.get("kv").instance_id == "kv-2"


# -- InstanceCache ------------------------------------------------------------


def instance(iid: str, service: str = "db", revision: int = 1) -> registry_pb2.Instance:
    return registry_pb2.Instance(service=service, id=iid, address=f"{iid}:80", revision=revision)


def ievent(kind: int, i: registry_pb2.Instance | None = None, revision: int = 0):
    return registry_pb2.WatchInstancesResponse(type=kind, instance=i, revision=revision)


def test_instances_snapshot_put_delete() -> None:
    cache = InstanceCache("db")
    cache.apply(ievent(SNAPSHOT, instance("db-2"), 2), MONO)
    cache.apply(ievent(SNAPSHOT, instance("db-1"), 1), MONO)
    assert cache.instances() == []
    cache.apply(ievent(SYNCED, revision=4), MONO)
    assert [i.id for i in cache.instances()] == ["db-1", "db-2"]
    cache.apply(ievent(PUT, instance("db-3", revision=5), 5), MONO)
    cache.apply(ievent(DELETE, registry_pb2.Instance(service="db", id="db-1"), 6), MONO)
    cache.apply(ievent(PUT, instance("x-1", service="other", revision=7), 7), MONO)
    assert [i.id for i in cache.instances()] == ["db-2", "db-3"]
    assert cache.get("db-3").address == "db-3:80"
    assert cache.revision == 6
    cache.apply(ievent(SNAPSHOT, instance("db-3", revision=8), 8), MONO)
    cache.apply(ievent(SYNCED, revision=8), MONO)
    assert [i.id for i in cache.instances()] == ["db-3"]


# -- QuotaBucket --------------------------------------------------------------


def test_quota_bucket_spends_and_refills_a_lease() -> None:
    bucket = QuotaBucket()
    bucket.grant(per_second=10, burst=5, expires_at_mono=MONO + 10, now=MONO)
    assert bucket.valid(MONO)
    assert all(bucket.try_acquire(1, MONO) for _ in range(5))
    assert not bucket.try_acquire(1, MONO)
    assert not bucket.try_acquire(1, MONO + 0.05)
    assert bucket.try_acquire(1, MONO + 0.1)  # 10/s: one token per 0.1 s
    assert bucket.tokens(MONO + 0.5) == pytest.approx(4.0)  # 0.4 s later
    assert bucket.tokens(MONO + 5) == pytest.approx(5.0)  # never above the burst
    assert not bucket.try_acquire(6, MONO + 5)
    assert bucket.try_acquire(0, MONO + 5)


def test_quota_bucket_renewal_does_not_mint_tokens() -> None:
    bucket = QuotaBucket()
    bucket.grant(10, 5, MONO + 10, MONO)
    assert bucket.try_acquire(5, MONO)
    bucket.grant(10, 8, MONO + 20, MONO)
    assert bucket.tokens(MONO) == 0.0
    assert bucket.tokens(MONO + 1) == pytest.approx(8.0)


def test_quota_bucket_expired_lease_without_fallback_allows_everything() -> None:
    bucket = QuotaBucket(fallback_rate=None)
    assert not bucket.valid(MONO)
    assert all(bucket.try_acquire(1, MONO) for _ in range(1000))
    bucket.grant(1, 1, MONO + 2, MONO)
    assert bucket.try_acquire(1, MONO)
    assert not bucket.try_acquire(1, MONO + 0.5)
    assert not bucket.valid(MONO + 2)
    assert bucket.try_acquire(100, MONO + 2)  # the lease expired: fail open
    assert bucket.tokens(MONO + 2) == math.inf


def test_quota_bucket_expired_lease_with_fallback_enforces_the_safe_rate() -> None:
    bucket = QuotaBucket(fallback_rate=2.0)
    # Never granted: the fallback bucket starts full with max(1, rate) tokens.
    assert bucket.try_acquire(2, MONO)
    assert not bucket.try_acquire(1, MONO)
    assert bucket.try_acquire(1, MONO + 0.5)
    bucket.grant(100, 100, MONO + 10, MONO + 1)
    assert bucket.try_acquire(50, MONO + 1)
    # At expiry the leftover is capped at the fallback burst, then refills at 2/s.
    assert not bucket.valid(MONO + 10)
    assert bucket.tokens(MONO + 10) == pytest.approx(2.0)
    assert bucket.try_acquire(2, MONO + 10)
    assert not bucket.try_acquire(1, MONO + 10.25)
    assert bucket.try_acquire(1, MONO + 10.5)


def test_quota_bucket_refill_straddling_expiry_uses_both_rates() -> None:
    bucket = QuotaBucket(fallback_rate=1.0, fallback_burst=10.0)
    bucket.grant(4, 8, MONO + 1, MONO)
    assert bucket.try_acquire(8, MONO)
    # 1 s at 4/s (4 tokens) until expiry, then 2 s at 1/s (2 tokens).
    assert bucket.tokens(MONO + 3) == pytest.approx(6.0)


# -- Endpoints ----------------------------------------------------------------


def test_endpoints_rotate_and_back_off_exponentially() -> None:
    endpoints = Endpoints(["a:1", "b:2", "c:3", "a:1"])
    assert endpoints.addresses == ["a:1", "b:2", "c:3"]
    assert endpoints.current() == "a:1"
    endpoints.failed("a:1", MONO)
    assert endpoints.current() == "b:2"
    assert endpoints.backoff("a:1") == pytest.approx(0.1)
    endpoints.failed("b:2", MONO)
    endpoints.failed("c:3", MONO)
    assert endpoints.next_healthy(MONO) is None
    assert endpoints.wait_time(MONO) == pytest.approx(0.1)
    assert endpoints.next_healthy(MONO + 0.1) == "a:1"
    endpoints.failed("a:1", MONO + 0.1)
    assert endpoints.backoff("a:1") == pytest.approx(0.2)
    assert endpoints.next_healthy(MONO + 0.15) == "b:2"
    at = MONO + 0.1
    for _ in range(10):
        at += endpoints.backoff("a:1")  # each failure after the last backoff ran out
        endpoints.failed("a:1", at)
    assert endpoints.backoff("a:1") == 5.0  # capped


def test_endpoints_count_one_outage_once_however_many_report_it() -> None:
    endpoints = Endpoints(["a:1", "b:2"])
    for reporter in range(5):  # three watches, the reporter and a caller, at once
        endpoints.failed("a:1", MONO + reporter * 0.01)
    assert endpoints.backoff("a:1") == pytest.approx(0.1)
    endpoints.failed("a:1", MONO + 0.1)
    assert endpoints.backoff("a:1") == pytest.approx(0.2)
    assert not endpoints.healthy("a:1", MONO + 0.25)
    assert endpoints.healthy("a:1", MONO + 0.31)


def test_endpoints_success_resets_backoff_and_sticks() -> None:
    endpoints = Endpoints(["a:1", "b:2"])
    endpoints.failed("a:1", MONO)
    endpoints.failed("a:1", MONO + 0.1)
    assert endpoints.backoff("a:1") == pytest.approx(0.2)
    endpoints.succeeded("a:1")
    assert endpoints.backoff("a:1") == 0.0
    assert endpoints.current() == "a:1"
    assert endpoints.next_healthy(MONO) == "a:1"
    endpoints.failed("a:1", MONO)
    assert endpoints.backoff("a:1") == pytest.approx(0.1)  # starts over
    assert endpoints.wait_time(MONO) == 0.0  # b:2 is healthy


def test_endpoints_need_an_address() -> None:
    with pytest.raises(ValueError):
        Endpoints([])


# -- retryable ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "idempotent", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, False, True),
        (grpc.StatusCode.UNAVAILABLE, True, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False, False),
        (grpc.StatusCode.ABORTED, True, True),
        (grpc.StatusCode.ABORTED, False, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False, False),
        (grpc.StatusCode.INVALID_ARGUMENT, True, False),
        (grpc.StatusCode.NOT_FOUND, True, False),
        (grpc.StatusCode.FAILED_PRECONDITION, True, False),
        (grpc.StatusCode.PERMISSION_DENIED, True, False),
        (grpc.StatusCode.UNAUTHENTICATED, True, False),
        (grpc.StatusCode.INTERNAL, True, False),
        (grpc.StatusCode.OK, True, False),
    ],
)
def test_retryable(code: grpc.StatusCode, idempotent: bool, expected: bool) -> None:
    assert retryable(code, idempotent) is expected


def test_quota_buckets_never_grow_past_their_cap() -> None:
    from bulwark._core import MAX_QUOTA_BUCKETS, quota_for

    buckets: dict = {}
    first = quota_for(buckets, ("edge", (("user", "0"),)), 5.0)
    assert quota_for(buckets, ("edge", (("user", "0"),)), 5.0) is first
    for n in range(1, MAX_QUOTA_BUCKETS + 500):
        quota_for(buckets, ("edge", (("user", str(n)),)), 5.0)
    assert len(buckets) == MAX_QUOTA_BUCKETS
    assert ("edge", (("user", "0"),)) not in buckets  # the oldest went first
