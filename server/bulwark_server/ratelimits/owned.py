"""The counters one replica holds: the slots it owns, and its local fallback shares.

``CounterTables`` keeps tables (``tables``) keyed by ``TableId``:

* a stored limit's slot, ``(domain, name, slot)``: restored from the slot's last
  checkpoint when the table is made (``checkpoints.saved``), so a replica that
  takes a slot over (an owner joined, left or failed) goes on from what the
  previous owner saved, and one that made the table before finds its own record;
* a descriptor's own limit, ``(domain, "", unit, slot)``: in memory only, as
  envoyproxy/ratelimit keeps such counters;
* with ``share`` > 1 (the local fallback), each table admits its share of the
  limit: the limit divided by the replicas, rounded up.

Busy counters also keep a ``ShareLedger`` of the replicas holding shares of them,
and leased counters a ``LeasePool`` of the clients' quota leases (``leases``): the
rate leased out is kept back from the counter, so Checks, the replicas' shares and
the clients' leases draw on one budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.checkpoints import CounterCheckpoints, SlotId, Table
from bulwark_server.ratelimits.config import UNIT_SECONDS, effective_rate
from bulwark_server.ratelimits.counters import Outcome
from bulwark_server.ratelimits.leases import LEASE_TERM_S, LeasePool
from bulwark_server.ratelimits.shares import REFRESH_S, ShareLedger
from bulwark_server.ratelimits.tables import BucketTable, Value, WindowTable

FIXED = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW

TableId = tuple[str | int, ...]
"""(domain, name, slot) of a stored limit; (domain, "", unit, slot) of an own limit."""


class Setting(NamedTuple):
    """What a limit's tables are set to (``CounterTables.setting``)."""

    algorithm: int
    unit_seconds: int
    per_unit: int  # this table's share of the effective rate
    capacity: int  # of a bucket


@dataclass(slots=True)
class Held:
    """A table, the limit (its create revision, algorithm) it counts for, and the
    setting it was last set to."""

    table: Table
    created: int
    algorithm: int
    setting: Setting


class CounterTables:
    """Tables by ``TableId``; see the module docstring."""

    def __init__(
        self,
        checkpoints: CounterCheckpoints | None = None,
        *,
        share: Callable[[], int] = lambda: 1,
        max_bytes: int = 1 << 20,
    ) -> None:
        self._checkpoints = checkpoints
        self._share = share
        self._max_bytes = max_bytes
        self.held: dict[TableId, Held] = {}
        self.ledgers: dict[tuple[TableId, Value], ShareLedger] = {}
        self.leases: dict[tuple[TableId, Value], LeasePool] = {}

    def setting(self, limit: ratelimit_pb2.Limit) -> Setting:
        """What ``limit``'s tables here are set to now: its effective rate (of this
        replica's share of it) and burst. The same for every table of the limit, so a
        request charging many of them works it out once."""
        share = self._share()
        rate = effective_rate(limit)
        unit = UNIT_SECONDS[rate.unit]
        per_unit = max(1, math.ceil(rate.requests_per_unit / share))
        burst = limit.burst or limit.rate.requests_per_unit
        # Scale the burst with the rate, so load scaling and local shares shrink both.
        capacity = max(1, math.ceil(burst * per_unit / max(1, limit.rate.requests_per_unit)))
        return Setting(limit.algorithm, unit, per_unit, capacity)

    def table(
        self,
        key: TableId,
        limit: ratelimit_pb2.Limit,
        created: int,
        now: float,
        setting: Setting | None = None,
    ) -> Table:
        """The table of ``key`` for ``limit``, set to its current (effective) rate;
        ``setting``, when given, is ``setting(limit)`` worked out at ``now``."""
        if setting is None:
            setting = self.setting(limit)
        held = self.held.get(key)
        # A limit deleted and created again under the same name starts afresh, as
        # does one given another algorithm or window length.
        if (
            held is None
            or held.created != created
            or held.algorithm != setting.algorithm
            or (
                isinstance(held.table, WindowTable)
                and held.table.unit_seconds != setting.unit_seconds
            )
        ):
            algorithm, unit, per_unit, capacity = setting
            table: Table
            if algorithm == FIXED:
                table = WindowTable(per_unit, unit, self._max_bytes)
            else:
                table = BucketTable(capacity, per_unit / unit)
            self.held[key] = Held(table, created, algorithm, setting)
            if self._checkpoints is not None and key[1] and self._share() == 1:
                saved = self._checkpoints.saved(str(key[0]), str(key[1]), int(key[2]), created)
                if saved is not None:
                    table.restore(saved.listed, saved.rest, now)
            return table
        # Counts already taken in this window, or a bucket's fill, carry over to a
        # new rate (an adaptive limit's rate moves with every reported load). A table
        # already at this setting stays as it is (setting it again would change nothing).
        if held.setting is not setting and held.setting != setting:
            held.setting = setting
            _, unit, per_unit, capacity = setting
            if isinstance(held.table, WindowTable):
                held.table.limit = per_unit
            else:
                held.table.reconfigure(capacity, per_unit / unit, now)
        return held.table

    def take(
        self,
        key: TableId,
        limit: ratelimit_pb2.Limit,
        created: int,
        value: Value,
        hits: int,
        now: float,
        setting: Setting | None = None,
    ) -> Outcome:
        """Charge ``hits`` to ``value``'s counter (stored limits' slots are noted for
        the next checkpoint); ``setting``: see ``table``."""
        held = self.held.get(key)
        # A table already at this setting (its algorithm and window length with it) is
        # what ``table`` would give as it is: without the call, which runs per decision.
        if held is not None and held.created == created and held.setting == setting:
            table = held.table
        else:
            table = self.table(key, limit, created, now, setting)
        pool = self.leases.get((key, value)) if self.leases else None
        if pool is None:
            outcome = table.take(value, hits, now)
        else:
            pool.central += hits
            kept = self._kept_back(table, pool, limit, value, now)
            outcome = table.take(value, hits, now)
            if kept:
                # A window keeps the leased rate back: allowed while the count stays
                # within what the leases leave (refused hits count, as in any window).
                remaining = outcome.remaining - kept
                if not outcome.allowed or remaining < 0:
                    outcome = Outcome(False, 0, outcome.reset_after, outcome.reset_after)
                else:
                    outcome = outcome._replace(remaining=remaining)
        if hits and key[1] and self._checkpoints is not None:  # ``_note``, once per decision
            self._checkpoints.note(key)  # type: ignore[arg-type]
        return outcome

    def lease(
        self,
        key: TableId,
        limit: ratelimit_pb2.Limit,
        created: int,
        value: Value,
        client: str,
        wanted: int,
        now: float,
    ) -> int:
        """Lease ``client`` up to ``wanted`` requests per unit of ``value``'s counter for
        ``LEASE_TERM_S``; what it was granted (``leases.LeasePool.request``)."""
        table = self.table(key, limit, created, now)
        pool = self.leases.get((key, value))
        if pool is None:
            pool = self.leases[(key, value)] = LeasePool()
        # What the leases used so far is charged at the rate they had.
        self._kept_back(table, pool, limit, value, now)
        rate = effective_rate(limit)
        unit = UNIT_SECONDS[rate.unit]
        lease = pool.request(client, wanted, rate.requests_per_unit, now, LEASE_TERM_S, unit)
        return lease.granted

    def _kept_back(
        self, table: Table, pool: LeasePool, limit: ratelimit_pb2.Limit, value: Value, now: float
    ) -> int:
        """What ``value``'s counter keeps back for its leases: a window, their rate
        (returned); a bucket is charged, as time passes, the tokens they may have used."""
        if isinstance(table, WindowTable):
            return pool.reserved(table.window_start(now))
        due = pool.due(1 / UNIT_SECONDS[effective_rate(limit).unit], now)
        if due:
            table.debit(value, due, now, now)
        return 0

    def grant(
        self,
        key: TableId,
        limit: ratelimit_pb2.Limit,
        created: int,
        value: Value,
        holder: str,
        wanted: int,
        now: float,
    ) -> int:
        """Take up to ``wanted`` tokens of ``value``'s counter as ``holder``'s share."""
        ledger = self.ledgers.get((key, value))
        if ledger is None:
            ledger = self.ledgers[(key, value)] = ShareLedger()
        table = self.table(key, limit, created, now)
        pool = self.leases.get((key, value)) if self.leases else None
        kept = 0 if pool is None else self._kept_back(table, pool, limit, value, now)
        looked = table.take(value, 0, now)
        available = max(0, looked.remaining - kept)
        if isinstance(table, WindowTable) and looked.reset_after < REFRESH_S:
            # A window's grant lapses with the window: late in it, grant what the
            # holder can spend before it ends (its ask covers a period and a half), and
            # leave the rest to exact charges rather than let it lapse unspent.
            wanted = math.ceil(wanted * looked.reset_after / REFRESH_S)
        rate = effective_rate(limit)
        refill = math.ceil(rate.requests_per_unit / UNIT_SECONDS[rate.unit] * REFRESH_S)
        cap = ledger.cap(holder, wanted, available, refill, now)
        allowed = table.take_up_to(value, cap, now)
        if pool is not None:
            pool.central += allowed
        if allowed:
            self._note(key)
        return allowed

    def debit(
        self,
        key: TableId,
        limit: ratelimit_pb2.Limit,
        created: int,
        value: Value,
        hits: int,
        at: float,
        now: float,
    ) -> None:
        """Charge hits another replica admitted on its own (from its part, or while this
        owner did not answer)."""
        self.table(key, limit, created, now).debit(value, hits, at, now)
        pool = self.leases.get((key, value)) if self.leases else None
        if pool is not None:
            pool.central += hits
        self._note(key)

    def _note(self, key: TableId) -> None:
        """A stored limit's slot was charged: its record is written next round."""
        if key[1] and self._checkpoints is not None:
            self._checkpoints.note(key)  # type: ignore[arg-type]

    def contested(self, key: TableId, value: Value, holder: str, now: float) -> bool:
        """Whether replicas other than ``holder`` hold shares of ``value``'s counter."""
        ledger = self.ledgers.get((key, value))
        return ledger is not None and ledger.contested(holder, now)

    def give_back(self, key: TableId, value: Value, tokens: int, now: float) -> None:
        """Unspent tokens of a share returned by its holder (buckets only: a window's
        grant lapses with its window)."""
        held = self.held.get(key)
        if held is not None and isinstance(held.table, BucketTable):
            held.table.give_back(value, tokens, now)

    def shared_slots(self, now: float) -> set[SlotId]:
        """The stored limits' slots with shares out: checkpointed every refresh."""
        out: set[SlotId] = set()
        for (key, value), ledger in list(self.ledgers.items()):
            if not ledger.active(now):
                del self.ledgers[(key, value)]
            elif key[1]:
                out.add(key)  # type: ignore[arg-type]
        return out

    def sweep(self, now: float) -> int:
        """Forget idle tables (full buckets, past windows); how many went."""
        idle = [key for key, held in self.held.items() if held.table.idle(now)]
        for key in idle:
            del self.held[key]
        for (key, value), pool in list(self.leases.items()):
            held = self.held.get(key)
            table = held.table if held is not None else None
            # A window keeps an ended lease back until the window ends.
            pool.expire(table.window_start(now) if isinstance(table, WindowTable) else now)
            if not pool.leases:
                del self.leases[(key, value)]
        return len(idle)

    def drop(self, keep: Callable[[TableId], bool]) -> int:
        """Forget the tables (and ledgers) ``keep`` refuses: slots this replica no longer owns."""
        gone = [key for key in self.held if not keep(key)]
        for key in gone:
            del self.held[key]
        for pair in [pair for pair in self.ledgers if not keep(pair[0])]:
            del self.ledgers[pair]
        for pair in [pair for pair in self.leases if not keep(pair[0])]:
            del self.leases[pair]
        return len(gone)

    def stored(self) -> dict[SlotId, Table]:
        """The stored limits' tables by slot (what checkpoints are written from)."""
        return {key: held.table for key, held in self.held.items() if key[1]}  # type: ignore[misc]
