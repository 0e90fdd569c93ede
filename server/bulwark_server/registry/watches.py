"""WatchInstances and WatchPrimary: the registry's streams, on ``store.streams.follow``.

Both begin with a snapshot (or resume after a revision the replica's history
still covers), then send every change, none skipped and none repeated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bulwark.v1 import registry_pb2, watch_pb2
from bulwark_server.registry.instances import Instances, instance_prefix
from bulwark_server.registry.primaries import Primaries, decode
from bulwark_server.store import EtcdStore, Event, EventType, follow, key_for
from bulwark_server.store.keys import PRIMARY_KIND, kind_prefix


def watch_instances(
    store: EtcdStore,
    instances: Instances,
    primaries: Primaries,
    service: str,
    start_revision: int = 0,
) -> AsyncIterator[registry_pb2.WatchInstancesResponse]:
    """The service's instances (SNAPSHOT events, then SYNCED), then every change.

    A promotion sends a PUT for the two instances whose role it changed, though
    neither key was written.
    """
    prefix = instance_prefix(service)
    primary_key = key_for(PRIMARY_KIND, service)

    def snapshot() -> tuple[list[registry_pb2.WatchInstancesResponse], int]:
        revision = store.cache.revision
        out = [
            registry_pb2.WatchInstancesResponse(
                type=watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                instance=instance,
                revision=instance.revision,
            )
            for instance in instances.views(service, primaries.primary_id(service)).values()
        ]
        out.append(
            registry_pb2.WatchInstancesResponse(
                type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=revision
            )
        )
        return out, revision

    def convert(events: list[Event]) -> list[registry_pb2.WatchInstancesResponse]:
        leader_id = primaries.primary_id(service)
        out = []
        for ev in events:
            if ev.entry.key == primary_key:
                # A promotion changes the role of two instances without writing them.
                record = registry_pb2.Primary.FromString(ev.entry.value)
                for instance_id in (record.previous_instance_id, record.instance_id):
                    entry = instances.entry(service, instance_id)
                    if instance_id and entry is not None:
                        out.append(
                            registry_pb2.WatchInstancesResponse(
                                type=watch_pb2.WATCH_EVENT_TYPE_PUT,
                                instance=instances.view(entry, leader_id),
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
                        instance=instances.view(ev.entry, leader_id),
                        revision=ev.revision,
                    )
                )
        return out

    return follow(store, (prefix, primary_key), start_revision, snapshot, convert)


def watch_primaries(
    store: EtcdStore, services: frozenset[str], start_revision: int = 0
) -> AsyncIterator[registry_pb2.WatchPrimaryResponse]:
    """The primary records of ``services`` (all when empty), then every change to them."""
    prefix = kind_prefix(PRIMARY_KIND)

    def wanted(service: str) -> bool:
        return not services or service in services

    def snapshot() -> tuple[list[registry_pb2.WatchPrimaryResponse], int]:
        revision = store.cache.revision
        out = []
        for entry in store.scan(PRIMARY_KIND):
            record = decode(entry)
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
                    primary=decode(ev.entry),
                    revision=ev.revision,
                )
            )
        return out

    return follow(store, (prefix,), start_revision, snapshot, convert)
