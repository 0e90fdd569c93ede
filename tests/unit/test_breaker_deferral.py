"""Unit tests for deferral.must_write: which changed windows a checkpoint round writes."""

from __future__ import annotations

import pytest

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import normalize_config
from bulwark_server.breakers.deferral import NEAR, Saved, must_write, near_threshold

T0 = 1_700_000_000.0
MAX = 10.0
CONFIG = normalize_config(
    breaker_pb2.BreakerConfig(failure_rate_threshold=50, slow_call_rate_threshold=80)
)


def clean(calls: int = 100, at: float = T0) -> Saved:
    return Saved(calls=calls, failures=0, slow=0, at=at)


def test_a_window_never_written_is_written():
    assert must_write(None, False, CONFIG, T0, MAX)


def test_failures_slow_calls_or_a_reset_since_the_checkpoint_are_written():
    assert must_write(clean(), True, CONFIG, T0 + 0.5, MAX)


def test_successes_only_far_below_the_thresholds_wait():
    assert not must_write(clean(), False, CONFIG, T0 + 1, MAX)
    assert not must_write(clean(calls=0), False, CONFIG, T0 + MAX - 0.001, MAX)


def test_a_checkpoint_max_deferral_old_is_rewritten():
    assert must_write(clean(), False, CONFIG, T0 + MAX, MAX)
    assert not must_write(clean(), False, CONFIG, T0 + MAX - 0.001, MAX)


@pytest.mark.parametrize(
    ("failures", "slow", "near"),
    [
        (24, 0, False),  # 24% < 25% (half of 50%)
        (25, 0, True),  # exactly half the failure threshold
        (0, 39, False),  # 39% < 40% (half of 80%)
        (0, 40, True),
        (60, 0, True),  # over the threshold itself
    ],
)
def test_near_a_threshold_is_half_of_it_on_raw_counts(failures: int, slow: int, near: bool):
    saved = Saved(calls=100, failures=failures, slow=slow, at=T0)
    assert NEAR == 0.5
    assert near_threshold(saved, CONFIG) is near
    assert must_write(saved, False, CONFIG, T0 + 1, MAX) is near


def test_below_the_minimum_number_of_calls_the_raw_rate_still_counts():
    # 2 of 3 calls failed: no rate is evaluated yet, but a few lost successes would matter.
    assert must_write(Saved(calls=3, failures=2, slow=0, at=T0), False, CONFIG, T0 + 1, MAX)
