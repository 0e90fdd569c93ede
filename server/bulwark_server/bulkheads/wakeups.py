"""Wake-ups: store changes turned into wake-ups of this replica's waiting Acquires.

One task per replica follows the store once the first Acquire waits. A freed
permit wakes as many waiters of its bulkhead as slots are free; a changed or
deleted configuration wakes them all. Should changes have been dropped (the
follower fell behind) or a dispatch fail, every waiter is woken to look again,
so a wake-up may be spurious but is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable

from bulwark.v1 import bulkhead_pb2
from bulwark_server.bulkheads.rules import slot_of
from bulwark_server.bulkheads.waiters import WaitQueue
from bulwark_server.store import EtcdStore, Event, EventType, split_key
from bulwark_server.store.keys import BULKHEAD_KIND, PERMIT_KIND

log = logging.getLogger(__name__)


class WakeUps:
    """Follows the store and wakes ``waiters``; ``busy(name)`` gives the slots taken
    or being taken on this replica."""

    def __init__(
        self, store: EtcdStore, waiters: WaitQueue, busy: Callable[[str], set[int]]
    ) -> None:
        self._store = store
        self._waiters = waiters
        self._busy = busy
        self._follower: asyncio.Task[None] | None = None

    def follow(self) -> None:
        """Start (once) the task that turns store changes into wake-ups."""
        if self._follower is not None and not self._follower.done():
            return
        # Subscribe now, not when the task first runs: a change in between would be lost.
        queue = self._store.subscribe(BULKHEAD_KIND, PERMIT_KIND)
        # A fresh context: started by the first Acquire, it must not carry that
        # caller's identity or write log for the rest of its life.
        self._follower = asyncio.create_task(
            self._follow(queue), name="bulkheads-follow", context=contextvars.Context()
        )

    async def close(self) -> None:
        """Stop following the store."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    async def _follow(self, queue: asyncio.Queue[list[Event]]) -> None:
        try:
            while True:
                batch = await queue.get()
                if not batch:
                    # We fell behind and changes were dropped: every waiter re-checks.
                    self._store.unsubscribe(queue)
                    queue = self._store.subscribe(BULKHEAD_KIND, PERMIT_KIND)
                    self._waiters.wake_all()
                    continue
                try:
                    self._dispatch(batch)
                except Exception:
                    log.exception("bulkhead wake-up dispatch failed; waking every waiter")
                    self._waiters.wake_all()
        finally:
            self._store.unsubscribe(queue)

    def _dispatch(self, batch: list[Event]) -> None:
        freed: set[str] = set()
        for event in batch:
            try:
                kind, key_name = split_key(event.entry.key)
            except ValueError:
                continue
            if kind == BULKHEAD_KIND:
                # New limits or a deletion: every waiter must look again.
                self._waiters.wake_all(key_name)
            elif kind == PERMIT_KIND and event.type is EventType.DELETE:
                parsed = slot_of(key_name)
                if parsed is not None:
                    freed.add(parsed[0])
        for name in freed:
            if not self._waiters.waiting(name):
                continue
            entry = self._store.get(BULKHEAD_KIND, name)
            if entry is None:
                self._waiters.wake_all(name)
                continue
            max_concurrent = bulkhead_pb2.Bulkhead.FromString(entry.value).max_concurrent
            free = max(0, max_concurrent - len(self._busy(name)))
            self._waiters.wake(name, free)
