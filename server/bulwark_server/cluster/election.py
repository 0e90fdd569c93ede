"""Leader election among replicas, with fencing.

The protocol (etcd's own election recipe, with a lease Bulwark keeps alive
itself):

* Each replica holds a lease of ``ttl`` seconds and renews it every ``ttl/3``.
  Its ``Replica`` record lives under ``/bulwark/v1/replicas/<id>`` on that lease.
* Campaign: create ``/bulwark/v1/election/leader`` with the replica's lease,
  only if the key does not exist. The key's create revision is the **term**;
  it only grows.
* Every leader-only write carries ``Fence(leader_key, term)``: etcd applies it
  only while the leader key still has that create revision, so a deposed
  leader (lease expired while it was paused or partitioned) cannot write.
* One decision loop (``_cycle``) looks at one snapshot of the state and
  returns a sentence saying what it did. While leading it proves its term
  each cycle with a fenced read-only transaction (no etcd proposal), and
  rewrites the leader record (``renewed_at``) with a fenced write once a TTL;
  when either is refused it steps down. A leader that cannot reach etcd keeps
  its term only until its lease would have expired (measured from the last
  acknowledged keep-alive, so it gives up no later than etcd does).
* ``resign`` deletes the leader key (fenced) and revokes the lease, so the
  other replicas, which watch the key, campaign at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bulwark.v1 import cluster_pb2
from bulwark_server import timestamps
from bulwark_server.errors import AlreadyExists, BulwarkError, NotLeader, StoreUnavailable
from bulwark_server.store import EtcdStore, Event, EventType, Fence, key_for
from bulwark_server.store.keys import ELECTION_KIND, LEADER_NAME, REPLICA_KIND

log = logging.getLogger(__name__)

LEADER_KEY = key_for(ELECTION_KIND, LEADER_NAME)
RENEW_ATTEMPTS = 3
RENEW_RETRY_S = 0.2


def read_leader(store: EtcdStore) -> cluster_pb2.Leader | None:
    """The leader as the cache knows it, with ``term`` filled from the key's create revision."""
    entry = store.get(ELECTION_KIND, LEADER_NAME)
    if entry is None:
        return None
    leader = cluster_pb2.Leader.FromString(entry.value)
    leader.term = entry.create_revision
    return leader


class Election:
    """This replica's membership and candidacy. ``fence()`` guards leader-only writes."""

    def __init__(
        self,
        store: EtcdStore,
        replica: cluster_pb2.Replica,
        *,
        ttl: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.replica = replica
        self.ttl = ttl
        self._clock = clock
        self._lease = 0
        self._lease_deadline = 0.0
        self._lease_lost = False
        self._term: int | None = None
        self._term_lease = 0
        self._record_written_at = -math.inf  # when the leader record was last written
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[int | None], None]] = []
        self._stopping = False
        self.last_decision = ""
        self.elections_won = 0  # terms this replica began

    # -- public ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica holds a term whose lease cannot have expired yet."""
        return (
            self._term is not None
            and self._term_lease == self._lease
            and not self._lease_lost
            and self._clock() < self._lease_deadline
        )

    @property
    def term(self) -> int | None:
        return self._term if self.is_leader else None

    def fence(self) -> Fence:
        """The fence for a leader-only write; NotLeader when this replica does not lead."""
        term = self.term
        if term is None:
            leader = read_leader(self._store)
            raise NotLeader("this replica is not the leader", leader.address if leader else "")
        return Fence(LEADER_KEY, term)

    def replica_count(self) -> int:
        """How many replicas hold a live registration, as this replica's cache sees
        it (itself included once registered); may lag a lease expiry by the cache."""
        return len(self._store.scan(REPLICA_KIND))

    def on_change(self, listener: Callable[[int | None], None]) -> None:
        """Call ``listener(term)`` when this replica gains (term) or loses (None) leadership."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Take a lease, register the replica, and start campaigning.

        Never fails: when etcd cannot be reached the keep-alive loop keeps
        trying to get a lease, and the replica campaigns once it has one.
        """
        try:
            await self._new_lease()
        except StoreUnavailable as exc:
            log.warning("no lease yet (%s); retrying in the background", exc)
        self._tasks = [
            asyncio.create_task(self._keepalive_loop(), name="election-keepalive"),
            asyncio.create_task(self._decide_loop(), name="election-decide"),
            asyncio.create_task(self._watch_leader(), name="election-watch"),
        ]

    async def stop(self, resign: bool = True) -> None:
        """Stop campaigning; with ``resign``, hand leadership over at once."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a loop that swallowed its cancellation must not hold up shutdown.
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks = []
        if resign:
            await self.resign()

    async def resign(self) -> None:
        """Delete the leader key (fenced) and revoke the lease; errors are logged, not raised."""
        term = self._term
        if term is not None:
            try:
                await self._store.delete(ELECTION_KIND, LEADER_NAME, fence=Fence(LEADER_KEY, term))
                log.info("resigned", extra={"event": "leader.resigned", "term": term})
            except (NotLeader, StoreUnavailable) as exc:
                log.warning("resign of term %d failed: %s", term, exc)
            self._set_term(None, "resigned")
        if self._lease:
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(self._lease)
            self._lease = 0

    # -- loops -------------------------------------------------------------------

    async def _new_lease(self) -> None:
        # Until the replica record is written on the new lease, the lease counts
        # as lost, so a failed registration is retried rather than forgotten.
        self._lease_lost = True
        sent = self._clock()
        lease = await self._store.grant_lease(self.ttl)
        await self._store.put(
            REPLICA_KIND, self.replica.id, self.replica.SerializeToString(), lease=lease
        )
        self._lease = lease
        self._lease_deadline = sent + self.ttl
        self._lease_lost = False

    async def _keepalive_loop(self) -> None:
        interval = self.ttl / 3
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self._keepalive_once()
            except StoreUnavailable as exc:
                log.debug("keep-alive failed: %s", exc)
                if self._clock() >= self._lease_deadline:
                    self._wake.set()
            except Exception:
                # A bug here must not silently end the replica's lease for good.
                log.exception("keep-alive cycle failed")

    async def _keepalive_once(self) -> None:
        if self._lease_lost or not self._lease:
            await self._new_lease()
            log.info("registered with lease %x", self._lease)
            self._wake.set()
            return
        sent = self._clock()
        remaining = await self._store.keep_alive(self._lease)
        if remaining <= 0:
            # The lease is gone on etcd's side; the decision loop proves it
            # with a fenced write and steps down.
            self._lease_lost = True
            self._wake.set()
        else:
            self._lease_deadline = sent + remaining

    async def _watch_leader(self) -> None:
        async for events in self._store.changes(ELECTION_KIND):
            if not events or any(self._concerns_us(ev) for ev in events):
                self._wake.set()

    def _concerns_us(self, event: Event) -> bool:
        """A change of the leader key that calls for a decision now.

        The leader's own renewals are not: waking on them would renew again at
        once, in a loop of etcd writes.
        """
        if event.entry.key != LEADER_KEY:
            return False
        own_renewal = (
            event.type is EventType.PUT
            and self._term is not None
            and event.entry.create_revision == self._term
        )
        return not own_renewal

    async def _decide_loop(self) -> None:
        interval = max(0.2, self.ttl / 4)
        while not self._stopping:
            # Cleared before the cycle, so a wake-up sent during it is not lost.
            self._wake.clear()
            try:
                decision = await self._cycle()
            except Exception:
                log.exception("election cycle failed")
                decision = "cycle failed"
            if decision != self.last_decision:
                log.debug("election: %s", decision)
            self.last_decision = decision
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with the event being set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _cycle(self) -> str:
        """Decide on one snapshot of the state; return what was done, as a sentence."""
        if self._stopping:
            return "stopping"
        if self._term is not None:
            return await self._renew(self._term)
        entry = self._store.get(ELECTION_KIND, LEADER_NAME)
        leader = read_leader(self._store)
        if entry is not None and leader is not None:
            if entry.lease and entry.lease == self._lease and not self._lease_lost:
                # The key is on our live lease, so etcd says we lead (a create that
                # timed out but applied, or a step-down etcd never saw): take it back.
                self._term_lease = self._lease
                self._elected_at = leader.elected_at
                self._set_term(entry.create_revision, "leader key found on our lease")
                return f"reclaimed term {entry.create_revision}"
            return f"following {leader.replica_id} (term {leader.term})"
        if self._lease_lost or self._clock() >= self._lease_deadline:
            return "not campaigning: lease not confirmed"
        record = self._record(elected=True)
        try:
            term = await self._store.create(
                ELECTION_KIND, LEADER_NAME, record.SerializeToString(), lease=self._lease
            )
        except AlreadyExists:
            return "lost the campaign to another replica"
        except StoreUnavailable as exc:
            return f"cannot campaign: {exc}"
        self._term_lease = self._lease
        self._elected_at = record.elected_at
        self._record_written_at = self._clock()
        self._set_term(term, "elected")
        return f"elected leader for term {term}"

    async def _renew(self, term: int) -> str:
        # Once the local lease deadline has passed, is_leader is already False.
        # Before stepping down on that local evidence alone, ask etcd again for its
        # own verdict: right after a pause, the call in flight times out at once and
        # the next may fail on a connection that died meanwhile.
        for attempt in range(RENEW_ATTEMPTS):
            try:
                fence = Fence(LEADER_KEY, term)
                if self._clock() - self._record_written_at >= self.ttl:
                    # The record's renewed_at, once a TTL: a write is an etcd proposal.
                    await self._store.put(
                        ELECTION_KIND,
                        LEADER_NAME,
                        self._record(elected=False).SerializeToString(),
                        lease=self._term_lease,
                        fence=fence,
                        fail_fast=False,
                    )
                    self._record_written_at = self._clock()
                else:
                    # In between, a read-only fenced transaction proves the term as
                    # well, without a write.
                    await self._store.prove(fence, fail_fast=False)
                return f"leading term {term}"
            except NotLeader as exc:
                log.warning(
                    "fenced write refused for term %d: %s",
                    term,
                    exc,
                    extra={"event": "leader.fenced_write_refused", "term": term},
                )
                self._set_term(None, "fenced write refused")
                return f"stepped down from term {term}: fenced write refused"
            except StoreUnavailable as exc:
                lease_valid = self._term_lease == self._lease and (
                    self._clock() < self._lease_deadline
                )
                if lease_valid:
                    return f"leading term {term}; could not renew: {exc}"
                if attempt + 1 == RENEW_ATTEMPTS:
                    self._set_term(None, f"lease expired while etcd was unreachable ({exc})")
                    await self._drop_lease()
                    return f"stepped down from term {term}: lease expired, etcd unreachable"
            await asyncio.sleep(RENEW_RETRY_S)
        return f"leading term {term}"

    async def _drop_lease(self) -> None:
        """Make etcd agree with a step-down decided on local evidence: revoke the
        term's lease (the leader key goes with it) and take a new one."""
        self._lease_lost = True
        with contextlib.suppress(StoreUnavailable):
            await self._store.revoke_lease(self._term_lease)
        self._wake.set()

    # -- helpers -----------------------------------------------------------------

    def _record(self, *, elected: bool) -> cluster_pb2.Leader:
        now = timestamps.at(time.time())
        record = cluster_pb2.Leader(
            replica_id=self.replica.id, address=self.replica.address, renewed_at=now
        )
        record.lease_ttl.FromSeconds(self.ttl)
        record.elected_at.CopyFrom(now if elected else self._elected_at)
        return record

    def _set_term(self, term: int | None, reason: str) -> None:
        previous = self._term
        if previous == term:
            return
        self._term = term
        if term is not None:
            self.elections_won += 1
            log.info(
                "became leader for term %d",
                term,
                extra={"event": "leader.elected", "term": term},
            )
        else:
            log.info(
                "stepped down from term %s: %s",
                previous,
                reason,
                extra={"event": "leader.stepped_down", "term": previous, "reason": reason},
            )
        for listener in self._listeners:
            try:
                listener(term)
            except Exception:
                log.exception("leadership listener failed")


class LeaderTask:
    """One coroutine that runs while this replica leads: started on each new term,
    cancelled when the term ends, and by ``stop``.

    ``prepare``, when given, runs synchronously as the term starts, before the
    coroutine is created: leader-only requests are served from the moment the
    term is set, so state they read (restored counters) must be ready then, not
    at the coroutine's first step.
    """

    def __init__(
        self,
        election: Election,
        run: Callable[[], Coroutine[Any, Any, None]],
        name: str,
        *,
        enabled: bool = True,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._enabled = enabled
        self._prepare = prepare
        self._task: asyncio.Task[None] | None = None
        election.on_change(self._on_change)

    def _on_change(self, term: int | None) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if term is not None and self._enabled:
            if self._prepare is not None:
                self._prepare()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


async def in_rounds(step: Callable[[], Awaitable[None]], every: float, name: str) -> None:
    """Run ``step`` every ``every`` seconds until cancelled (a ``LeaderTask`` body's loop).

    A round failing with a BulwarkError (etcd away, a deposed term) is left to the next
    one; any other error is logged with its traceback, and the rounds go on.
    """
    while True:
        try:
            await step()
        except BulwarkError as exc:
            log.debug("%s round: %s", name, exc)
        except Exception:
            log.exception("%s round failed; continuing", name)
        await asyncio.sleep(every)
