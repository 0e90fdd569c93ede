"""Pins the public surface of the ``bulwark`` client package."""

from __future__ import annotations

import grpc

import bulwark
from bulwark.v1 import cluster_pb2, cluster_pb2_grpc

PUBLIC = [
    "AccessDeniedError",
    "AsyncBulwarkInterceptor",
    "AsyncClient",
    "BreakerOpenError",
    "BulwarkError",
    "BulwarkInterceptor",
    "Client",
    "ClientOptions",
    "Decision",
    "Feature",
    "Guard",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "ResourceExhaustedError",
    "UnavailableError",
    "__version__",
]


def test_the_public_surface_is_pinned() -> None:
    assert bulwark.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(bulwark, name), name
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


def test_errors_carry_the_grpc_status() -> None:
    error = bulwark.BreakerOpenError("payments", 1.5, "cache")
    assert isinstance(error, bulwark.BulwarkError)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.retry_after == 1.5
    assert "payments" in str(error)
    limited = bulwark.RateLimitedError("edge", "ip=1")
    assert limited.code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_client_never_imports_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bulwark, bulwark.aio, bulwark.sync, bulwark.interceptors; "
        "print(any(m.startswith('bulwark_server') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_client_and_async_client_offer_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(bulwark.Client) == public(bulwark.AsyncClient)


def test_client_and_async_client_share_one_policy() -> None:
    from bulwark._policy import ClientPolicy

    sync_client = bulwark.Client("127.0.0.1:1")
    async_client = bulwark.AsyncClient("127.0.0.1:1")
    assert type(sync_client._policy) is type(async_client._policy) is ClientPolicy
    sync_client.close()


def test_importing_the_stubs_loads_no_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bulwark.v1.breaker_pb2; "
        "print(sorted(m for m in ('bulwark.sync', 'bulwark.aio', 'bulwark.interceptors') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "from bulwark import Client; import bulwark; print(bulwark.Client is Client)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_no_client_module_is_over_500_lines() -> None:
    from pathlib import Path

    package = Path(bulwark.__file__).parent
    for path in package.glob("*.py"):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 500, (path.name, lines)
