"""LimitCatalog: the limits as this replica's cache holds them, indexed for decisions.

Follows only the limits' keys (``EtcdStore.subscribe(LIMIT_KIND)``): a heartbeat,
a report or any other key written elsewhere costs it nothing. The index is built
once from the cache, then kept current one change at a time: each change costs
the size of one limit, not the number of limits. Changes are taken from the
queue when a decision asks (``current``), so a decision always sees every change
the cache has applied, in the order etcd made them, without a task of its own.
A subscriber that falls too far behind (the queue is dropped by the cache)
rebuilds from the cache once.
"""

from __future__ import annotations

import asyncio

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.index import LimitIndex
from bulwark_server.store import EtcdStore, Event, EventType
from bulwark_server.store.keys import LIMIT_KIND, kind_prefix


class LimitCatalog:
    """The indexed limits of every domain, current with the store's cache."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._prefix = kind_prefix(LIMIT_KIND)
        self._queue: asyncio.Queue[list[Event]] | None = None
        self._index = LimitIndex()

    def current(self) -> LimitIndex:
        """The index as of the cache's latest change (applies the pending ones)."""
        queue = self._queue
        if queue is None:
            return self._rebuild()
        while not queue.empty():
            batch = queue.get_nowait()
            if not batch:  # dropped for falling behind: start over from the cache
                return self._rebuild()
            for event in batch:
                self._apply(event)
        return self._index

    def close(self) -> None:
        """Stop following the store (a later ``current`` starts following again)."""
        if self._queue is not None:
            self._store.unsubscribe(self._queue)
            self._queue = None

    def _rebuild(self) -> LimitIndex:
        self.close()
        # Subscribing and scanning in one step (no await between) leaves no gap:
        # every change after this scan arrives in the new queue.
        self._queue = self._store.subscribe(LIMIT_KIND)
        index = LimitIndex()
        for entry in self._store.scan(LIMIT_KIND):
            index.put(ratelimit_pb2.Limit.FromString(entry.value), entry.create_revision)
        self._index = index
        return index

    def _apply(self, event: Event) -> None:
        entry = event.entry
        if event.type is EventType.DELETE:
            domain, _, name = entry.key[len(self._prefix) :].decode().partition("/")
            self._index.remove(domain, name)
            return
        self._index.put(ratelimit_pb2.Limit.FromString(entry.value), entry.create_revision)
