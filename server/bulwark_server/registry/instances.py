"""Instances on leases: the cached view of every service's instances, and their lifecycle.

``/bulwark/v1/instances/<service>/<id>`` holds an ``Instance`` (role and
revision cleared) on an etcd lease of the instance's TTL. Guarantees:

* **Nothing outlives its heartbeats.** etcd deletes an instance's key when its
  lease ends, with no Bulwark replica involved. Heartbeats renew the lease on
  whichever replica they reach, and write the key only when health or load
  changed.
* A registration replaces one of the same id with a compare-and-swap, on a
  fresh lease; the old lease is revoked, and a failed registration revokes the
  new one, so no lease is left holding nothing.
* Reads come from the replica's cache; each key is parsed once per revision.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable

from bulwark.v1 import registry_pb2
from bulwark_server import timestamps
from bulwark_server.errors import AlreadyExists, Conflict, NotFound, StoreUnavailable
from bulwark_server.registry import rules
from bulwark_server.store import Entry, EtcdStore
from bulwark_server.store.keys import INSTANCE_KIND, kind_prefix

log = logging.getLogger(__name__)

REGISTER_ATTEMPTS = 10


def instance_name(service: str, instance_id: str) -> str:
    """The store name of an instance: both parts are validated names, so '/' is unambiguous."""
    return f"{service}/{instance_id}"


def instance_prefix(service: str) -> bytes:
    """The key prefix of every instance of ``service``."""
    return kind_prefix(INSTANCE_KIND) + f"{service}/".encode()


def role(instance_id: str, primary_id: str) -> int:
    """PRIMARY for the primary's id, BACKUP for any other."""
    return registry_pb2.ROLE_PRIMARY if instance_id == primary_id else registry_pb2.ROLE_BACKUP


class Instances:
    """Every service's instances as this replica's cache holds them, and their writes."""

    def __init__(self, store: EtcdStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        # key -> an instance as parsed at its mod revision (revision set): shared, read-only
        self._parsed: dict[bytes, registry_pb2.Instance] = {}

    # -- reads (from the cache) -------------------------------------------------

    def entries(self, service: str, limit: int = 0) -> list[Entry]:
        """The service's instance keys in id order."""
        return self._store.cache.scan(instance_prefix(service), limit=limit)

    def entry(self, service: str, instance_id: str) -> Entry | None:
        """The instance's key, or None when the cache holds none."""
        return self._store.get(INSTANCE_KIND, instance_name(service, instance_id))

    def current(self, service: str) -> dict[str, registry_pb2.Instance]:
        """The service's instances by id as parsed (shared: do not mutate), revision set."""
        return {i.id: i for i in map(self.parse, self.entries(service))}

    def views(self, service: str, primary_id: str) -> dict[str, registry_pb2.Instance]:
        """The service's instances by id: private copies with revision and role set."""
        out = {}
        for entry in self.entries(service):
            instance = self.view(entry, primary_id)
            out[instance.id] = instance
        return out

    def view(self, entry: Entry, primary_id: str) -> registry_pb2.Instance:
        """A private copy of the instance with its revision and role."""
        instance = registry_pb2.Instance()
        instance.CopyFrom(self.parse(entry))
        instance.role = role(instance.id, primary_id)
        return instance

    def parse(self, entry: Entry) -> registry_pb2.Instance:
        """The instance a key holds, revision set (shared: do not mutate)."""
        held = self._parsed.get(entry.key)
        if held is None or held.revision != entry.mod_revision:
            held = registry_pb2.Instance.FromString(entry.value)
            held.revision = entry.mod_revision
            if len(self._parsed) > 4 * len(self._store.cache):
                self._parsed.clear()  # bounded by the live keys, not by every id ever seen
            self._parsed[entry.key] = held
        return held

    def services(self) -> set[str]:
        """Every service with at least one instance in the cache."""
        start = len(kind_prefix(INSTANCE_KIND))
        return {e.key[start:].decode().split("/", 1)[0] for e in self._store.scan(INSTANCE_KIND)}

    # -- lifecycle --------------------------------------------------------------

    async def register(self, instance: registry_pb2.Instance) -> registry_pb2.Instance:
        """Store the instance on a fresh lease (replacing a registration of the same id);
        return the record written.

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
        return record

    async def heartbeat(
        self,
        service: str,
        instance_id: str,
        health: int,
        load: registry_pb2.Load | None,
    ) -> tuple[registry_pb2.Instance, int]:
        """Renew the lease and record health and load if changed; return the record
        and the etcd revision the renewal was answered at.

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
        return record, seen

    async def set_health(self, service: str, instance_id: str, health: int) -> None:
        """Set an instance's health from outside (a remediation draining it)."""
        now = self._clock()

        def change(current: Entry) -> bytes | None:
            record = registry_pb2.Instance.FromString(current.value)
            if record.health == health:
                return None
            record.health = health  # type: ignore[assignment]
            record.reported_at.CopyFrom(timestamps.at(now))
            return record.SerializeToString()

        try:
            await self._store.modify(INSTANCE_KIND, instance_name(service, instance_id), change)
        except NotFound:
            raise NotFound(
                f"instance {instance_id!r} of service {service!r} is not registered"
            ) from None

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
