"""Pins the public surface of the ``bulwark`` client package."""

from __future__ import annotations

import bulwark
from bulwark.v1 import cluster_pb2, cluster_pb2_grpc


def test_all_is_only_version() -> None:
    assert bulwark.__all__ == ["__version__"]
    assert isinstance(bulwark.__version__, str)
    assert bulwark.__version__.count(".") >= 2


def test_cluster_service_methods() -> None:
    service = cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"]
    assert service.full_name == "bulwark.v1.ClusterService"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"GetLeader", "GetClusterStatus"}
    assert methods["GetLeader"].input_type.full_name == "bulwark.v1.GetLeaderRequest"
    assert methods["GetLeader"].output_type.full_name == "bulwark.v1.GetLeaderResponse"
    assert methods["GetClusterStatus"].input_type.full_name == (
        "bulwark.v1.GetClusterStatusRequest"
    )
    for method in methods.values():
        assert not method.client_streaming
        assert not method.server_streaming


def test_generated_grpc_module_exposes_stub_and_servicer() -> None:
    assert hasattr(cluster_pb2_grpc, "ClusterServiceStub")
    assert callable(cluster_pb2_grpc.add_ClusterServiceServicer_to_server)
    servicer = cluster_pb2_grpc.ClusterServiceServicer
    assert callable(servicer.GetLeader)
    assert callable(servicer.GetClusterStatus)
