"""BackpressureManager: per-downstream policies in etcd, read from the cache.

Layout: ``/bulwark/v1/backpressure-policies/<name>`` holds a ``BackpressurePolicy``
(revision cleared). Any replica writes them (checked by ``rules`` first); clients
watch them as they watch breakers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bulwark.v1 import backpressure_pb2, watch_pb2
from bulwark_server.backpressure.rules import check_policy
from bulwark_server.errors import NotFound
from bulwark_server.store import (
    Entry,
    EtcdStore,
    Event,
    EventType,
    Page,
    follow,
    put_message,
    scan_page,
    with_revision,
)
from bulwark_server.store.keys import BACKPRESSURE_KIND, kind_prefix

SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT, DELETE = watch_pb2.WATCH_EVENT_TYPE_PUT, watch_pb2.WATCH_EVENT_TYPE_DELETE
Policy = backpressure_pb2.BackpressurePolicy
Response = backpressure_pb2.WatchBackpressurePoliciesResponse


def _policy(entry: Entry) -> backpressure_pb2.BackpressurePolicy:
    return with_revision(Policy, entry)


class BackpressureManager:
    """See the module docstring."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store

    async def put(
        self, policy: backpressure_pb2.BackpressurePolicy, expected_revision: int = 0
    ) -> backpressure_pb2.BackpressurePolicy:
        check_policy(policy)
        stored, _ = await put_message(
            self._store, BACKPRESSURE_KIND, policy.name, policy, expected_revision=expected_revision
        )
        return stored

    def get(self, name: str) -> backpressure_pb2.BackpressurePolicy:
        entry = self._store.get(BACKPRESSURE_KIND, name)
        if entry is None:
            raise NotFound(f"backpressure policy {name!r} does not exist")
        return _policy(entry)

    def list(self, size: int, start_after: str) -> Page[backpressure_pb2.BackpressurePolicy]:
        page = scan_page(self._store.cache, kind_prefix(BACKPRESSURE_KIND), size, start_after)
        return page.map(_policy)

    async def delete(self, name: str) -> int:
        try:
            return await self._store.delete(BACKPRESSURE_KIND, name)
        except NotFound:
            raise NotFound(f"backpressure policy {name!r} does not exist") from None

    def watch(
        self, names: frozenset[str], start_revision: int = 0
    ) -> AsyncIterator[backpressure_pb2.WatchBackpressurePoliciesResponse]:
        """A snapshot of the policies named (all when ``names`` is empty), then each change."""
        prefix = kind_prefix(BACKPRESSURE_KIND)

        def wanted(name: str) -> bool:
            return not names or name in names

        def snapshot() -> tuple[list[Response], int]:
            revision = self._store.cache.revision
            out = [
                Response(type=SNAPSHOT, policy=_policy(e), revision=revision)
                for e in self._store.scan(BACKPRESSURE_KIND)
                if wanted(e.key[len(prefix) :].decode())
            ]
            out.append(Response(type=SYNCED, revision=revision))
            return out, revision

        def convert(
            events: list[Event],
        ) -> list[backpressure_pb2.WatchBackpressurePoliciesResponse]:
            out = []
            for event in events:
                name = event.entry.key[len(prefix) :].decode()
                if not wanted(name):
                    continue
                if event.type == EventType.DELETE:
                    out.append(
                        Response(type=DELETE, policy=Policy(name=name), revision=event.revision)
                    )
                else:
                    out.append(
                        Response(type=PUT, policy=_policy(event.entry), revision=event.revision)
                    )
            return out

        return follow(self._store, (prefix,), start_revision, snapshot, convert)
