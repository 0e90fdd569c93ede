import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Bulkhead(_message.Message):
    __slots__ = ("name", "max_concurrent", "max_wait", "default_permit_ttl", "revision", "in_use")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PERMIT_TTL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_concurrent: int
    max_wait: _duration_pb2.Duration
    default_permit_ttl: _duration_pb2.Duration
    revision: int
    in_use: int
    def __init__(self, name: _Optional[str] = ..., max_concurrent: _Optional[int] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_permit_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., revision: _Optional[int] = ..., in_use: _Optional[int] = ...) -> None: ...

class Permit(_message.Message):
    __slots__ = ("id", "bulkhead", "holder", "acquired_at", "ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    id: str
    bulkhead: str
    holder: str
    acquired_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., bulkhead: _Optional[str] = ..., holder: _Optional[str] = ..., acquired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PutBulkheadRequest(_message.Message):
    __slots__ = ("bulkhead", "expected_revision")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    bulkhead: Bulkhead
    expected_revision: int
    def __init__(self, bulkhead: _Optional[_Union[Bulkhead, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class PutBulkheadResponse(_message.Message):
    __slots__ = ("bulkhead", "created")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    bulkhead: Bulkhead
    created: bool
    def __init__(self, bulkhead: _Optional[_Union[Bulkhead, _Mapping]] = ..., created: bool = ...) -> None: ...

class GetBulkheadRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBulkheadResponse(_message.Message):
    __slots__ = ("bulkhead", "permits")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    PERMITS_FIELD_NUMBER: _ClassVar[int]
    bulkhead: Bulkhead
    permits: _containers.RepeatedCompositeFieldContainer[Permit]
    def __init__(self, bulkhead: _Optional[_Union[Bulkhead, _Mapping]] = ..., permits: _Optional[_Iterable[_Union[Permit, _Mapping]]] = ...) -> None: ...

class ListBulkheadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBulkheadsResponse(_message.Message):
    __slots__ = ("bulkheads", "next_page_token")
    BULKHEADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bulkheads: _containers.RepeatedCompositeFieldContainer[Bulkhead]
    next_page_token: str
    def __init__(self, bulkheads: _Optional[_Iterable[_Union[Bulkhead, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBulkheadRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBulkheadResponse(_message.Message):
    __slots__ = ("released_permits",)
    RELEASED_PERMITS_FIELD_NUMBER: _ClassVar[int]
    released_permits: int
    def __init__(self, released_permits: _Optional[int] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("bulkhead", "holder", "ttl", "max_wait")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    bulkhead: str
    holder: str
    ttl: _duration_pb2.Duration
    max_wait: _duration_pb2.Duration
    def __init__(self, bulkhead: _Optional[str] = ..., holder: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("permit",)
    PERMIT_FIELD_NUMBER: _ClassVar[int]
    permit: Permit
    def __init__(self, permit: _Optional[_Union[Permit, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("bulkhead", "permit_id")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    PERMIT_ID_FIELD_NUMBER: _ClassVar[int]
    bulkhead: str
    permit_id: str
    def __init__(self, bulkhead: _Optional[str] = ..., permit_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ExtendPermitRequest(_message.Message):
    __slots__ = ("bulkhead", "permit_id")
    BULKHEAD_FIELD_NUMBER: _ClassVar[int]
    PERMIT_ID_FIELD_NUMBER: _ClassVar[int]
    bulkhead: str
    permit_id: str
    def __init__(self, bulkhead: _Optional[str] = ..., permit_id: _Optional[str] = ...) -> None: ...

class ExtendPermitResponse(_message.Message):
    __slots__ = ("permit", "remaining")
    PERMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    permit: Permit
    remaining: _duration_pb2.Duration
    def __init__(self, permit: _Optional[_Union[Permit, _Mapping]] = ..., remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
