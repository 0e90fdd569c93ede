"""Breaker configuration: resilience4j's defaults and the limits Bulwark accepts.

The stored configuration always has every field set, so the state machine and
the window never have to know which defaults apply; ``normalize_config`` is the
only place that does.
"""

from __future__ import annotations

import math

from google.protobuf import duration_pb2

from bulwark.v1 import breaker_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds

COUNT_BASED = breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED
TIME_BASED = breaker_pb2.SLIDING_WINDOW_TYPE_TIME_BASED

# resilience4j's defaults (CircuitBreakerConfig.ofDefaults()).
DEFAULT_FAILURE_RATE_THRESHOLD = 50.0
DEFAULT_SLOW_CALL_RATE_THRESHOLD = 100.0
DEFAULT_SLOW_CALL_DURATION_THRESHOLD = 60.0
DEFAULT_SLIDING_WINDOW_SIZE = 100
DEFAULT_MINIMUM_NUMBER_OF_CALLS = 100
DEFAULT_WAIT_DURATION_IN_OPEN_STATE = 60.0
DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN_STATE = 10
DEFAULT_MAX_WAIT_DURATION_IN_HALF_OPEN_STATE = 0.0

# Limits keep a window's memory and a breaker's etcd value bounded.
MAX_COUNT_WINDOW_SIZE = 10_000
MAX_TIME_WINDOW_SECONDS = 3_600
MAX_MINIMUM_NUMBER_OF_CALLS = 10_000
MAX_PERMITTED_CALLS_IN_HALF_OPEN_STATE = 1_000
MIN_DURATION = 0.001
ONE_DAY = 86_400.0


def seconds(d: duration_pb2.Duration) -> float:
    """Seconds of a Duration as a float, for arithmetic on Unix-second clocks."""
    return d.seconds + d.nanos / 1e9


def normalize_config(config: breaker_pb2.BreakerConfig) -> breaker_pb2.BreakerConfig:
    """A new, validated BreakerConfig with resilience4j's defaults in every unset field.

    Raises InvalidArgument naming the first offending field as ``config.<field>``.
    The input message is left untouched.
    """
    out = breaker_pb2.BreakerConfig()
    out.failure_rate_threshold = _threshold(
        config, "failure_rate_threshold", DEFAULT_FAILURE_RATE_THRESHOLD
    )
    out.slow_call_rate_threshold = _threshold(
        config, "slow_call_rate_threshold", DEFAULT_SLOW_CALL_RATE_THRESHOLD
    )
    out.slow_call_duration_threshold.CopyFrom(
        _duration(
            config,
            "slow_call_duration_threshold",
            DEFAULT_SLOW_CALL_DURATION_THRESHOLD,
            minimum=MIN_DURATION,
            # The brief sets no upper bound; a very long threshold just means "never slow".
            maximum=math.inf,
        )
    )

    kind = config.sliding_window_type
    if kind == breaker_pb2.SLIDING_WINDOW_TYPE_UNSPECIFIED:
        kind = COUNT_BASED
    elif kind not in (COUNT_BASED, TIME_BASED):
        raise InvalidArgument("config.sliding_window_type", f"unknown sliding window type {kind}")
    out.sliding_window_type = kind

    if kind == COUNT_BASED:
        size_max, unit = MAX_COUNT_WINDOW_SIZE, "calls"
    else:
        size_max, unit = MAX_TIME_WINDOW_SECONDS, "seconds"
    out.sliding_window_size = _bounded_int(
        config, "sliding_window_size", DEFAULT_SLIDING_WINDOW_SIZE, 1, size_max, unit
    )
    out.minimum_number_of_calls = _bounded_int(
        config,
        "minimum_number_of_calls",
        DEFAULT_MINIMUM_NUMBER_OF_CALLS,
        1,
        MAX_MINIMUM_NUMBER_OF_CALLS,
        "calls",
    )
    out.wait_duration_in_open_state.CopyFrom(
        _duration(
            config,
            "wait_duration_in_open_state",
            DEFAULT_WAIT_DURATION_IN_OPEN_STATE,
            minimum=MIN_DURATION,
            maximum=ONE_DAY,
        )
    )
    out.permitted_number_of_calls_in_half_open_state = _bounded_int(
        config,
        "permitted_number_of_calls_in_half_open_state",
        DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN_STATE,
        1,
        MAX_PERMITTED_CALLS_IN_HALF_OPEN_STATE,
        "calls",
    )
    out.max_wait_duration_in_half_open_state.CopyFrom(
        _duration(
            config,
            "max_wait_duration_in_half_open_state",
            DEFAULT_MAX_WAIT_DURATION_IN_HALF_OPEN_STATE,
            minimum=0.0,
            maximum=ONE_DAY,
        )
    )
    out.automatic_transition_from_open_to_half_open_enabled = (
        config.automatic_transition_from_open_to_half_open_enabled
    )
    return out


def _threshold(config: breaker_pb2.BreakerConfig, name: str, default: float) -> float:
    value = getattr(config, name) if config.HasField(name) else default
    # NaN compares false with everything, so it must be rejected explicitly.
    if math.isnan(value) or not 0.0 < value <= 100.0:
        raise InvalidArgument(f"config.{name}", f"must be in (0, 100] percent, got {value:g}")
    return value


def _bounded_int(
    config: breaker_pb2.BreakerConfig,
    name: str,
    default: int,
    minimum: int,
    maximum: int,
    unit: str,
) -> int:
    value = getattr(config, name) if config.HasField(name) else default
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"config.{name}", f"must be {minimum}-{maximum} {unit}, got {value}")
    return value


def _duration(
    config: breaker_pb2.BreakerConfig,
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float,
) -> duration_pb2.Duration:
    if not config.HasField(name):
        out = duration_pb2.Duration()
        out.FromNanoseconds(round(default * 1e9))
        return out
    value = getattr(config, name)
    duration_seconds(value, f"config.{name}", minimum=minimum, maximum=maximum)
    out = duration_pb2.Duration()
    out.CopyFrom(value)
    return out
