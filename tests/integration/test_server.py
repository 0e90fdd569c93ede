"""One real `bulwark serve` process: reflection, health, ClusterService, shutdown, settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark.v1 import cluster_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import cluster_stub, get_leader, wait_for

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_grpcurl_commands_for_registry_and_features_work(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    """Enum names, durations and timestamps as an operator types them in JSON."""
    replica = replica_factory("r1", [etcd.endpoint])
    wait_for(lambda: (get_leader(replica.address) or cluster_pb2.GetLeaderResponse()).is_self, 5)
    a = replica.address
    registered = json.loads(
        grpcurl(
            "-d",
            '{"instance": {"service": "orders-db", "id": "db-1", "address": "10.0.0.7:5432", '
            '"zone": "eu-1a", "priority": 10, "ttl": "10s"}}',
            a,
            "bulwark.v1.RegistryService/RegisterInstance",
        )
    )
    assert registered["instance"]["health"] == "INSTANCE_HEALTH_SERVING"

    def primary() -> dict:
        out = json.loads(
            grpcurl("-d", '{"service": "orders-db"}', a, "bulwark.v1.RegistryService/GetPrimary")
        )
        return out if out["primary"].get("instance_id") == "db-1" else {}

    got = wait_for(primary, 5)
    assert got["primary"]["epoch"] == "1"
    beat = json.loads(
        grpcurl(
            "-d",
            '{"service": "orders-db", "instance_id": "db-1", '
            '"load": {"in_flight": 12, "replication_lag": "0.2s"}, "epoch": 1}',
            a,
            "bulwark.v1.RegistryService/Heartbeat",
        )
    )
    assert beat["role"] == "ROLE_PRIMARY"
    assert beat.get("stale_epoch", False) is False

    grpcurl("-d", '{"name": "smtp"}', a, "bulwark.v1.CircuitBreakerService/PutBreaker")
    grpcurl(
        "-d",
        '{"feature": {"name": "email", "fallback": "sms", "depends_on": '
        '[{"kind": "DEPENDENCY_KIND_CIRCUIT_BREAKER", "name": "smtp"}]}}',
        a,
        "bulwark.v1.FeatureService/PutFeature",
    )
    grpcurl(
        "-d",
        '{"feature": {"name": "signup", "depends_on": '
        '[{"kind": "DEPENDENCY_KIND_FEATURE", "name": "email", "soft": true}]}}',
        a,
        "bulwark.v1.FeatureService/PutFeature",
    )
    grpcurl(
        "-d",
        '{"name": "email", "status": "FEATURE_STATUS_DISABLED", "reason": "provider outage", '
        '"expires_at": "2030-01-01T00:00:00Z"}',
        a,
        "bulwark.v1.FeatureService/SetFeatureStatus",
    )
    view = json.loads(
        grpcurl("-d", '{"name": "signup"}', a, "bulwark.v1.FeatureService/GetFeature")
    )["feature"]
    assert view["effective_status"] == "FEATURE_STATUS_DEGRADED"
    assert [d["name"] for d in view["blocked_by"]] == ["email"]
    assert view["effective_reason"] == "provider outage"


def test_grpcurl_lists_services_and_calls_cluster_service(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    wait_for(lambda: (get_leader(replica.address) or cluster_pb2.GetLeaderResponse()).is_self, 5)

    services = grpcurl(replica.address, "list").split()
    assert "bulwark.v1.ClusterService" in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert "bulwark.v1.RegistryService" in services
    assert "bulwark.v1.FeatureService" in services

    leader = json.loads(grpcurl(replica.address, "bulwark.v1.ClusterService/GetLeader"))
    assert leader["isSelf"] if "isSelf" in leader else leader["is_self"]
    assert leader["leader"]["replica_id"] == "r1"
    assert int(leader["leader"]["term"]) > 0

    status = json.loads(grpcurl(replica.address, "bulwark.v1.ClusterService/GetClusterStatus"))
    assert [r["id"] for r in status["replicas"]] == ["r1"]
    assert status["etcd_members"][0]["healthy"] is True
    assert status["etcd_members"][0]["client_urls"] == [f"http://{etcd.endpoint}"]
    assert int(status["cache"]["revision"]) > 0
    assert status.get("stale", False) is False
    names = {c["name"]: c["state"] for c in status["components"]}
    assert names["store"] == "COMPONENT_STATE_HEALTHY"
    assert names["election"] == "COMPONENT_STATE_HEALTHY"


def test_health_overall_and_per_service(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    with grpc.insecure_channel(replica.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "bulwark.v1.ClusterService"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=2)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_etcd_outage_marks_answers_stale_and_recovers(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    wait_for(lambda: (get_leader(replica.address) or cluster_pb2.GetLeaderResponse()).is_self, 5)
    etcd.stop()
    view = wait_for(lambda: (v := get_leader(replica.address)) is not None and v.stale and v, 5)
    assert view.leader.replica_id == "r1"  # type: ignore[attr-defined]  # last known state

    channel, stub = cluster_stub(replica.address)
    with channel:
        status = stub.GetClusterStatus(cluster_pb2.GetClusterStatusRequest(), timeout=5)
    assert status.stale and status.cache.stale
    states = {c.name: c.state for c in status.components}
    assert states["store"] == cluster_pb2.COMPONENT_STATE_UNHEALTHY

    etcd.start()
    etcd.wait_healthy()
    wait_for(lambda: (v := get_leader(replica.address)) is not None and not v.stale, 15)


def test_sigterm_drains_and_exits_cleanly(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    replica.signal(signal.SIGTERM)
    assert replica.wait(15) == 0, replica.tail()
    events = [e.get("event") for e in replica.events()]
    assert events.index("draining") < events.index("stopped")


def test_otel_console_exporter_records_rpc_spans_with_status(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint], "--otel-exporter=console")
    assert get_leader(replica.address) is not None
    replica.signal(signal.SIGTERM)
    assert replica.wait(15) == 0
    log = replica.log_path.read_text()
    assert '"name": "/bulwark.v1.ClusterService/GetLeader"' in log
    assert '"rpc.grpc.status_code": "OK"' in log
    assert "rpc.server.duration" in log


def test_bad_settings_exit_2_naming_the_setting(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "bulwark_server", "serve", "--lease-ttl=0", "--listen=nohost"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "lease_ttl" in result.stderr and "listen" in result.stderr


def test_embedded_etcd_starts_stops_and_keeps_its_data(tmp_path: Path):
    data = tmp_path / "var"
    terms = []
    etcd_endpoints = []
    for _ in range(2):
        replica = ReplicaProcess(
            "solo",
            [],
            tmp_path / "solo.log",
            extra_args=[f"--data-dir={data}", "--etcd-endpoints="],
            env={"BULWARK_ETCD_ENDPOINTS": ""},
        )
        replica.start()
        try:
            replica.wait_serving()
            view = wait_for(
                lambda r=replica: (v := get_leader(r.address)) is not None and v.is_self and v, 10
            )
            terms.append(view.leader.term)  # type: ignore[attr-defined]
            embedded = [e for e in replica.events() if e.get("event") == "etcd.embedded"]
            assert embedded, replica.tail()
            etcd_endpoints.append(embedded[0]["endpoint"])
        finally:
            replica.signal(signal.SIGINT)
            assert replica.wait(20) == 0, replica.tail()
        # The child etcd is gone with its parent.
        probe = EtcdMember(
            "probe", tmp_path / "unused", client_port=int(etcd_endpoints[-1].split(":")[1])
        )
        assert not probe.healthy()
    assert (data / "etcd" / "data" / "member").is_dir()
    assert terms[1] > terms[0], "the second run must continue the first run's etcd history"
    assert etcd_endpoints[0] == etcd_endpoints[1], "the embedded etcd reuses its ports"


def test_etcd_endpoints_may_be_host_names(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory(
        "named", [], env={"BULWARK_ETCD_ENDPOINTS": f"localhost:{etcd.client_port}"}
    )
    view = wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self and v, 5)
    assert view.leader.replica_id == "named"  # type: ignore[attr-defined]
    assert os.environ.get("BULWARK_ETCD_ENDPOINTS") is None


def test_an_idle_replica_writes_to_etcd_only_to_renew_its_term(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("idle", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self, 5)
    channel, stub = cluster_stub(replica.address)
    with channel:

        def revision() -> int:
            status = stub.GetClusterStatus(cluster_pb2.GetClusterStatusRequest(), timeout=5)
            return status.cache.etcd_revision

        first = revision()
        time.sleep(3.0)
        writes = revision() - first
    # The leader proves its term every TTL/4 (0.5 s) with fenced reads and rewrites
    # its record once a TTL (2 s): one or two writes in 3 s.
    assert 1 <= writes <= 2, f"{writes} etcd writes in 3 s by an idle replica"
