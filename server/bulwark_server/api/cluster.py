"""ClusterService: the control plane's view of itself."""

from __future__ import annotations

import grpc.aio

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc
from bulwark_server.api.status import rpc
from bulwark_server.cluster.manager import ClusterManager


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    """Thin layer over ClusterManager."""

    def __init__(self, cluster: ClusterManager) -> None:
        self._cluster = cluster

    @rpc
    async def GetLeader(
        self, request: cluster_pb2.GetLeaderRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.GetLeaderResponse:
        return self._cluster.leader()

    @rpc
    async def GetClusterStatus(
        self, request: cluster_pb2.GetClusterStatusRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.GetClusterStatusResponse:
        return await self._cluster.status()
