"""Counter checkpoints: which slots were charged, writing their records, reading them.

The counters are split by slot among the replicas (``sharding``); each owner
writes one record per slot of a limit it charged, a ``LimitCounters`` with
``slot`` set, under ``/bulwark/v1/limit-counters/<domain>/<name>/<slot>``. The
next owner of a slot goes on from it. Earlier versions kept every counter on the
leader and wrote one record per limit, under ``<domain>/<name>`` without a slot:
a new owner reads that record too (the values of its slot), and goes on from
whichever of the two is newer (``saved``).

* **Any number of values fits.** A round gives each limit ``max_bytes``, split
  among its charged slots by how many values each holds. A record lists the
  counters that fit (``tables.*.saved``: the highest counts, the emptiest
  buckets) and a ``rest`` level for the others, with a filter of the values it is
  for, so a per-IP limit seen from a million addresses is bounded in etcd, and no
  counter is restored below what it counted.
* **Few proposals a round.** A round writes the records of every slot charged
  since the last one, in transactions of up to ``MAX_TXN_OPS`` records and
  ``max_bytes`` (``store.batches``); one transaction is one etcd proposal.
* A transaction that fails leaves its slots to the next round. etcd refusing it
  as too large (its ``--max-request-bytes`` is below the setting) halves the
  budget for the rounds that follow, with a warning naming the setting.
* Writes are not fenced: an owner is not a leader. Two replicas that both think
  they own a slot (for the moment their caches differ about who serves) may
  both write it; the next owner restores the one written last.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bulwark.v1 import ratelimit_pb2
from bulwark_server import timestamps
from bulwark_server.errors import RequestTooLarge
from bulwark_server.ratelimits.config import limit_key
from bulwark_server.ratelimits.sharding import slot_of
from bulwark_server.ratelimits.tables import (
    BucketTable,
    Rest,
    Saved,
    WindowTable,
    value_of,
    values_of,
)
from bulwark_server.store import EtcdStore, batches
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, LIMIT_KIND

log = logging.getLogger(__name__)

Table = WindowTable | BucketTable
SlotId = tuple[str, str, int]
"""(domain, name, slot) of a stored limit's counters."""

# Room in a record for the domain, name, revision and timestamps, and in a
# transaction for its key.
RECORD_OVERHEAD = 160
SMALLEST_BUDGET = 16 * 1024
SMALLEST_RECORD = 256


@dataclass(frozen=True)
class Restored:
    """A slot's last checkpoint (from its own record or its limit's whole one)."""

    listed: list[Saved]
    rest: Rest | None


class CounterCheckpoints:
    """The slots charged since their last written checkpoint, and the rounds that write them."""

    def __init__(self, store: EtcdStore, clock: Callable[[], float], max_bytes: int) -> None:
        self._store = store
        self._clock = clock
        self.max_bytes = max_bytes
        self._charged: set[SlotId] = set()

    def note(self, slot: SlotId) -> None:
        """Counters of ``slot`` were charged: its record is written next round."""
        self._charged.add(slot)

    async def write(
        self, tables: Mapping[SlotId, Table], only: Callable[[SlotId], bool] | None = None
    ) -> int:
        """One round: write the record of every charged slot (of those ``only`` picks);
        how many were written."""
        # Taken whole before the records are built: hits counted while they are
        # written mark their slots again for the next round.
        if only is None:
            charged, self._charged = self._charged, set()
        else:
            charged = {slot for slot in self._charged if only(slot)}
            self._charged -= charged
        now = self._clock()
        budgets = self._budgets(charged, tables)
        records: list[tuple[str, bytes]] = []
        for domain, name, slot in sorted(charged):
            entry = self._store.get(LIMIT_KIND, limit_key(domain, name))
            table = tables.get((domain, name, slot))
            if entry is None or table is None:
                continue
            record = ratelimit_pb2.LimitCounters(
                domain=domain,
                name=name,
                limit_create_revision=entry.create_revision,
                checkpointed_at=timestamps.at(now),
                slot=slot,
            )
            listed, rest = table.saved(budgets[(domain, name, slot)], now)
            for value, level, at in listed:
                record.counters.add(values=values_of(value), level=level, time=at)
            if rest is not None:
                record.rest.level, record.rest.time = rest.level, rest.time
                record.rest_members, record.rest_member_hashes = rest.members, rest.hashes
            records.append((slot_key(domain, name, slot), record.SerializeToString()))
        written = 0
        for batch in batches(records, self.max_bytes):
            try:
                await self._store.put_many(LIMIT_COUNTER_KIND, batch, fence=None)
                written += len(batch)
            except RequestTooLarge as exc:
                self._charged.update(_slot_id(key) for key, _ in batch)
                self._shrink(exc)
            except Exception as exc:
                # One transaction's failure (etcd away) must not keep the others
                # from being written; its slots are written again next round.
                self._charged.update(_slot_id(key) for key, _ in batch)
                log.warning("rate-limit checkpoint of %d slots failed: %s", len(batch), exc)
        return written

    def _budgets(self, charged: set[SlotId], tables: Mapping[SlotId, Table]) -> dict[SlotId, int]:
        """Each limit's ``max_bytes``, split among its charged slots by their values."""
        by_limit: dict[tuple[str, str], list[SlotId]] = {}
        for slot in charged:
            by_limit.setdefault(slot[:2], []).append(slot)
        budgets: dict[SlotId, int] = {}
        for slots in by_limit.values():
            room = max(SMALLEST_RECORD, self.max_bytes - RECORD_OVERHEAD * len(slots))
            sizes = {slot: max(1, len(tables.get(slot) or ())) for slot in slots}
            total = sum(sizes.values())
            for slot, size in sizes.items():
                budgets[slot] = max(SMALLEST_RECORD, room * size // total)
        return budgets

    def _shrink(self, exc: RequestTooLarge) -> None:
        smaller = max(SMALLEST_BUDGET, self.max_bytes // 2)
        log.warning(
            "a rate-limit checkpoint of up to %d bytes was not saved: %s; writing at most "
            "%d bytes from now on: set BULWARK_ETCD_MAX_REQUEST_BYTES below etcd's "
            "--max-request-bytes",
            self.max_bytes,
            exc,
            smaller,
        )
        self.max_bytes = smaller

    def saved(self, domain: str, name: str, slot: int, created: int) -> Restored | None:
        """The newest checkpoint of ``slot`` of the limit created at ``created``: its own
        record, or the values of the slot in the limit's whole record (earlier versions)."""
        best: tuple[float, Restored] | None = None
        for key in (slot_key(domain, name, slot), limit_key(domain, name)):
            entry = self._store.get(LIMIT_COUNTER_KIND, key)
            if entry is None:
                continue
            found = _restored(entry.value, entry.mod_revision, slot, created)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return best[1] if best is not None else None


def slot_key(domain: str, name: str, slot: int) -> str:
    """The name (under ``limit-counters``) of a slot's record."""
    return f"{limit_key(domain, name)}/{slot}"


@functools.lru_cache(maxsize=256)
def _parsed(value: bytes, revision: int) -> ratelimit_pb2.LimitCounters:
    # A whole-limit record of an earlier version is read once per slot: parse it once.
    return ratelimit_pb2.LimitCounters.FromString(value)


def _restored(
    value: bytes, revision: int, slot: int, created: int
) -> tuple[float, Restored] | None:
    """(checkpoint time, the part of the record for ``slot``), or None when the record is
    of another limit of the same name."""
    if len(value) > 4096:
        record = _parsed(value, revision)
    else:
        record = ratelimit_pb2.LimitCounters.FromString(value)
    if record.limit_create_revision != created:
        return None
    whole = not record.HasField("slot")
    if not whole and record.slot != slot:
        return None
    listed = []
    for counter in record.counters:
        values = list(counter.values)
        if whole and slot_of(record.domain, record.name, values) != slot:
            continue
        listed.append((value_of(values), counter.level, counter.time))
    rest = None
    if record.HasField("rest"):
        rest = Rest(
            record.rest.level, record.rest.time, record.rest_members, record.rest_member_hashes
        )
    at = record.checkpointed_at.seconds + record.checkpointed_at.nanos / 1e9
    return at, Restored(listed, rest)


def _slot_id(key: str) -> SlotId:
    limit, _, slot = key.rpartition("/")
    domain, _, name = limit.partition("/")
    return domain, name, int(slot)
