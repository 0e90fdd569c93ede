import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CopyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COPY_STATE_UNSPECIFIED: _ClassVar[CopyState]
    COPY_STATE_OK: _ClassVar[CopyState]
    COPY_STATE_MISSING: _ClassVar[CopyState]
    COPY_STATE_CORRUPT: _ClassVar[CopyState]
COPY_STATE_UNSPECIFIED: CopyState
COPY_STATE_OK: CopyState
COPY_STATE_MISSING: CopyState
COPY_STATE_CORRUPT: CopyState

class KeyBackup(_message.Message):
    __slots__ = ("key_id", "version", "labels", "created_at", "created_by", "kek_id", "ciphertext_sha256", "size", "locations")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    labels: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    kek_id: str
    ciphertext_sha256: str
    size: int
    locations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., kek_id: _Optional[str] = ..., ciphertext_sha256: _Optional[str] = ..., size: _Optional[int] = ..., locations: _Optional[_Iterable[str]] = ...) -> None: ...

class BackupKeyRequest(_message.Message):
    __slots__ = ("key_id", "material", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    material: bytes
    labels: _containers.ScalarMap[str, str]
    def __init__(self, key_id: _Optional[str] = ..., material: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BackupKeyResponse(_message.Message):
    __slots__ = ("backup",)
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    backup: KeyBackup
    def __init__(self, backup: _Optional[_Union[KeyBackup, _Mapping]] = ...) -> None: ...

class RestoreKeyRequest(_message.Message):
    __slots__ = ("key_id", "version")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RestoreKeyResponse(_message.Message):
    __slots__ = ("backup", "material", "location", "damaged")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_FIELD_NUMBER: _ClassVar[int]
    backup: KeyBackup
    material: bytes
    location: str
    damaged: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backup: _Optional[_Union[KeyBackup, _Mapping]] = ..., material: _Optional[bytes] = ..., location: _Optional[str] = ..., damaged: _Optional[_Iterable[str]] = ...) -> None: ...

class ListKeyBackupsRequest(_message.Message):
    __slots__ = ("key_id", "page_size", "page_token")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    page_size: int
    page_token: str
    def __init__(self, key_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListKeyBackupsResponse(_message.Message):
    __slots__ = ("backups", "next_page_token")
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[KeyBackup]
    next_page_token: str
    def __init__(self, backups: _Optional[_Iterable[_Union[KeyBackup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CopyCheck(_message.Message):
    __slots__ = ("key_id", "version", "location", "state", "problem")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    location: str
    state: CopyState
    problem: str
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ..., location: _Optional[str] = ..., state: _Optional[_Union[CopyState, str]] = ..., problem: _Optional[str] = ...) -> None: ...

class VerifyKeyBackupsRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class VerifyKeyBackupsResponse(_message.Message):
    __slots__ = ("versions", "ok", "problems", "lost")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    versions: int
    ok: int
    problems: _containers.RepeatedCompositeFieldContainer[CopyCheck]
    lost: int
    def __init__(self, versions: _Optional[int] = ..., ok: _Optional[int] = ..., problems: _Optional[_Iterable[_Union[CopyCheck, _Mapping]]] = ..., lost: _Optional[int] = ...) -> None: ...

class RotateKeyEncryptionKeyRequest(_message.Message):
    __slots__ = ("kek_id",)
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    kek_id: str
    def __init__(self, kek_id: _Optional[str] = ...) -> None: ...

class RotateKeyEncryptionKeyResponse(_message.Message):
    __slots__ = ("done", "total", "rewrapped", "finished", "kek_id")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    rewrapped: int
    finished: bool
    kek_id: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., rewrapped: _Optional[int] = ..., finished: bool = ..., kek_id: _Optional[str] = ...) -> None: ...

class SealedData(_message.Message):
    __slots__ = ("kek_id", "wrapped_key", "wrap_nonce", "nonce", "ciphertext")
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    WRAP_NONCE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    kek_id: str
    wrapped_key: bytes
    wrap_nonce: bytes
    nonce: bytes
    ciphertext: bytes
    def __init__(self, kek_id: _Optional[str] = ..., wrapped_key: _Optional[bytes] = ..., wrap_nonce: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class StoredKeyBackup(_message.Message):
    __slots__ = ("backup", "sealed")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    backup: KeyBackup
    sealed: SealedData
    def __init__(self, backup: _Optional[_Union[KeyBackup, _Mapping]] = ..., sealed: _Optional[_Union[SealedData, _Mapping]] = ...) -> None: ...
