"""Stored protobuf messages whose ``revision`` field is the key's etcd revision.

Many kinds store a message whose ``revision`` field is cleared when written and set
from the key's mod revision when read: these two helpers do both, the same way.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from bulwark_server.store.cache import Entry
from bulwark_server.store.etcd import EtcdStore
from bulwark_server.store.kv import Fence


class Revisioned(Protocol):
    revision: int

    def CopyFrom(self, other: Any) -> None: ...

    def ClearField(self, name: str) -> None: ...

    def SerializeToString(self) -> bytes: ...


M = TypeVar("M", bound=Revisioned)


def with_revision(kind: type[M], entry: Entry) -> M:
    """The message stored in ``entry``, its ``revision`` set from the key."""
    message = kind.FromString(entry.value)  # type: ignore[attr-defined]
    message.revision = entry.mod_revision
    return message  # type: ignore[no-any-return]


async def put_message(
    store: EtcdStore,
    kind: str,
    name: str,
    message: M,
    *,
    expected_revision: int = 0,
    fence: Fence | None = None,
) -> tuple[M, bool]:
    """Store a copy of ``message`` (revision cleared) under ``kind``/``name`` by
    compare-and-swap (``EtcdStore.upsert``); the copy with its new revision, and
    whether it was created."""
    stored = type(message)()
    stored.CopyFrom(message)
    stored.ClearField("revision")
    value = stored.SerializeToString()
    revision, created = await store.upsert(
        kind, name, lambda _: value, expected_revision=expected_revision, fence=fence
    )
    stored.revision = revision
    return stored, created
