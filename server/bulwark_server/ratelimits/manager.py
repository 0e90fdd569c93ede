"""RateLimitManager: limits in etcd, counters in the leader's memory.

Guarantees:

* A limit is one key, ``/bulwark/v1/limits/<domain>/<name>``; writes are
  compare-and-swap.
* ``check`` runs on the leader only, entirely in memory: one counter per
  (limit, request descriptor values). etcd sees no write per request.
* Counters are held per limit (``tables``): one entry per descriptor value.
* Every ``checkpoint_interval`` the leader saves the counters of the limits
  charged since under ``/bulwark/v1/limit-counters/<domain>/<name>`` (fenced;
  ``checkpoints``: one etcd transaction a round, each record within
  ``max_request_bytes`` however many values the limit has). A new leader goes on
  from the last checkpoint, so a failover can re-admit at most the requests of
  one interval (they were counted in memory but not yet saved); values a
  record had no room for are restored at its rest level, never below their count.
* ``lease`` hands out quota leases (see ``leases``); leases live in the
  leader's memory only, so after a failover a client keeps its lease until it
  expires while the new leader starts an empty pool: the fleet may exceed the
  limit by at most the leased shares, for at most one lease term.
* A load reported with ``check`` for an adaptive limit is saved into the
  limit (``adaptive.load``) at the next checkpoint, so every replica's
  ``GetLimit`` shows it and the effective rate follows it.
* ``check_local`` is the fallback while the leader cannot be reached: each
  replica enforces its share (the limit divided by the live replicas, rounded
  up), so the fleet together stays near the limit without coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bulwark.v1 import ratelimit_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import Conflict, NotFound, NotLeader, StoreUnavailable
from bulwark_server.ratelimits.catalog import LimitCatalog
from bulwark_server.ratelimits.checkpoints import CounterCheckpoints, Table
from bulwark_server.ratelimits.config import (
    UNIT_SECONDS,
    blocks_all,
    effective_rate,
    limit_key,
    normalize_limit,
    presented_limit,
    stored_limit,
)
from bulwark_server.ratelimits.counters import Outcome, blocked
from bulwark_server.ratelimits.descriptors import counter_key, own_counter_key, own_limit
from bulwark_server.ratelimits.fallback import LocalCheck
from bulwark_server.ratelimits.index import Indexed
from bulwark_server.ratelimits.leases import LeasePool
from bulwark_server.ratelimits.tables import BucketTable, WindowTable, value_of
from bulwark_server.store import MAX_REQUEST_BYTES, EtcdStore, Fence, Page, scan_page
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, LIMIT_KIND, kind_prefix

log = logging.getLogger(__name__)

LEASE_TERM_S = 10.0
# Reported loads closer than this to the stored one are not worth an etcd write.
LOAD_STEP = 0.01
OK = ratelimit_pb2.CHECK_CODE_OK
OVER = ratelimit_pb2.CHECK_CODE_OVER_LIMIT
FIXED = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW

Entries = Sequence[ratelimit_pb2.DescriptorEntry]
Own = Sequence[ratelimit_pb2.Rate | None] | None


@dataclass(slots=True)
class _Held:
    """A limit's counters, and the limit (its create revision, algorithm) they count for."""

    table: Table
    created: int
    algorithm: int


class RateLimitManager:
    """Configuration of limits and the decisions on them."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        *,
        clock: Callable[[], float] = time.time,
        checkpoint_interval: float = 1.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._store = store
        self._election = election
        self._clock = clock
        self._checkpoint_interval = checkpoint_interval
        self._catalog = LimitCatalog(store)
        # Keyed (domain, name) for a stored limit, (domain, "", unit) for the own
        # limits descriptors carry (descriptors.own_counter_key).
        self._counters: dict[tuple[str, ...], _Held] = {}
        self._local: dict[tuple[str, ...], _Held] = {}
        self._checkpoints = CounterCheckpoints(store, clock, max_request_bytes)
        self._leases: dict[tuple[str, ...], LeasePool] = {}
        self._local_swept_at = 0.0
        self._pending_load: dict[tuple[str, str], float] = {}
        self._leading = LeaderTask(
            election, self._lead, "ratelimit-leader", prepare=self._restore_or_empty
        )

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
            with contextlib.suppress(NotFound, StoreUnavailable):
                await self._store.delete(LIMIT_COUNTER_KIND, name)
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
        with contextlib.suppress(NotFound, StoreUnavailable):
            await self._store.delete(LIMIT_COUNTER_KIND, key)
        return revision

    # -- decisions ---------------------------------------------------------------

    def check(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        load: float | None = None,
        own: Own = None,
    ) -> ratelimit_pb2.CheckResponse:
        """Charge ``hits[i]`` to descriptor i's counter on the leader (memory only).

        Which limits apply is decided for the whole request before anything is
        charged, so a limit replaces another matched by any descriptor, whatever
        the hits of each. ``own[i]``, when set, is descriptor i's own limit
        (``descriptors.own_limit``): it applies instead of any stored one.
        """
        if not self._election.is_leader:
            raise NotLeader("rate-limit counters are kept by the leader")
        if load is not None:
            index = self._catalog.current()
            for entries in descriptors:
                for item in index.matching(domain, entries):
                    if item.limit.adaptive.enabled:
                        self._pending_load[(domain, item.limit.name)] = load
        return self._decide(domain, descriptors, hits, own, self._counters, share=1, dirty=True)

    def lease(
        self, domain: str, entries: Entries, client_id: str, wanted: int
    ) -> ratelimit_pb2.LeaseQuotaResponse:
        """Lease ``client_id`` a share of the limit matching ``entries`` for one term."""
        if not self._election.is_leader:
            raise NotLeader("quota leases are kept by the leader")
        found = self._catalog.current().lookup(domain, entries)
        if found is None:
            raise NotFound(f"no limit of domain {domain!r} matches the descriptor")
        match = found.limit
        now = self._clock()
        response = ratelimit_pb2.LeaseQuotaResponse(limit_name=match.name)
        response.expires_at.CopyFrom(timestamps.at(now + LEASE_TERM_S))
        if match.unlimited:
            response.granted = wanted
            return response
        rate = effective_rate(match)
        response.limit.CopyFrom(rate)
        if blocks_all(match):
            return response  # a blocking limit has nothing to share: granted 0
        pool = self._leases.setdefault(counter_key(match, entries), LeasePool())
        granted = pool.request(client_id, wanted, rate.requests_per_unit, now, LEASE_TERM_S)
        response.granted = granted.granted
        return response

    def check_local(
        self, domain: str, descriptors: Sequence[Entries], hits: Sequence[int], own: Own = None
    ) -> ratelimit_pb2.CheckResponse:
        """Decide on this replica's own share of each limit (leader unreachable)."""
        replicas = max(1, self._election.replica_count())
        now = self._clock()
        if now - self._local_swept_at >= 1.0:
            # Followers have no leader loop: bound the fallback counters here.
            self._local_swept_at = now
            for key in [k for k, held in self._local.items() if held.table.idle(now)]:
                del self._local[key]
        response = self._decide(
            domain, descriptors, hits, own, self._local, share=replicas, dirty=False
        )
        response.local_fallback = True
        return response

    def check_fallback(
        self, domain: str, descriptors: Sequence[Entries], hits: Sequence[int], own: Own = None
    ) -> LocalCheck:
        """How a follower decides this Check when the leader does not answer in time."""
        return LocalCheck(functools.partial(self.check_local, domain, descriptors, hits, own))

    def _decide(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        own: Own,
        table: dict[tuple[str, ...], _Held],
        *,
        share: int,
        dirty: bool,
    ) -> ratelimit_pb2.CheckResponse:
        now = self._clock()
        index = self._catalog.current()
        response = ratelimit_pb2.CheckResponse(overall_code=OK)
        own = own or [None] * len(descriptors)
        matched: list[Indexed | None] = [
            None if limit is not None else index.lookup(domain, entries)
            for entries, limit in zip(descriptors, own, strict=True)
        ]
        # envoyproxy/ratelimit's `replaces`: a limit replaced by another limit this
        # request matches is not applied.
        replaced = {name for m in matched if m is not None for name in m.limit.replaces}
        for entries, found, charge, limit in zip(descriptors, matched, hits, own, strict=True):
            result = response.results.add(code=OK)
            if limit is not None:
                match, created = own_limit(domain, limit), 0
                key = own_counter_key(domain, limit, entries)
                table_key, value = key[:3], value_of(key[3:])
            elif found is None or found.limit.name in replaced:
                continue
            else:
                match, created = found.limit, found.created
                table_key, value = (domain, match.name), value_of([e.value for e in entries])
            result.limit_name = match.name
            if match.unlimited:
                result.unlimited = True
                continue
            rate = effective_rate(match)
            result.current_limit.CopyFrom(rate)
            if blocks_all(match):
                outcome = blocked(UNIT_SECONDS[rate.unit], now)
            else:
                counters = self._table(table, table_key, match, share, now, created)
                outcome = counters.take(value, charge, now)
                # An own limit's counter lives in memory only: it has no record to save.
                if dirty and charge and limit is None:
                    self._checkpoints.note((domain, match.name))
            _fill(result, outcome)
            result.shadow = match.shadow_mode
            if not outcome.allowed:
                result.code = OVER
                if not match.shadow_mode:
                    response.overall_code = OVER
        return response

    def _table(
        self,
        tables: dict[tuple[str, ...], _Held],
        key: tuple[str, ...],
        limit: ratelimit_pb2.Limit,
        share: int,
        now: float,
        created: int,
    ) -> Table:
        """The counters of ``limit`` under ``key``, set to its current (effective) rate."""
        rate = effective_rate(limit)
        unit = UNIT_SECONDS[rate.unit]
        per_unit = max(1, math.ceil(rate.requests_per_unit / share))
        burst = limit.burst or limit.rate.requests_per_unit
        # Scale the burst with the rate, so load scaling and local shares shrink both.
        capacity = max(1, math.ceil(burst * per_unit / max(1, limit.rate.requests_per_unit)))
        held = tables.get(key)
        # A limit deleted and created again under the same name starts afresh, as
        # does one given another algorithm or window length.
        if (
            held is None
            or held.created != created
            or held.algorithm != limit.algorithm
            or (isinstance(held.table, WindowTable) and held.table.unit_seconds != unit)
        ):
            table: Table
            if limit.algorithm == FIXED:
                table = WindowTable(per_unit, unit, self._checkpoints.max_bytes)
            else:
                table = BucketTable(capacity, per_unit / unit)
            tables[key] = _Held(table, created, limit.algorithm)
            return table
        # Counts already taken in this window, or a bucket's fill, carry over to a
        # new rate (an adaptive limit's rate moves with every reported load).
        if isinstance(held.table, WindowTable):
            held.table.limit = per_unit
        else:
            held.table.reconfigure(capacity, per_unit / unit, now)
        return held.table

    # -- leader: checkpoints -----------------------------------------------------

    def _restore_or_empty(self) -> None:
        """Run as a term starts (``LeaderTask`` prepare), so the counters are restored
        before any Check can reach this leader's counters."""
        try:
            self._restore()
        except Exception:
            log.exception("restoring rate-limit counters failed; starting empty")
            self._counters.clear()

    async def _lead(self) -> None:
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            if not self._election.is_leader:
                continue
            try:
                self.sweep(self._clock())
                await self._checkpoint()
            except (NotLeader, StoreUnavailable) as exc:
                log.debug("rate-limit checkpoint skipped: %s", exc)
            except Exception:
                log.exception("rate-limit checkpoint failed; continuing")

    def sweep(self, now: float) -> int:
        """Forget idle counters (full buckets, past windows) and empty lease pools.

        A forgotten counter is recreated exactly as it was (full, or a new
        window) on its next request, so this only bounds memory: one counter per
        descriptor value ever seen would otherwise grow without end. A window
        table goes whole when its window ends; a bucket table forgets its full
        buckets once per refill period (``tables``).
        """
        dropped = 0
        for tables in (self._counters, self._local):
            for key in [k for k, held in tables.items() if held.table.idle(now)]:
                del tables[key]
                dropped += 1
        for key in list(self._leases):
            self._leases[key].expire(now)
            if not self._leases[key].leases:
                del self._leases[key]
        return dropped

    def start(self) -> None:
        """Index the stored limits now (before the replica serves: at 100,000 limits
        this takes seconds) and follow their changes in a task."""
        self._catalog.start()

    async def stop(self) -> None:
        """Stop the leader's checkpoint loop (the counters are not saved once more)."""
        await self._leading.stop()
        await self._catalog.close()

    async def _checkpoint(self) -> None:
        fence = self._election.fence()
        await self._save_loads(fence)
        # Only stored limits' tables are keyed (domain, name): own limits are not saved.
        tables = {(k[0], k[1]): held.table for k, held in self._counters.items() if len(k) == 2}
        await self._checkpoints.write(tables, fence)

    async def _save_loads(self, fence: Fence) -> None:
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
                    fence=fence,
                )

    def _restore(self) -> None:
        """Load the last checkpoint of every limit into fresh counters."""
        self._counters.clear()
        self._checkpoints.clear()
        self._leases.clear()
        now = self._clock()
        for saved in self._checkpoints.saved():
            limit = saved.limit
            if limit.unlimited or blocks_all(limit):
                continue
            key = (limit.domain, limit.name)
            self._table(self._counters, key, limit, 1, now, saved.created)
            self._counters[key].table.restore(saved.listed, saved.rest, now)

    # -- helpers ----------------------------------------------------------------

    def _view(self, limit: ratelimit_pb2.Limit, revision: int) -> ratelimit_pb2.Limit:
        """A limit (stored or normalized) as the API shows it, with its revision."""
        out = presented_limit(limit)
        out.revision = revision
        if not limit.unlimited:
            out.effective_rate.CopyFrom(effective_rate(limit))
        return out


def _fill(result: ratelimit_pb2.DescriptorResult, outcome: Outcome) -> None:
    result.remaining = outcome.remaining
    result.reset_after.FromNanoseconds(int(max(0.0, outcome.reset_after) * 1e9))
    if not outcome.allowed and math.isfinite(outcome.retry_after):
        result.retry_after.FromNanoseconds(int(max(0.0, outcome.retry_after) * 1e9))
