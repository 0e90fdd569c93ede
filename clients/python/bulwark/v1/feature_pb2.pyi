import datetime

from bulwark.v1 import watch_pb2 as _watch_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    FEATURE_STATUS_AVAILABLE: _ClassVar[FeatureStatus]
    FEATURE_STATUS_DEGRADED: _ClassVar[FeatureStatus]
    FEATURE_STATUS_DISABLED: _ClassVar[FeatureStatus]

class DependencyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPENDENCY_KIND_UNSPECIFIED: _ClassVar[DependencyKind]
    DEPENDENCY_KIND_FEATURE: _ClassVar[DependencyKind]
    DEPENDENCY_KIND_CIRCUIT_BREAKER: _ClassVar[DependencyKind]
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
FEATURE_STATUS_AVAILABLE: FeatureStatus
FEATURE_STATUS_DEGRADED: FeatureStatus
FEATURE_STATUS_DISABLED: FeatureStatus
DEPENDENCY_KIND_UNSPECIFIED: DependencyKind
DEPENDENCY_KIND_FEATURE: DependencyKind
DEPENDENCY_KIND_CIRCUIT_BREAKER: DependencyKind

class Dependency(_message.Message):
    __slots__ = ("kind", "name", "soft")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    kind: DependencyKind
    name: str
    soft: bool
    def __init__(self, kind: _Optional[_Union[DependencyKind, str]] = ..., name: _Optional[str] = ..., soft: bool = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "status", "reason", "expires_at", "fallback", "depends_on", "updated_by", "updated_at", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: FeatureStatus
    reason: str
    expires_at: _timestamp_pb2.Timestamp
    fallback: str
    depends_on: _containers.RepeatedCompositeFieldContainer[Dependency]
    updated_by: str
    updated_at: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[FeatureStatus, str]] = ..., reason: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fallback: _Optional[str] = ..., depends_on: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., updated_by: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class FeatureView(_message.Message):
    __slots__ = ("feature", "effective_status", "blocked_by", "effective_reason")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_BY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_REASON_FIELD_NUMBER: _ClassVar[int]
    feature: Feature
    effective_status: FeatureStatus
    blocked_by: _containers.RepeatedCompositeFieldContainer[Dependency]
    effective_reason: str
    def __init__(self, feature: _Optional[_Union[Feature, _Mapping]] = ..., effective_status: _Optional[_Union[FeatureStatus, str]] = ..., blocked_by: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., effective_reason: _Optional[str] = ...) -> None: ...

class PutFeatureRequest(_message.Message):
    __slots__ = ("feature", "expected_revision")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    feature: Feature
    expected_revision: int
    def __init__(self, feature: _Optional[_Union[Feature, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutFeatureResponse(_message.Message):
    __slots__ = ("feature", "created")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    feature: FeatureView
    created: bool
    def __init__(self, feature: _Optional[_Union[FeatureView, _Mapping]] = ..., created: bool = ...) -> None: ...

class SetFeatureStatusRequest(_message.Message):
    __slots__ = ("name", "status", "reason", "expires_at", "updated_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: FeatureStatus
    reason: str
    expires_at: _timestamp_pb2.Timestamp
    updated_by: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[FeatureStatus, str]] = ..., reason: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ...) -> None: ...

class SetFeatureStatusResponse(_message.Message):
    __slots__ = ("feature",)
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    feature: FeatureView
    def __init__(self, feature: _Optional[_Union[FeatureView, _Mapping]] = ...) -> None: ...

class GetFeatureRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFeatureResponse(_message.Message):
    __slots__ = ("feature", "stale")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    feature: FeatureView
    stale: bool
    def __init__(self, feature: _Optional[_Union[FeatureView, _Mapping]] = ..., stale: bool = ...) -> None: ...

class ListFeaturesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFeaturesResponse(_message.Message):
    __slots__ = ("features", "next_page_token")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureView]
    next_page_token: str
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchFeaturesRequest(_message.Message):
    __slots__ = ("names", "start_revision")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    start_revision: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchFeaturesResponse(_message.Message):
    __slots__ = ("type", "feature", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    feature: FeatureView
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., feature: _Optional[_Union[FeatureView, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
