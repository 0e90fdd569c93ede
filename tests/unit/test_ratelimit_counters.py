"""Unit tests for bulwark_server.ratelimits.counters: token bucket and fixed window."""

from __future__ import annotations

import json
import math
import random

import pytest

from bulwark_server.ratelimits.counters import FixedWindow, Outcome, TokenBucket

T0 = 1_700_002_800.0  # a multiple of 60 and of 3600, not of 86400


# --- token bucket ---------------------------------------------------------------------


def test_burst_then_sustained_rate() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    for i in range(10):
        outcome = bucket.take(1, T0)
        assert outcome.allowed
        assert outcome.remaining == 9 - i
        assert outcome.retry_after == 0.0
    refused = bucket.take(1, T0)
    assert refused == Outcome(allowed=False, remaining=0, reset_after=10.0, retry_after=1.0)
    # 2.5 tokens after 2.5 s: two pass, the third waits for the missing half token.
    assert bucket.take(1, T0 + 2.5).allowed
    assert bucket.take(1, T0 + 2.5).allowed
    third = bucket.take(1, T0 + 2.5)
    assert not third.allowed
    assert third.retry_after == pytest.approx(0.5)
    assert third.reset_after == pytest.approx(9.5)


def test_a_refused_request_consumes_nothing() -> None:
    bucket = TokenBucket(5, 1.0, T0)
    assert bucket.take(5, T0).allowed
    for _ in range(100):
        assert not bucket.take(1, T0 + 0.5).allowed
    # Had the refusals taken anything, the token due at T0 + 1 would be gone.
    assert bucket.take(1, T0 + 1.0).allowed


def test_refill_never_exceeds_capacity() -> None:
    bucket = TokenBucket(10, 2.0, T0)
    bucket.take(10, T0)
    outcome = bucket.take(0, T0 + 3600)
    assert outcome.remaining == 10
    assert outcome.reset_after == 0.0
    assert bucket.take(10, T0 + 3600).allowed
    assert not bucket.take(1, T0 + 3600).allowed


def test_many_hits_at_once() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    first = bucket.take(4, T0)
    assert (first.allowed, first.remaining, first.reset_after) == (True, 6, 4.0)
    second = bucket.take(7, T0)
    assert not second.allowed
    assert second.remaining == 6
    assert second.retry_after == 1.0
    assert bucket.take(7, T0 + 1.0).allowed
    assert bucket.take(0, T0 + 1.0).remaining == 0


def test_hits_above_capacity_never_pass() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    for later in (0.0, 10.0, 1e6):
        outcome = bucket.take(11, T0 + later)
        assert not outcome.allowed
        # The wait to refill a full bucket, and the bucket is untouched.
        assert outcome.retry_after == 10.0
        assert outcome.remaining == 10


def test_zero_hits_peek_without_charging() -> None:
    bucket = TokenBucket(3, 1.0, T0)
    for _ in range(5):
        peek = bucket.take(0, T0)
        assert peek == Outcome(allowed=True, remaining=3, reset_after=0.0, retry_after=0.0)
    bucket.take(3, T0)
    peek = bucket.take(0, T0)
    assert peek.allowed
    assert peek.remaining == 0
    assert peek.reset_after == 3.0


def test_reset_after_is_time_until_full() -> None:
    bucket = TokenBucket(60, 1.0 / 60, T0)  # 60 per hour, i.e. one a minute
    outcome = bucket.take(30, T0)
    assert outcome.reset_after == pytest.approx(1800.0)
    refused = bucket.take(31, T0)
    assert refused.retry_after == pytest.approx(60.0)


def test_retry_after_waits_are_enough() -> None:
    # Awkward rates: waiting exactly retry_after must always be enough to pass.
    rng = random.Random(7)
    for per_second in (1 / 6, 10 / 60, 7 / 3600, 3.3, 1000 / 86400, 999.0):
        bucket = TokenBucket(5, per_second, T0)
        now = T0
        for _ in range(200):
            hits = rng.randint(1, 5)
            outcome = bucket.take(hits, now)
            if not outcome.allowed:
                now += outcome.retry_after
                assert bucket.take(hits, now).allowed, (per_second, hits)
            now += rng.random() * 0.5 / per_second


def test_remaining_is_never_negative() -> None:
    rng = random.Random(11)
    bucket = TokenBucket(7, 3.7, T0)
    now = T0
    for _ in range(2000):
        now += rng.random() * 0.3
        outcome = bucket.take(rng.randint(0, 9), now)
        assert 0 <= outcome.remaining <= 7
        assert 0.0 <= outcome.reset_after <= 7 / 3.7 + 1e-9
        assert outcome.retry_after >= 0.0
        assert (outcome.retry_after == 0.0) is outcome.allowed


def test_clock_stepping_back_credits_nothing_twice() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    bucket.take(10, T0 + 5)
    assert not bucket.take(1, T0 + 2).allowed
    assert bucket.take(1, T0 + 6).allowed
    assert not bucket.take(1, T0 + 6).allowed


def test_reconfigure_keeps_the_fill_fraction() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    bucket.take(8, T0)  # 2 of 10 left
    bucket.reconfigure(20, 2.0, T0 + 3)  # 5 of 10 at T0 + 3 -> half of 20
    outcome = bucket.take(0, T0 + 3)
    assert outcome.remaining == 10
    assert outcome.reset_after == 5.0  # 10 missing at 2 per second
    bucket.reconfigure(4, 0.5, T0 + 3)
    assert bucket.take(0, T0 + 3).remaining == 2


def test_reconfigure_to_a_lower_rate_refills_the_past_at_the_old_rate() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    bucket.take(10, T0)
    bucket.reconfigure(10, 0.1, T0 + 4)
    assert bucket.take(0, T0 + 4).remaining == 4
    assert bucket.take(0, T0 + 14).remaining == 5


def test_bucket_state_round_trip() -> None:
    bucket = TokenBucket(10, 1.0, T0)
    bucket.take(7, T0 + 0.25)
    state = json.loads(json.dumps(bucket.state()))
    restored = TokenBucket.from_state(10, 1.0, tuple(state))
    assert restored.state() == bucket.state()
    assert restored.take(4, T0 + 1.25) == bucket.take(4, T0 + 1.25)
    # A smaller capacity on restore clamps the tokens.
    smaller = TokenBucket.from_state(2, 1.0, (9.0, T0))
    assert smaller.take(0, T0).remaining == 2


@pytest.mark.parametrize(
    ("capacity", "per_second"), [(0, 1.0), (1, 0.0), (1, -1.0), (1, float("nan"))]
)
def test_bucket_rejects_bad_parameters(capacity: int, per_second: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(capacity, per_second, T0)


def test_negative_hits_are_a_bug() -> None:
    with pytest.raises(ValueError):
        TokenBucket(1, 1.0, T0).take(-1, T0)
    with pytest.raises(ValueError):
        FixedWindow(1, 1.0).take(-1, T0)


# --- fixed window ---------------------------------------------------------------------


def test_windows_align_to_the_epoch() -> None:
    assert T0 % 3600 == 0 and T0 % 86400 != 0
    window = FixedWindow(5, 60)
    assert window.window_start(T0 + 59.999) == T0
    assert window.window_start(T0 + 60) == T0 + 60
    assert FixedWindow(5, 86400).window_start(T0) == T0 - T0 % 86400
    # Started mid-window, the first window still ends on the boundary.
    outcome = window.take(1, T0 + 45.5)
    assert outcome.reset_after == 14.5


def test_window_counts_and_resets_at_the_boundary() -> None:
    window = FixedWindow(3, 60)
    assert [window.take(1, T0 + 10).remaining for _ in range(3)] == [2, 1, 0]
    refused = window.take(1, T0 + 20)
    assert refused == Outcome(allowed=False, remaining=0, reset_after=40.0, retry_after=40.0)
    assert not window.take(1, T0 + 59.999).allowed
    fresh = window.take(1, T0 + 60)
    assert fresh == Outcome(allowed=True, remaining=2, reset_after=60.0, retry_after=0.0)


def test_window_keeps_counting_past_the_limit() -> None:
    # Envoy's ratelimit increments even when over the limit.
    window = FixedWindow(2, 60)
    for _ in range(5):
        window.take(1, T0)
    assert window.state() == (T0, 5)
    # Raising the limit to 4 does not admit anyone: 5 were already counted.
    window.reconfigure(4)
    peek = window.take(0, T0 + 1)
    assert not peek.allowed
    assert peek.remaining == 0
    assert peek.retry_after == 59.0


def test_window_hits_at_once_and_above_the_limit() -> None:
    window = FixedWindow(10, 1)
    assert window.take(10, T0).allowed
    assert not window.take(1, T0 + 0.5).allowed
    assert not window.take(11, T0 + 1).allowed
    assert window.take(10, T0 + 2).allowed


def test_window_peek_does_not_charge() -> None:
    window = FixedWindow(2, 60)
    for _ in range(5):
        assert window.take(0, T0).remaining == 2
    assert window.take(2, T0).allowed
    assert window.take(0, T0).allowed


def test_window_ignores_a_clock_stepping_back_into_an_old_window() -> None:
    window = FixedWindow(2, 60)
    window.take(2, T0 + 60)
    assert not window.take(1, T0 + 59).allowed
    assert window.state() == (T0 + 60, 3)


def test_window_reconfigure_lowers_the_limit() -> None:
    window = FixedWindow(10, 60)
    window.take(5, T0)
    window.reconfigure(5)
    assert not window.take(1, T0).allowed


def test_window_state_round_trip() -> None:
    window = FixedWindow(10, 60)
    window.take(4, T0 + 30)
    state = json.loads(json.dumps(window.state()))
    restored = FixedWindow.from_state(10, 60, tuple(state))
    assert restored.state() == window.state()
    assert restored.take(6, T0 + 40) == window.take(6, T0 + 40)
    # Restored after the window ended, counting starts again.
    late = FixedWindow.from_state(10, 60, (T0, 10))
    assert late.take(1, T0 + 61).remaining == 9
    # A fresh window's state is JSON-safe too.
    assert json.loads(json.dumps(FixedWindow(1, 1).state())) == [0.0, 0]


@pytest.mark.parametrize(("limit", "unit"), [(0, 60), (1, 0), (1, -1), (1, float("inf"))])
def test_window_rejects_bad_parameters(limit: int, unit: float) -> None:
    with pytest.raises(ValueError):
        FixedWindow(limit, unit)


def test_blocked_refuses_any_hits_and_reports_the_end_of_the_unit() -> None:
    from bulwark_server.ratelimits.counters import blocked

    outcome = blocked(60.0, 60_015.0)
    assert not outcome.allowed
    assert outcome.remaining == 0
    assert outcome.reset_after == pytest.approx(45.0)
    assert math.isinf(outcome.retry_after)
