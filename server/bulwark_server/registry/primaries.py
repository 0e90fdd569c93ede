"""Primaries: one fenced primary per service, switchovers, and the leader's failover loop.

``/bulwark/v1/primaries/<service>`` holds the service's ``Primary`` record. It
is never deleted, so its epoch only grows, whatever happens to the instances.
Guarantees:

* **One primary per epoch.** Only the leader promotes, with one transaction
  that compares the primary record's revision, the revisions of the instances
  it decided on (still as seen, or still gone) and its own leader key (a
  deposed leader writes nothing). Each promotion is epoch + 1, so an epoch
  names one instance forever.
* **Failover is event-driven.** The leader re-decides a service on every
  change to its instances or primary record (and every ``tick_interval`` for
  switchover deadlines), so a backup is promoted within one watch round trip
  of etcd removing the dead primary's key: the TTL plus etcd's lease-expiry
  granularity (0.5 s).
* ``as_of`` never answers from a cache older than a given etcd revision, so a
  deposed primary is not told it still leads because this replica's cache lags.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from google.protobuf import duration_pb2

from bulwark.v1 import registry_pb2
from bulwark_server.cluster.election import Election
from bulwark_server.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.registry import failover, rules
from bulwark_server.registry.instances import Instances, instance_name
from bulwark_server.store import Entry, EtcdStore, Event, Unchanged
from bulwark_server.store.keys import INSTANCE_KIND, PRIMARY_KIND, kind_prefix

log = logging.getLogger(__name__)

# How long Switchover waits beyond the drain timeout for the leader to act.
SWITCHOVER_SLACK_S = 5.0
# How long a heartbeat waits for the cache to reach etcd's revision before asking etcd.
CACHE_WAIT_S = 0.5


def decode(entry: Entry) -> registry_pb2.Primary:
    """The primary record a key holds, revision set."""
    record = registry_pb2.Primary.FromString(entry.value)
    record.revision = entry.mod_revision
    return record


class Primaries:
    """Every service's primary record, switchovers, and the failover decisions."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        instances: Instances,
        *,
        clock: Callable[[], float] = time.time,
        tick_interval: float = 0.25,
    ) -> None:
        self._store = store
        self._election = election
        self._instances = instances
        self._clock = clock
        self._tick_interval = tick_interval
        # Promotions after a service's first, made by this replica as leader, by service.
        self.failovers: collections.Counter[str] = collections.Counter()

    # -- reads ------------------------------------------------------------------

    def get(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary record (revision set), or None if it never had one."""
        entry = self._store.get(PRIMARY_KIND, service)
        return decode(entry) if entry is not None else None

    def primary_id(self, service: str) -> str:
        """The id of the service's primary, "" when it has none."""
        record = self.get(service)
        return record.instance_id if record is not None else ""

    async def as_of(self, service: str, revision: int) -> registry_pb2.Primary:
        """The primary record no older than etcd ``revision``: a deposed primary must
        not be told it still leads because this replica's cache lags."""
        if await self._store.wait_for_revision(revision, timeout=CACHE_WAIT_S):
            record = self.get(service)
        else:
            entry = await self._store.read(PRIMARY_KIND, service)
            record = decode(entry) if entry is not None else None
        return record or registry_pb2.Primary(service=service)

    def _views(self, service: str) -> dict[str, registry_pb2.Instance]:
        return self._instances.views(service, self.primary_id(service))

    # -- switchover -------------------------------------------------------------

    async def switchover(
        self, service: str, target: str, drain: duration_pb2.Duration | None = None
    ) -> registry_pb2.Primary:
        """Ask the primary to drain, then wait for the leader to promote; return the new primary.

        ``drain`` bounds the drain (``rules.drain_seconds``: 10 s when None),
        checked before anything is read.
        """
        drain_timeout = rules.drain_seconds(drain)
        if self.get(service) is None and await self._store.read(PRIMARY_KIND, service) is None:
            raise FailedPrecondition(f"service {service!r} has no primary to switch over from")
        written: list[registry_pb2.Primary] = []

        def request(entry: Entry) -> bytes:
            current = registry_pb2.Primary.FromString(entry.value)
            record = failover.request_switchover(
                current, self._views(service), target, drain_timeout, self._clock()
            )
            written[:] = [record]
            return record.SerializeToString()

        requested, _ = await self._store.modify(PRIMARY_KIND, service, request)
        old = written[0]
        log.info(
            "switchover of %s requested from %s to %s",
            service,
            old.instance_id,
            target or "the best backup",
            extra={"event": "registry.switchover", "service": service},
        )
        deadline = time.monotonic() + drain_timeout + SWITCHOVER_SLACK_S
        queue = self._store.subscribe(INSTANCE_KIND, PRIMARY_KIND)
        try:
            while True:
                current = self.get(service)
                if current is not None and current.epoch > old.epoch:
                    return current
                if (
                    current is not None
                    and current.revision > requested.mod_revision
                    and not current.HasField("switchover_target")
                ):
                    raise FailedPrecondition(f"switchover did not happen: {current.reason}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NotLeader(
                        "no leader completed the switchover in time; it stays requested"
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await queue.get()
        finally:
            self._store.unsubscribe(queue)

    # -- the leader's failover loop ---------------------------------------------

    async def lead(self) -> None:
        """While leading: re-decide the services each change touches, and all of them
        every ``tick_interval`` (switchover deadlines, and decisions a failed write left
        undone). The sweep's timer is not reset by changes, so a busy store cannot
        starve it."""
        queue = self._store.subscribe(INSTANCE_KIND, PRIMARY_KIND)
        try:
            dirty = self.services()
            next_sweep = time.monotonic() + self._tick_interval
            while True:
                if dirty and self._election.is_leader:
                    try:
                        await self.reconcile(dirty)
                    except (NotLeader, StoreUnavailable) as exc:
                        log.debug("registry leader loop: %s", exc)
                    except Exception:
                        log.exception("registry leader loop failed; continuing")
                dirty = set()
                try:
                    async with asyncio.timeout(max(0.0, next_sweep - time.monotonic())):
                        batches = [await queue.get()]
                except TimeoutError:
                    dirty = self.services()
                    next_sweep = time.monotonic() + self._tick_interval
                    continue
                # Take everything queued: one decision per service per round.
                while not queue.empty():
                    batches.append(queue.get_nowait())
                for batch in batches:
                    if not batch:
                        # This subscriber fell behind and was dropped: follow again.
                        self._store.unsubscribe(queue)
                        queue = self._store.subscribe(INSTANCE_KIND, PRIMARY_KIND)
                        dirty = self.services()
                        break
                    dirty |= self.touched(batch)
        finally:
            self._store.unsubscribe(queue)

    def touched(self, batch: Iterable[Event]) -> set[str]:
        """The services whose instances or primary record ``batch`` changed."""
        out = set()
        for ev in batch:
            for prefix in (kind_prefix(INSTANCE_KIND), kind_prefix(PRIMARY_KIND)):
                if ev.entry.key.startswith(prefix):
                    out.add(ev.entry.key[len(prefix) :].decode().split("/", 1)[0])
        return out

    def services(self) -> set[str]:
        """Every service with a primary record or an instance, from the cache."""
        out = {
            e.key[len(kind_prefix(PRIMARY_KIND)) :].decode() for e in self._store.scan(PRIMARY_KIND)
        }
        return out | self._instances.services()

    async def reconcile(self, services: set[str]) -> None:
        """Apply ``failover.decide`` to each service, with fenced compare-and-swap writes."""
        for service in sorted(services):
            entry = self._store.get(PRIMARY_KIND, service)
            current = registry_pb2.Primary.FromString(entry.value) if entry is not None else None
            instances = self._instances.current(service)
            record = failover.decide(service, current, instances, self._clock())
            if record is None:
                continue
            # The write stands only if what it was decided on is still so.
            involved = {record.instance_id, current.instance_id if current else ""} - {""}
            guards = [
                Unchanged(
                    INSTANCE_KIND,
                    instance_name(service, i),
                    instances[i].revision if i in instances else 0,
                )
                for i in sorted(involved)
            ]
            value = record.SerializeToString()
            fence = self._election.fence()
            try:
                if entry is None:
                    await self._store.create(
                        PRIMARY_KIND, service, value, fence=fence, guards=guards
                    )
                else:
                    await self._store.update(
                        PRIMARY_KIND,
                        service,
                        value,
                        expected_mod_revision=entry.mod_revision,
                        fence=fence,
                        guards=guards,
                    )
            except (Conflict, AlreadyExists, NotFound):
                continue  # decided on a stale view; the change that won triggers a new decision
            if record.instance_id and record.epoch > 1:
                self.failovers[service] += 1  # a promotion after the first: a new primary
            log.info(
                "service %s: primary %s at epoch %d (%s)",
                service,
                record.instance_id or "(none)",
                record.epoch,
                record.reason,
                extra={
                    "event": "registry.primary",
                    "service": service,
                    "instance": record.instance_id,
                    "epoch": record.epoch,
                },
            )
