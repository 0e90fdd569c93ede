"""Unit tests for bulwark_server.breakers.config: resilience4j defaults and validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers.config import normalize_config, seconds
from bulwark_server.errors import InvalidArgument

COUNT = breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED
TIME = breaker_pb2.SLIDING_WINDOW_TYPE_TIME_BASED


def test_defaults_fill_every_unset_field() -> None:
    out = normalize_config(breaker_pb2.BreakerConfig())
    assert out.failure_rate_threshold == 50.0
    assert out.slow_call_rate_threshold == 100.0
    assert out.slow_call_duration_threshold == Duration(seconds=60)
    assert out.sliding_window_type == COUNT
    assert out.sliding_window_size == 100
    assert out.minimum_number_of_calls == 100
    assert out.wait_duration_in_open_state == Duration(seconds=60)
    assert out.permitted_number_of_calls_in_half_open_state == 10
    assert out.max_wait_duration_in_half_open_state == Duration()
    assert out.automatic_transition_from_open_to_half_open_enabled is False
    for name in (
        "failure_rate_threshold",
        "slow_call_rate_threshold",
        "slow_call_duration_threshold",
        "sliding_window_size",
        "minimum_number_of_calls",
        "wait_duration_in_open_state",
        "permitted_number_of_calls_in_half_open_state",
        "max_wait_duration_in_half_open_state",
    ):
        assert out.HasField(name), name


def test_given_values_are_kept() -> None:
    given = breaker_pb2.BreakerConfig(
        failure_rate_threshold=25.0,
        slow_call_rate_threshold=80.0,
        slow_call_duration_threshold=Duration(seconds=2, nanos=500_000_000),
        sliding_window_type=TIME,
        sliding_window_size=30,
        minimum_number_of_calls=5,
        wait_duration_in_open_state=Duration(seconds=10),
        permitted_number_of_calls_in_half_open_state=3,
        max_wait_duration_in_half_open_state=Duration(seconds=7),
        automatic_transition_from_open_to_half_open_enabled=True,
    )
    assert normalize_config(given) == given


def test_explicit_zero_is_not_mistaken_for_unset() -> None:
    # proto3 optional: an explicit 0 must be rejected, not replaced by the default.
    with pytest.raises(InvalidArgument) as err:
        normalize_config(breaker_pb2.BreakerConfig(minimum_number_of_calls=0))
    assert err.value.field == "config.minimum_number_of_calls"


def test_unspecified_window_type_becomes_count_based() -> None:
    out = normalize_config(
        breaker_pb2.BreakerConfig(sliding_window_type=breaker_pb2.SLIDING_WINDOW_TYPE_UNSPECIFIED)
    )
    assert out.sliding_window_type == COUNT


def test_returns_a_new_message_and_leaves_the_input_alone() -> None:
    given = breaker_pb2.BreakerConfig(failure_rate_threshold=30.0)
    before = given.SerializeToString()
    out = normalize_config(given)
    assert out is not given
    assert given.SerializeToString() == before
    assert not given.HasField("sliding_window_size")
    out.slow_call_duration_threshold.seconds = 5
    assert not given.HasField("slow_call_duration_threshold")


def test_input_durations_are_copied_not_shared() -> None:
    given = breaker_pb2.BreakerConfig(wait_duration_in_open_state=Duration(seconds=9))
    out = normalize_config(given)
    out.wait_duration_in_open_state.seconds = 1
    assert given.wait_duration_in_open_state.seconds == 9


@pytest.mark.parametrize(
    "fields",
    [
        {"failure_rate_threshold": 100.0},
        {"failure_rate_threshold": 0.5},
        {"slow_call_rate_threshold": 100.0},
        {"slow_call_duration_threshold": Duration(nanos=1_000_000)},
        {"slow_call_duration_threshold": Duration(seconds=30 * 86400)},
        {"sliding_window_type": COUNT, "sliding_window_size": 1},
        {"sliding_window_type": COUNT, "sliding_window_size": 10_000},
        {"sliding_window_type": TIME, "sliding_window_size": 3_600},
        {"minimum_number_of_calls": 1},
        {"minimum_number_of_calls": 10_000},
        {"wait_duration_in_open_state": Duration(nanos=1_000_000)},
        {"wait_duration_in_open_state": Duration(seconds=86_400)},
        {"permitted_number_of_calls_in_half_open_state": 1},
        {"permitted_number_of_calls_in_half_open_state": 1_000},
        {"max_wait_duration_in_half_open_state": Duration(seconds=86_400)},
    ],
)
def test_boundary_values_are_accepted(fields: dict[str, Any]) -> None:
    out = normalize_config(breaker_pb2.BreakerConfig(**fields))
    for name, value in fields.items():
        assert getattr(out, name) == value


INVALID = [
    ({"failure_rate_threshold": 0.0}, "config.failure_rate_threshold"),
    ({"failure_rate_threshold": -5.0}, "config.failure_rate_threshold"),
    ({"failure_rate_threshold": 100.5}, "config.failure_rate_threshold"),
    ({"failure_rate_threshold": math.nan}, "config.failure_rate_threshold"),
    ({"failure_rate_threshold": math.inf}, "config.failure_rate_threshold"),
    ({"slow_call_rate_threshold": 0.0}, "config.slow_call_rate_threshold"),
    ({"slow_call_rate_threshold": 101.0}, "config.slow_call_rate_threshold"),
    ({"slow_call_rate_threshold": math.nan}, "config.slow_call_rate_threshold"),
    ({"slow_call_duration_threshold": Duration()}, "config.slow_call_duration_threshold"),
    (
        {"slow_call_duration_threshold": Duration(nanos=999_999)},
        "config.slow_call_duration_threshold",
    ),
    ({"slow_call_duration_threshold": Duration(seconds=-1)}, "config.slow_call_duration_threshold"),
    (
        {"slow_call_duration_threshold": Duration(seconds=1, nanos=-1)},
        "config.slow_call_duration_threshold",
    ),
    ({"sliding_window_type": 7}, "config.sliding_window_type"),
    ({"sliding_window_type": -1}, "config.sliding_window_type"),
    ({"sliding_window_size": 0}, "config.sliding_window_size"),
    ({"sliding_window_size": -3}, "config.sliding_window_size"),
    ({"sliding_window_type": COUNT, "sliding_window_size": 10_001}, "config.sliding_window_size"),
    ({"sliding_window_type": TIME, "sliding_window_size": 3_601}, "config.sliding_window_size"),
    ({"sliding_window_type": TIME, "sliding_window_size": 0}, "config.sliding_window_size"),
    ({"minimum_number_of_calls": 0}, "config.minimum_number_of_calls"),
    ({"minimum_number_of_calls": 10_001}, "config.minimum_number_of_calls"),
    ({"wait_duration_in_open_state": Duration()}, "config.wait_duration_in_open_state"),
    (
        {"wait_duration_in_open_state": Duration(nanos=999_999)},
        "config.wait_duration_in_open_state",
    ),
    (
        {"wait_duration_in_open_state": Duration(seconds=86_400, nanos=1)},
        "config.wait_duration_in_open_state",
    ),
    (
        {"permitted_number_of_calls_in_half_open_state": 0},
        "config.permitted_number_of_calls_in_half_open_state",
    ),
    (
        {"permitted_number_of_calls_in_half_open_state": 1_001},
        "config.permitted_number_of_calls_in_half_open_state",
    ),
    (
        {"max_wait_duration_in_half_open_state": Duration(seconds=-1)},
        "config.max_wait_duration_in_half_open_state",
    ),
    (
        {"max_wait_duration_in_half_open_state": Duration(seconds=86_401)},
        "config.max_wait_duration_in_half_open_state",
    ),
]


@pytest.mark.parametrize(("fields", "field"), INVALID)
def test_invalid_values_name_their_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalize_config(breaker_pb2.BreakerConfig(**fields))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_time_window_limit_differs_from_count_window_limit() -> None:
    # 3601 is fine as a number of calls but too long as a number of seconds.
    assert normalize_config(breaker_pb2.BreakerConfig(sliding_window_size=3_601))
    with pytest.raises(InvalidArgument):
        normalize_config(
            breaker_pb2.BreakerConfig(sliding_window_type=TIME, sliding_window_size=3_601)
        )


def test_max_wait_in_half_open_may_be_explicitly_zero() -> None:
    out = normalize_config(
        breaker_pb2.BreakerConfig(max_wait_duration_in_half_open_state=Duration())
    )
    assert seconds(out.max_wait_duration_in_half_open_state) == 0.0


def test_seconds_adds_nanos() -> None:
    assert seconds(Duration(seconds=1, nanos=500_000_000)) == 1.5
    assert seconds(Duration(nanos=1_000_000)) == pytest.approx(0.001)
    assert seconds(Duration()) == 0.0
