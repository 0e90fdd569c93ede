"""Integration fixtures: real etcd processes and real Bulwark replicas on 127.0.0.1, free ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc
from bulwark_server.loopback.deployment import LocalCluster, ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    """A single-member etcd of this test's own."""
    member = EtcdMember("test", tmp_path / "etcd", unsafe_no_fsync=True)
    try:
        member.start_healthy()
        yield member
    finally:
        member.stop()


@pytest.fixture
def replica_factory(tmp_path: Path) -> Iterator[Callable[..., ReplicaProcess]]:
    """Start ``bulwark serve`` processes; all are stopped at the end of the test."""
    started: list[ReplicaProcess] = []

    def start(
        name: str,
        endpoints: list[str],
        *extra: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ReplicaProcess:
        replica = ReplicaProcess(
            name, endpoints, tmp_path / f"{name}.log", extra_args=list(extra), env=env or {}
        )
        started.append(replica)
        replica.start()
        if wait:
            replica.wait_serving()
        return replica

    yield start
    for replica in started:
        replica.stop()


def start_replicas(
    factory: Callable[..., ReplicaProcess], count: int, endpoints: list[str], prefix: str = "r"
) -> list[ReplicaProcess]:
    """``count`` replicas named ``<prefix><i>``, started side by side (each takes about a
    second of its own to start), once all serve."""
    replicas = [factory(f"{prefix}{i}", endpoints, wait=False) for i in range(count)]
    for replica in replicas:
        replica.wait_serving()
    return replicas


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """3 etcd members and 3 replicas (lease TTL 2 s)."""
    cluster = LocalCluster(tmp_path / "cluster", replicas=3, etcd_members=3, unsafe_no_fsync=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_stub(address: str) -> tuple[grpc.Channel, cluster_pb2_grpc.ClusterServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, cluster_pb2_grpc.ClusterServiceStub(channel)


def get_leader(address: str, timeout: float = 1.0) -> cluster_pb2.GetLeaderResponse | None:
    """GetLeader from one replica, or None if it does not answer."""
    channel, stub = cluster_stub(address)
    try:
        return stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=timeout)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)
