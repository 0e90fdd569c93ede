from bulwark.v1 import ratelimit_pb2 as _ratelimit_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CounterCharge(_message.Message):
    __slots__ = ("domain", "limit_name", "limit_create_revision", "own_rate", "values", "hits", "share_wanted", "demand", "share_returned", "debit", "debit_at", "lease_client", "lease_wanted")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    OWN_RATE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    SHARE_WANTED_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    SHARE_RETURNED_FIELD_NUMBER: _ClassVar[int]
    DEBIT_FIELD_NUMBER: _ClassVar[int]
    DEBIT_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_CLIENT_FIELD_NUMBER: _ClassVar[int]
    LEASE_WANTED_FIELD_NUMBER: _ClassVar[int]
    domain: str
    limit_name: str
    limit_create_revision: int
    own_rate: _ratelimit_pb2.Rate
    values: _containers.RepeatedScalarFieldContainer[str]
    hits: int
    share_wanted: int
    demand: float
    share_returned: int
    debit: int
    debit_at: float
    lease_client: str
    lease_wanted: int
    def __init__(self, domain: _Optional[str] = ..., limit_name: _Optional[str] = ..., limit_create_revision: _Optional[int] = ..., own_rate: _Optional[_Union[_ratelimit_pb2.Rate, _Mapping]] = ..., values: _Optional[_Iterable[str]] = ..., hits: _Optional[int] = ..., share_wanted: _Optional[int] = ..., demand: _Optional[float] = ..., share_returned: _Optional[int] = ..., debit: _Optional[int] = ..., debit_at: _Optional[float] = ..., lease_client: _Optional[str] = ..., lease_wanted: _Optional[int] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("replica_id", "charges", "batch")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    charges: _containers.RepeatedCompositeFieldContainer[CounterCharge]
    batch: int
    def __init__(self, replica_id: _Optional[str] = ..., charges: _Optional[_Iterable[_Union[CounterCharge, _Mapping]]] = ..., batch: _Optional[int] = ...) -> None: ...

class CounterOutcome(_message.Message):
    __slots__ = ("allowed", "remaining", "reset_after_s", "retry_after_s", "share_granted", "share_valid_s", "unknown", "lease_granted")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    SHARE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    SHARE_VALID_S_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    remaining: int
    reset_after_s: float
    retry_after_s: float
    share_granted: int
    share_valid_s: float
    unknown: bool
    lease_granted: int
    def __init__(self, allowed: bool = ..., remaining: _Optional[int] = ..., reset_after_s: _Optional[float] = ..., retry_after_s: _Optional[float] = ..., share_granted: _Optional[int] = ..., share_valid_s: _Optional[float] = ..., unknown: bool = ..., lease_granted: _Optional[int] = ...) -> None: ...

class ExchangeResponse(_message.Message):
    __slots__ = ("outcomes", "batch")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CounterOutcome]
    batch: int
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CounterOutcome, _Mapping]]] = ..., batch: _Optional[int] = ...) -> None: ...
