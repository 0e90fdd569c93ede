"""The leader's view of the breakers' records: what falls due when, and what re-entered CLOSED.

``BreakerTracker`` follows the cache's change events for breaker keys (every
replica's writes, and the cache's resyncs, which reach subscribers as plain puts
and deletes), so the leader's work follows what changes or falls due, never
what merely exists:

* ``observe_all`` takes in every cached breaker: once when a term starts, and
  again only when the event queue overflowed and changes were dropped.
* ``follow`` takes in the breakers changed since its last call, each read from
  the cache (so a decision is made on the current record), at most once per call.
* Each breaker observed is armed with ``machine.next_due``; ``pop_due`` hands
  the leader only those whose time has passed.
* A record older than the one last observed is ignored, so a late event never
  undoes what the leader itself wrote.
* ``on_closed(name)`` is called when a breaker makes a new transition into
  CLOSED (a reset of a CLOSED breaker included) after the first record observed
  in the term; ``on_gone(name)`` when a breaker no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import machine
from bulwark_server.breakers.timers import Timers
from bulwark_server.store import Entry, EtcdStore, Event
from bulwark_server.store.keys import BREAKER_KIND, kind_prefix


class BreakerTracker:
    """Due times and last-seen transitions of every breaker, kept by change events."""

    def __init__(
        self,
        store: EtcdStore,
        *,
        on_closed: Callable[[str], None],
        on_gone: Callable[[str], None],
        remembered: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """``remembered`` names what the owner holds state for (forgotten when gone)."""
        self._store = store
        self._on_closed = on_closed
        self._on_gone = on_gone
        self._remembered = remembered
        self._prefix = kind_prefix(BREAKER_KIND)
        self._seen: dict[str, tuple[int, int]] = {}  # name -> (mod revision, transitions)
        self.timers = Timers()
        self._held: list[list[Event]] = []  # a batch ``wait`` took from the queue

    def reset(self) -> None:
        """Forget everything (a new term: earlier transitions say nothing about it)."""
        self._seen.clear()
        self.timers.clear()
        self._held.clear()

    def observe(self, breaker: breaker_pb2.CircuitBreaker, revision: int) -> None:
        """Take in the breaker's record at ``revision`` (ignored if older than the last)."""
        name = breaker.name
        status = breaker.status
        previous = self._seen.get(name)
        if previous is not None and revision < previous[0]:
            return
        self._seen[name] = (revision, status.transitions)
        if (
            previous is not None
            and status.transitions > previous[1]
            and status.state == breaker_pb2.BREAKER_STATE_CLOSED
        ):
            self._on_closed(name)
        self.timers.set(name, machine.next_due(breaker.config, status))

    def observe_all(self) -> None:
        """Observe every cached breaker and forget the ones gone: the one full pass."""
        present = set()
        for entry in self._store.scan(BREAKER_KIND):
            name = self._name(entry)
            present.add(name)
            seen = self._seen.get(name)
            if seen is None or seen[0] < entry.mod_revision or name not in self.timers:
                self._observe_entry(entry)
        for name in (set(self._seen) | set(self._remembered())) - present:
            self.forget(name)

    def follow(self, changes: asyncio.Queue[list[Event]]) -> asyncio.Queue[list[Event]]:
        """Observe every breaker changed since the last call (events queued in
        ``changes``, from ``store.subscribe``); returns the queue to read next time
        (a new one when this one overflowed, after a full pass)."""
        names: set[str] = set()
        while self._held or not changes.empty():
            batch = self._held.pop() if self._held else changes.get_nowait()
            if not batch:
                # Fell too far behind and changes were dropped: observe everything again.
                self._store.unsubscribe(changes)
                changes = self._store.subscribe(BREAKER_KIND)
                self.observe_all()
                names.clear()
                continue
            names.update(
                self._name(ev.entry) for ev in batch if ev.entry.key.startswith(self._prefix)
            )
        for name in names:
            self.refresh(name, only_newer=True)
        return changes

    async def wait(self, changes: asyncio.Queue[list[Event]], seconds: float) -> None:
        """Until a change is queued (kept for the next ``follow``) or ``seconds`` pass."""
        if seconds <= 0 or self._held or not changes.empty():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                self._held.append(await changes.get())

    def next_due(self) -> float | None:
        """The earliest time a breaker falls due (wall clock), or None."""
        return self.timers.next_due()

    def refresh(self, name: str, *, only_newer: bool = False) -> None:
        """Observe the cached record of ``name`` (forget it when absent); with
        ``only_newer``, only when it is newer than the one last observed."""
        entry = self._store.get(BREAKER_KIND, name)
        if entry is None:
            self.forget(name)
            return
        seen = self._seen.get(name)
        if only_newer and seen is not None and seen[0] >= entry.mod_revision:
            return
        self._observe_entry(entry)

    def pop_due(self, now: float) -> list[str]:
        """The breakers whose due time is at or before ``now``, disarmed, earliest first."""
        return self.timers.pop_due(now)

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)
        self.timers.discard(name)
        self._on_gone(name)

    def _observe_entry(self, entry: Entry) -> None:
        breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
        self.observe(breaker, entry.mod_revision)

    def _name(self, entry: Entry) -> str:
        return entry.key[len(self._prefix) :].decode()
