"""The leader's counter checkpoints: which limits were charged, writing them, reading them.

One record per limit under ``/bulwark/v1/limit-counters/<domain>/<name>`` (a
``LimitCounters``), as every earlier version wrote it, so a new leader goes on
from what the previous version saved, and the previous version from ours.

* **Any number of values fits.** A record lists at most ``max_bytes`` of
  counters (``tables.*.saved``: the highest counts, the emptiest buckets) and a
  ``rest`` level for the others, with a filter of the values it is for, so a
  per-IP limit seen from a million addresses is one bounded etcd value, and no
  counter is restored below what it counted.
* **One proposal a round.** A round writes the records of every limit charged
  since the last one, in fenced transactions of up to ``MAX_TXN_OPS`` records and
  ``max_bytes`` (``store.batches``); one transaction is one etcd proposal, so a
  round costs one write however many limits were charged.
* A transaction that fails leaves its limits to the next round. etcd refusing it
  as too large (its ``--max-request-bytes`` is below the setting) halves the
  budget for the rounds that follow, with a warning naming the setting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from bulwark.v1 import ratelimit_pb2
from bulwark_server import timestamps
from bulwark_server.errors import NotLeader, RequestTooLarge
from bulwark_server.ratelimits.config import limit_key
from bulwark_server.ratelimits.tables import (
    BucketTable,
    Rest,
    Saved,
    WindowTable,
    value_of,
    values_of,
)
from bulwark_server.store import EtcdStore, Fence, batches
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, LIMIT_KIND

log = logging.getLogger(__name__)

Table = WindowTable | BucketTable
LimitId = tuple[str, str]
"""(domain, name) of a stored limit."""

# Room in a record for the domain, name, revision and timestamps, and in a
# transaction for each key and the fence's compare.
RECORD_OVERHEAD = 2048
SMALLEST_BUDGET = 16 * 1024


@dataclass(frozen=True)
class Restored:
    """A limit's last checkpoint, for a new term's counters."""

    limit: ratelimit_pb2.Limit
    created: int
    listed: list[Saved]
    rest: Rest | None


class CounterCheckpoints:
    """The limits charged since their last written checkpoint, and the rounds that write them."""

    def __init__(self, store: EtcdStore, clock: Callable[[], float], max_bytes: int) -> None:
        self._store = store
        self._clock = clock
        self.max_bytes = max_bytes
        self._charged: set[LimitId] = set()

    def note(self, limit: LimitId) -> None:
        """Counters of ``limit`` were charged: its record is written next round."""
        self._charged.add(limit)

    def clear(self) -> None:
        self._charged.clear()

    async def write(self, tables: Mapping[LimitId, Table], fence: Fence) -> int:
        """One round: write the record of every charged limit; how many were written."""
        # Taken whole before the records are built: hits counted while they are
        # written mark their limits again for the next round.
        charged, self._charged = self._charged, set()
        now = self._clock()
        records: list[tuple[str, bytes]] = []
        for domain, name in sorted(charged):
            entry = self._store.get(LIMIT_KIND, limit_key(domain, name))
            table = tables.get((domain, name))
            if entry is None or table is None:
                continue
            record = ratelimit_pb2.LimitCounters(
                domain=domain,
                name=name,
                limit_create_revision=entry.create_revision,
                checkpointed_at=timestamps.at(now),
            )
            listed, rest = table.saved(max(1, self.max_bytes - RECORD_OVERHEAD), now)
            for value, level, at in listed:
                record.counters.add(values=values_of(value), level=level, time=at)
            if rest is not None:
                record.rest.level, record.rest.time = rest.level, rest.time
                record.rest_members, record.rest_member_hashes = rest.members, rest.hashes
            records.append((limit_key(domain, name), record.SerializeToString()))
        written = 0
        pending = list(batches(records, self.max_bytes))
        for i, batch in enumerate(pending):
            try:
                await self._store.put_many(LIMIT_COUNTER_KIND, batch, fence=fence)
                written += len(batch)
            except NotLeader:
                for later in pending[i:]:
                    self._charged.update(_limit_id(key) for key, _ in later)
                raise
            except RequestTooLarge as exc:
                self._charged.update(_limit_id(key) for key, _ in batch)
                self._shrink(exc)
            except Exception as exc:
                # One transaction's failure (etcd away) must not keep the others
                # from being written; its limits are written again next round.
                self._charged.update(_limit_id(key) for key, _ in batch)
                log.warning("rate-limit checkpoint of %d limits failed: %s", len(batch), exc)
        return written

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

    def saved(self) -> Iterator[Restored]:
        """Every limit's last checkpoint whose limit still exists as it was saved for."""
        for entry in self._store.scan(LIMIT_COUNTER_KIND):
            record = ratelimit_pb2.LimitCounters.FromString(entry.value)
            own = self._store.get(LIMIT_KIND, limit_key(record.domain, record.name))
            if own is None or own.create_revision != record.limit_create_revision:
                continue  # the limit is gone, or is a new one under the same name
            listed = [(value_of(c.values), c.level, c.time) for c in record.counters]
            rest = None
            if record.HasField("rest"):
                rest = Rest(
                    record.rest.level,
                    record.rest.time,
                    record.rest_members,
                    record.rest_member_hashes,
                )
            yield Restored(
                ratelimit_pb2.Limit.FromString(own.value), own.create_revision, listed, rest
            )


def _limit_id(key: str) -> LimitId:
    domain, _, name = key.partition("/")
    return domain, name
