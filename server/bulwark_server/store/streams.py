"""One shape for every Watch* stream: a snapshot, then changes, resumable by revision.

``follow`` is what WatchBreakers, WatchInstances, WatchPrimary and
WatchFeatures share. It guarantees:

* Without a start revision (or when the replica's history no longer reaches
  back to it) the stream begins with ``snapshot()``, whose revision is that of
  the cache when it was taken; every change after that revision follows, none
  skipped and none repeated, even those made while the snapshot was being sent.
* With a start revision the history covers, only the changes after it are sent.
* A stream that falls too far behind the cache (its queue overflowed) is sent
  a fresh snapshot, so a receiver can always rebuild its whole view.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

from bulwark_server.store.cache import Event
from bulwark_server.store.etcd import EtcdStore

T = TypeVar("T")


async def follow(
    store: EtcdStore,
    prefixes: tuple[bytes, ...],
    start_revision: int,
    snapshot: Callable[[], tuple[list[T], int]],
    convert: Callable[[list[Event]], Iterable[T]],
) -> AsyncIterator[T]:
    """Yield ``snapshot()``'s messages, then ``convert`` of each batch of later
    events under ``prefixes``, until cancelled.

    ``snapshot`` returns its messages and the cache revision it was taken at;
    ``convert`` gets only events newer than everything already sent, never none.
    """
    queue = store.cache.subscribe(prefixes)
    try:
        sent = start_revision
        replay = store.cache.events_after(sent) if sent else None
        if replay is None:
            items, sent = snapshot()
            for item in items:
                yield item
        else:
            missed = [ev for ev in replay if ev.entry.key.startswith(prefixes)]
            if missed:
                for item in convert(missed):
                    yield item
            if replay:
                sent = max(sent, replay[-1].revision)
        while True:
            batch = await queue.get()
            if not batch:
                # Fell too far behind and missed changes: start over.
                store.unsubscribe(queue)
                queue = store.cache.subscribe(prefixes)
                items, sent = snapshot()
                for item in items:
                    yield item
                continue
            fresh = [ev for ev in batch if ev.revision > sent and ev.entry.key.startswith(prefixes)]
            if fresh:
                for item in convert(fresh):
                    yield item
            sent = max(sent, batch[-1].revision)
    finally:
        store.unsubscribe(queue)
