"""BulkheadManager: cluster-wide concurrency limits kept in etcd, with no leader involved.

Layout:

* ``/bulwark/v1/bulkheads/<name>``: the configuration, a ``Bulkhead`` message
  with ``revision`` and ``in_use`` cleared.
* ``/bulwark/v1/permits/<name>/<slot>``: one key per held permit, slot in
  ``0..max_concurrent-1``, value a ``Permit``, attached to a lease of its own.

Guarantees:

* **The bound.** A permit is created only if its slot key does not exist (an
  etcd compare-and-swap), so no two permits ever share a slot, whichever
  replica served them and whether or not there is a leader. Slots run from 0
  to ``max_concurrent - 1``, so at most ``max_concurrent`` permits are held
  cluster-wide. A permit is handed out only after the configuration is checked
  again at a revision at least that of the permit's creation: if the bulkhead
  was deleted or its limit lowered below the slot meanwhile, the key is
  withdrawn (its lease revoked) and the permit never returned.
* **Lowering the limit** stops new permits in slots at or above the new limit,
  and no permit is offered while the permits held (old ones included) reach it;
  permits already held live on until released or expired.
* **Nothing leaks.** Each permit's lease has the permit's TTL: a holder that
  dies without releasing frees its slot when the TTL ends. A failed or
  abandoned attempt revokes the lease it granted, which deletes any key etcd
  may have written with it.
* **Release never frees someone else's permit**: the delete is conditional on
  the mod revision of the key that carries the caller's permit id.
* ``get``, ``list`` and the choice of free slots read the watch-fed cache,
  which may be a few milliseconds stale. Before answering NotFound (unknown
  bulkhead or permit) etcd itself is asked, so a bulkhead created or a permit
  acquired through another replica is usable through this one at once.
* Waiting is fair per replica (oldest waiter first) but not across replicas.

Modules: ``rules`` (pure), ``permits`` (permit keys and their leases),
``waiters`` (this replica's queue) and ``wakeups`` (store changes turned into
wake-ups); this front holds configuration and the acquire loop.

Errors: ``NotFound``, ``Conflict``, ``ResourceExhausted`` (with a retry hint)
and ``StoreUnavailable`` (nothing handed out; a permit key that may have been
written is withdrawn with its lease).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable

from bulwark.v1 import bulkhead_pb2
from bulwark_server.bulkheads.permits import Permits, decode, not_held
from bulwark_server.bulkheads.rules import (
    AcquireSpec,
    BulkheadSpec,
    PermitRef,
    effective_wait,
    lease_seconds,
    pick_slots,
    retry_hint,
)
from bulwark_server.bulkheads.waiters import WaitQueue
from bulwark_server.bulkheads.wakeups import WakeUps
from bulwark_server.errors import AlreadyExists, NotFound, ResourceExhausted
from bulwark_server.store import Entry, EtcdStore, Page, scan_page
from bulwark_server.store.keys import BULKHEAD_KIND, kind_prefix

log = logging.getLogger(__name__)

# Slots tried per round before waiting: bounds the etcd round trips one Acquire
# makes when a stale cache shows slots free that are not.
TRIES_PER_ROUND = 8
# A waiter re-checks at least this often even without a wake-up: a safety net
# should a wake ever be lost (it costs a cache scan, no etcd round trip).
RECHECK_S = 1.0
# Concurrent etcd calls when DeleteBulkhead releases many permits.
RELEASE_CONCURRENCY = 32


class BulkheadManager:
    """Bulkhead configurations and permits in etcd; see the module docstring for guarantees."""

    def __init__(
        self,
        store: EtcdStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._permits = Permits(store, wall=wall, token=token)
        self._waiters = WaitQueue()
        # Slots an attempt on this replica is creating now: other local attempts
        # skip them instead of racing their own replica. One set per bulkhead name,
        # kept (not popped when empty) because attempts hold on to it across awaits.
        self._trying: dict[str, set[int]] = {}
        self._wakeups = WakeUps(store, self._waiters, self._busy)

    async def close(self) -> None:
        """Stop following the store and wait for pending lease revocations."""
        await self._wakeups.close()
        await self._permits.close()
        self._waiters.wake_all()

    # -- configuration -------------------------------------------------------------

    async def put(
        self, spec: BulkheadSpec, expected_revision: int = 0
    ) -> tuple[bulkhead_pb2.Bulkhead, bool]:
        """Create or change a bulkhead; return it as stored and whether it was created.

        With ``expected_revision`` the write applies only at that revision
        (NotFound if absent, Conflict if changed). Without, it creates or
        overwrites, retrying a few times against concurrent writers (then Conflict).
        """
        value = spec.to_proto().SerializeToString()
        revision, created = await self._store.upsert(
            BULKHEAD_KIND, spec.name, lambda _: value, expected_revision=expected_revision
        )
        log.info(
            "bulkhead %s %s: max_concurrent=%d",
            spec.name,
            "created" if created else "updated",
            spec.max_concurrent,
            extra={"event": "bulkhead.put", "bulkhead": spec.name, "revision": revision},
        )
        return self._view(spec.to_proto(), revision), created

    async def get(self, name: str) -> tuple[bulkhead_pb2.Bulkhead, list[bulkhead_pb2.Permit]]:
        """The bulkhead and the permits held now (from the cache). NotFound if absent."""
        entry = await self._config_entry(name)
        permits = [decode(e) for e in self._permits.held(name).values()]
        stored = bulkhead_pb2.Bulkhead.FromString(entry.value)
        return self._view(stored, entry.mod_revision), permits

    def list(self, size: int, start_after: str = "") -> Page[bulkhead_pb2.Bulkhead]:
        """One page of bulkheads in name order, and the next page's token ("" on the last)."""
        page = scan_page(self._store.cache, kind_prefix(BULKHEAD_KIND), size, start_after)
        return page.map(
            lambda e: self._view(bulkhead_pb2.Bulkhead.FromString(e.value), e.mod_revision)
        )

    async def delete(self, name: str) -> int:
        """Delete a bulkhead and release its permits; return how many were released.

        The configuration goes first, so no Acquire can hand out a permit
        afterwards (one that created its key concurrently sees the deletion in
        its final check and withdraws it). A permit that cannot be released now
        (etcd unreachable) still ends with its lease.
        """
        try:
            revision = await self._store.delete(BULKHEAD_KIND, name)
        except NotFound:
            raise NotFound(f"bulkhead {name!r} does not exist") from None
        # Every permit created before the deletion must be in the cache to be found.
        await self._store.wait_for_revision(revision)
        limit = asyncio.Semaphore(RELEASE_CONCURRENCY)

        async def release(entry: Entry) -> bool:
            async with limit:
                return await self._permits.release_entry(entry)

        held = list(self._permits.held(name).values())
        released = sum(await asyncio.gather(*(release(e) for e in held)))
        log.info(
            "bulkhead %s deleted; %d permits released",
            name,
            released,
            extra={"event": "bulkhead.deleted", "bulkhead": name, "released": released},
        )
        return released

    # -- permits ---------------------------------------------------------------------

    async def acquire(self, request: AcquireSpec) -> bulkhead_pb2.Permit:
        """Take a permit, waiting up to the effective max_wait for a slot to free up.

        ResourceExhausted (with a retry hint) when none was free in time,
        NotFound when the bulkhead does not exist or is deleted while waiting.
        """
        name = request.bulkhead
        config = await self._config(name)
        started = self._clock()
        deadline = started + effective_wait(request.max_wait, config.max_wait)
        ticket: asyncio.Future[None] | None = None
        requeue_front = False
        try:
            while True:
                if deadline > self._clock() and (ticket is None or ticket.done()):
                    # Join before looking, so a slot freed while we try still wakes us.
                    self._wakeups.follow()
                    ticket = self._waiters.join(name, front=requeue_front)
                    requeue_front = True
                permit = await self._attempt(name, request, config)
                if permit is not None:
                    return permit
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._exhausted(name, config, self._clock() - started)
                if ticket is not None and not ticket.done():
                    await asyncio.wait({ticket}, timeout=min(remaining, RECHECK_S))
                config = await self._config(name)
                # A lowered max_wait applies to those already waiting too.
                deadline = min(
                    deadline, started + effective_wait(request.max_wait, config.max_wait)
                )
        finally:
            if ticket is not None:
                self._waiters.leave(name, ticket)
                if ticket.done() and not ticket.cancelled():
                    # Woken while attempting or just before leaving: the wake-up may
                    # have been meant for a slot this call did not take, so pass it on.
                    self._waiters.wake(name, 1)

    async def release(self, ref: PermitRef) -> int:
        """Give a permit back; return the etcd revision of the release.

        NotFound when the permit is not held (released, expired, or the slot now
        carries another permit, which is left alone).
        """
        return await self._permits.release(ref)

    async def extend(self, ref: PermitRef) -> tuple[bulkhead_pb2.Permit, int]:
        """Renew a permit's lease for another TTL; return it and the seconds left."""
        entry = await self._permits.find(ref)
        remaining = await self._store.keep_alive(entry.lease)
        if remaining <= 0:
            raise not_held(ref.permit_id, "expired")
        return decode(entry), remaining

    # -- internals: acquiring ----------------------------------------------------------

    async def _attempt(
        self, name: str, request: AcquireSpec, config: BulkheadSpec
    ) -> bulkhead_pb2.Permit | None:
        """One round: try a few free slots with one fresh lease; None when all were taken.

        Each slot is reserved locally (``_trying``) from before the lease grant
        until its create is answered, so concurrent attempts on this replica
        spread over different slots and, once every free slot is being tried,
        return at once without asking etcd for anything.
        """
        trying = self._trying.setdefault(name, set())
        busy = set(self._permits.held(name)) | trying
        slots = pick_slots(config.max_concurrent, busy, TRIES_PER_ROUND, self._rng)
        ttl = lease_seconds(request.ttl or config.default_permit_ttl)
        lease = 0
        try:
            for slot in slots:
                # Our awaits let the cache and other local attempts move on: re-check.
                if slot in trying or self._permits.cached(name, slot) is not None:
                    continue
                trying.add(slot)
                try:
                    if not lease:
                        lease = await self._store.grant_lease(ttl)
                    permit = self._permits.mint(name, slot, request.holder, ttl)
                    revision = await self._permits.create(permit, slot, lease)
                except AlreadyExists:
                    continue  # held elsewhere: nobody waiting here needed this slot
                except BaseException:
                    # The slot may still be free and a local waiter may have skipped
                    # it because we had it reserved: let one look again.
                    self._waiters.wake(name, 1)
                    raise
                finally:
                    trying.discard(slot)
                if not await self._still_allowed(name, slot, revision):
                    # The limit was lowered below this slot after we looked: the
                    # finally block revokes the lease, which withdraws the permit.
                    return None
                lease = 0  # the permit owns it now
                log.debug(
                    "permit %s of %s acquired by %s",
                    permit.id,
                    name,
                    request.holder,
                    extra={"event": "bulkhead.acquired", "bulkhead": name, "slot": slot},
                )
                return permit
            return None
        finally:
            if lease:
                await self._permits.revoke(lease)

    async def _still_allowed(self, name: str, slot: int, revision: int) -> bool:
        """Whether the configuration, as of ``revision`` or later, still allows ``slot``.

        NotFound when the bulkhead was deleted. Reads etcd when the cache cannot
        catch up with ``revision`` in time.
        """
        if await self._store.wait_for_revision(revision):
            entry = self._store.get(BULKHEAD_KIND, name)
        else:
            entry = await self._store.read(BULKHEAD_KIND, name)
        if entry is None:
            raise NotFound(f"bulkhead {name!r} was deleted")
        return slot < bulkhead_pb2.Bulkhead.FromString(entry.value).max_concurrent

    def _exhausted(self, name: str, config: BulkheadSpec, waited: float) -> ResourceExhausted:
        held = [decode(e) for e in self._permits.held(name).values()]
        expiries = [p.acquired_at.ToNanoseconds() / 1e9 + p.ttl.seconds for p in held]
        return ResourceExhausted(
            f"bulkhead {name!r} is full: {len(held)} of {config.max_concurrent} permits held "
            f"(waited {waited:.3f}s)",
            retry_after=retry_hint(expiries, self._wall()),
        )

    # -- internals: lookups ----------------------------------------------------------------

    def _busy(self, name: str) -> set[int]:
        """Slots of ``name`` held (as the cache shows) or being taken on this replica."""
        return set(self._permits.held(name)) | self._trying.get(name, set())

    async def _config_entry(self, name: str) -> Entry:
        entry = self._store.get(BULKHEAD_KIND, name)
        if entry is None:
            # The cache may not have seen a bulkhead created through another replica.
            entry = await self._store.read(BULKHEAD_KIND, name)
        if entry is None:
            raise NotFound(f"bulkhead {name!r} does not exist")
        return entry

    async def _config(self, name: str) -> BulkheadSpec:
        entry = await self._config_entry(name)
        return BulkheadSpec.from_proto(bulkhead_pb2.Bulkhead.FromString(entry.value))

    def _view(self, stored: bulkhead_pb2.Bulkhead, revision: int) -> bulkhead_pb2.Bulkhead:
        out = bulkhead_pb2.Bulkhead()
        out.CopyFrom(stored)
        out.revision = revision
        out.in_use = len(self._permits.held(stored.name))
        return out
