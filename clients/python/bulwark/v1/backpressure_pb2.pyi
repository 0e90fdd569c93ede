import datetime

from bulwark.v1 import watch_pb2 as _watch_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdaptiveConcurrency(_message.Message):
    __slots__ = ("enabled", "initial_limit", "min_limit", "max_limit", "smoothing", "rtt_tolerance", "long_window", "queue_size")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MIN_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    RTT_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    LONG_WINDOW_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    initial_limit: int
    min_limit: int
    max_limit: int
    smoothing: float
    rtt_tolerance: float
    long_window: int
    queue_size: float
    def __init__(self, enabled: bool = ..., initial_limit: _Optional[int] = ..., min_limit: _Optional[int] = ..., max_limit: _Optional[int] = ..., smoothing: _Optional[float] = ..., rtt_tolerance: _Optional[float] = ..., long_window: _Optional[int] = ..., queue_size: _Optional[float] = ...) -> None: ...

class AdaptiveThrottle(_message.Message):
    __slots__ = ("enabled", "k", "window")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    k: float
    window: _duration_pb2.Duration
    def __init__(self, enabled: bool = ..., k: _Optional[float] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class BackpressurePolicy(_message.Message):
    __slots__ = ("name", "concurrency", "throttle", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    concurrency: AdaptiveConcurrency
    throttle: AdaptiveThrottle
    revision: int
    def __init__(self, name: _Optional[str] = ..., concurrency: _Optional[_Union[AdaptiveConcurrency, _Mapping]] = ..., throttle: _Optional[_Union[AdaptiveThrottle, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class PutBackpressurePolicyRequest(_message.Message):
    __slots__ = ("policy", "expected_revision")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    policy: BackpressurePolicy
    expected_revision: int
    def __init__(self, policy: _Optional[_Union[BackpressurePolicy, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutBackpressurePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: BackpressurePolicy
    def __init__(self, policy: _Optional[_Union[BackpressurePolicy, _Mapping]] = ...) -> None: ...

class GetBackpressurePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBackpressurePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: BackpressurePolicy
    def __init__(self, policy: _Optional[_Union[BackpressurePolicy, _Mapping]] = ...) -> None: ...

class ListBackpressurePoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBackpressurePoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[BackpressurePolicy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[BackpressurePolicy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBackpressurePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBackpressurePolicyResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchBackpressurePoliciesRequest(_message.Message):
    __slots__ = ("names", "start_revision")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    start_revision: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchBackpressurePoliciesResponse(_message.Message):
    __slots__ = ("type", "policy", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    policy: BackpressurePolicy
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., policy: _Optional[_Union[BackpressurePolicy, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
