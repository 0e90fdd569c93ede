"""Build the gRPC server: interceptors, message limits, every service, health, reflection."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc
from bulwark_server.api.cluster import ClusterServicer
from bulwark_server.config import Settings

SERVICE_NAMES: tuple[str, ...] = (
    cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
)


@dataclass
class BuiltServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def set_serving(self, serving: bool) -> None:
        """Set overall ("") and per-service health."""
        state = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, state)


def build_server(
    settings: Settings,
    cluster: ClusterServicer,
    interceptors: list[grpc.aio.ServerInterceptor],
) -> BuiltServer:
    """Create (not start) the server bound to ``settings.listen``; port 0 picks a free port."""
    limit = settings.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(cluster, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"cannot bind {settings.listen}")
    return BuiltServer(server, health_servicer, port)
