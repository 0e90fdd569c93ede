"""RegistryManager: instances on leases, one fenced primary per service, picking.

The front of the registry capability; each concern lives in its own module,
whose docstring states its guarantees:

* ``instances``: ``/bulwark/v1/instances/<service>/<id>`` on leases of the
  instance's TTL: registration, heartbeats, deregistration, the cached view.
  Nothing outlives its heartbeats.
* ``primaries``: ``/bulwark/v1/primaries/<service>``, switchovers and the
  leader's failover loop. One primary per epoch; failover is event-driven.
* ``watches``: WatchInstances and WatchPrimary.
* ``rules``, ``failover`` and ``picking``: the pure rules and decisions.

Reads, picks and heartbeat answers come from the replica's cache.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import NamedTuple

from google.protobuf import duration_pb2

from bulwark.v1 import registry_pb2
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.registry import failover, picking, watches
from bulwark_server.registry.instances import Instances, instance_prefix, role
from bulwark_server.registry.primaries import Primaries
from bulwark_server.store import EtcdStore, Event, Page, scan_page


class ServiceSummary(NamedTuple):
    """A service as the metrics read it: instances by ``InstanceHealth``, whether it has
    a primary, and the primary record's epoch (0: never had one)."""

    service: str
    by_health: dict[int, int]
    has_primary: bool
    epoch: int


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
        self._rng = rng or random.Random()
        self._instances = Instances(store, clock=clock)
        self._primaries = Primaries(
            store, election, self._instances, clock=clock, tick_interval=tick_interval
        )
        # service -> id -> (revision of the load it was counted against, picks since)
        self._pending: dict[str, dict[str, tuple[int, int]]] = {}
        self._leading = LeaderTask(election, self._primaries.lead, "registry-leader")

    # -- reads (from the cache) -------------------------------------------------

    def instances(self, service: str) -> dict[str, registry_pb2.Instance]:
        """The service's instances by id, with revision and role set."""
        return self._instances.views(service, self._primaries.primary_id(service))

    def serving(self, service: str) -> list[registry_pb2.Instance]:
        """The service's SERVING instances (shared: do not mutate), from the cache
        (asked by the signals and the scaling recommendations)."""
        return [
            i
            for i in self._instances.current(service).values()
            if i.health == registry_pb2.INSTANCE_HEALTH_SERVING
        ]

    def serving_load(self, service: str) -> tuple[int, int]:
        """(SERVING instances, the sum of their reported in-flight requests)."""
        serving = self.serving(service)
        return len(serving), sum(i.load.in_flight for i in serving)

    def primary(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary record (revision set), or None if it never had one."""
        return self._primaries.get(service)

    def services(self) -> set[str]:
        """Every service with instances or a primary record, from the cache."""
        return self._primaries.services()

    def touched(self, events: Iterable[Event]) -> set[str]:
        """The services whose instances or primary record ``events`` changed."""
        return self._primaries.touched(events)

    def failed_over(self, record: registry_pb2.Primary) -> bool:
        """Whether the record's primary replaced another by failover (not a switchover)."""
        return failover.failed_over(record)

    def get_primary(
        self, service: str
    ) -> tuple[registry_pb2.Primary, registry_pb2.Instance | None]:
        """The primary record (an empty one with epoch 0 if none yet) and its instance.

        NotFound when the service has neither instances nor a primary record.
        """
        record = self.primary(service)
        if record is None:
            if not self._instances.entries(service, limit=1):
                raise NotFound(f"service {service!r} has no instances and never had a primary")
            record = registry_pb2.Primary(
                service=service, reason="no SERVING instance has been promoted yet"
            )
        if not record.instance_id:
            return record, None
        entry = self._instances.entry(service, record.instance_id)
        if entry is None:
            return record, None
        return record, self._instances.view(entry, record.instance_id)

    def summary(self) -> list[ServiceSummary]:
        """Every service (with instances or a primary record), from the cache."""
        out = []
        for service in sorted(self._primaries.services()):
            by_health: collections.Counter[int] = collections.Counter(
                i.health for i in self._instances.current(service).values()
            )
            record = self.primary(service)
            out.append(
                ServiceSummary(
                    service,
                    dict(by_health),
                    bool(record and record.instance_id),
                    record.epoch if record else 0,
                )
            )
        return out

    @property
    def failovers(self) -> Mapping[str, int]:
        """Promotions after each service's first, made by this replica as leader."""
        return self._primaries.failovers

    @property
    def stale(self) -> bool:
        """True while this replica's cache does not follow etcd (answers are its last view)."""
        return self._store.status().stale

    def list(self, service: str, size: int, start_after: str) -> Page[registry_pb2.Instance]:
        """One page of the service's instances in id order, and the next page's token."""
        leader_id = self._primaries.primary_id(service)
        page = scan_page(self._store.cache, instance_prefix(service), size, start_after)
        return page.map(lambda e: self._instances.view(e, leader_id))

    def pick(self, service: str, affinity_key: str, zone: str) -> registry_pb2.Instance:
        """A SERVING instance: by affinity key if given, else the least loaded."""
        instances = list(self._instances.current(service).values())
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
        out = registry_pb2.Instance()
        out.CopyFrom(chosen)
        out.role = role(out.id, self._primaries.primary_id(service))
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
        """Store the instance on a fresh lease (replacing a registration of the same id);
        return it as stored and the service's primary.

        ``rules.registration`` checks the registration and fills its defaults
        (TTL, health) before any lease is taken; ids and names are the caller's.
        """
        record = await self._instances.register(instance)
        primary = self.primary(instance.service) or registry_pb2.Primary(
            service=instance.service, reason="no SERVING instance has been promoted yet"
        )
        entry = self._instances.entry(instance.service, instance.id)
        stored = self._instances.view(entry, primary.instance_id) if entry is not None else record
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

        The role and epoch come from a primary record no older than the renewal,
        so a deposed primary is never told it still leads.
        """
        record, seen = await self._instances.heartbeat(service, instance_id, health, load)
        primary = await self._primaries.as_of(service, seen)
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

    async def drain(self, service: str, instance_id: str) -> None:
        """Mark an instance DRAINING (a remediation's action): never picked or promoted,
        and a DRAINING primary is replaced by a SERVING backup."""
        await self._instances.set_health(
            service, instance_id, registry_pb2.INSTANCE_HEALTH_DRAINING
        )

    async def silent_for(self, service: str, instance_id: str) -> float | None:
        """Seconds since the instance last renewed its lease, at least (None when it is
        not registered). etcd counts the time left in whole seconds, rounded down: the
        second it may have taken off is given back, so silence is never overstated."""
        entry = self._instances.entry(service, instance_id)
        if entry is None or not entry.lease:
            return None
        record = self._instances.parse(entry)
        remaining = await self._store.lease_remaining(entry.lease)
        if remaining < 0:
            return None  # ended: the instance is gone, or about to be
        return max(0.0, record.ttl.ToNanoseconds() / 1e9 - remaining - 1)

    async def deregister(self, service: str, instance_id: str) -> int:
        """Remove the instance now; return the revision of the removal."""
        return await self._instances.deregister(service, instance_id)

    async def switchover(
        self, service: str, target: str, drain: duration_pb2.Duration | None = None
    ) -> registry_pb2.Primary:
        """Ask the primary to drain, then wait for the leader to promote; return the new primary."""
        return await self._primaries.switchover(service, target, drain)

    # -- watches ----------------------------------------------------------------

    def watch_instances(
        self, service: str, start_revision: int = 0
    ) -> AsyncIterator[registry_pb2.WatchInstancesResponse]:
        """The service's instances, then every change (``watches.watch_instances``)."""
        return watches.watch_instances(
            self._store, self._instances, self._primaries, service, start_revision
        )

    def watch_primaries(
        self, services: frozenset[str], start_revision: int = 0
    ) -> AsyncIterator[registry_pb2.WatchPrimaryResponse]:
        """The primary records, then every change (``watches.watch_primaries``)."""
        return watches.watch_primaries(self._store, services, start_revision)

    # -- the leader's failover loop ---------------------------------------------

    async def stop(self) -> None:
        await self._leading.stop()

    async def reconcile(self, services: set[str]) -> None:
        """Apply ``failover.decide`` to each service, with fenced compare-and-swap writes."""
        await self._primaries.reconcile(services)
