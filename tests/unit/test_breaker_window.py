"""Unit tests for bulwark_server.breakers.window: count- and time-based sliding windows."""

from __future__ import annotations

import random

import pytest

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers.window import SlidingWindow

COUNT = breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED
TIME = breaker_pb2.SLIDING_WINDOW_TYPE_TIME_BASED
T0 = 1_700_000_000.0


def test_count_window_rates_in_percent() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(10, 5, 2, T0)
    stats = window.stats(T0, 10)
    assert (stats.calls, stats.failures, stats.slow_calls) == (10, 5, 2)
    assert stats.failure_rate == 50.0
    assert stats.slow_call_rate == 20.0


def test_below_minimum_calls_rates_are_not_evaluated() -> None:
    window = SlidingWindow(COUNT, 100)
    window.add(99, 99, 99, T0)
    stats = window.stats(T0, 100)
    assert stats.calls == 99
    assert stats.failures == 99
    assert stats.failure_rate == -1.0
    assert stats.slow_call_rate == -1.0
    window.add(1, 0, 0, T0)
    assert window.stats(T0, 100).failure_rate == 99.0


def test_empty_window_is_not_evaluated() -> None:
    stats = SlidingWindow(COUNT, 10).stats(T0, 1)
    assert stats.calls == 0
    assert stats.failure_rate == -1.0


def test_count_window_caps_minimum_at_its_size() -> None:
    # resilience4j: minimumNumberOfCalls larger than a count window acts as the window size.
    window = SlidingWindow(COUNT, 10)
    window.add(10, 3, 0, T0)
    assert window.stats(T0, 100).failure_rate == 30.0


def test_time_window_does_not_cap_minimum() -> None:
    window = SlidingWindow(TIME, 10)
    window.add(10, 3, 0, T0)
    assert window.stats(T0, 100).failure_rate == -1.0
    assert window.stats(T0, 10).failure_rate == 30.0


def test_count_window_keeps_only_the_last_size_calls() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(5, 5, 5, T0)
    window.add(10, 0, 0, T0 + 1)
    stats = window.stats(T0 + 1, 10)
    assert (stats.calls, stats.failures, stats.slow_calls) == (10, 0, 0)
    assert window.to_buckets() == [(T0 + 1, 10, 0, 0)]


def test_count_window_evicts_part_of_the_oldest_bucket() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(10, 10, 0, T0)
    window.add(5, 0, 0, T0 + 1)
    stats = window.stats(T0 + 1, 10)
    assert (stats.calls, stats.failures) == (10, 5)
    assert window.to_buckets() == [(T0, 5, 5, 0), (T0 + 1, 5, 0, 0)]


def test_partial_eviction_scales_failures_and_slow_calls_in_proportion() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(10, 5, 3, T0)
    window.add(4, 0, 0, T0 + 1)
    # The oldest bucket keeps 6 of 10 calls: 5*0.6 = 3 failures, 3*0.6 = 1.8 -> 2 slow.
    assert window.to_buckets() == [(T0, 6, 3, 2), (T0 + 1, 4, 0, 0)]
    stats = window.stats(T0 + 1, 10)
    assert (stats.calls, stats.failures, stats.slow_calls) == (10, 3, 2)


def test_a_batch_larger_than_the_window_is_truncated_in_proportion() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(100, 50, 100, T0)
    stats = window.stats(T0, 10)
    assert (stats.calls, stats.failures, stats.slow_calls) == (10, 5, 10)


def test_count_window_totals_stay_exact_under_random_batches() -> None:
    rng = random.Random(7)
    window = SlidingWindow(COUNT, 37)
    added = 0
    for i in range(2_000):
        calls = rng.randint(0, 60)
        failures = rng.randint(0, calls)
        slow = rng.randint(0, calls)
        window.add(calls, failures, slow, T0 + i)
        added += calls
        stats = window.stats(T0 + i, 1)
        buckets = window.to_buckets()
        assert stats.calls == min(added, 37)
        assert stats.calls == sum(b[1] for b in buckets)
        assert stats.failures == sum(b[2] for b in buckets)
        assert stats.slow_calls == sum(b[3] for b in buckets)
        for _, c, f, s in buckets:
            assert c > 0
            assert 0 <= f <= c
            assert 0 <= s <= c


def test_time_window_groups_calls_by_whole_second() -> None:
    window = SlidingWindow(TIME, 10)
    window.add(2, 1, 0, T0 + 0.2)
    window.add(3, 0, 1, T0 + 0.9)
    window.add(1, 1, 1, T0 + 1.0)
    assert window.to_buckets() == [(T0, 5, 1, 1), (T0 + 1, 1, 1, 1)]


def test_time_window_drops_buckets_older_than_size_seconds() -> None:
    window = SlidingWindow(TIME, 10)
    window.add(5, 5, 0, T0 + 0.5)
    window.add(5, 0, 0, T0 + 5)
    assert window.stats(T0 + 9.9, 1).calls == 10
    # At T0+10 the window covers seconds > T0, so second T0 no longer counts.
    stats = window.stats(T0 + 10, 1)
    assert (stats.calls, stats.failures) == (5, 0)
    assert window.stats(T0 + 15, 1).calls == 0


def test_time_window_stats_do_not_forget_buckets() -> None:
    # A read at a later clock must not lose buckets that an earlier clock still counts.
    window = SlidingWindow(TIME, 10)
    window.add(5, 5, 0, T0)
    assert window.stats(T0 + 60, 1).calls == 0
    assert window.stats(T0 + 1, 1).calls == 5


def test_time_window_add_prunes_expired_buckets() -> None:
    window = SlidingWindow(TIME, 10)
    window.add(5, 5, 0, T0)
    window.add(1, 0, 0, T0 + 30)
    assert window.to_buckets() == [(T0 + 30, 1, 0, 0)]


def test_time_window_places_a_late_report_in_its_own_second() -> None:
    window = SlidingWindow(TIME, 10)
    window.add(1, 0, 0, T0 + 5)
    window.add(2, 2, 0, T0 + 3.5)
    window.add(4, 0, 0, T0 + 3.1)
    assert window.to_buckets() == [(T0 + 3, 6, 2, 0), (T0 + 5, 1, 0, 0)]
    assert window.stats(T0 + 5, 1).calls == 7


def test_reset_forgets_everything() -> None:
    for kind in (COUNT, TIME):
        window = SlidingWindow(kind, 10)
        window.add(10, 10, 10, T0)
        window.reset()
        assert window.to_buckets() == []
        stats = window.stats(T0, 1)
        assert (stats.calls, stats.failures, stats.slow_calls) == (0, 0, 0)
        window.add(1, 1, 0, T0)
        assert window.stats(T0, 1).calls == 1


@pytest.mark.parametrize("kind", [COUNT, TIME])
def test_buckets_round_trip(kind: int) -> None:
    window = SlidingWindow(kind, 10)
    window.add(3, 1, 0, T0)
    window.add(4, 2, 1, T0 + 2)
    restored = SlidingWindow.from_buckets(kind, 10, window.to_buckets())
    assert restored.to_buckets() == window.to_buckets()
    assert restored.stats(T0 + 2, 1) == window.stats(T0 + 2, 1)


def test_from_buckets_with_a_smaller_count_window_evicts_the_oldest() -> None:
    restored = SlidingWindow.from_buckets(COUNT, 5, [(T0, 5, 5, 0), (T0 + 1, 3, 0, 0)])
    stats = restored.stats(T0 + 1, 1)
    assert (stats.calls, stats.failures) == (5, 2)


def test_zero_calls_add_nothing() -> None:
    window = SlidingWindow(COUNT, 10)
    window.add(0, 0, 0, T0)
    assert window.to_buckets() == []


@pytest.mark.parametrize(
    ("calls", "failures", "slow"), [(-1, 0, 0), (2, 3, 0), (2, 0, 3), (2, -1, 0), (2, 0, -1)]
)
def test_inconsistent_batches_are_rejected(calls: int, failures: int, slow: int) -> None:
    window = SlidingWindow(COUNT, 10)
    with pytest.raises(ValueError):
        window.add(calls, failures, slow, T0)
    assert window.to_buckets() == []


def test_constructor_rejects_bad_kind_and_size() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(breaker_pb2.SLIDING_WINDOW_TYPE_UNSPECIFIED, 10)
    with pytest.raises(ValueError):
        SlidingWindow(COUNT, 0)
