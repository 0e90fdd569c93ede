"""RateLimitManager: limits in etcd, counters in the replicas' memory.

Guarantees:

* A limit is one key, ``/bulwark/v1/limits/<domain>/<name>``; writes are
  compare-and-swap.
* ``check`` is answered by the replica it reaches, in memory (``decisions``):
  every counter belongs to one slot, every slot to one replica (``sharding``),
  which decides on it exactly; busy counters are shared out to the replicas that
  see their traffic (``shares``), which decide from memory. etcd sees no write
  per request, and no replica, the leader included, is on the path of every
  decision.
* Every ``checkpoint_interval`` each replica saves the counters of the slots it
  charged since, and every refresh period those of slots with shares out
  (``checkpoints``). The next owner of a slot goes on from its last record, so a
  failover can re-admit at most what was admitted since (one checkpoint
  interval; one refresh period's shares for a shared counter); values a record
  had no room for are restored at its rest level, never below their count.
* Under a leader of an earlier version (a rolling upgrade), which keeps every
  counter itself, a replica forwards its Checks to it as that version's
  followers do (``decides_here``); the leader of this version decides the Checks
  earlier versions forward to it as any Check.
* ``lease`` hands out quota leases to clients (see ``leases``), on the replica
  that owns the leased counter, from the counter's budget: the rate leased out is
  kept back from Checks and the replicas' shares. Leases live in the owner's
  memory only, so when the slot moves (a failover) a client keeps its lease until
  it expires while the next owner starts an empty pool: the fleet may exceed the
  limit by at most the leased rate, for at most one lease term (``LEASE_TERM_S``).
* A load reported with ``check`` for an adaptive limit is saved into the
  limit (``adaptive.load``) at the next checkpoint, so every replica's
  ``GetLimit`` shows it and the effective rate follows it.
* ``check_local`` is the fallback while no owner (or leader) can be reached: each
  replica enforces its share (the limit divided by the owners, rounded up), so
  the fleet together stays near the limit without coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Sequence

from bulwark.v1 import counter_pb2, ratelimit_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import Election
from bulwark_server.cluster.peers import Peers
from bulwark_server.errors import Conflict, NotFound, NotLeader, StoreUnavailable
from bulwark_server.ratelimits.catalog import LimitCatalog
from bulwark_server.ratelimits.checkpoints import CounterCheckpoints
from bulwark_server.ratelimits.config import (
    blocks_all,
    effective_rate,
    limit_key,
    normalize_limit,
    presented_limit,
    stored_limit,
)
from bulwark_server.ratelimits.decisions import Decisions
from bulwark_server.ratelimits.exchange import CounterPeers
from bulwark_server.ratelimits.fallback import LocalCheck
from bulwark_server.ratelimits.leases import LEASE_TERM_S
from bulwark_server.ratelimits.owned import CounterTables
from bulwark_server.ratelimits.shares import REFRESH_S, part_divisor
from bulwark_server.ratelimits.tallies import Tallies
from bulwark_server.store import MAX_REQUEST_BYTES, EtcdStore, Page, scan_page
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, LIMIT_KIND, key_for, kind_prefix

log = logging.getLogger(__name__)

# Reported loads closer than this to the stored one are not worth an etcd write.
LOAD_STEP = 0.01
# A last checkpoint at a graceful stop waits at most this long for etcd.
FINAL_CHECKPOINT_S = 1.0

Entries = Sequence[ratelimit_pb2.DescriptorEntry]
Own = Sequence[ratelimit_pb2.Rate | None] | None


class RateLimitManager:
    """Configuration of limits and the decisions on them."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        peers: Peers,
        sender: CounterPeers,
        *,
        clock: Callable[[], float] = time.time,
        checkpoint_interval: float = 1.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._store = store
        self._election = election
        self._peers = peers
        self._clock = clock
        self._checkpoint_interval = checkpoint_interval
        self._catalog = LimitCatalog(store)
        self._checkpoints = CounterCheckpoints(store, clock, max_request_bytes)
        owned = CounterTables(self._checkpoints, max_bytes=max_request_bytes)
        local = CounterTables(share=lambda: max(1, len(peers.view().owners)))
        parts = CounterTables(share=lambda: part_divisor(len(peers.view().owners)))
        self._decisions = Decisions(self._catalog, peers, owned, local, parts, sender, clock)
        self._pending_load: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    # -- configuration ----------------------------------------------------------

    async def put(
        self, limit: ratelimit_pb2.Limit, expected_revision: int = 0
    ) -> tuple[ratelimit_pb2.Limit, bool]:
        """Create or replace a limit (validated, defaults filled)."""
        normalized = normalize_limit(limit)
        name = limit_key(normalized.domain, normalized.name)
        # Stored in the form every version can count (config.stored_limit); shown
        # back as written (config.presented_limit, in _view).
        value = stored_limit(normalized).SerializeToString()
        revision, created = await self._store.upsert(
            LIMIT_KIND, name, lambda _: value, expected_revision=expected_revision
        )
        if blocks_all(normalized):
            # It keeps no counters; a checkpoint left from an earlier rate would only
            # be restored into counters nothing uses.
            await self._forget_counters(name)
        return self._view(normalized, revision), created

    def get(self, domain: str, name: str) -> ratelimit_pb2.Limit:
        entry = self._store.get(LIMIT_KIND, limit_key(domain, name))
        if entry is None:
            raise NotFound(f"limit {limit_key(domain, name)!r} does not exist")
        return self._view(ratelimit_pb2.Limit.FromString(entry.value), entry.mod_revision)

    def list(self, domain: str, size: int, start_after: str) -> Page[ratelimit_pb2.Limit]:
        """A page of limits in (domain, name) order; the token encodes the last key."""
        # Names (tokens) stay "<domain>/<name>" whether or not one domain is listed.
        limits = kind_prefix(LIMIT_KIND)
        prefix = limits + f"{domain}/".encode() if domain else limits
        page = scan_page(self._store.cache, prefix, size, start_after, names_under=limits)
        return page.map(
            lambda e: self._view(ratelimit_pb2.Limit.FromString(e.value), e.mod_revision)
        )

    async def delete(self, domain: str, name: str) -> int:
        key = limit_key(domain, name)
        revision = await self._store.delete(LIMIT_KIND, key)
        await self._forget_counters(key)
        return revision

    async def _forget_counters(self, key: str) -> None:
        """Delete a limit's checkpoints: its whole record (earlier versions) and its slots'."""
        with contextlib.suppress(StoreUnavailable):
            await self._store.delete_many(LIMIT_COUNTER_KIND, [key])
            await self._store.delete_prefix(key_for(LIMIT_COUNTER_KIND, key) + b"/")

    # -- decisions ---------------------------------------------------------------

    @property
    def tallies(self) -> Tallies:
        """This replica's decisions by limit and outcome (``tallies``)."""
        return self._decisions.tallies

    def decides_here(self) -> bool:
        """Whether this replica decides Checks itself: always, unless the leader is of
        an earlier version (it keeps every counter, and is forwarded to)."""
        return self._peers.view().sharded or self._election.is_leader

    async def check(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        load: float | None = None,
        own: Own = None,
    ) -> ratelimit_pb2.CheckResponse:
        """Charge ``hits[i]`` to descriptor i's counter (``decisions``), in memory.

        ``own[i]``, when set, is descriptor i's own limit (``descriptors.own_limit``):
        it applies instead of any stored one. ``local_fallback`` is set when a
        counter's owner did not answer and this replica decided on its own share.
        """
        if load is not None:
            index = self._catalog.current()
            for entries in descriptors:
                for item in index.matching(domain, entries):
                    if item.limit.adaptive.enabled:
                        self._pending_load[(domain, item.limit.name)] = load
        return await self._decisions.decide(domain, descriptors, hits, own)

    def take(
        self, holder: str, charges: Sequence[counter_pb2.CounterCharge]
    ) -> list[counter_pb2.CounterOutcome]:
        """Charges another replica sent to the owner of their counters (this one)."""
        return self._decisions.serve(holder, charges)

    async def lease(
        self, domain: str, entries: Entries, client_id: str, wanted: int
    ) -> ratelimit_pb2.LeaseQuotaResponse:
        """Lease ``client_id`` a share of the limit matching ``entries`` for one term,
        from its counter's budget (on the counter's owner)."""
        found = self._catalog.current().lookup(domain, entries)
        if found is None:
            raise NotFound(f"no limit of domain {domain!r} matches the descriptor")
        match = found.limit
        response = ratelimit_pb2.LeaseQuotaResponse(limit_name=match.name)
        if match.unlimited:
            response.granted = wanted
        else:
            response.limit.CopyFrom(effective_rate(match))
            if not blocks_all(match):  # a blocking limit has nothing to share: granted 0
                response.granted = await self._decisions.lease(
                    domain, found, entries, client_id, wanted
                )
        response.expires_at.CopyFrom(timestamps.at(self._clock() + LEASE_TERM_S))
        return response

    def check_local(
        self, domain: str, descriptors: Sequence[Entries], hits: Sequence[int], own: Own = None
    ) -> ratelimit_pb2.CheckResponse:
        """Decide on this replica's own share of each limit (no leader reachable)."""
        return self._decisions.decide_local(domain, descriptors, hits, own)

    def check_fallback(
        self, domain: str, descriptors: Sequence[Entries], hits: Sequence[int], own: Own = None
    ) -> LocalCheck:
        """How a follower decides this Check when the leader does not answer in time."""
        return LocalCheck(functools.partial(self.check_local, domain, descriptors, hits, own))

    # -- every replica: shares, checkpoints ------------------------------------------

    def start(self) -> None:
        """Index the stored limits now (before the replica serves: at 100,000 limits
        this takes seconds), follow their changes, and start the counters' loop."""
        self._catalog.start()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="ratelimit-counters", context=contextvars.Context()
            )

    async def stop(self) -> None:
        """Stop the loop and save what this replica counted since its last round, so
        the next owners of its slots go on from it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.hand_over()
        await self._catalog.close()

    async def hand_over(self) -> None:
        """Save what this replica counted since its last round (a graceful stop), so
        the next owners of its slots go on from it; waits at most ``FINAL_CHECKPOINT_S``."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._checkpoint(), FINAL_CHECKPOINT_S)

    async def _run(self) -> None:
        last_full = self._clock()
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self._decisions.refresh()
                now = self._clock()
                shared = self._decisions.owned.shared_slots(now)
                if now - last_full >= self._checkpoint_interval:
                    last_full = now
                    self.sweep(now)
                    await self._checkpoint()
                elif shared:
                    await self._checkpoints.write(
                        self._decisions.owned.stored(), shared.__contains__
                    )
            except (NotLeader, StoreUnavailable) as exc:
                log.debug("rate-limit checkpoint skipped: %s", exc)
            except Exception:
                log.exception("rate-limit counters' round failed; continuing")

    def sweep(self, now: float) -> int:
        """Forget idle counters (full buckets, past windows) and ended leases.

        A forgotten counter is recreated exactly as it was (full, or a new
        window) on its next request, so this only bounds memory: one counter per
        descriptor value ever seen would otherwise grow without end. A window
        table goes whole when its window ends; a bucket table forgets its full
        buckets once per refill period (``tables``).
        """
        decisions = self._decisions
        return decisions.owned.sweep(now) + decisions.local.sweep(now) + decisions.parts.sweep(now)

    async def _checkpoint(self) -> None:
        await self._save_loads()
        await self._checkpoints.write(self._decisions.owned.stored())

    async def _save_loads(self) -> None:
        """Write reported loads into their limits (only changes worth a write)."""
        pending, self._pending_load = self._pending_load, {}
        for (domain, name), load in pending.items():
            entry = self._store.get(LIMIT_KIND, limit_key(domain, name))
            if entry is None:
                continue
            limit = ratelimit_pb2.Limit.FromString(entry.value)
            if abs(limit.adaptive.load - load) < LOAD_STEP:
                continue
            limit.adaptive.load = load
            limit.adaptive.load_updated_at.CopyFrom(timestamps.at(self._clock()))
            with contextlib.suppress(Conflict, NotFound):
                await self._store.update(
                    LIMIT_KIND,
                    limit_key(domain, name),
                    limit.SerializeToString(),
                    expected_mod_revision=entry.mod_revision,
                )

    # -- helpers ----------------------------------------------------------------

    def _view(self, limit: ratelimit_pb2.Limit, revision: int) -> ratelimit_pb2.Limit:
        """A limit (stored or normalized) as the API shows it, with its revision."""
        out = presented_limit(limit)
        out.revision = revision
        if not limit.unlimited:
            out.effective_rate.CopyFrom(effective_rate(limit))
        return out
