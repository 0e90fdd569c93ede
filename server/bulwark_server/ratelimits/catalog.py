"""LimitCatalog: the limits as this replica's cache holds them, indexed for decisions.

Follows only the limits' keys (``EtcdStore.subscribe(LIMIT_KIND)``): a heartbeat,
a report or any other key written elsewhere costs it nothing. The index is built
once from the cache (``start``, before the replica serves), then kept current one
change at a time: each change costs the size of one limit, not the number of
limits.

Who applies a change: a task (``_follow``) applies them as they arrive, a chunk of
``CHUNK`` at a time with the event loop free in between, so a burst (a hundred
thousand PutLimit calls, a resync after a reconnect) never holds a decision for
the whole of it. A decision (``current``) applies what is pending itself when
that is at most ``CHUNK`` changes, so it sees every change the cache has applied
(a PutLimit's own write, for one); during a longer burst it answers from the
index as far as the task got, as a replica whose watch lags would. A subscriber
that falls too far behind (the queue is dropped by the cache) rebuilds from the
cache at once; only a loop starved of ``Cache``'s queue limit of batches gets there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.index import LimitIndex
from bulwark_server.store import EtcdStore, Event, EventType
from bulwark_server.store.keys import LIMIT_KIND, kind_prefix

CHUNK = 500
"""Changes applied in one step: about 10 ms of the event loop."""

# Put in the catalog's own queue by ``current`` when it leaves changes for the
# follower, which may be waiting on an empty queue. Told apart by identity from
# the empty batch with which the cache says it dropped the queue.
_NUDGE: list[Event] = []


class LimitCatalog:
    """The indexed limits of every domain, current with the store's cache."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._prefix = kind_prefix(LIMIT_KIND)
        self._queue: asyncio.Queue[list[Event]] | None = None
        self._pending: deque[Event] = deque()
        self._index = LimitIndex()
        self._task: asyncio.Task[None] | None = None
        self._nudged = False

    def start(self) -> None:
        """Build the index now and, on a running loop, keep it current in a task."""
        self._rebuild()
        with contextlib.suppress(RuntimeError):  # no running loop: ``current`` applies all
            if self._task is None:
                # A fresh context: a decision may start it, and it must not carry that
                # caller's identity for the rest of its life.
                self._task = asyncio.get_running_loop().create_task(
                    self._follow(), name="limit-catalog", context=contextvars.Context()
                )

    def current(self) -> LimitIndex:
        """The index as of the cache's latest change, or as far as a burst was applied."""
        if self._queue is None:
            self.start()
            return self._index
        if not self._take():
            return self._rebuild()
        if self._task is not None and self._task.done():
            self._task = None  # it failed (asyncio logged why): apply here from now on
        if self._task is None or len(self._pending) <= CHUNK:
            self._apply(len(self._pending))
        elif not self._nudged:
            self._nudged = True
            with contextlib.suppress(asyncio.QueueFull):  # full: the follower is not waiting
                self._queue.put_nowait(_NUDGE)
        return self._index

    async def close(self) -> None:
        """Stop following the store (a later ``current`` starts following again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._unsubscribe()

    async def _follow(self) -> None:
        while True:
            queue = self._queue
            if queue is None:
                return
            batch = await queue.get()
            if queue is not self._queue:
                continue  # a rebuild replaced the queue while this waited
            if batch is not _NUDGE:
                if not batch:
                    self._rebuild()
                    continue
                self._pending.extend(batch)
            if not self._take():
                self._rebuild()
                continue
            while self._pending:
                self._apply(CHUNK)
                await asyncio.sleep(0)
            self._nudged = False

    def _take(self) -> bool:
        """Move the queued batches to ``_pending``; False if the cache dropped the queue."""
        queue = self._queue
        assert queue is not None
        while not queue.empty():
            batch = queue.get_nowait()
            if batch is _NUDGE:
                self._nudged = False  # taken here: ``current`` nudges again if need be
                continue
            if not batch:
                return False
            self._pending.extend(batch)
        return True

    def _apply(self, count: int) -> None:
        for _ in range(min(count, len(self._pending))):
            event = self._pending.popleft()
            entry = event.entry
            if event.type is EventType.DELETE:
                domain, _, name = entry.key[len(self._prefix) :].decode().partition("/")
                self._index.remove(domain, name)
            else:
                limit = ratelimit_pb2.Limit.FromString(entry.value)
                self._index.put(limit, entry.create_revision, entry.value)

    def _unsubscribe(self) -> None:
        queue, self._queue = self._queue, None
        self._pending.clear()
        self._nudged = False
        if queue is not None:
            self._store.unsubscribe(queue)
            # Wake a follower waiting on it: the cache feeds it no more. (A full queue
            # has items, so nobody waits on it.)
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait([])

    def _rebuild(self) -> LimitIndex:
        self._unsubscribe()
        # Subscribing and scanning in one step (no await between) leaves no gap:
        # every change after this scan arrives in the new queue.
        self._queue = self._store.subscribe(LIMIT_KIND)
        index = LimitIndex()
        for entry in self._store.scan(LIMIT_KIND):
            limit = ratelimit_pb2.Limit.FromString(entry.value)
            index.put(limit, entry.create_revision, entry.value)
        self._index = index
        return index
