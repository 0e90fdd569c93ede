"""Constants, the ``Decision`` answer and clock helpers shared by the client's core modules.

I/O-free: nothing here reads a clock; times are passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from bulwark.v1 import breaker_pb2, ratelimit_pb2, watch_pb2

SNAPSHOT = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT = watch_pb2.WATCH_EVENT_TYPE_PUT
DELETE = watch_pb2.WATCH_EVENT_TYPE_DELETE

UNSPECIFIED = breaker_pb2.BREAKER_STATE_UNSPECIFIED
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = breaker_pb2.BREAKER_STATE_DISABLED
METRICS_ONLY = breaker_pb2.BREAKER_STATE_METRICS_ONLY

# States in which every call goes ahead, whatever the window says.
ALLOWING_STATES = frozenset({CLOSED, DISABLED, METRICS_ONLY})

# resilience4j's defaults, used when a breaker's config leaves a field unset.
# (The server stores normalized configs, so these only matter for hand-built
# or older messages.)
DEFAULT_FAILURE_RATE_THRESHOLD = 50.0
DEFAULT_MINIMUM_NUMBER_OF_CALLS = 100
DEFAULT_SLIDING_WINDOW_SIZE = 100
DEFAULT_WAIT_DURATION_IN_OPEN_STATE = 60.0

_UNIT_SECONDS = {
    ratelimit_pb2.RATE_UNIT_SECOND: 1.0,
    ratelimit_pb2.RATE_UNIT_MINUTE: 60.0,
    ratelimit_pb2.RATE_UNIT_HOUR: 3600.0,
    ratelimit_pb2.RATE_UNIT_DAY: 86400.0,
}


def monotonic_from_wall(wall: float, now_mono: float, now_wall: float) -> float:
    """Convert a wall-clock time (Unix seconds) to the monotonic clock.

    ``now_mono`` and ``now_wall`` must be read together; the result is only as
    good as the agreement between this host's wall clock and the server's.
    """
    return now_mono + (wall - now_wall)


def per_second(requests_per_unit: float, unit: int) -> float:
    """A rate in requests per ``ratelimit_pb2.RateUnit`` as requests per second."""
    try:
        return requests_per_unit / _UNIT_SECONDS[unit]
    except KeyError:
        raise ValueError(f"unknown rate unit {unit}") from None


def seconds(message: duration_pb2.Duration | timestamp_pb2.Timestamp) -> float:
    """Seconds of a Duration or Timestamp."""
    return message.seconds + message.nanos / 1e9


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may I call?".

    ``source`` is ``"cache"`` (decided from the watched state), ``"local"``
    (decided by a ``LocalBreaker`` while Bulwark is unreachable), ``"remote"``
    (Bulwark's ``Allow`` answered) or ``"remote-needed"`` (from the cache alone:
    the client must ask ``Allow``; ``allowed`` is then False and means "not
    decided", not "refused"). ``retry_after`` is seconds until a call may be
    allowed again, when known. Immutable, so one instance may be handed out
    many times.
    """

    allowed: bool
    state: int
    source: str
    retry_after: float | None = None
