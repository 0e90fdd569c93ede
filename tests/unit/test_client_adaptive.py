"""Unit tests for bulwark._adaptive: the Gradient2 concurrency limit and the SRE-book throttle.

Deterministic: time is a number handed in, randomness a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random

import pytest

from bulwark._adaptive import (
    NETFLIX_GRADIENT2,
    AdaptiveThrottle,
    Gradient2Limiter,
    Gradient2Settings,
    ThrottleSettings,
)

FAST = 0.010  # a healthy downstream's RTT, seconds
SLOW = 10 * FAST  # the same downstream overloaded

# A small floor, as the clients' own tests use.
SMALL = Gradient2Settings(long_window=600)  # Netflix's long window, without its floor


def saturate(limiter: Gradient2Limiter, rtt: float, samples: int) -> list[int]:
    """Feed ``samples`` calls of ``rtt`` with the limit in use (not app-limited)."""
    limits = []
    for _ in range(samples):
        limiter.sample(rtt, limiter.limit)
        limits.append(limiter.limit)
    return limits


def at_max(settings: Gradient2Settings = SMALL) -> Gradient2Limiter:
    limiter = Gradient2Limiter(settings)
    saturate(limiter, FAST, 300)
    assert limiter.limit == settings.max_limit
    return limiter


# --- Gradient2 -------------------------------------------------------------------------


def test_defaults_are_gradient2s_but_the_floor_and_the_long_window() -> None:
    settings = Gradient2Settings()
    assert (settings.initial_limit, settings.min_limit, settings.max_limit) == (20, 1, 200)
    assert (settings.smoothing, settings.rtt_tolerance) == (0.2, 1.5)
    assert (settings.long_window, settings.queue_size) == (6_000, 4.0)
    assert Gradient2Limiter().limit == 20
    netflix = NETFLIX_GRADIENT2
    assert (netflix.initial_limit, netflix.min_limit, netflix.max_limit) == (20, 20, 200)
    assert (netflix.smoothing, netflix.rtt_tolerance) == (0.2, 1.5)
    assert (netflix.long_window, netflix.queue_size) == (600, 4.0)


def test_reconfigure_keeps_calls_in_flight_and_clamps_the_estimate() -> None:
    limiter = Gradient2Limiter(Gradient2Settings(initial_limit=50, max_limit=100))
    permits = [limiter.try_acquire(0.0) for _ in range(3)]
    limiter.sample(0.010, 40)
    long_rtt = limiter.long_rtt
    limiter.reconfigure(Gradient2Settings(initial_limit=5, max_limit=10))
    assert (limiter.limit, limiter.in_flight, limiter.long_rtt) == (10, 3, long_rtt)
    for permit in permits:
        assert permit is not None
        limiter.forget(permit)
    assert limiter.in_flight == 0
    limiter.reconfigure(Gradient2Settings(initial_limit=40, min_limit=30, max_limit=60))
    assert limiter.limit == 30


def test_steady_rtt_grows_to_max_and_stays_there() -> None:
    limiter = Gradient2Limiter(SMALL)
    limits = saturate(limiter, FAST, 400)
    # Gradient 1 each step: +queue_size * smoothing = +0.8, so 20 -> 200 takes 225 samples.
    assert limits == sorted(limits)
    assert limits[200] < 200
    assert limits[230] == 200
    assert max(limits) == 200


def test_app_limited_calls_do_not_grow_the_limit() -> None:
    limiter = Gradient2Limiter(SMALL)
    for _ in range(300):
        limiter.sample(FAST, in_flight=9)  # below limit / 2 = 10
    assert limiter.limit == 20
    assert limiter.long_rtt == pytest.approx(FAST)


def test_tenfold_rtt_brings_the_limit_down_quickly() -> None:
    limiter = at_max()
    limits = saturate(limiter, SLOW, 45)
    # Gradient floors at 0.5: limit -> 0.9 * limit + 0.8 per sample, whose fixed point is
    # 2 * queue_size = 8; from 200 it is under 10 within about 40 samples.
    assert limits[0] < 200
    assert limits[-1] <= 10
    assert limits == sorted(limits, reverse=True)


def test_tenfold_rtt_reaches_netflixs_floor() -> None:
    limiter = at_max(NETFLIX_GRADIENT2)
    limits = saturate(limiter, SLOW, 30)
    assert limits[-1] == 20
    assert min(limits) == 20


def test_with_the_client_defaults_a_tenfold_rtt_settles_at_gradient2s_fixed_point() -> None:
    limiter = at_max(Gradient2Settings())
    limits = saturate(limiter, SLOW, 80)
    # No floor of 20: limit * 0.9 + 0.8 settles at 2 * queue_size = 8.
    assert limits[-1] == 8
    assert min(limits) == 8


def test_limit_recovers_when_rtt_returns() -> None:
    limiter = at_max()
    saturate(limiter, SLOW, 60)
    assert limiter.limit <= 10
    limits = saturate(limiter, FAST, 260)
    assert limits[19] >= 20
    assert limits[-1] == 200


def test_stale_long_rtt_is_decayed_after_prolonged_load() -> None:
    limiter = Gradient2Limiter(SMALL)
    for _ in range(3000):
        limiter.sample(SLOW, in_flight=1)
    assert limiter.long_rtt == pytest.approx(SLOW)
    for _ in range(40):
        limiter.sample(FAST, in_flight=1)
    # The exponential average alone (factor 2/601) would still be near 0.088 s.
    assert limiter.long_rtt is not None and limiter.long_rtt <= 2 * FAST * 1.05


def test_long_rtt_is_a_plain_mean_over_the_first_ten_samples() -> None:
    limiter = Gradient2Limiter(SMALL)
    for ms in range(1, 11):
        limiter.sample(ms / 1000, in_flight=1)
    assert limiter.long_rtt == pytest.approx(0.0055)
    limiter.sample(0.0055 + 0.601, in_flight=1)
    assert limiter.long_rtt == pytest.approx(0.0055 + 0.002)


def test_a_dropped_call_halves_one_step_and_is_not_averaged() -> None:
    limiter = Gradient2Limiter(Gradient2Settings(min_limit=1, initial_limit=100))
    limiter.sample(FAST, in_flight=100)
    before = limiter.estimate
    limiter.sample(5.0, in_flight=100, dropped=True)
    assert limiter.estimate == pytest.approx(before * 0.9)
    assert limiter.long_rtt == pytest.approx(FAST)


def test_a_dropped_call_while_app_limited_changes_nothing() -> None:
    limiter = Gradient2Limiter(SMALL)
    limiter.sample(FAST, in_flight=1, dropped=True)
    assert limiter.estimate == 20.0
    assert limiter.long_rtt is None


def test_acquire_refuses_at_the_limit_and_release_frees() -> None:
    limiter = Gradient2Limiter(Gradient2Settings(min_limit=3, initial_limit=3, max_limit=3))
    permits = [limiter.try_acquire(0.0) for _ in range(3)]
    assert [p.in_flight for p in permits if p is not None] == [1, 2, 3]
    assert limiter.in_flight == 3
    assert limiter.try_acquire(0.0) is None
    assert limiter.in_flight == 3
    first = permits[0]
    assert first is not None
    limiter.release(first, 0.25)
    assert limiter.in_flight == 2
    assert limiter.long_rtt == pytest.approx(0.25)  # measured from the permit's start
    assert limiter.try_acquire(0.3) is not None
    assert limiter.try_acquire(0.3) is None


def test_forget_frees_the_slot_without_a_sample() -> None:
    limiter = Gradient2Limiter(SMALL)
    permit = limiter.try_acquire(1.0)
    assert permit is not None
    limiter.forget(permit)
    assert limiter.in_flight == 0
    assert limiter.long_rtt is None


def test_a_permit_is_given_back_once_and_only_to_its_limiter() -> None:
    limiter, other = Gradient2Limiter(SMALL), Gradient2Limiter(SMALL)
    permit = limiter.try_acquire(0.0)
    assert permit is not None
    with pytest.raises(ValueError, match="another limiter"):
        other.release(permit, 1.0)
    limiter.release(permit, 1.0)
    with pytest.raises(ValueError, match="already released"):
        limiter.forget(permit)
    assert (limiter.in_flight, other.in_flight) == (0, 0)


def test_bounds_hold_under_noisy_samples() -> None:
    settings = Gradient2Settings(min_limit=10, initial_limit=20, max_limit=50)
    limiter = Gradient2Limiter(settings)
    rng = random.Random(7)
    seen = set()
    for phase in range(10):
        base = SLOW if phase % 2 else FAST
        for _ in range(300):
            in_flight = rng.randint(0, limiter.limit + 5)
            dropped = rng.random() < 0.02
            limiter.sample(base * rng.uniform(0.7, 1.4), in_flight, dropped)
            assert 10 <= limiter.estimate <= 50
            seen.add(limiter.limit)
    # Both bounds are reached, so both clamps were exercised.
    assert min(seen) == 10 and max(seen) == 50


def test_a_zero_rtt_is_measured_and_a_bad_one_refused() -> None:
    limiter = Gradient2Limiter(SMALL)
    limiter.sample(0.0, in_flight=20)
    assert limiter.long_rtt is not None and 0 < limiter.long_rtt < 1e-6
    assert limiter.limit == 20
    for bad in (-0.001, math.nan, math.inf):
        with pytest.raises(ValueError, match="rtt"):
            limiter.sample(bad, in_flight=1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_limit", 0),
        ("min_limit", 1.5),
        ("max_limit", 0),
        ("initial_limit", 201),
        ("initial_limit", 0),
        ("smoothing", 0.0),
        ("smoothing", 1.5),
        ("smoothing", math.nan),
        ("rtt_tolerance", 0.9),
        ("rtt_tolerance", math.inf),
        ("long_window", 0),
        ("queue_size", -1.0),
    ],
)
def test_bad_gradient2_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        Gradient2Settings(**{field: value})


# --- Adaptive throttling -----------------------------------------------------------------


def never(_: float = 0.0) -> float:
    """A random() that always draws the smallest value: rejects whenever p > 0."""
    return 0.0


def test_all_accepted_never_rejects() -> None:
    throttle = AdaptiveThrottle(random=never)
    for i in range(1000):
        now = i / 10
        assert not throttle.should_reject(now)
        throttle.record(now, accepted=True)
    assert throttle.reject_probability(100.0) == 0.0
    assert throttle.counts(100.0) == (1000, 1000)


def test_a_cold_burst_is_not_throttled_while_in_flight() -> None:
    # Sent calls count when answered: 100 calls in flight are not 100 refusals.
    throttle = AdaptiveThrottle(random=never)
    assert not any(throttle.should_reject(0.0) for _ in range(100))
    assert throttle.counts(0.0) == (0, 0)


def test_refusals_drive_the_probability_to_n_over_n_plus_one() -> None:
    throttle = AdaptiveThrottle()
    for n in range(1, 50):
        throttle.record(1.0, accepted=False)
        assert throttle.reject_probability(1.0) == pytest.approx(n / (n + 1))


def test_rejections_happen_at_the_stated_rate_when_everything_is_refused() -> None:
    throttle = AdaptiveThrottle(random=random.Random(1).random)
    expected = variance = 0.0
    rejected = 0
    for i in range(2000):
        now = i / 100
        p = throttle.reject_probability(now)
        expected += p
        variance += p * (1 - p)
        if throttle.should_reject(now):
            rejected += 1
        else:
            throttle.record(now, accepted=False)
    # Every attempt, rejected or sent-and-refused, is a request and none an accept.
    assert throttle.counts(20.0) == (2000, 0)
    assert abs(rejected - expected) <= 4 * math.sqrt(variance) + 1
    assert rejected > 1950


def test_a_rejected_attempt_counts_as_a_request_only() -> None:
    throttle = AdaptiveThrottle(random=never)
    throttle.record(0.0, accepted=False)
    assert throttle.should_reject(0.0)
    assert throttle.counts(0.0) == (2, 0)


def test_random_draws_are_compared_against_the_probability() -> None:
    def throttle_drawing(value: float) -> AdaptiveThrottle:
        throttle = AdaptiveThrottle(random=lambda: value)
        for _ in range(3):
            throttle.record(0.0, accepted=False)  # p = 3/4
        return throttle

    assert throttle_drawing(0.74).should_reject(0.0)
    kept = throttle_drawing(0.76)
    assert not kept.should_reject(0.0)
    assert kept.counts(0.0) == (3, 0)  # not rejected: left for record()


def test_k_is_honoured() -> None:
    def probability(k: float) -> float:
        throttle = AdaptiveThrottle(ThrottleSettings(k=k))
        for i in range(100):
            throttle.record(0.0, accepted=i < 30)
        return throttle.reject_probability(0.0)

    assert probability(2.0) == pytest.approx(40 / 101)
    assert probability(3.0) == pytest.approx(10 / 101)
    assert probability(4.0) == 0.0


def simulate(k: float, attempts: int, capacity: int, seconds: int) -> tuple[float, float]:
    """A downstream that accepts ``capacity`` calls a second and refuses the rest.

    Returns, over the last ``seconds // 2`` seconds: the fraction of attempts rejected
    locally and the calls actually sent per second.
    """
    throttle = AdaptiveThrottle(ThrottleSettings(k=k), random=random.Random(42).random)
    rejected = sent = total = 0
    for second in range(seconds):
        accepted = 0
        measuring = second >= seconds // 2
        for i in range(attempts):
            now = second + i / attempts
            if throttle.should_reject(now):
                rejected += measuring
                continue
            ok = accepted < capacity
            accepted += ok
            throttle.record(now, ok)
            sent += measuring
        total += attempts * measuring
    return rejected / total, sent / (seconds - seconds // 2)


@pytest.mark.parametrize("k", [2.0, 3.0])
def test_steady_overload_is_throttled_to_k_times_capacity(k: float) -> None:
    # 50 attempts/s against 5 accepted/s: p = (50 - 5k) / 51 and about 5k calls/s go out.
    rejected, sent_per_second = simulate(k, attempts=50, capacity=5, seconds=240)
    assert rejected == pytest.approx((50 - 5 * k) / 51, abs=0.03)
    assert sent_per_second == pytest.approx(5 * k, rel=0.1)


def test_refusals_leave_the_window_and_the_probability_returns_to_zero() -> None:
    throttle = AdaptiveThrottle()
    for _ in range(100):
        throttle.record(0.5, accepted=False)
    for _ in range(20):
        throttle.record(1.5, accepted=True)
    assert throttle.reject_probability(119.9) == pytest.approx((120 - 40) / 121)
    assert throttle.reject_probability(120.0) == 0.0  # second 0 has left the window
    assert throttle.counts(120.0) == (20, 20)
    assert throttle.counts(1000.0) == (0, 0)


def test_memory_is_bounded_by_the_window() -> None:
    throttle = AdaptiveThrottle(ThrottleSettings(window_seconds=10))
    for tick in range(30_000):
        throttle.record(tick / 3, accepted=tick % 2 == 0)
    assert throttle.bucket_count == 10
    assert len(throttle._requests) == len(throttle._accepts) == 10
    # Only the last 10 seconds (30 records, every other one accepted) are counted.
    assert throttle.counts(9999.9) == (30, 15)
    assert AdaptiveThrottle().bucket_count == 120


def test_a_stale_now_does_not_erase_newer_history() -> None:
    throttle = AdaptiveThrottle()
    throttle.record(500.0, accepted=False)
    throttle.record(10.0, accepted=False)
    assert throttle.counts(500.0) == (2, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("k", 0.5), ("k", math.nan), ("window_seconds", 0), ("window_seconds", 1.5)],
)
def test_bad_throttle_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        ThrottleSettings(**{field: value})
