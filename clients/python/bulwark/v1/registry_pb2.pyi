import datetime

from bulwark.v1 import signals_pb2 as _signals_pb2
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

class InstanceHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_HEALTH_UNSPECIFIED: _ClassVar[InstanceHealth]
    INSTANCE_HEALTH_SERVING: _ClassVar[InstanceHealth]
    INSTANCE_HEALTH_NOT_SERVING: _ClassVar[InstanceHealth]
    INSTANCE_HEALTH_DRAINING: _ClassVar[InstanceHealth]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_PRIMARY: _ClassVar[Role]
    ROLE_BACKUP: _ClassVar[Role]
INSTANCE_HEALTH_UNSPECIFIED: InstanceHealth
INSTANCE_HEALTH_SERVING: InstanceHealth
INSTANCE_HEALTH_NOT_SERVING: InstanceHealth
INSTANCE_HEALTH_DRAINING: InstanceHealth
ROLE_UNSPECIFIED: Role
ROLE_PRIMARY: Role
ROLE_BACKUP: Role

class Load(_message.Message):
    __slots__ = ("in_flight", "cpu", "memory", "replication_lag")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_LAG_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    cpu: float
    memory: float
    replication_lag: _duration_pb2.Duration
    def __init__(self, in_flight: _Optional[int] = ..., cpu: _Optional[float] = ..., memory: _Optional[float] = ..., replication_lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("service", "id", "address", "zone", "region", "priority", "metadata", "ttl", "health", "load", "registered_at", "reported_at", "revision", "role")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    service: str
    id: str
    address: str
    zone: str
    region: str
    priority: int
    metadata: _containers.ScalarMap[str, str]
    ttl: _duration_pb2.Duration
    health: InstanceHealth
    load: Load
    registered_at: _timestamp_pb2.Timestamp
    reported_at: _timestamp_pb2.Timestamp
    revision: int
    role: Role
    def __init__(self, service: _Optional[str] = ..., id: _Optional[str] = ..., address: _Optional[str] = ..., zone: _Optional[str] = ..., region: _Optional[str] = ..., priority: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., health: _Optional[_Union[InstanceHealth, str]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class Primary(_message.Message):
    __slots__ = ("service", "instance_id", "address", "epoch", "since", "reason", "previous_instance_id", "switchover_target", "switchover_deadline", "revision", "zone")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_TARGET_FIELD_NUMBER: _ClassVar[int]
    SWITCHOVER_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    address: str
    epoch: int
    since: _timestamp_pb2.Timestamp
    reason: str
    previous_instance_id: str
    switchover_target: str
    switchover_deadline: _timestamp_pb2.Timestamp
    revision: int
    zone: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., previous_instance_id: _Optional[str] = ..., switchover_target: _Optional[str] = ..., switchover_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., zone: _Optional[str] = ...) -> None: ...

class RegisterInstanceRequest(_message.Message):
    __slots__ = ("instance",)
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ...) -> None: ...

class RegisterInstanceResponse(_message.Message):
    __slots__ = ("instance", "primary")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    primary: Primary
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ..., primary: _Optional[_Union[Primary, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("service", "instance_id", "health", "load", "epoch")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    health: InstanceHealth
    load: Load
    epoch: int
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., health: _Optional[_Union[InstanceHealth, str]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("role", "epoch", "stale_epoch", "drain", "primary", "ttl")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STALE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    role: Role
    epoch: int
    stale_epoch: bool
    drain: bool
    primary: Primary
    ttl: _duration_pb2.Duration
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., epoch: _Optional[int] = ..., stale_epoch: bool = ..., drain: bool = ..., primary: _Optional[_Union[Primary, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DeregisterInstanceRequest(_message.Message):
    __slots__ = ("service", "instance_id")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class DeregisterInstanceResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ListInstancesRequest(_message.Message):
    __slots__ = ("service", "page_size", "page_token")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    service: str
    page_size: int
    page_token: str
    def __init__(self, service: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInstancesResponse(_message.Message):
    __slots__ = ("instances", "next_page_token", "primary", "stale")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    next_page_token: str
    primary: Primary
    stale: bool
    def __init__(self, instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., primary: _Optional[_Union[Primary, _Mapping]] = ..., stale: bool = ...) -> None: ...

class WatchInstancesRequest(_message.Message):
    __slots__ = ("service", "start_revision")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    service: str
    start_revision: int
    def __init__(self, service: _Optional[str] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchInstancesResponse(_message.Message):
    __slots__ = ("type", "instance", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    instance: Instance
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., instance: _Optional[_Union[Instance, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class PickInstanceRequest(_message.Message):
    __slots__ = ("service", "affinity_key", "zone")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_KEY_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    service: str
    affinity_key: str
    zone: str
    def __init__(self, service: _Optional[str] = ..., affinity_key: _Optional[str] = ..., zone: _Optional[str] = ...) -> None: ...

class PickInstanceResponse(_message.Message):
    __slots__ = ("instance", "stale")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    instance: Instance
    stale: bool
    def __init__(self, instance: _Optional[_Union[Instance, _Mapping]] = ..., stale: bool = ...) -> None: ...

class GetPrimaryRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class GetPrimaryResponse(_message.Message):
    __slots__ = ("primary", "instance", "stale")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    primary: Primary
    instance: Instance
    stale: bool
    def __init__(self, primary: _Optional[_Union[Primary, _Mapping]] = ..., instance: _Optional[_Union[Instance, _Mapping]] = ..., stale: bool = ...) -> None: ...

class WatchPrimaryRequest(_message.Message):
    __slots__ = ("services", "start_revision")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    start_revision: int
    def __init__(self, services: _Optional[_Iterable[str]] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchPrimaryResponse(_message.Message):
    __slots__ = ("type", "primary", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: _watch_pb2.WatchEventType
    primary: Primary
    revision: int
    def __init__(self, type: _Optional[_Union[_watch_pb2.WatchEventType, str]] = ..., primary: _Optional[_Union[Primary, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class SwitchoverRequest(_message.Message):
    __slots__ = ("service", "target_instance_id", "drain_timeout")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TARGET_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    service: str
    target_instance_id: str
    drain_timeout: _duration_pb2.Duration
    def __init__(self, service: _Optional[str] = ..., target_instance_id: _Optional[str] = ..., drain_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SwitchoverResponse(_message.Message):
    __slots__ = ("primary",)
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    primary: Primary
    def __init__(self, primary: _Optional[_Union[Primary, _Mapping]] = ...) -> None: ...
