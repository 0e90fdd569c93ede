import datetime

from bulwark.v1 import alert_pb2 as _alert_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComponentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPONENT_STATE_UNSPECIFIED: _ClassVar[ComponentState]
    COMPONENT_STATE_HEALTHY: _ClassVar[ComponentState]
    COMPONENT_STATE_DEGRADED: _ClassVar[ComponentState]
    COMPONENT_STATE_UNHEALTHY: _ClassVar[ComponentState]
COMPONENT_STATE_UNSPECIFIED: ComponentState
COMPONENT_STATE_HEALTHY: ComponentState
COMPONENT_STATE_DEGRADED: ComponentState
COMPONENT_STATE_UNHEALTHY: ComponentState

class Replica(_message.Message):
    __slots__ = ("id", "address", "version", "started_at", "counter_owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTER_OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    version: str
    started_at: _timestamp_pb2.Timestamp
    counter_owner: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counter_owner: bool = ...) -> None: ...

class Leader(_message.Message):
    __slots__ = ("replica_id", "address", "term", "elected_at", "lease_ttl", "renewed_at")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    ELECTED_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    RENEWED_AT_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    address: str
    term: int
    elected_at: _timestamp_pb2.Timestamp
    lease_ttl: _duration_pb2.Duration
    renewed_at: _timestamp_pb2.Timestamp
    def __init__(self, replica_id: _Optional[str] = ..., address: _Optional[str] = ..., term: _Optional[int] = ..., elected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., renewed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetLeaderRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLeaderResponse(_message.Message):
    __slots__ = ("leader", "is_self", "answered_by", "stale")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    leader: Leader
    is_self: bool
    answered_by: str
    stale: bool
    def __init__(self, leader: _Optional[_Union[Leader, _Mapping]] = ..., is_self: bool = ..., answered_by: _Optional[str] = ..., stale: bool = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ComponentStatus(_message.Message):
    __slots__ = ("name", "state", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ComponentState
    message: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ComponentState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class EtcdMember(_message.Message):
    __slots__ = ("id", "name", "client_urls", "healthy", "is_raft_leader", "version", "db_size_bytes", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_URLS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    IS_RAFT_LEADER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DB_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    client_urls: _containers.RepeatedScalarFieldContainer[str]
    healthy: bool
    is_raft_leader: bool
    version: str
    db_size_bytes: int
    error: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., client_urls: _Optional[_Iterable[str]] = ..., healthy: bool = ..., is_raft_leader: bool = ..., version: _Optional[str] = ..., db_size_bytes: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class CacheStatus(_message.Message):
    __slots__ = ("revision", "etcd_revision", "lag_revisions", "lag", "keys", "stale", "resyncs")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETCD_REVISION_FIELD_NUMBER: _ClassVar[int]
    LAG_REVISIONS_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    RESYNCS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    etcd_revision: int
    lag_revisions: int
    lag: _duration_pb2.Duration
    keys: int
    stale: bool
    resyncs: int
    def __init__(self, revision: _Optional[int] = ..., etcd_revision: _Optional[int] = ..., lag_revisions: _Optional[int] = ..., lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., keys: _Optional[int] = ..., stale: bool = ..., resyncs: _Optional[int] = ...) -> None: ...

class GetClusterStatusResponse(_message.Message):
    __slots__ = ("replica_id", "leader", "replicas", "etcd_members", "cache", "components", "stale", "alerts")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ETCD_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    leader: Leader
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    etcd_members: _containers.RepeatedCompositeFieldContainer[EtcdMember]
    cache: CacheStatus
    components: _containers.RepeatedCompositeFieldContainer[ComponentStatus]
    stale: bool
    alerts: _alert_pb2.AlertSummary
    def __init__(self, replica_id: _Optional[str] = ..., leader: _Optional[_Union[Leader, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., etcd_members: _Optional[_Iterable[_Union[EtcdMember, _Mapping]]] = ..., cache: _Optional[_Union[CacheStatus, _Mapping]] = ..., components: _Optional[_Iterable[_Union[ComponentStatus, _Mapping]]] = ..., stale: bool = ..., alerts: _Optional[_Union[_alert_pb2.AlertSummary, _Mapping]] = ...) -> None: ...
