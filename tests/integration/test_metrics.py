"""The Prometheus scrape endpoint of real replicas: names, labels and values pinned."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, free_port
from tests.integration.conftest import get_leader, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, accept: str = "") -> tuple[str, str]:
    """(content type, body) of GET /metrics."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(port: int) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    _, body = scrape(port)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def with_metrics(
    replica_factory: Callable[..., ReplicaProcess], etcd: EtcdMember, name: str
) -> tuple[ReplicaProcess, int]:
    port = free_port()
    replica = replica_factory(name, [etcd.endpoint], "--metrics-listen", f"127.0.0.1:{port}")
    return replica, port


def per_minute(
    channel: grpc.Channel, domain: str, name: str, key: str, rate: int, detailed: bool = False
) -> ratelimit_pb2_grpc.RateLimitServiceStub:
    """PutLimit of ``rate`` per minute on any value of ``key``; the stub."""
    limits = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
    limit = ratelimit_pb2.Limit(
        domain=domain,
        name=name,
        descriptor=[ratelimit_pb2.DescriptorEntry(key=key)],
        rate=ratelimit_pb2.Rate(requests_per_unit=rate, unit=ratelimit_pb2.RATE_UNIT_MINUTE),
        detailed_metric=detailed,
    )
    limits.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5)
    return limits


def one(domain: str, key: str, value: str) -> ratelimit_pb2.CheckRequest:
    """A Check of one descriptor of one entry."""
    entry = ratelimit_pb2.DescriptorEntry(key=key, value=value)
    return ratelimit_pb2.CheckRequest(
        domain=domain, descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
    )


def test_a_replica_exports_rpc_decision_breaker_and_cluster_metrics(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica, port = with_metrics(replica_factory, etcd, "m1")
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        limits = per_minute(channel, "shop", "per-user", "user", 5)
        codes = [
            limits.Check(one("shop", "user", "alice"), timeout=5).overall_code for _ in range(7)
        ]
        assert codes.count(ratelimit_pb2.CHECK_CODE_OVER_LIMIT) == 2
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        breakers.ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments", state=breaker_pb2.BREAKER_STATE_FORCED_OPEN, reason="drill"
            ),
            timeout=5,
        )
        assert not breakers.Allow(breaker_pb2.AllowRequest(name="payments"), timeout=5).allowed
        with pytest.raises(grpc.RpcError) as missing:
            breakers.GetBreaker(breaker_pb2.GetBreakerRequest(name="nope"), timeout=5)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND

    missing_labels = {
        "grpc_type": "unary",
        "grpc_service": "bulwark.v1.CircuitBreakerService",
        "grpc_method": "GetBreaker",
        "grpc_code": "NotFound",
    }

    def counted() -> Samples | None:
        found = samples(port)
        return found if value(found, "grpc_server_handled_total", **missing_labels) else None

    # An aborted call's status reaches the caller before the handler's frame ends and
    # counts it, so a scrape right after it may come a moment early.
    found = wait_for(counted, 5)
    rpc = {"grpc_type": "unary", "grpc_service": "bulwark.v1.RateLimitService"}
    assert value(found, "grpc_server_started_total", grpc_method="Check", **rpc) == 7
    assert (
        value(found, "grpc_server_handled_total", grpc_method="Check", grpc_code="OK", **rpc) == 7
    )
    assert value(found, "grpc_server_handling_seconds_count", grpc_method="Check", **rpc) == 7
    assert (
        value(found, "grpc_server_handling_seconds_bucket", grpc_method="Check", le="10.0", **rpc)
        == 7
    )
    assert value(found, "grpc_server_handled_total", **missing_labels) == 1
    # 5 per minute, 7 Checks: 3 with more than a fifth left, 2 near (1 and 0 left), 2 over.
    decided = {
        outcome: value(
            found,
            "bulwark_ratelimit_decisions_total",
            domain="shop",
            limit="per-user",
            outcome=outcome,
        )
        for outcome in ("within_limit", "near_limit", "over_limit", "shadow_mode")
    }
    assert decided == {"within_limit": 4, "near_limit": 1, "over_limit": 2, "shadow_mode": 0}
    assert value(found, "bulwark_breaker_refusals_total", breaker="payments") == 1
    assert value(found, "bulwark_breaker_state", breaker="payments", state="forced_open") == 1
    assert value(found, "bulwark_breaker_state", breaker="payments", state="closed") == 0
    assert value(found, "bulwark_is_leader") == 1
    assert value(found, "bulwark_elections_won_total") == 1
    assert (value(found, "bulwark_leader_term") or 0) > 0
    assert value(found, "bulwark_etcd_reachable") == 1
    assert 0 <= (value(found, "bulwark_cache_lag_seconds") or -1) < 10
    assert (
        value(
            found,
            "bulwark_metrics_series_dropped_total",
            metric="bulwark_ratelimit_decisions_total",
        )
        == 0
    )
    # No `_created` series: nothing reads them, and they would double the scrape.
    assert not [name for name, _ in found if name.endswith("_created")]


def test_only_the_leader_exports_fleet_state_and_formats_follow_accept(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    first, first_port = with_metrics(replica_factory, etcd, "m1")
    second, second_port = with_metrics(replica_factory, etcd, "m2")
    leader = wait_for(
        lambda: next(
            (r for r in (first, second) if (v := get_leader(r.address)) and v.is_self), None
        ),
        10,
    )
    with grpc.insecure_channel(first.address) as channel:
        breaker_pb2_grpc.CircuitBreakerServiceStub(channel).PutBreaker(
            breaker_pb2.PutBreakerRequest(name="search"), timeout=5
        )
    ports = {first.replica_id: first_port, second.replica_id: second_port}

    def states(port: int) -> list[float]:
        return [v for (name, _), v in samples(port).items() if name == "bulwark_breaker_state"]

    leader_port = ports[leader.replica_id]
    follower_port = ports[(second if leader is first else first).replica_id]
    wait_for(lambda: sum(states(leader_port)) == 1, 5)
    assert states(follower_port) == []
    assert value(samples(follower_port), "bulwark_is_leader") == 0

    content_type, body = scrape(leader_port, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    content_type, _ = scrape(leader_port)
    assert content_type.startswith("text/plain; version=0.0.4")
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(f"http://127.0.0.1:{leader_port}/other", timeout=5)
    assert wrong.value.code == 404
    wrong.value.close()


def test_the_leader_exports_services_primaries_bulkheads_and_features(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica, port = with_metrics(replica_factory, etcd, "m1")
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        for n, health in ((1, "INSTANCE_HEALTH_SERVING"), (2, "INSTANCE_HEALTH_NOT_SERVING")):
            instance = registry_pb2.Instance(
                service="orders-db",
                id=f"db-{n}",
                address=f"10.0.0.{n}:5432",
                health=registry_pb2.InstanceHealth.Value(health),
            )
            instance.ttl.FromSeconds(30)
            registry.RegisterInstance(
                registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
            )
        bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(channel)
        bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="reports", max_concurrent=3)
            ),
            timeout=5,
        )
        bulkheads.Acquire(bulkhead_pb2.AcquireRequest(bulkhead="reports", holder="w1"), timeout=5)
        feature_pb2_grpc.FeatureServiceStub(channel).PutFeature(
            feature_pb2.PutFeatureRequest(
                feature=feature_pb2.Feature(
                    name="recommendations",
                    status=feature_pb2.FEATURE_STATUS_DEGRADED,
                    reason="load test",
                )
            ),
            timeout=5,
        )

    def promoted() -> Samples | None:
        found = samples(port)
        has = value(found, "bulwark_service_has_primary", service="orders-db")
        return found if has == 1 else None

    found = wait_for(promoted, 10)
    assert isinstance(found, dict)
    assert value(found, "bulwark_instances", service="orders-db", health="serving") == 1
    assert value(found, "bulwark_instances", service="orders-db", health="not_serving") == 1
    assert value(found, "bulwark_instances", service="orders-db", health="draining") == 0
    assert value(found, "bulwark_primary_epoch", service="orders-db") == 1
    assert value(found, "bulwark_primary_failovers_total", service="orders-db") == 0
    assert value(found, "bulwark_bulkhead_permits_held", bulkhead="reports") == 1
    assert value(found, "bulwark_bulkhead_permits_max", bulkhead="reports") == 3
    statuses = {
        status: value(found, "bulwark_feature_status", feature="recommendations", status=status)
        for status in ("available", "degraded", "disabled")
    }
    assert statuses == {"available": 0, "degraded": 1, "disabled": 0}


def test_a_detailed_limit_exports_a_series_per_descriptor_value(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica, port = with_metrics(replica_factory, etcd, "m1")
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        limits = per_minute(channel, "edge", "per-ip", "remote_address", 2, detailed=True)
        for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"):
            limits.Check(one("edge", "remote_address", ip), timeout=5)
    found = samples(port)

    def detailed(ip: str, outcome: str) -> float | None:
        return value(
            found,
            "bulwark_ratelimit_detailed_decisions_total",
            domain="edge",
            limit="per-ip",
            descriptor=f"remote_address={ip}",
            outcome=outcome,
        )

    assert detailed("10.0.0.1", "within_limit") == 1  # 1 of 2 left: more than a fifth
    assert detailed("10.0.0.1", "near_limit") == 1
    assert detailed("10.0.0.1", "over_limit") == 1
    assert detailed("10.0.0.2", "within_limit") == 1
    per_limit = {
        outcome: value(
            found,
            "bulwark_ratelimit_decisions_total",
            domain="edge",
            limit="per-ip",
            outcome=outcome,
        )
        for outcome in ("within_limit", "near_limit", "over_limit")
    }
    assert per_limit == {"within_limit": 2, "near_limit": 1, "over_limit": 1}
