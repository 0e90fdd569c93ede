"""RegistryManager: instances on leases, one fenced primary per service, picking.

Layout:

* ``/bulwark/v1/instances/<service>/<id>``: an ``Instance`` (role and revision
  cleared), attached to an etcd lease of the instance's TTL.
* ``/bulwark/v1/primaries/<service>``: the service's ``Primary`` record. It is
  never deleted, so its epoch only grows, whatever happens to the instances.

Guarantees:

* **Nothing outlives its heartbeats.** etcd deletes an instance's key when its
  lease ends, with no Bulwark replica involved. Heartbeats renew the lease on
  whichever replica they reach, and write the key only when health or load
  changed.
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
* Reads, picks and heartbeat answers come from the replica's cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable

from google.protobuf import duration_pb2

from bulwark.v1 import registry_pb2, watch_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.registry import failover, picking, rules
from bulwark_server.store import Entry, EtcdStore, Event, EventType, Unchanged
from bulwark_server.store.keys import INSTANCE_KIND, PRIMARY_KIND, key_for, kind_prefix
from bulwark_server.store.paging import Page, scan_page
from bulwark_server.store.streams import follow

log = logging.getLogger(__name__)

REGISTER_ATTEMPTS = 10
# How long Switchover waits beyond the drain timeout for the leader to act.
SWITCHOVER_SLACK_S = 5.0
# How long a heartbeat waits for the cache to reach etcd's revision before asking etcd.
CACHE_WAIT_S = 0.5


def instance_name(service: str, instance_id: str) -> str:
    return f"{service}/{instance_id}"


def _instance_prefix(service: str) -> bytes:
    return kind_prefix(INSTANCE_KIND) + f"{service}/".encode()


class RegistryManager:
    """Instances, primaries and picks; the leader's failover loop. See the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tick_interval: float = 0.25,
    ) -> None:
        self._store = store
        self._election = election
        self._clock = clock
        self._rng = rng or random.Random()
        self._tick_interval = tick_interval
        # service -> id -> (revision of the load it was counted against, picks since)
        self._pending: dict[str, dict[str, tuple[int, int]]] = {}
        # key -> an instance as parsed at its mod revision (revision set): shared, read-only
        self._parsed: dict[bytes, registry_pb2.Instance] = {}
        self._leading = LeaderTask(election, self._lead, "registry-leader")

    # -- reads (from the cache) -------------------------------------------------

    def instances(self, service: str) -> dict[str, registry_pb2.Instance]:
        """The service's instances by id, with revision and role set."""
        primary = self.primary(service)
        leader_id = primary.instance_id if primary is not None else ""
        out = {}
        for entry in self._store.cache.scan(_instance_prefix(service)):
            instance = self._instance(entry, leader_id)
            out[instance.id] = instance
        return out

    def _current(self, service: str) -> dict[str, registry_pb2.Instance]:
        """The service's instances by id as parsed (shared: do not mutate), revision set."""
        return {
            i.id: i for i in map(self._parse, self._store.cache.scan(_instance_prefix(service)))
        }

    def _parse(self, entry: Entry) -> registry_pb2.Instance:
        held = self._parsed.get(entry.key)
        if held is None or held.revision != entry.mod_revision:
            held = registry_pb2.Instance.FromString(entry.value)
            held.revision = entry.mod_revision
            if len(self._parsed) > 4 * len(self._store.cache):
                self._parsed.clear()  # bounded by the live keys, not by every id ever seen
            self._parsed[entry.key] = held
        return held

    def primary(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary record (revision set), or None if it never had one."""
        entry = self._store.get(PRIMARY_KIND, service)
        if entry is None:
            return None
        record = registry_pb2.Primary.FromString(entry.value)
        record.revision = entry.mod_revision
        return record

    def get_primary(
        self, service: str
    ) -> tuple[registry_pb2.Primary, registry_pb2.Instance | None]:
        """The primary record (an empty one with epoch 0 if none yet) and its instance.

        NotFound when the service has neither instances nor a primary record.
        """
        record = self.primary(service)
        if record is None:
            if not self._store.cache.scan(_instance_prefix(service), limit=1):
                raise NotFound(f"service {service!r} has no instances and never had a primary")
            record = registry_pb2.Primary(
                service=service, reason="no SERVING instance has been promoted yet"
            )
        if not record.instance_id:
            return record, None
        entry = self._store.get(INSTANCE_KIND, instance_name(service, record.instance_id))
        return record, self._instance(entry, record.instance_id) if entry is not None else None

    def list(self, service: str, size: int, start_after: str) -> Page[registry_pb2.Instance]:
        """One page of the service's instances in id order, and the next page's token."""
        primary = self.primary(service)
        leader_id = primary.instance_id if primary is not None else ""
        page = scan_page(self._store.cache, _instance_prefix(service), size, start_after)
        return page.map(lambda e: self._instance(e, leader_id))

    def pick(self, service: str, affinity_key: str, zone: str) -> registry_pb2.Instance:
        """A SERVING instance: by affinity key if given, else the least loaded."""
        instances = list(self._current(service).values())
        if not instances:
            raise NotFound(f"service {service!r} has no registered instances")
        if affinity_key:
            chosen = picking.rendezvous_pick(affinity_key, instances)
        else:
            pending = self._pending_picks(service, instances)
            chosen = picking.least_loaded(instances, zone, pending, self._rng)
            if chosen is not None:
                held = self._pending.setdefault(service, {})
                held[chosen.id] = (chosen.revision, pending.get(chosen.id, 0) + 1)
        if chosen is None:
            raise FailedPrecondition(
                f"service {service!r} has no SERVING instance ({len(instances)} registered)"
            )
        primary = self.primary(service)
        out = registry_pb2.Instance()
        out.CopyFrom(chosen)
        out.role = _role(out.id, primary.instance_id if primary is not None else "")
        return out

    def _pending_picks(
        self, service: str, instances: list[registry_pb2.Instance]
    ) -> dict[str, int]:
        """Picks handed out since each instance last reported its load.

        Counts of instances that left, or that reported load since (the report
        includes those picks), are dropped.
        """
        held = self._pending.get(service)
        if not held:
            return {}
        fresh = {
            i.id: held[i.id] for i in instances if i.id in held and held[i.id][0] == i.revision
        }
        self._pending[service] = fresh
        return {instance_id: count for instance_id, (_, count) in fresh.items()}

    # -- instance lifecycle -----------------------------------------------------

    async def register(
        self, instance: registry_pb2.Instance
    ) -> tuple[registry_pb2.Instance, registry_pb2.Primary]:
        """Store the instance on a fresh lease (replacing a registration of the same id).

        ``rules.registration`` checks the registration and fills its defaults
        (TTL, health) before any lease is taken; ids and names are the caller's.
        """
        now = self._clock()
        record = rules.registration(instance)
        record.ClearField("revision")
        record.ClearField("role")
        record.registered_at.CopyFrom(timestamps.at(now))
        record.reported_at.CopyFrom(timestamps.at(now))
        value = record.SerializeToString()
        name = instance_name(instance.service, instance.id)
        ttl = record.ttl.seconds + record.ttl.nanos / 1e9
        lease = await self._store.grant_lease(math.ceil(ttl))
        try:
            entry = self._store.get(INSTANCE_KIND, name)
            for attempt in range(REGISTER_ATTEMPTS):
                if attempt:
                    entry = await self._store.read(INSTANCE_KIND, name)
                try:
                    if entry is None:
                        await self._store.create(INSTANCE_KIND, name, value, lease=lease)
                    else:
                        await self._store.update(
                            INSTANCE_KIND,
                            name,
                            value,
                            expected_mod_revision=entry.mod_revision,
                            lease=lease,
                        )
                    break
                except (AlreadyExists, Conflict, NotFound):
                    continue
            else:
                raise Conflict(f"instance {name!r} kept changing concurrently; retry")
        except BaseException:
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(lease)
            raise
        if entry is not None and entry.lease and entry.lease != lease:
            # The key moved to the new lease; the old one holds nothing now.
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(entry.lease)
        log.info(
            "instance %s registered at %s",
            name,
            record.address,
            extra={"event": "registry.registered", "service": record.service, "instance": name},
        )
        primary = self.primary(instance.service) or registry_pb2.Primary(
            service=instance.service, reason="no SERVING instance has been promoted yet"
        )
        entry = self._store.get(INSTANCE_KIND, name)
        stored = self._instance(entry, primary.instance_id) if entry is not None else record
        return stored, primary

    async def heartbeat(
        self,
        service: str,
        instance_id: str,
        health: int,
        load: registry_pb2.Load | None,
        epoch: int,
    ) -> registry_pb2.HeartbeatResponse:
        """Renew the lease, record health and load if changed, and say where the instance stands.

        A load out of bounds (``rules.validate_load``) is refused before the lease is renewed.
        """
        if load is not None:
            rules.validate_load(load, "load")
        name = instance_name(service, instance_id)
        gone = NotFound(
            f"instance {instance_id!r} of service {service!r} is not registered "
            "(its lease ended or it was deregistered): register again"
        )
        entry = self._store.get(INSTANCE_KIND, name) or await self._store.read(INSTANCE_KIND, name)
        if entry is None:
            raise gone
        ttl, seen = await self._store.renew(entry.lease)
        if ttl <= 0:
            # This replica's cache may still hold the lease of a registration that
            # another replica has since replaced: ask etcd before saying "gone".
            fresh = await self._store.read(INSTANCE_KIND, name)
            if fresh is None or fresh.lease == entry.lease:
                raise gone
            entry = fresh
            ttl, seen = await self._store.renew(entry.lease)
            if ttl <= 0:
                raise gone
        now = self._clock()

        def change(current: Entry) -> bytes | None:
            record = registry_pb2.Instance.FromString(current.value)
            updated = registry_pb2.Instance()
            updated.CopyFrom(record)
            if health != registry_pb2.INSTANCE_HEALTH_UNSPECIFIED:
                updated.health = health
            if load is not None:
                updated.load.CopyFrom(load)
            if updated == record:
                return None
            updated.reported_at.CopyFrom(timestamps.at(now))
            return updated.SerializeToString()

        try:
            written, _ = await self._store.modify(INSTANCE_KIND, name, change)
        except NotFound:
            raise gone from None
        record = registry_pb2.Instance.FromString(written.value)
        primary = await self._primary_as_of(service, seen)
        is_primary = primary.instance_id == instance_id
        response = registry_pb2.HeartbeatResponse(
            role=registry_pb2.ROLE_PRIMARY if is_primary else registry_pb2.ROLE_BACKUP,
            epoch=primary.epoch,
            stale_epoch=epoch != 0 and not (is_primary and epoch == primary.epoch),
            drain=is_primary and primary.HasField("switchover_target"),
            primary=primary,
        )
        response.ttl.CopyFrom(record.ttl)
        return response

    async def _primary_as_of(self, service: str, revision: int) -> registry_pb2.Primary:
        """The primary record no older than etcd ``revision``: a deposed primary must
        not be told it still leads because this replica's cache lags."""
        if await self._store.wait_for_revision(revision, timeout=CACHE_WAIT_S):
            record = self.primary(service)
        else:
            entry = await self._store.read(PRIMARY_KIND, service)
            record = self._record(entry) if entry is not None else None
        return record or registry_pb2.Primary(service=service)

    async def deregister(self, service: str, instance_id: str) -> int:
        """Remove the instance now; return the revision of the removal."""
        name = instance_name(service, instance_id)
        entry = self._store.get(INSTANCE_KIND, name) or await self._store.read(INSTANCE_KIND, name)
        if entry is None:
            raise NotFound(f"instance {instance_id!r} of service {service!r} is not registered")
        revision = await self._store.delete(INSTANCE_KIND, name)
        if entry.lease:
            with contextlib.suppress(StoreUnavailable):
                await self._store.revoke_lease(entry.lease)
        log.info(
            "instance %s deregistered",
            name,
            extra={"event": "registry.deregistered", "service": service, "instance": name},
        )
        return revision

    async def switchover(
        self, service: str, target: str, drain: duration_pb2.Duration | None = None
    ) -> registry_pb2.Primary:
        """Ask the primary to drain, then wait for the leader to promote; return the new primary.

        ``drain`` bounds the drain (``rules.drain_seconds``: 10 s when None),
        checked before anything is read.
        """
        drain_timeout = rules.drain_seconds(drain)
        if self.primary(service) is None and await self._store.read(PRIMARY_KIND, service) is None:
            raise FailedPrecondition(f"service {service!r} has no primary to switch over from")
        written: list[registry_pb2.Primary] = []

        def request(entry: Entry) -> bytes:
            current = registry_pb2.Primary.FromString(entry.value)
            record = failover.request_switchover(
                current, self.instances(service), target, drain_timeout, self._clock()
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
        queue = self._store.subscribe()
        try:
            while True:
                current = self.primary(service)
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

    # -- watches ----------------------------------------------------------------

    def watch_instances(
        self, service: str, start_revision: int = 0
    ) -> AsyncIterator[registry_pb2.WatchInstancesResponse]:
        prefix = _instance_prefix(service)
        primary_key = key_for(PRIMARY_KIND, service)

        def snapshot() -> tuple[list[registry_pb2.WatchInstancesResponse], int]:
            revision = self._store.cache.revision
            out = [
                registry_pb2.WatchInstancesResponse(
                    type=watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                    instance=instance,
                    revision=instance.revision,
                )
                for instance in self.instances(service).values()
            ]
            out.append(
                registry_pb2.WatchInstancesResponse(
                    type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=revision
                )
            )
            return out, revision

        def convert(events: list[Event]) -> list[registry_pb2.WatchInstancesResponse]:
            primary = self.primary(service)
            leader_id = primary.instance_id if primary is not None else ""
            out = []
            for ev in events:
                if ev.entry.key == primary_key:
                    # A promotion changes the role of two instances without writing them.
                    record = registry_pb2.Primary.FromString(ev.entry.value)
                    for instance_id in (record.previous_instance_id, record.instance_id):
                        entry = self._store.get(INSTANCE_KIND, instance_name(service, instance_id))
                        if instance_id and entry is not None:
                            out.append(
                                registry_pb2.WatchInstancesResponse(
                                    type=watch_pb2.WATCH_EVENT_TYPE_PUT,
                                    instance=self._instance(entry, leader_id),
                                    revision=ev.revision,
                                )
                            )
                elif not ev.entry.key.startswith(prefix):
                    continue  # the primary record of another service
                elif ev.type is EventType.DELETE:
                    instance_id = ev.entry.key[len(prefix) :].decode()
                    out.append(
                        registry_pb2.WatchInstancesResponse(
                            type=watch_pb2.WATCH_EVENT_TYPE_DELETE,
                            instance=registry_pb2.Instance(service=service, id=instance_id),
                            revision=ev.revision,
                        )
                    )
                else:
                    out.append(
                        registry_pb2.WatchInstancesResponse(
                            type=watch_pb2.WATCH_EVENT_TYPE_PUT,
                            instance=self._instance(ev.entry, leader_id),
                            revision=ev.revision,
                        )
                    )
            return out

        return follow(self._store, (prefix, primary_key), start_revision, snapshot, convert)

    def watch_primaries(
        self, services: frozenset[str], start_revision: int = 0
    ) -> AsyncIterator[registry_pb2.WatchPrimaryResponse]:
        prefix = kind_prefix(PRIMARY_KIND)

        def wanted(service: str) -> bool:
            return not services or service in services

        def snapshot() -> tuple[list[registry_pb2.WatchPrimaryResponse], int]:
            revision = self._store.cache.revision
            out = []
            for entry in self._store.scan(PRIMARY_KIND):
                record = self._record(entry)
                if wanted(record.service):
                    out.append(
                        registry_pb2.WatchPrimaryResponse(
                            type=watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                            primary=record,
                            revision=entry.mod_revision,
                        )
                    )
            out.append(
                registry_pb2.WatchPrimaryResponse(
                    type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=revision
                )
            )
            return out, revision

        def convert(events: list[Event]) -> list[registry_pb2.WatchPrimaryResponse]:
            out = []
            for ev in events:
                service = ev.entry.key[len(prefix) :].decode()
                if ev.type is EventType.DELETE or not wanted(service):
                    continue  # records are deleted only by a restore from a snapshot
                out.append(
                    registry_pb2.WatchPrimaryResponse(
                        type=watch_pb2.WATCH_EVENT_TYPE_PUT,
                        primary=self._record(ev.entry),
                        revision=ev.revision,
                    )
                )
            return out

        return follow(self._store, (prefix,), start_revision, snapshot, convert)

    # -- the leader's failover loop ---------------------------------------------

    async def stop(self) -> None:
        await self._leading.stop()

    async def _lead(self) -> None:
        """While leading: re-decide the services each change touches, and all of them
        every ``tick_interval`` (switchover deadlines, and decisions a failed write left
        undone). The sweep's timer is not reset by changes, so a busy store cannot
        starve it."""
        queue = self._store.subscribe()
        try:
            dirty = self._services()
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
                    dirty = self._services()
                    next_sweep = time.monotonic() + self._tick_interval
                    continue
                # Take everything queued: one decision per service per round.
                while not queue.empty():
                    batches.append(queue.get_nowait())
                for batch in batches:
                    if not batch:
                        # This subscriber fell behind and was dropped: follow again.
                        self._store.unsubscribe(queue)
                        queue = self._store.subscribe()
                        dirty = self._services()
                        break
                    dirty |= self._touched(batch)
        finally:
            self._store.unsubscribe(queue)

    def _touched(self, batch: list[Event]) -> set[str]:
        out = set()
        for ev in batch:
            for prefix in (kind_prefix(INSTANCE_KIND), kind_prefix(PRIMARY_KIND)):
                if ev.entry.key.startswith(prefix):
                    out.add(ev.entry.key[len(prefix) :].decode().split("/", 1)[0])
        return out

    def _services(self) -> set[str]:
        out = {
            e.key[len(kind_prefix(PRIMARY_KIND)) :].decode() for e in self._store.scan(PRIMARY_KIND)
        }
        start = len(kind_prefix(INSTANCE_KIND))
        out |= {e.key[start:].decode().split("/", 1)[0] for e in self._store.scan(INSTANCE_KIND)}
        return out

    async def reconcile(self, services: set[str]) -> None:
        """Apply ``failover.decide`` to each service, with fenced compare-and-swap writes."""
        for service in sorted(services):
            entry = self._store.get(PRIMARY_KIND, service)
            current = registry_pb2.Primary.FromString(entry.value) if entry is not None else None
            instances = self._current(service)
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

    # -- helpers ----------------------------------------------------------------

    def _instance(self, entry: Entry, primary_id: str) -> registry_pb2.Instance:
        """A private copy of the instance with its revision and role."""
        instance = registry_pb2.Instance()
        instance.CopyFrom(self._parse(entry))
        instance.role = _role(instance.id, primary_id)
        return instance

    def _record(self, entry: Entry) -> registry_pb2.Primary:
        record = registry_pb2.Primary.FromString(entry.value)
        record.revision = entry.mod_revision
        return record


def _role(instance_id: str, primary_id: str) -> int:
    return registry_pb2.ROLE_PRIMARY if instance_id == primary_id else registry_pb2.ROLE_BACKUP
