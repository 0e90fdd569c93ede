import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RateUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_UNIT_UNSPECIFIED: _ClassVar[RateUnit]
    RATE_UNIT_SECOND: _ClassVar[RateUnit]
    RATE_UNIT_MINUTE: _ClassVar[RateUnit]
    RATE_UNIT_HOUR: _ClassVar[RateUnit]
    RATE_UNIT_DAY: _ClassVar[RateUnit]

class LimitAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_ALGORITHM_UNSPECIFIED: _ClassVar[LimitAlgorithm]
    LIMIT_ALGORITHM_TOKEN_BUCKET: _ClassVar[LimitAlgorithm]
    LIMIT_ALGORITHM_FIXED_WINDOW: _ClassVar[LimitAlgorithm]

class CheckCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_CODE_UNSPECIFIED: _ClassVar[CheckCode]
    CHECK_CODE_OK: _ClassVar[CheckCode]
    CHECK_CODE_OVER_LIMIT: _ClassVar[CheckCode]
RATE_UNIT_UNSPECIFIED: RateUnit
RATE_UNIT_SECOND: RateUnit
RATE_UNIT_MINUTE: RateUnit
RATE_UNIT_HOUR: RateUnit
RATE_UNIT_DAY: RateUnit
LIMIT_ALGORITHM_UNSPECIFIED: LimitAlgorithm
LIMIT_ALGORITHM_TOKEN_BUCKET: LimitAlgorithm
LIMIT_ALGORITHM_FIXED_WINDOW: LimitAlgorithm
CHECK_CODE_UNSPECIFIED: CheckCode
CHECK_CODE_OK: CheckCode
CHECK_CODE_OVER_LIMIT: CheckCode

class DescriptorEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RateLimitDescriptor(_message.Message):
    __slots__ = ("entries", "hits", "limit")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DescriptorEntry]
    hits: int
    limit: Rate
    def __init__(self, entries: _Optional[_Iterable[_Union[DescriptorEntry, _Mapping]]] = ..., hits: _Optional[int] = ..., limit: _Optional[_Union[Rate, _Mapping]] = ...) -> None: ...

class Rate(_message.Message):
    __slots__ = ("requests_per_unit", "unit")
    REQUESTS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    requests_per_unit: int
    unit: RateUnit
    def __init__(self, requests_per_unit: _Optional[int] = ..., unit: _Optional[_Union[RateUnit, str]] = ...) -> None: ...

class AdaptiveScaling(_message.Message):
    __slots__ = ("enabled", "floor", "load", "load_updated_at")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LOAD_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    floor: float
    load: float
    load_updated_at: _timestamp_pb2.Timestamp
    def __init__(self, enabled: bool = ..., floor: _Optional[float] = ..., load: _Optional[float] = ..., load_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("domain", "name", "descriptor", "rate", "burst", "algorithm", "unlimited", "shadow_mode", "adaptive", "revision", "effective_rate", "replaces", "blocks_all", "detailed_metric")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODE_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_ALL_FIELD_NUMBER: _ClassVar[int]
    DETAILED_METRIC_FIELD_NUMBER: _ClassVar[int]
    domain: str
    name: str
    descriptor: _containers.RepeatedCompositeFieldContainer[DescriptorEntry]
    rate: Rate
    burst: int
    algorithm: LimitAlgorithm
    unlimited: bool
    shadow_mode: bool
    adaptive: AdaptiveScaling
    revision: int
    effective_rate: Rate
    replaces: _containers.RepeatedScalarFieldContainer[str]
    blocks_all: bool
    detailed_metric: bool
    def __init__(self, domain: _Optional[str] = ..., name: _Optional[str] = ..., descriptor: _Optional[_Iterable[_Union[DescriptorEntry, _Mapping]]] = ..., rate: _Optional[_Union[Rate, _Mapping]] = ..., burst: _Optional[int] = ..., algorithm: _Optional[_Union[LimitAlgorithm, str]] = ..., unlimited: bool = ..., shadow_mode: bool = ..., adaptive: _Optional[_Union[AdaptiveScaling, _Mapping]] = ..., revision: _Optional[int] = ..., effective_rate: _Optional[_Union[Rate, _Mapping]] = ..., replaces: _Optional[_Iterable[str]] = ..., blocks_all: bool = ..., detailed_metric: bool = ...) -> None: ...

class PutLimitRequest(_message.Message):
    __slots__ = ("limit", "expected_revision")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    limit: Limit
    expected_revision: int
    def __init__(self, limit: _Optional[_Union[Limit, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutLimitResponse(_message.Message):
    __slots__ = ("limit", "created")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    limit: Limit
    created: bool
    def __init__(self, limit: _Optional[_Union[Limit, _Mapping]] = ..., created: bool = ...) -> None: ...

class GetLimitRequest(_message.Message):
    __slots__ = ("domain", "name")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    domain: str
    name: str
    def __init__(self, domain: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetLimitResponse(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: Limit
    def __init__(self, limit: _Optional[_Union[Limit, _Mapping]] = ...) -> None: ...

class ListLimitsRequest(_message.Message):
    __slots__ = ("domain", "page_size", "page_token")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    page_size: int
    page_token: str
    def __init__(self, domain: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLimitsResponse(_message.Message):
    __slots__ = ("limits", "next_page_token")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    next_page_token: str
    def __init__(self, limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteLimitRequest(_message.Message):
    __slots__ = ("domain", "name")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    domain: str
    name: str
    def __init__(self, domain: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteLimitResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("domain", "descriptors", "hits", "load")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTORS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptors: _containers.RepeatedCompositeFieldContainer[RateLimitDescriptor]
    hits: int
    load: float
    def __init__(self, domain: _Optional[str] = ..., descriptors: _Optional[_Iterable[_Union[RateLimitDescriptor, _Mapping]]] = ..., hits: _Optional[int] = ..., load: _Optional[float] = ...) -> None: ...

class DescriptorResult(_message.Message):
    __slots__ = ("code", "limit_name", "current_limit", "remaining", "reset_after", "retry_after", "shadow", "unlimited")
    CODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    code: CheckCode
    limit_name: str
    current_limit: Rate
    remaining: int
    reset_after: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    shadow: bool
    unlimited: bool
    def __init__(self, code: _Optional[_Union[CheckCode, str]] = ..., limit_name: _Optional[str] = ..., current_limit: _Optional[_Union[Rate, _Mapping]] = ..., remaining: _Optional[int] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shadow: bool = ..., unlimited: bool = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("overall_code", "results", "local_fallback")
    OVERALL_CODE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    overall_code: CheckCode
    results: _containers.RepeatedCompositeFieldContainer[DescriptorResult]
    local_fallback: bool
    def __init__(self, overall_code: _Optional[_Union[CheckCode, str]] = ..., results: _Optional[_Iterable[_Union[DescriptorResult, _Mapping]]] = ..., local_fallback: bool = ...) -> None: ...

class LeaseQuotaRequest(_message.Message):
    __slots__ = ("domain", "descriptor", "client_id", "wanted")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    domain: str
    descriptor: RateLimitDescriptor
    client_id: str
    wanted: int
    def __init__(self, domain: _Optional[str] = ..., descriptor: _Optional[_Union[RateLimitDescriptor, _Mapping]] = ..., client_id: _Optional[str] = ..., wanted: _Optional[int] = ...) -> None: ...

class LeaseQuotaResponse(_message.Message):
    __slots__ = ("granted", "limit", "expires_at", "limit_name")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NAME_FIELD_NUMBER: _ClassVar[int]
    granted: int
    limit: Rate
    expires_at: _timestamp_pb2.Timestamp
    limit_name: str
    def __init__(self, granted: _Optional[int] = ..., limit: _Optional[_Union[Rate, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit_name: _Optional[str] = ...) -> None: ...

class CounterState(_message.Message):
    __slots__ = ("values", "level", "time")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    level: float
    time: float
    def __init__(self, values: _Optional[_Iterable[str]] = ..., level: _Optional[float] = ..., time: _Optional[float] = ...) -> None: ...

class LimitCounters(_message.Message):
    __slots__ = ("domain", "name", "limit_create_revision", "counters", "checkpointed_at", "rest", "rest_members", "rest_member_hashes", "slot")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_AT_FIELD_NUMBER: _ClassVar[int]
    REST_FIELD_NUMBER: _ClassVar[int]
    REST_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REST_MEMBER_HASHES_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    name: str
    limit_create_revision: int
    counters: _containers.RepeatedCompositeFieldContainer[CounterState]
    checkpointed_at: _timestamp_pb2.Timestamp
    rest: CounterState
    rest_members: bytes
    rest_member_hashes: int
    slot: int
    def __init__(self, domain: _Optional[str] = ..., name: _Optional[str] = ..., limit_create_revision: _Optional[int] = ..., counters: _Optional[_Iterable[_Union[CounterState, _Mapping]]] = ..., checkpointed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rest: _Optional[_Union[CounterState, _Mapping]] = ..., rest_members: _Optional[bytes] = ..., rest_member_hashes: _Optional[int] = ..., slot: _Optional[int] = ...) -> None: ...
