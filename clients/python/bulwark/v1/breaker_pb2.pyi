import datetime

from bulwark.v1 import watch_pb2 as _watch_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_FORCED_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_DISABLED: _ClassVar[BreakerState]
    BREAKER_STATE_METRICS_ONLY: _ClassVar[BreakerState]

class SlidingWindowType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLIDING_WINDOW_TYPE_UNSPECIFIED: _ClassVar[SlidingWindowType]
    SLIDING_WINDOW_TYPE_COUNT_BASED: _ClassVar[SlidingWindowType]
    SLIDING_WINDOW_TYPE_TIME_BASED: _ClassVar[SlidingWindowType]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState
BREAKER_STATE_FORCED_OPEN: BreakerState
BREAKER_STATE_DISABLED: BreakerState
BREAKER_STATE_METRICS_ONLY: BreakerState
SLIDING_WINDOW_TYPE_UNSPECIFIED: SlidingWindowType
SLIDING_WINDOW_TYPE_COUNT_BASED: SlidingWindowType
SLIDING_WINDOW_TYPE_TIME_BASED: SlidingWindowType

class BreakerConfig(_message.Message):
    __slots__ = ("failure_rate_threshold", "slow_call_rate_threshold", "slow_call_duration_threshold", "sliding_window_type", "sliding_window_size", "minimum_number_of_calls", "wait_duration_in_open_state", "permitted_number_of_calls_in_half_open_state", "max_wait_duration_in_half_open_state", "automatic_transition_from_open_to_half_open_enabled")
    FAILURE_RATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_RATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_DURATION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SLIDING_WINDOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    SLIDING_WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_NUMBER_OF_CALLS_FIELD_NUMBER: _ClassVar[int]
    WAIT_DURATION_IN_OPEN_STATE_FIELD_NUMBER: _ClassVar[int]
    PERMITTED_NUMBER_OF_CALLS_IN_HALF_OPEN_STATE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_DURATION_IN_HALF_OPEN_STATE_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_TRANSITION_FROM_OPEN_TO_HALF_OPEN_ENABLED_FIELD_NUMBER: _ClassVar[int]
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_duration_threshold: _duration_pb2.Duration
    sliding_window_type: SlidingWindowType
    sliding_window_size: int
    minimum_number_of_calls: int
    wait_duration_in_open_state: _duration_pb2.Duration
    permitted_number_of_calls_in_half_open_state: int
    max_wait_duration_in_half_open_state: _duration_pb2.Duration
    automatic_transition_from_open_to_half_open_enabled: bool
    def __init__(self, failure_rate_threshold: _Optional[float] = ..., slow_call_rate_threshold: _Optional[float] = ..., slow_call_duration_threshold: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sliding_window_type: _Optional[_Union[SlidingWindowType, str]] = ..., sliding_window_size: _Optional[int] = ..., minimum_number_of_calls: _Optional[int] = ..., wait_duration_in_open_state: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., permitted_number_of_calls_in_half_open_state: _Optional[int] = ..., max_wait_duration_in_half_open_state: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., automatic_transition_from_open_to_half_open_enabled: bool = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("from_state", "to_state", "reason", "failure_rate", "slow_call_rate", "calls", "actor", "at")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_RATE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    failure_rate: float
    slow_call_rate: float
    calls: int
    actor: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, from_state: _Optional[_Union[BreakerState, str]] = ..., to_state: _Optional[_Union[BreakerState, str]] = ..., reason: _Optional[str] = ..., failure_rate: _Optional[float] = ..., slow_call_rate: _Optional[float] = ..., calls: _Optional[int] = ..., actor: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BreakerStatus(_message.Message):
    __slots__ = ("state", "state_since", "open_until", "half_open_permits_granted", "half_open_outcomes", "last_transition", "transitions")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    OPEN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_PERMITS_GRANTED_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    state: BreakerState
    state_since: _timestamp_pb2.Timestamp
    open_until: _timestamp_pb2.Timestamp
    half_open_permits_granted: int
    half_open_outcomes: OutcomeCounts
    last_transition: Transition
    transitions: int
    def __init__(self, state: _Optional[_Union[BreakerState, str]] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., half_open_permits_granted: _Optional[int] = ..., half_open_outcomes: _Optional[_Union[OutcomeCounts, _Mapping]] = ..., last_transition: _Optional[_Union[Transition, _Mapping]] = ..., transitions: _Optional[int] = ...) -> None: ...

class OutcomeCounts(_message.Message):
    __slots__ = ("successes", "failures", "slow_calls")
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    successes: int
    failures: int
    slow_calls: int
    def __init__(self, successes: _Optional[int] = ..., failures: _Optional[int] = ..., slow_calls: _Optional[int] = ...) -> None: ...

class WindowStats(_message.Message):
    __slots__ = ("calls", "failures", "slow_calls", "failure_rate", "slow_call_rate")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALL_RATE_FIELD_NUMBER: _ClassVar[int]
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    def __init__(self, calls: _Optional[int] = ..., failures: _Optional[int] = ..., slow_calls: _Optional[int] = ..., failure_rate: _Optional[float] = ..., slow_call_rate: _Optional[float] = ...) -> None: ...

class CircuitBreaker(_message.Message):
    __slots__ = ("name", "config", "status", "revision", "window")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: BreakerConfig
    status: BreakerStatus
    revision: int
    window: WindowStats
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[BreakerConfig, _Mapping]] = ..., status: _Optional[_Union[BreakerStatus, _Mapping]] = ..., revision: _Optional[int] = ..., window: _Optional[_Union[WindowStats, _Mapping]] = ...) -> None: ...

class PutBreakerRequest(_message.Message):
    __slots__ = ("name", "config", "expected_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: BreakerConfig
    expected_revision: int
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[BreakerConfig, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutBreakerResponse(_message.Message):
    __slots__ = ("breaker", "created")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    breaker: CircuitBreaker
    created: bool
    def __init__(self, breaker: _Optional[_Union[CircuitBreaker, _Mapping]] = ..., created: bool = ...) -> None: ...

class GetBreakerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBreakerResponse(_message.Message):
    __slots__ = ("breaker", "stale")
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    breaker: CircuitBreaker
    stale: bool
    def __init__(self, breaker: _Optional[_Union[CircuitBreaker, _Mapping]] = ..., stale: bool = ...) -> None: ...

class ListBreakersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBreakersResponse(_message.Message):
    __slots__ = ("breakers", "next_page_token")
    BREAKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    breakers: _containers.RepeatedCompositeFieldContainer[CircuitBreaker]
    next_page_token: str
    def __init__(self, breakers: _Optional[_Iterable[_Union[CircuitBreaker, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBreakerRequest(_message.Message):
    __slots__ = ("name", "expected_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_revision: int
    def __init__(self, name: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteBreakerResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class AllowRequest(_message.Message):
    __slots__ = ("name", "caller")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    name: str
    caller: str
    def __init__(self, name: _Optional[str] = ..., caller: _Optional[str] = ...) -> None: ...

class AllowResponse(_message.Message):
    __slots__ = ("allowed", "state", "trial", "retry_after", "revision", "stale")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    state: BreakerState
    trial: bool
    retry_after: _duration_pb2.Duration
    revision: int
    stale: bool
    def __init__(self, allowed: bool = ..., state: _Optional[_Union[BreakerState, str]] = ..., trial: bool = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., revision: _Optional[int] = ..., stale: bool = ...) -> None: ...

class BreakerOutcomes(_message.Message):
    __slots__ = ("name", "counts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    counts: OutcomeCounts
    def __init__(self, name: _Optional[str] = ..., counts: _Optional[_Union[OutcomeCounts, _Mapping]] = ...) -> None: ...

class ReportOutcomesRequest(_message.Message):
    __slots__ = ("reporter", "outcomes")
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    reporter: str
    outcomes: _containers.RepeatedCompositeFieldContainer[BreakerOutcomes]
    def __init__(self, reporter: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[BreakerOutcomes, _Mapping]]] = ...) -> None: ...

class ReportOutcomesResponse(_message.Message):
    __slots__ = ("accepted", "unknown_breakers")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unknown_breakers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., unknown_breakers: _Optional[_Iterable[str]] = ...) -> None: ...

class ForceStateRequest(_message.Message):
    __slots__ = ("name", "state", "reason", "actor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: BreakerState
    reason: str
    actor: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[BreakerState, str]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class ForceStateResponse(_message.Message):
    __slots__ = ("breaker",)
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    breaker: CircuitBreaker
    def __init__(self, breaker: _Optional[_Union[CircuitBreaker, _Mapping]] = ...) -> None: ...

class WatchBreakersRequest(_message.Message):
    __slots__ = ("names", "start_revision")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    start_revision: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchBreakersResponse(_message.Message):
    __slots__ = ("type", "breaker", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    breaker: CircuitBreaker
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., breaker: _Optional[_Union[CircuitBreaker, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class WindowBucket(_message.Message):
    __slots__ = ("start", "calls", "failures", "slow_calls")
    START_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SLOW_CALLS_FIELD_NUMBER: _ClassVar[int]
    start: float
    calls: int
    failures: int
    slow_calls: int
    def __init__(self, start: _Optional[float] = ..., calls: _Optional[int] = ..., failures: _Optional[int] = ..., slow_calls: _Optional[int] = ...) -> None: ...

class BreakerWindow(_message.Message):
    __slots__ = ("name", "buckets", "stats", "checkpointed_at", "breaker_create_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_AT_FIELD_NUMBER: _ClassVar[int]
    BREAKER_CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    buckets: _containers.RepeatedCompositeFieldContainer[WindowBucket]
    stats: WindowStats
    checkpointed_at: _timestamp_pb2.Timestamp
    breaker_create_revision: int
    def __init__(self, name: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[WindowBucket, _Mapping]]] = ..., stats: _Optional[_Union[WindowStats, _Mapping]] = ..., checkpointed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., breaker_create_revision: _Optional[int] = ...) -> None: ...
