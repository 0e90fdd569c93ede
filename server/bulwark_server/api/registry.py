"""RegistryService: validate, call the service registry, map errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark.v1 import registry_pb2
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.signals import SignalsServicer
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import InvalidArgument
from bulwark_server.registry.manager import RegistryManager
from bulwark_server.signals.manager import SignalsManager
from bulwark_server.validation import (
    page_params,
    validate_id,
    validate_name,
    validate_pair,
    validate_watch,
)

MAX_METADATA = 64
MAX_ADDRESS = 256
MAX_AFFINITY_KEY = 1024
HEALTH_VALUES = frozenset(registry_pb2.InstanceHealth.values())


def _ids(service: str, instance_id: str, prefix: str = "") -> None:
    validate_pair(
        service, instance_id, f"{prefix}service", f"{prefix}id" if prefix else "instance_id"
    )


def _optional_name(value: str, field: str) -> str:
    return validate_name(value, field) if value else value


def _health(value: int, field: str) -> int:
    if value not in HEALTH_VALUES:
        raise InvalidArgument(field, f"unknown health {value}")
    return value


def validate_instance(instance: registry_pb2.Instance) -> None:
    """The registration's shape: ids, address, zone and region names, metadata and
    the health value. Priority, load, TTL and defaults are the registry's rules
    (``registry.rules.registration``), applied by the manager."""
    _ids(instance.service, instance.id, "instance.")
    if not instance.address:
        raise InvalidArgument("instance.address", "is required")
    if len(instance.address) > MAX_ADDRESS or not instance.address.isprintable():
        raise InvalidArgument(
            "instance.address", f"must be printable and at most {MAX_ADDRESS} characters"
        )
    _optional_name(instance.zone, "instance.zone")
    _optional_name(instance.region, "instance.region")
    if len(instance.metadata) > MAX_METADATA:
        raise InvalidArgument("instance.metadata", f"at most {MAX_METADATA} entries")
    for key, value in instance.metadata.items():
        validate_id(key, "instance.metadata key")
        validate_id(value, f"instance.metadata[{key!r}]", required=False)
    _health(instance.health, "instance.health")


class RegistryServicer(SignalsServicer):
    """Thin layer over RegistryManager; every RPC works on any replica (the signal
    RPCs, from ``SignalsServicer``, run on the leader)."""

    def __init__(
        self, registry: RegistryManager, signals: SignalsManager, router: LeaderRouter
    ) -> None:
        super().__init__(signals, router)
        self._registry = registry

    @rpc
    async def RegisterInstance(
        self, request: registry_pb2.RegisterInstanceRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisterInstanceResponse:
        validate_instance(request.instance)
        stored, primary = await self._registry.register(request.instance)
        return registry_pb2.RegisterInstanceResponse(instance=stored, primary=primary)

    @rpc
    async def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        _ids(request.service, request.instance_id)
        _health(request.health, "health")
        load = request.load if request.HasField("load") else None
        if request.epoch < 0:
            raise InvalidArgument("epoch", "must not be negative")
        return await self._registry.heartbeat(
            request.service, request.instance_id, request.health, load, request.epoch
        )

    @rpc
    async def DeregisterInstance(
        self, request: registry_pb2.DeregisterInstanceRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DeregisterInstanceResponse:
        _ids(request.service, request.instance_id)
        revision = await self._registry.deregister(request.service, request.instance_id)
        return registry_pb2.DeregisterInstanceResponse(revision=revision)

    @rpc
    async def ListInstances(
        self, request: registry_pb2.ListInstancesRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListInstancesResponse:
        validate_name(request.service, "service")
        size, start_after = page_params(request.page_size, request.page_token)
        if "/" in start_after:
            raise InvalidArgument("page_token", "is not a token returned by this API")
        instances, token = self._registry.list(request.service, size, start_after)
        primary = self._registry.primary(request.service) or registry_pb2.Primary(
            service=request.service
        )
        return registry_pb2.ListInstancesResponse(
            instances=instances,
            next_page_token=token,
            primary=primary,
            stale=self._registry.stale,
        )

    @rpc_stream
    async def WatchInstances(
        self, request: registry_pb2.WatchInstancesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.WatchInstancesResponse]:
        validate_name(request.service, "service")
        _start_revision(request.start_revision)
        async for response in self._registry.watch_instances(
            request.service, request.start_revision
        ):
            yield response

    @rpc
    async def PickInstance(
        self, request: registry_pb2.PickInstanceRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.PickInstanceResponse:
        validate_name(request.service, "service")
        if len(request.affinity_key) > MAX_AFFINITY_KEY:
            raise InvalidArgument("affinity_key", f"longer than {MAX_AFFINITY_KEY} characters")
        _optional_name(request.zone, "zone")
        instance = self._registry.pick(request.service, request.affinity_key, request.zone)
        return registry_pb2.PickInstanceResponse(instance=instance, stale=self._registry.stale)

    @rpc
    async def GetPrimary(
        self, request: registry_pb2.GetPrimaryRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GetPrimaryResponse:
        validate_name(request.service, "service")
        primary, instance = self._registry.get_primary(request.service)
        response = registry_pb2.GetPrimaryResponse(primary=primary, stale=self._registry.stale)
        if instance is not None:
            response.instance.CopyFrom(instance)
        return response

    @rpc_stream
    async def WatchPrimary(
        self, request: registry_pb2.WatchPrimaryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.WatchPrimaryResponse]:
        services = validate_watch(request.start_revision, request.services, "services")
        async for response in self._registry.watch_primaries(services, request.start_revision):
            yield response

    @rpc
    async def Switchover(
        self, request: registry_pb2.SwitchoverRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.SwitchoverResponse:
        validate_name(request.service, "service")
        _optional_name(request.target_instance_id, "target_instance_id")
        drain = request.drain_timeout if request.HasField("drain_timeout") else None
        primary = await self._registry.switchover(
            request.service, request.target_instance_id, drain
        )
        return registry_pb2.SwitchoverResponse(primary=primary)


def _start_revision(value: int) -> int:
    if value < 0:
        raise InvalidArgument("start_revision", "must not be negative")
    return value
