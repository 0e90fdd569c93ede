"""This replica's queue of Acquire calls waiting for a slot, one FIFO per bulkhead.

Why a queue rather than every waiter watching the store: when one permit is
released, waking every waiter would send each of them to etcd to race for the
one slot (a thundering herd of lease grants and failed creates). The queue
wakes only as many waiters as there are free slots, oldest first, so one
release costs about one attempt per replica.

Guarantees: ``wake`` resolves futures in queue order and never resolves a
future twice; futures that were cancelled or already resolved are skipped and
do not use up the wake. Waking is a hint, not a reservation: a woken waiter
may still lose the slot to another replica and join again.
"""

from __future__ import annotations

import asyncio
from collections import deque


class WaitQueue:
    """FIFO of waiter futures per bulkhead name. Single event loop; no locking needed."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    def join(self, name: str, *, front: bool = False) -> asyncio.Future[None]:
        """Queue a new waiter; ``front`` for one that was woken and lost the race."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(name, deque())
        if front:
            queue.appendleft(future)
        else:
            queue.append(future)
        return future

    def leave(self, name: str, future: asyncio.Future[None]) -> None:
        """Remove a waiter that stops waiting (no-op if it was woken already)."""
        queue = self._queues.get(name)
        if queue is None:
            return
        try:
            queue.remove(future)
        except ValueError:
            pass
        if not queue:
            del self._queues[name]

    def wake(self, name: str, count: int) -> int:
        """Wake up to ``count`` waiters of ``name``, oldest first; return how many."""
        queue = self._queues.get(name)
        woken = 0
        while queue and woken < count:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
                woken += 1
        if queue is not None and not queue:
            del self._queues[name]
        return woken

    def wake_all(self, name: str | None = None) -> int:
        """Wake every waiter of ``name`` (of every bulkhead when None)."""
        names = list(self._queues) if name is None else [name]
        return sum(self.wake(n, len(self._queues.get(n, ()))) for n in names)

    def waiting(self, name: str) -> int:
        """Waiters of ``name`` still queued (including any already cancelled)."""
        return len(self._queues.get(name, ()))

    def names(self) -> list[str]:
        """Bulkheads that have waiters queued."""
        return list(self._queues)
