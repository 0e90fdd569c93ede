"""The in-memory mirror of the ``/bulwark/v1/`` prefix. Pure data, no I/O.

``EtcdStore`` feeds it: ``load`` after a full range read (start, reconnect,
compaction) and ``apply`` for each watch response. Readers get entries as
immutable values, so a reader never sees a half-applied change. Subscribers
receive each batch of changes in revision order; a full ``load`` is turned
into the puts and deletes that take the old view to the new one, so a
subscriber never needs to know a resync happened.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sortedcontainers import SortedList


class Entry(NamedTuple):
    """One key as etcd holds it.

    A named tuple, so the cache can hold its fields as a plain tuple (``_entries``)
    and make one back cheaply on a read.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 1
    lease: int = 0


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    """A change to one key. For DELETE, ``entry`` is the last value known and
    ``revision`` is the revision of the deletion."""

    type: EventType
    entry: Entry
    revision: int


class Cache:
    """Sorted map of key → Entry at a known etcd revision."""

    def __init__(self, max_queue: int = 10_000, history: int = 10_000) -> None:
        # Each key's Entry as a plain tuple: the garbage collector stops tracking a
        # tuple of bytes and ints (not a named one), and a replica holds one per key.
        # As Entry objects, with 100,000 limits and as many audit events, every full
        # collection visited 200,000 of them.
        self._entries: dict[bytes, tuple[bytes, bytes, int, int, int, int]] = {}
        # A SortedList, not a list kept sorted with insort: each insert or delete in a
        # list moves every key after it (with 100,000 limits, ~100 µs for each audit
        # event, whose keys sort before the limits'), the cost of what is stored.
        self._sorted: SortedList = SortedList()
        self.revision = 0
        # Each subscriber's queue and the key prefix it follows.
        self._subscribers: dict[asyncio.Queue[list[Event]], bytes | tuple[bytes, ...]] = {}
        self._max_queue = max_queue
        # Recent events, so a watcher can resume from a revision without a snapshot.
        # Every event with revision > _history_floor is in _history.
        self._history: deque[Event] = deque(maxlen=history)
        self._history_floor = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Entry | None:
        fields = self._entries.get(key)
        return None if fields is None else Entry._make(fields)

    def scan(self, prefix: bytes, start_after: bytes = b"", limit: int = 0) -> list[Entry]:
        """Entries whose key starts with ``prefix``, in key order, after ``start_after``."""
        if start_after >= prefix:
            keys = self._sorted.irange(start_after, inclusive=(False, True))
        else:
            keys = self._sorted.irange(prefix)
        out: list[Entry] = []
        for key in keys:
            if not key.startswith(prefix):
                break
            out.append(Entry._make(self._entries[key]))
            if limit and len(out) >= limit:
                break
        return out

    def count(self, prefix: bytes) -> int:
        """How many entries have a key starting with ``prefix`` (two binary searches)."""
        first = self._sorted.bisect_left(prefix)
        # The keys with the prefix are contiguous: they end below the first key past
        # them all, the prefix with its last byte below 0xFF raised by one.
        head = prefix.rstrip(b"\xff")
        if not head:
            return len(self._sorted) - first
        return self._sorted.bisect_left(head[:-1] + bytes([head[-1] + 1])) - first

    def load(self, entries: Iterable[Entry], revision: int) -> list[Event]:
        """Replace the whole view with a range read taken at ``revision``."""
        fresh = {e.key: e for e in entries}
        events: list[Event] = []
        for key, old in self._entries.items():
            if key not in fresh:
                events.append(Event(EventType.DELETE, Entry._make(old), revision))
        for key, new in fresh.items():
            held = self._entries.get(key)
            if held is None or Entry._make(held).mod_revision != new.mod_revision:
                events.append(Event(EventType.PUT, new, new.mod_revision))
        events.sort(key=lambda ev: (ev.revision, ev.entry.key))
        self._entries = {key: tuple(e) for key, e in fresh.items()}
        self._sorted = SortedList(fresh)
        self.revision = max(self.revision, revision)
        # What happened between the last watch event and this read is unknown,
        # so no resume point before it can be served from history.
        self._history.clear()
        self._history_floor = self.revision
        self._publish(events)
        return events

    def apply(self, events: Iterable[Event], revision: int) -> list[Event]:
        """Apply watch events (already in revision order) and advance to ``revision``."""
        applied: list[Event] = []
        for ev in events:
            key = ev.entry.key
            if ev.type is EventType.PUT:
                if key not in self._entries:
                    self._sorted.add(key)
                self._entries[key] = tuple(ev.entry)
                applied.append(ev)
            else:
                old = self._entries.pop(key, None)
                if old is None:
                    continue
                self._sorted.remove(key)
                applied.append(Event(EventType.DELETE, Entry._make(old), ev.revision))
        self.revision = max(self.revision, revision)
        for ev in applied:
            if len(self._history) == self._history.maxlen:
                self._history_floor = self._history[0].revision
            self._history.append(ev)
        self._publish(applied)
        return applied

    def events_after(self, revision: int, prefix: bytes = b"") -> list[Event] | None:
        """Events under ``prefix`` with a revision above ``revision``, oldest first.

        None when the history no longer reaches back that far (the caller must
        take a snapshot instead).
        """
        if revision < self._history_floor:
            return None
        return [
            ev for ev in self._history if ev.revision > revision and ev.entry.key.startswith(prefix)
        ]

    def advance(self, revision: int) -> None:
        """Record that etcd confirmed nothing changed up to ``revision``."""
        self.revision = max(self.revision, revision)

    def subscribe(self, prefix: bytes | tuple[bytes, ...] = b"") -> asyncio.Queue[list[Event]]:
        """Return a queue receiving every later batch of events under ``prefix`` (or any
        of several).

        Batches with no event under ``prefix`` are not delivered, so a watch stream is not
        woken by the writes of other kinds (an audit record, a heartbeat). A subscriber
        that falls ``max_queue`` batches behind is dropped and receives an empty
        batch as its last item, so it knows to re-list.
        """
        queue: asyncio.Queue[list[Event]] = asyncio.Queue(self._max_queue)
        self._subscribers[queue] = prefix
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[Event]]) -> None:
        self._subscribers.pop(queue, None)

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        for queue, prefix in list(self._subscribers.items()):
            batch = events
            if prefix:
                batch = [ev for ev in events if ev.entry.key.startswith(prefix)]
                if not batch:
                    continue
            try:
                queue.put_nowait(batch)
            except asyncio.QueueFull:
                self._subscribers.pop(queue, None)
                queue.get_nowait()
                queue.put_nowait([])
