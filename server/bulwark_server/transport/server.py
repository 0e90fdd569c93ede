"""Build the gRPC server: interceptors, message limits, every service, health, reflection."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from bulwark_server.config import Settings
from bulwark_server.transport.handlers import Layer, Wrapping
from bulwark_server.transport.tls import server_credentials

# The services ``build_server`` adds to every server, and the capability they are of.
TRANSPORT = "transport"
TRANSPORT_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service: its full name, its servicer, the generated add function, and
    the capability it serves (``breakers``, ``ratelimits``, ...: what telemetry names)."""

    name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]
    capability: str

    @classmethod
    def of(cls, servicer: Any, capability: str) -> ServiceBinding:
        """The binding of ``servicer`` to the service its generated base class
        (``<Service>Servicer`` of a ``*_pb2_grpc`` module) serves."""
        base = next(
            b
            for b in type(servicer).__mro__
            if b.__module__.endswith("_pb2_grpc") and b.__name__.endswith("Servicer")
        )
        service = base.__name__.removesuffix("Servicer")
        messages = importlib.import_module(base.__module__.removesuffix("_grpc"))
        return cls(
            messages.DESCRIPTOR.services_by_name[service].full_name,
            servicer,
            getattr(sys.modules[base.__module__], f"add_{base.__name__}_to_server"),
            capability,
        )


def capabilities(bindings: Sequence[ServiceBinding]) -> dict[str, str]:
    """The capability of each service a server built from ``bindings`` serves, by full
    service name: each binding's own, and ``transport`` for health checking and
    reflection. Raises ValueError for a service bound twice to different capabilities."""
    out = dict.fromkeys(TRANSPORT_SERVICES, TRANSPORT)
    for binding in bindings:
        if out.setdefault(binding.name, binding.capability) != binding.capability:
            raise ValueError(
                f"service {binding.name} is bound to {out[binding.name]} and {binding.capability}"
            )
    return out


@dataclass
class BuiltServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: tuple[str, ...]

    async def set_serving(self, serving: bool) -> None:
        """Set overall ("") and per-service health."""
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, state)


def build_server(
    settings: Settings,
    bindings: Sequence[ServiceBinding],
    interceptors: list[grpc.aio.ServerInterceptor],
) -> BuiltServer:
    """Create (not start) the server bound to ``settings.listen``; port 0 picks a free port.

    ``interceptors`` run outermost first. When every one is a ``handlers.Layer`` (all of
    Bulwark's are), each handler is wrapped by them once, as it is registered, rather
    than by gRPC's interceptor chain on every call: the same wrappers, in the same
    order, without a chain of coroutines and new handlers per call.
    """
    limit = settings.max_message_bytes
    layers = [i for i in interceptors if isinstance(i, Layer)]
    layered = len(layers) == len(interceptors)
    server = grpc.aio.server(
        interceptors=None if layered else interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Without this a second server on the same port would start silently.
            ("grpc.so_reuseport", 0),
            # Clients ping every 10 s to notice a dead connection under a quiet watch;
            # the default policy would answer such pings with GOAWAY.
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    target: Any = Wrapping(server, layers) if layered else server
    for binding in bindings:
        binding.add(binding.servicer, target)
    names = tuple(b.name for b in bindings)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    # What ``reflection.enable_server_reflection`` does for an asyncio server, on
    # ``target``, which is not one.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer((*names, *TRANSPORT_SERVICES)),
        target,
    )
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    if port == 0:
        raise OSError(f"cannot bind {settings.listen}")
    return BuiltServer(server, health_servicer, port, names)
