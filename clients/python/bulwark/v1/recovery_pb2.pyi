import datetime

from bulwark.v1 import keybackup_pb2 as _keybackup_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Snapshot(_message.Message):
    __slots__ = ("id", "revision", "created_at", "counts", "keys", "sha256", "kek_id", "locations", "created_by")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    revision: int
    created_at: _timestamp_pb2.Timestamp
    counts: _containers.ScalarMap[str, int]
    keys: int
    sha256: str
    kek_id: str
    locations: _containers.RepeatedScalarFieldContainer[str]
    created_by: str
    def __init__(self, id: _Optional[str] = ..., revision: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counts: _Optional[_Mapping[str, int]] = ..., keys: _Optional[int] = ..., sha256: _Optional[str] = ..., kek_id: _Optional[str] = ..., locations: _Optional[_Iterable[str]] = ..., created_by: _Optional[str] = ...) -> None: ...

class DrillReport(_message.Message):
    __slots__ = ("snapshot_id", "rto", "rpo", "keys", "mismatched", "changed_since", "differences")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    RTO_FIELD_NUMBER: _ClassVar[int]
    RPO_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_SINCE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    rto: _duration_pb2.Duration
    rpo: _duration_pb2.Duration
    keys: int
    mismatched: int
    changed_since: int
    differences: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, snapshot_id: _Optional[str] = ..., rto: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rpo: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., keys: _Optional[int] = ..., mismatched: _Optional[int] = ..., changed_since: _Optional[int] = ..., differences: _Optional[_Iterable[str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "done", "total")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("progress", "snapshot")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    snapshot: Snapshot
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class RestoreSnapshotResponse(_message.Message):
    __slots__ = ("progress", "snapshot", "restored", "wiped")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    WIPED_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    snapshot: Snapshot
    restored: int
    wiped: int
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., restored: _Optional[int] = ..., wiped: _Optional[int] = ...) -> None: ...

class RunDrillResponse(_message.Message):
    __slots__ = ("progress", "report")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    report: DrillReport
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., report: _Optional[_Union[DrillReport, _Mapping]] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Snapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Snapshot, _Mapping]]] = ...) -> None: ...

class RestoreSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_id", "wipe")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    WIPE_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    wipe: bool
    def __init__(self, snapshot_id: _Optional[str] = ..., wipe: bool = ...) -> None: ...

class RunDrillRequest(_message.Message):
    __slots__ = ("snapshot_id",)
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    def __init__(self, snapshot_id: _Optional[str] = ...) -> None: ...

class SnapshotEntry(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class SnapshotContents(_message.Message):
    __slots__ = ("revision", "entries")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    entries: _containers.RepeatedCompositeFieldContainer[SnapshotEntry]
    def __init__(self, revision: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[SnapshotEntry, _Mapping]]] = ...) -> None: ...

class DrillRecord(_message.Message):
    __slots__ = ("finished_at", "succeeded", "report", "error")
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    finished_at: _timestamp_pb2.Timestamp
    succeeded: bool
    report: DrillReport
    error: str
    def __init__(self, finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., succeeded: bool = ..., report: _Optional[_Union[DrillReport, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class RestoreRecord(_message.Message):
    __slots__ = ("finished_at", "snapshot_id", "restored", "wiped")
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    WIPED_FIELD_NUMBER: _ClassVar[int]
    finished_at: _timestamp_pb2.Timestamp
    snapshot_id: str
    restored: int
    wiped: int
    def __init__(self, finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., restored: _Optional[int] = ..., wiped: _Optional[int] = ...) -> None: ...

class StoredSnapshot(_message.Message):
    __slots__ = ("manifest", "sealed")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    manifest: Snapshot
    sealed: _keybackup_pb2.SealedData
    def __init__(self, manifest: _Optional[_Union[Snapshot, _Mapping]] = ..., sealed: _Optional[_Union[_keybackup_pb2.SealedData, _Mapping]] = ...) -> None: ...
