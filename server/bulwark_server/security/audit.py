"""The audit trail: who changed what, when, at which etcd revision, and how it ended.

Layout: ``/bulwark/v1/audit/<id>``, one ``AuditEvent`` per key; ids start with
the time in nanoseconds, so keys sort in time order.

Guarantees:

* An event of a call audited ``ALWAYS`` (configuration, operator and admin
  actions) is written before the call answers. If etcd cannot take it then
  (it took the change a moment before), the event is kept in memory and
  written with the next batch once etcd answers again.
* Data-plane calls that changed state (``ON_WRITE``) and refused calls are
  tallied: one event per actor, peer, method, target and outcome per
  ``flush_interval``, with a count, written in batches. So a flood of permits
  or of refused calls costs a few writes a second, not one each, and cannot
  push the configuration events out of the trail. At most ``MAX_TALLIES``
  distinct tallies are kept per interval; the rest are counted into one
  overflow event. A crash may lose the tallies of the last interval, never
  the changes themselves.
* The leader deletes events older than the retention, and the oldest beyond
  the maximum count, every ``prune_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import message as pb_message

from bulwark.v1 import audit_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import NotLeader, StoreUnavailable
from bulwark_server.store import MAX_TXN_OPS, EtcdStore, Page, take_page
from bulwark_server.store.keys import AUDIT_KIND, kind_prefix

log = logging.getLogger(__name__)

BATCH = MAX_TXN_OPS
MAX_TALLIES = 1000
# Request fields that name what a call acts on, in the order they are looked for.
TARGET_FIELDS = (
    "name",
    "domain",
    "service",
    "instance_id",
    "bulkhead",
    "permit_id",
    "id",
    "target_instance_id",
)


def describe_target(request: pb_message.Message) -> str:
    """What a request acts on, as "field=value" pairs, from its own or one nested message;
    "" for a request stream, whose messages are not read before it is admitted."""
    if not isinstance(request, pb_message.Message):
        return ""
    parts: list[str] = []
    for holder in _holders(request):
        for field in TARGET_FIELDS:
            descriptor = holder.DESCRIPTOR.fields_by_name.get(field)
            if descriptor is None or descriptor.type != descriptor.TYPE_STRING:
                continue
            if descriptor.is_repeated:
                continue
            value = getattr(holder, field)
            if value:
                parts.append(f"{field}={value[:128]}")
        if parts:
            break
    return " ".join(parts)


def _holders(request: pb_message.Message) -> list[pb_message.Message]:
    nested = [
        getattr(request, f.name)
        for f in request.DESCRIPTOR.fields
        if f.type == f.TYPE_MESSAGE
        and not f.is_repeated
        and request.HasField(f.name)
        and not f.message_type.full_name.startswith("google.protobuf.")
    ]
    return [request, *nested]


class AuditLog:
    """Record events (see the module docstring) and serve them back."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        replica_id: str,
        *,
        retention: float,
        max_events: int,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.1,
        prune_interval: float = 5.0,
    ) -> None:
        self._store = store
        self._election = election
        self._replica = replica_id
        self._retention = retention
        self._max_events = max_events
        self._clock = clock
        self._flush_interval = flush_interval
        self._prune_interval = prune_interval
        self._seq = itertools.count(1)
        self._pending: list[tuple[str, bytes]] = []
        self._tallies: dict[tuple[str, ...], audit_pb2.AuditEvent] = {}
        self._overflow = 0
        self._wake = asyncio.Event()
        # Set whenever there is something to write, so an idle loop sleeps until then.
        self._work = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        self._pruner = LeaderTask(election, self._prune_loop, "audit-prune")

    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._flush_loop()))

    async def close(self) -> None:
        await self._pruner.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(StoreUnavailable, NotLeader):
            await self._flush()

    def event(self, **fields: Any) -> audit_pb2.AuditEvent:
        """A new event with its id, time and replica set."""
        now = self._clock()
        event = audit_pb2.AuditEvent(replica=self._replica, count=1, **fields)
        event.id = self._new_id(now)
        event.at.CopyFrom(timestamps.at(now))
        return event

    def _new_id(self, now: float) -> str:
        return f"{int(now * 1e9):019d}-{self._replica}-{next(self._seq):08d}"

    def tally(self, event: audit_pb2.AuditEvent) -> None:
        """Count an event into the current interval's tally of events like it."""
        self._work.set()
        key = (event.actor, event.peer, event.method, event.target, event.code, event.token_id)
        held = self._tallies.get(key)
        if held is None:
            if len(self._tallies) >= MAX_TALLIES:
                self._overflow += 1
                return
            self._tallies[key] = event
            return
        held.count += 1
        held.at.CopyFrom(event.at)
        held.revision = max(held.revision, event.revision)
        if event.message:
            held.message = event.message

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        """Write one event now (StoreUnavailable if etcd cannot take it)."""
        await self._store.put(AUDIT_KIND, event.id, event.SerializeToString())

    def enqueue(self, event: audit_pb2.AuditEvent) -> None:
        """Write an event with the next batch."""
        if len(self._pending) >= 100 * BATCH:
            # etcd has been unreachable for a while: keep memory bounded.
            self._pending.pop(0)
            self.dropped += 1
        self._pending.append((event.id, event.SerializeToString()))
        self._work.set()
        if len(self._pending) >= BATCH:
            self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            if not self._pending and not self._tallies and not self._overflow:
                # Nothing to write: sleep until there is, rather than wake every interval.
                self._work.clear()
                await self._work.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except (StoreUnavailable, NotLeader) as exc:
                log.debug("audit flush: %s", exc)
            except Exception:
                log.exception("audit flush failed; retrying")

    def _close_tallies(self) -> None:
        """Turn this interval's tallies into events (ids taken now, so in time order)."""
        tallies, self._tallies = self._tallies, {}
        for event in tallies.values():
            event.id = self._new_id(self._clock())
            self.enqueue(event)
        if self._overflow:
            overflow = self.event(
                actor="bulwark",
                method="(overflow)",
                code="RESOURCE_EXHAUSTED",
                message=f"{self._overflow} more calls in this interval were only counted",
            )
            overflow.count = self._overflow
            self._overflow = 0
            self.enqueue(overflow)

    async def _flush(self) -> None:
        self._close_tallies()
        while self._pending:
            batch = self._pending[:BATCH]
            await self._store.put_many(AUDIT_KIND, batch)
            del self._pending[: len(batch)]

    # -- reading ----------------------------------------------------------------

    def list(
        self,
        size: int,
        start_after: str,
        *,
        since: float | None = None,
        until: float | None = None,
        actor: str = "",
        method: str = "",
        newest_first: bool = False,
    ) -> Page[audit_pb2.AuditEvent]:
        """One page of matching events, and the token of the next page."""
        entries = self._store.scan(AUDIT_KIND)
        if newest_first:
            entries.reverse()
        start = len(kind_prefix(AUDIT_KIND))

        def matching() -> Iterator[audit_pb2.AuditEvent]:
            for entry in entries:
                event_id = entry.key[start:].decode()
                if start_after and (
                    event_id >= start_after if newest_first else event_id <= start_after
                ):
                    continue
                event = audit_pb2.AuditEvent.FromString(entry.value)
                at = timestamps.unix(event.at)
                if since is not None and at < since:
                    continue
                if until is not None and at >= until:
                    continue
                if actor and event.actor != actor:
                    continue
                if method and event.method != method and not event.method.endswith(f"/{method}"):
                    continue
                yield event

        # Filters apply to every event, so the listing is scanned whole and paged
        # lazily: only up to one event past the page is decoded.
        return take_page(matching(), size, lambda event: event.id)

    # -- retention (leader) -----------------------------------------------------

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            try:
                await self.prune()
            except (StoreUnavailable, NotLeader) as exc:
                log.debug("audit prune: %s", exc)
            except Exception:
                log.exception("audit prune failed; retrying")

    async def prune(self) -> int:
        """Delete expired events and the oldest beyond the maximum; return how many."""
        start = len(kind_prefix(AUDIT_KIND))
        cutoff_ns = int((self._clock() - self._retention) * 1e9)
        excess = max(0, self._store.count(AUDIT_KIND) - self._max_events)
        # Ids are in time order, so the doomed events come first: read pages from the
        # oldest and stop at the first one kept, rather than visit every event each time.
        doomed: list[str] = []
        after = ""
        while page := self._store.scan(AUDIT_KIND, start_after=after, limit=BATCH):
            for entry in page:
                name = entry.key[start:].decode()
                stamp = name.split("-", 1)[0]
                if len(doomed) < excess or (stamp.isdigit() and int(stamp) < cutoff_ns):
                    doomed.append(name)
                else:
                    break
            else:
                after = doomed[-1]
                continue
            break
        fence = self._election.fence()
        for i in range(0, len(doomed), BATCH):
            await self._store.delete_many(AUDIT_KIND, doomed[i : i + BATCH], fence=fence)
        if doomed:
            log.info(
                "pruned %d audit events",
                len(doomed),
                extra={"event": "audit.pruned", "count": len(doomed)},
            )
        return len(doomed)
