"""The fleet's circuit breakers: configuration and shared state in etcd, windows on the leader.

Guarantees:

* A breaker (configuration and ``BreakerStatus``) is one key,
  ``/bulwark/v1/breakers/<name>``. Every change is a compare-and-swap on it,
  so concurrent replicas never lose an update.
* ``allow`` answers from the replica's cache. Only two decisions write: the
  first call after the wait in OPEN (OPEN → HALF_OPEN) and each HALF_OPEN
  trial permit. Both are compare-and-swap writes, so the fleet hands out
  exactly ``permitted_number_of_calls_in_half_open_state`` trial permits,
  whichever replicas the calls reach, and across leader failover.
* Outcome reports are aggregated by the leader into one sliding window per
  breaker (followers forward them). Transitions decided by the leader are
  fenced writes: a deposed leader cannot trip or close a breaker.
* The leader checkpoints changed windows every ``checkpoint_interval`` under
  ``/bulwark/v1/breaker-windows/<name>``, up to ``MAX_TXN_OPS`` windows per fenced
  transaction (``checkpoints.py``); a new leader goes on from the last checkpoint.
  A failover loses at most the reports of one interval, except successes-only
  changes to windows far from their thresholds, which may wait up to
  ``checkpoint_max_deferral`` (``deferral.py`` has the exact rule and bound).
* The OPEN → HALF_OPEN timer (when automatic) and the HALF_OPEN time limit run
  on the leader from the stored ``open_until`` / ``state_since``, so they
  survive failover. The leader keeps each breaker's next due time
  (``machine.next_due``) in a heap, built from the cache when its term starts
  and kept current by the cache's change events (every replica's writes, and
  resyncs, which reach subscribers as plain changes): a tick touches only the
  breakers that fell due, never every breaker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import machine, watches
from bulwark_server.breakers.callers import RecentCallers
from bulwark_server.breakers.checkpoints import Checkpoints, Held, shape_of
from bulwark_server.breakers.config import normalize_config
from bulwark_server.breakers.tracker import BreakerTracker
from bulwark_server.breakers.window import SlidingWindow
from bulwark_server.cluster.election import Election, LeaderTask, read_leader
from bulwark_server.errors import (
    Conflict,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.store import Entry, EtcdStore, Event, Fence, Page, scan_page
from bulwark_server.store.keys import BREAKER_KIND, BREAKER_WINDOW_KIND, kind_prefix

log = logging.getLogger(__name__)

# States whose outcomes feed the sliding window.
COUNTING = (breaker_pb2.BREAKER_STATE_CLOSED, breaker_pb2.BREAKER_STATE_METRICS_ONLY)

Mutation = Callable[[breaker_pb2.CircuitBreaker], breaker_pb2.CircuitBreaker | None]


class BreakerManager:
    """Reads, writes and decisions for every breaker, and the leader's aggregation loop."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        *,
        clock: Callable[[], float] = time.time,
        tick_interval: float = 0.1,
        checkpoint_interval: float = 1.0,
        checkpoint_max_deferral: float = 10.0,
    ) -> None:
        self._store = store
        self._election = election
        self._clock = clock
        self._tick_interval = tick_interval
        self._checkpoint_interval = checkpoint_interval
        self._decoded: dict[str, tuple[int, breaker_pb2.CircuitBreaker]] = {}
        # name -> (window shape, the breaker's create revision, window)
        self._windows: dict[str, Held] = {}
        self._checkpoints = Checkpoints(store, clock, checkpoint_max_deferral)
        # On the leader: each breaker's next due time, and its new entries into CLOSED.
        self._tracker = BreakerTracker(
            store,
            on_closed=self._reset_window,
            on_gone=self._forget,
            remembered=lambda: [*self._windows, *self._decoded],
        )
        self._leading = LeaderTask(election, self._lead, "breakers-leader")
        # Allow calls this replica refused, by breaker (for the metrics endpoint).
        self.refusals: collections.Counter[str] = collections.Counter()
        # On the leader: who reported for each breaker lately (an alert's impact).
        self.callers = RecentCallers()

    # -- reads (from the cache) -------------------------------------------------

    def current(self, name: str) -> tuple[breaker_pb2.CircuitBreaker, int]:
        """The cached breaker (shared: do not mutate) and its revision; NotFound if absent."""
        entry = self._store.get(BREAKER_KIND, name)
        if entry is None:
            self._decoded.pop(name, None)
            raise NotFound(f"breaker {name!r} does not exist")
        return self._decode(name, entry), entry.mod_revision

    def _decode(self, name: str, entry: Entry) -> breaker_pb2.CircuitBreaker:
        """The breaker in its cached entry (shared: do not mutate), decoded once per
        revision."""
        cached = self._decoded.get(name)
        if cached is None or cached[0] != entry.mod_revision:
            cached = (entry.mod_revision, breaker_pb2.CircuitBreaker.FromString(entry.value))
            self._decoded[name] = cached
        return cached[1]

    def state(self, name: str) -> int | None:
        """The breaker's ``BreakerState`` as this replica's cache holds it; None when
        there is no such breaker. Read by other capabilities (features) that depend
        on breakers, so they never decode breaker records themselves."""
        try:
            breaker, _ = self.current(name)
        except NotFound:
            return None
        return breaker.status.state

    def states(self) -> list[tuple[str, int]]:
        """(name, ``BreakerState``) of every breaker, in name order, from the cache."""
        prefix = kind_prefix(BREAKER_KIND)
        out: list[tuple[str, int]] = []
        for entry in self._store.scan(BREAKER_KIND):
            name = entry.key[len(prefix) :].decode()
            out.append((name, self._decode(name, entry).status.state))
        return out

    def change_prefixes(self) -> tuple[bytes, ...]:
        """The key ranges whose changes can change a breaker's state: what a stream
        that follows breaker states (``store.streams.follow``) subscribes to."""
        return (kind_prefix(BREAKER_KIND),)

    def callers_of(self, name: str) -> list[str]:
        """Who reported outcomes for the breaker lately (known on the leader)."""
        return self.callers.of(name)

    def changed(self, events: Iterable[Event]) -> set[str]:
        """Names of the breakers that ``events`` created, changed or deleted (other
        keys' events are ignored)."""
        prefix = kind_prefix(BREAKER_KIND)
        return {
            ev.entry.key[len(prefix) :].decode() for ev in events if ev.entry.key.startswith(prefix)
        }

    def get(self, name: str) -> breaker_pb2.CircuitBreaker:
        """A copy of the breaker with its revision and current window rates."""
        return self._view(*self.current(name))

    def _view(
        self, breaker: breaker_pb2.CircuitBreaker, revision: int
    ) -> breaker_pb2.CircuitBreaker:
        out = breaker_pb2.CircuitBreaker()
        out.CopyFrom(breaker)
        out.revision = revision
        out.window.CopyFrom(self.window_stats(breaker))
        return out

    def list(self, size: int, start_after: str) -> Page[breaker_pb2.CircuitBreaker]:
        """One page of breakers in name order, and the next page's token ("" on the last)."""
        page = scan_page(self._store.cache, kind_prefix(BREAKER_KIND), size, start_after)
        return page.map(self._from_entry)

    def window_stats(self, breaker: breaker_pb2.CircuitBreaker) -> breaker_pb2.WindowStats:
        """Rates of the breaker's window: live on the leader, the last checkpoint elsewhere
        (up to ``checkpoint_max_deferral`` old for a window far from its thresholds)."""
        held = self._windows.get(breaker.name)
        if held is not None and self._election.is_leader:
            return held[2].stats(self._clock(), breaker.config.minimum_number_of_calls)
        entry = self._store.get(BREAKER_WINDOW_KIND, breaker.name)
        empty = breaker_pb2.WindowStats(failure_rate=-1, slow_call_rate=-1)
        if entry is None:
            return empty
        record = breaker_pb2.BreakerWindow.FromString(entry.value)
        own = self._store.get(BREAKER_KIND, breaker.name)
        if own is None or record.breaker_create_revision != own.create_revision:
            return empty  # the window of an earlier breaker of the same name
        return record.stats

    # -- configuration ----------------------------------------------------------

    async def put(
        self, name: str, config: breaker_pb2.BreakerConfig, expected_revision: int = 0
    ) -> tuple[breaker_pb2.CircuitBreaker, bool]:
        """Create the breaker or replace its configuration (its state is kept)."""
        normalized = normalize_config(config)
        written: list[breaker_pb2.CircuitBreaker] = []

        def build(entry: Entry | None) -> bytes:
            if entry is None:
                breaker = breaker_pb2.CircuitBreaker(
                    name=name, config=normalized, status=machine.initial_status(self._clock())
                )
            else:
                breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
                breaker.config.CopyFrom(normalized)
            written[:] = [breaker]
            return breaker.SerializeToString()

        revision, created = await self._store.upsert(
            BREAKER_KIND, name, build, expected_revision=expected_revision
        )
        return self._view(written[0], revision), created

    async def delete(self, name: str, expected_revision: int = 0) -> int:
        """Delete the breaker (and its window checkpoint)."""
        revision = await self._store.delete(
            BREAKER_KIND, name, expected_mod_revision=expected_revision or None
        )
        self._forget(name)
        with contextlib.suppress(NotFound, StoreUnavailable):
            await self._store.delete(BREAKER_WINDOW_KIND, name)
        return revision

    async def force(
        self, name: str, state: int, actor: str, reason: str
    ) -> breaker_pb2.CircuitBreaker:
        """Force a state (or reset to CLOSED), recording who and why.

        InvalidArgument (``machine.check_force``) before anything is read, so a
        refused request is refused the same way for a breaker that does not exist.
        """
        machine.check_force(state, reason)
        now = self._clock()

        def change(b: breaker_pb2.CircuitBreaker) -> breaker_pb2.CircuitBreaker:
            b.status.CopyFrom(machine.force(b.config, b.status, state, actor, reason, now))
            return b

        written, revision = await self._mutate(name, change)
        return self._view(written, revision)

    # -- decisions --------------------------------------------------------------

    async def allow(self, name: str) -> tuple[machine.Decision, int, int]:
        """(decision, state decided in, revision). Writes only for OPEN→HALF_OPEN and trials."""
        decided = await self._allow(name)
        if not decided[0].allowed:
            self.refusals[name] += 1
        return decided

    async def _allow(self, name: str) -> tuple[machine.Decision, int, int]:
        breaker, revision = self.current(name)
        now = self._clock()
        decision = machine.allow(breaker.config, breaker.status, now)
        if decision.new_status is None:
            return decision, breaker.status.state, revision
        taken: list[machine.Decision] = []

        def grant(b: breaker_pb2.CircuitBreaker) -> breaker_pb2.CircuitBreaker | None:
            # Decide again on the state actually being replaced.
            d = machine.allow(b.config, b.status, now)
            taken[:] = [d]
            if d.new_status is None:
                return None
            b.status.CopyFrom(d.new_status)
            return b

        try:
            written, revision = await self._mutate(name, grant)
        except (StoreUnavailable, Conflict):
            # A trial permit needs etcd's word (and to win the race with other
            # replicas); without it the safe answer is "not now".
            return (
                machine.Decision(allowed=False, trial=False, retry_after=1.0, new_status=None),
                breaker.status.state,
                revision,
            )
        return taken[0], written.status.state, revision

    async def record(
        self, outcomes: list[breaker_pb2.BreakerOutcomes], reporter: str = ""
    ) -> tuple[int, list[str]]:
        """Aggregate ``reporter``'s report on the leader; (accepted, unknown names)."""
        fence = self._fence()
        accepted = 0
        unknown: list[str] = []
        for item in outcomes:
            try:
                breaker, _ = self.current(item.name)
                # Before the outcomes: they may trip it, and its alert names its callers.
                self.callers.note(reporter, (item.name,))
                await self._apply_outcomes(breaker, item.counts, fence)
            except NotFound:
                unknown.append(item.name)  # deleted meanwhile
                continue
            except Conflict:
                pass  # counted in the window; the next report re-evaluates the state
            accepted += 1
        return accepted, unknown

    async def _apply_outcomes(
        self, breaker: breaker_pb2.CircuitBreaker, counts: breaker_pb2.OutcomeCounts, fence: Fence
    ) -> None:
        now = self._clock()
        name = breaker.name
        if breaker.status.state not in COUNTING:
            # A trial's outcome may arrive before this replica's cache has seen the
            # OPEN -> HALF_OPEN write another replica made: decide on etcd's state.
            entry = await self._refresh(name)
            if entry is None:
                raise NotFound(f"breaker {name!r} does not exist")
            breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
        state = breaker.status.state
        calls = counts.successes + counts.failures
        stats = breaker_pb2.WindowStats(failure_rate=-1, slow_call_rate=-1)
        if state in COUNTING and calls:
            window = self._window(breaker)
            window.add(calls, counts.failures, counts.slow_calls, now)
            self._checkpoints.note(name, counts.failures, counts.slow_calls)
            stats = window.stats(now, breaker.config.minimum_number_of_calls)
        if state not in (breaker_pb2.BREAKER_STATE_CLOSED, breaker_pb2.BREAKER_STATE_HALF_OPEN):
            return
        if machine.on_outcomes(breaker.config, breaker.status, counts, stats, now) is None:
            return

        def change(b: breaker_pb2.CircuitBreaker) -> breaker_pb2.CircuitBreaker | None:
            new = machine.on_outcomes(b.config, b.status, counts, stats, now)
            if new is None:
                return None
            b.status.CopyFrom(new)
            return b

        written, revision = await self._mutate(name, change, fence)
        self._tracker.observe(written, revision)

    def watch(
        self, names: frozenset[str], start_revision: int = 0
    ) -> AsyncIterator[breaker_pb2.WatchBreakersResponse]:
        """A snapshot (SNAPSHOT events, then SYNCED), then every change, until cancelled.

        With ``start_revision``, only later changes are sent when this replica's
        history still reaches back to it; otherwise a snapshot comes first. A
        watcher that falls too far behind is sent a fresh snapshot.
        """
        return watches.watch_breakers(self._store, names, start_revision)

    @property
    def stale(self) -> bool:
        """True while this replica's cache does not follow etcd (answers are its last view)."""
        return self._store.status().stale

    # -- leader loop ------------------------------------------------------------

    async def stop(self) -> None:
        await self._leading.stop()

    async def _lead(self) -> None:
        """While leading: restore windows, run the timers that fall due, checkpoint windows."""
        # Subscribed before the build, so no change made meanwhile is missed.
        changes = self._store.subscribe(BREAKER_KIND)
        try:
            self._restore_windows()
            self._tracker.observe_all()
            next_checkpoint = time.monotonic() + self._checkpoint_interval
            # Until cancelled (on losing the term): is_leader may be False for a moment
            # (a late keep-alive) without the term ending, and then the loop must go on.
            while True:
                if not self._election.is_leader:
                    await asyncio.sleep(self._tick_interval)
                    continue
                try:
                    changes = self._tracker.follow(changes)
                    await self._tick()
                    if time.monotonic() >= next_checkpoint:
                        await self._checkpoints.write(self._windows, self._fence())
                        next_checkpoint = time.monotonic() + self._checkpoint_interval
                except (NotLeader, StoreUnavailable) as exc:
                    log.debug("breaker leader loop: %s", exc)
                except Exception:
                    log.exception("breaker leader loop failed; continuing")
                # At most one round per tick, and while nothing changes or falls due,
                # none at all: an idle leader sleeps instead of polling its timers.
                await asyncio.sleep(self._tick_interval)
                wait = next_checkpoint - time.monotonic()
                if (due := self._tracker.next_due()) is not None:
                    wait = min(wait, due - self._clock())
                await self._tracker.wait(changes, wait)
        finally:
            self._store.unsubscribe(changes)

    async def _tick(self) -> None:
        now = self._clock()
        due = self._tracker.pop_due(now)
        for i, name in enumerate(due):
            try:
                await self._tick_one(name, now)
            except BaseException:
                for left in due[i:]:
                    self._tracker.refresh(left)  # re-armed from the cache: tried next tick
                raise

    async def _tick_one(self, name: str, now: float) -> None:
        entry = self._store.get(BREAKER_KIND, name)
        if entry is None:
            self._tracker.forget(name)
            return
        breaker = self._from_entry(entry)
        if machine.tick(breaker.config, breaker.status, now) is None:
            self._tracker.observe(breaker, entry.mod_revision)  # changed meanwhile: re-armed
            return

        def change(b: breaker_pb2.CircuitBreaker) -> breaker_pb2.CircuitBreaker | None:
            new = machine.tick(b.config, b.status, now)
            if new is None:
                return None
            b.status.CopyFrom(new)
            return b

        written, revision = await self._mutate(name, change, self._fence())
        self._tracker.observe(written, revision)

    def _restore_windows(self) -> None:
        # Transitions seen in an earlier term say nothing about the restored windows.
        self._tracker.reset()
        self._windows = self._checkpoints.restore()

    # -- helpers ----------------------------------------------------------------

    def _fence(self) -> Fence:
        try:
            return self._election.fence()
        except NotLeader as exc:
            leader = read_leader(self._store)
            raise NotLeader(
                "outcome reports are aggregated by the leader", leader.address if leader else ""
            ) from exc

    def _window(self, breaker: breaker_pb2.CircuitBreaker) -> SlidingWindow:
        shape = shape_of(breaker)
        entry = self._store.get(BREAKER_KIND, breaker.name)
        created = entry.create_revision if entry is not None else 0
        held = self._windows.get(breaker.name)
        # A fresh window when the shape changed or the breaker was deleted and re-created.
        if held is None or held[0] != shape or held[1] != created:
            held = (shape, created, SlidingWindow(*shape))
            self._windows[breaker.name] = held
            self._checkpoints.note_reset(breaker.name)  # the stored window is not this one
        return held[2]

    def _reset_window(self, name: str) -> None:
        """A fresh window whenever a breaker (re-)enters CLOSED, as resilience4j does."""
        held = self._windows.get(name)
        if held is not None:
            held[2].reset()
            self._checkpoints.note_reset(name)

    def _forget(self, name: str) -> None:
        """Drop what this replica remembers of a breaker that no longer exists."""
        self._windows.pop(name, None)
        self._decoded.pop(name, None)
        self._checkpoints.forget(name)

    def _from_entry(self, entry: Entry) -> breaker_pb2.CircuitBreaker:
        breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
        breaker.revision = entry.mod_revision
        return breaker

    async def _refresh(self, name: str) -> Entry | None:
        entry = await self._store.read(BREAKER_KIND, name)
        if entry is not None:
            await self._store.wait_for_revision(entry.mod_revision, timeout=1.0)
        return entry

    async def _mutate(
        self, name: str, change: Mutation, fence: Fence | None = None
    ) -> tuple[breaker_pb2.CircuitBreaker, int]:
        """Apply ``change`` to the current breaker with compare-and-swap, retrying on conflict.

        ``change`` gets a private copy and returns it changed, or None for no change.
        Returns the breaker as written (or as found) and its revision.
        """
        result: list[breaker_pb2.CircuitBreaker] = []

        def apply(entry: Entry) -> bytes | None:
            breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
            changed = change(breaker)
            result[:] = [breaker if changed is None else changed]
            if changed is None:
                return None
            changed.ClearField("revision")
            changed.ClearField("window")
            return changed.SerializeToString()

        try:
            entry, _ = await self._store.modify(BREAKER_KIND, name, apply, fence=fence)
        except NotFound:
            raise NotFound(f"breaker {name!r} does not exist") from None
        return result[0], entry.mod_revision
