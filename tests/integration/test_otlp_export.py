"""OTLP export from a real replica to a real OTLP/gRPC receiver (``tests/otlp_receiver.py``).

The replica exports with the standard SDK settings made fast (a 50 ms span batch
delay, a metric export every 200 ms): what a collector gets is checked span by
span, joined to the replica's JSON log by trace id, and metric by metric. A
replica whose collector is down serves as usual and stops in bounded time.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, free_port
from bulwark_server.observability import FLUSH_TIMEOUT_S
from tests.integration.conftest import wait_for
from tests.otlp_receiver import SERVER, STATUS_ERROR, STATUS_UNSET, OtlpReceiver, ReceivedSpan

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200"}

BREAKERS = "/bulwark.v1.CircuitBreakerService"
PUT_BREAKER = f"{BREAKERS}/PutBreaker"
ALLOW = f"{BREAKERS}/Allow"
PUT_LIMIT = "/bulwark.v1.RateLimitService/PutLimit"
CHECK = "/bulwark.v1.RateLimitService/Check"
REGISTER = "/bulwark.v1.RegistryService/RegisterInstance"
GET_LEADER = "/bulwark.v1.ClusterService/GetLeader"
HEALTH = "/grpc.health.v1.Health/Check"
CAPABILITY = {
    PUT_BREAKER: "breakers",
    ALLOW: "breakers",
    PUT_LIMIT: "ratelimits",
    CHECK: "ratelimits",
    REGISTER: "registry",
    GET_LEADER: "cluster",
    HEALTH: "transport",
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _make_calls(channel: grpc.Channel) -> None:
    """One call of each method in CAPABILITY, all OK, then an Allow of a missing breaker."""
    breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
    breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
    assert breakers.Allow(breaker_pb2.AllowRequest(name="payments"), timeout=5).allowed
    limits = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
    entry = ratelimit_pb2.DescriptorEntry(key="remote_address")
    limit = ratelimit_pb2.Limit(
        domain="edge",
        name="per-ip",
        descriptor=[entry],
        rate=ratelimit_pb2.Rate(requests_per_unit=10, unit=ratelimit_pb2.RATE_UNIT_SECOND),
    )
    limits.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5)
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.DescriptorEntry(key="remote_address", value="10.0.0.1")]
    )
    limits.Check(ratelimit_pb2.CheckRequest(domain="edge", descriptors=[descriptor]), timeout=5)
    # RegisterInstance logs a line while it runs: the join of logs to spans.
    instance = registry_pb2.Instance(
        service="users",
        id="users-1",
        address="127.0.0.1:9001",
        ttl=duration_pb2.Duration(seconds=30),
    )
    registry_pb2_grpc.RegistryServiceStub(channel).RegisterInstance(
        registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
    )
    cluster_pb2_grpc.ClusterServiceStub(channel).GetLeader(
        cluster_pb2.GetLeaderRequest(), timeout=5
    )
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        breakers.Allow(breaker_pb2.AllowRequest(name="missing"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _by_code(spans: list[ReceivedSpan], name: str, code: str) -> ReceivedSpan | None:
    found = [s for s in spans if s.name == name and s.attributes["rpc.grpc.status_code"] == code]
    return found[0] if found else None


def test_spans_metrics_and_log_trace_ids_reach_an_otlp_collector(
    receiver: OtlpReceiver,
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
) -> None:
    # The receiver comes first, so it is stopped last: a replica stopping with its
    # collector gone would wait FLUSH_TIMEOUT_S for it.
    # The endpoint alone selects the otlp exporter; http:// makes it plaintext.
    replica = replica_factory(
        "otlp-r1",
        [etcd.endpoint],
        f"--otel-endpoint={receiver.endpoint}",
        "--etcd-timeout=1",
        env=FAST_EXPORT,
    )
    with grpc.insecure_channel(replica.address) as channel:
        _make_calls(channel)
        # A failure of the server's own: etcd paused, a write waits out the etcd
        # timeout (1 s here) and is answered UNAVAILABLE.
        etcd.signal(signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as err:
                breaker_pb2_grpc.CircuitBreakerServiceStub(channel).PutBreaker(
                    breaker_pb2.PutBreakerRequest(name="orders"), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            etcd.signal(signal.SIGCONT)

    def all_arrived(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.spans()
        names = {s.name for s in spans}
        done = names >= set(CAPABILITY) and _by_code(spans, PUT_BREAKER, "UNAVAILABLE")
        return spans if done else None

    spans = receiver.wait_for(all_arrived, timeout=5)

    for span in spans:
        service, method = span.name.lstrip("/").rsplit("/", 1)
        assert span.kind == SERVER, span
        assert span.scope == "bulwark.server"
        assert span.resource["service.name"] == "bulwark"
        assert span.resource["service.instance.id"] == replica.replica_id
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == service
        assert span.attributes["rpc.method"] == method
        assert span.attributes["bulwark.capability"] == CAPABILITY[span.name], span
    succeeded = [s for s in spans if s.attributes["rpc.grpc.status_code"] == "OK"]
    assert {s.name for s in succeeded} == set(CAPABILITY)
    assert {s.status_code for s in succeeded} == {STATUS_UNSET}
    # Each RPC is a trace of its own: callers' trace context is not taken up.
    assert len({s.trace_id for s in spans}) == len(spans)

    # A caller's mistake: its code, and no ERROR (the server did its job) ...
    missing = _by_code(spans, ALLOW, "NOT_FOUND")
    assert missing is not None and missing.status_code == STATUS_UNSET
    # ... a failure of the server: ERROR, with the details the caller got.
    failed = _by_code(spans, PUT_BREAKER, "UNAVAILABLE")
    assert failed is not None and failed.status_code == STATUS_ERROR
    assert failed.status_message, failed

    # The line RegisterInstance logged carries the ids of its span.
    (line,) = [e for e in replica.events() if e.get("event") == "registry.registered"]
    register = _by_code(spans, REGISTER, "OK")
    assert register is not None
    assert (line["trace_id"], line["span_id"]) == (register.trace_id, register.span_id)
    # So do the others logged during calls (the failed write's audit warning among them).
    assert {s.trace_id for s in spans} >= {
        e["trace_id"] for e in replica.events() if "trace_id" in e
    }

    def counted(r: OtlpReceiver) -> dict[tuple[str, str], float] | None:
        # Cumulative sums: the latest point of each series holds its total.
        latest = {
            (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.value
            for p in r.points_of("rpc.server.requests")
        }
        wanted = [("Allow", "OK"), ("Allow", "NOT_FOUND"), ("PutBreaker", "UNAVAILABLE")]
        return latest if all(key in latest for key in wanted) else None

    requests = receiver.wait_for(counted, timeout=5)
    assert requests[("Allow", "OK")] == 1 and requests[("Allow", "NOT_FOUND")] == 1
    assert requests[("Check", "OK")] == 1 and requests[("PutLimit", "OK")] == 1
    durations = receiver.points_of("rpc.server.duration")
    timed = {p.attributes["rpc.method"] for p in durations if p.count}
    assert {"PutBreaker", "Allow", "PutLimit", "Check", "RegisterInstance"} <= timed
    for point in [*durations, *receiver.points_of("rpc.server.requests")]:
        assert point.attributes["rpc.system"] == "grpc"
        assert point.attributes["rpc.service"].endswith(("Service", "Health"))
        assert point.resource["service.instance.id"] == replica.replica_id
    assert {p.kind for p in durations} == {"histogram"}
    assert {p.unit for p in durations} == {"ms"}


def test_a_collector_that_is_down_neither_fails_nor_holds_up_calls_or_the_stop(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    # Nothing listens there. Chosen by the environment this time.
    endpoint = f"http://127.0.0.1:{free_port()}"
    replica = replica_factory(
        "otlp-down",
        [etcd.endpoint],
        env={**FAST_EXPORT, "BULWARK_OTEL_EXPORTER": "otlp", "BULWARK_OTEL_ENDPOINT": endpoint},
    )
    assert any(e.get("event") == "telemetry.otlp" for e in replica.events())

    def export_failed() -> bool:
        return any("opentelemetry.exporter" in e.get("logger", "") for e in replica.events())

    with grpc.insecure_channel(replica.address) as channel:
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        wait_for(export_failed, 5)
        # While the exporters retry (for up to 10 s per batch), calls go on as usual:
        # each well within a deadline far below the exporters' timeout.
        began = time.monotonic()
        for _ in range(100):
            assert breakers.Allow(breaker_pb2.AllowRequest(name="payments"), timeout=1).allowed
        assert time.monotonic() - began < 5

    began = time.monotonic()
    replica.stop()
    stopped_in = time.monotonic() - began
    assert replica.process is not None and replica.process.returncode == 0, replica.tail()
    assert stopped_in < FLUSH_TIMEOUT_S + 3, stopped_in
