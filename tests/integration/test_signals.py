"""Service signals on real replicas: a client reports to a follower, the leader sums,
every replica answers the same, a watch streams them, and bad input names its field."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from bulwark.sync import Client
from bulwark.v1 import (
    registry_pb2,
    registry_pb2_grpc,
    remediation_pb2,
    remediation_pb2_grpc,
    signals_pb2,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, start_replicas, wait_for
from tests.integration.test_metrics import samples, value, with_metrics


def _signals(address: str, service: str) -> signals_pb2.ServiceSignals:
    with grpc.insecure_channel(address) as channel:
        return (
            registry_pb2_grpc.RegistryServiceStub(channel)
            .GetServiceSignals(signals_pb2.GetServiceSignalsRequest(service=service), timeout=5)
            .signals
        )


def test_reports_to_a_follower_are_summed_once_and_read_anywhere(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint], "s")
    leader = wait_for(
        lambda: next((r for r in replicas if (v := get_leader(r.address)) and v.is_self), None), 10
    )
    assert isinstance(leader, ReplicaProcess)
    follower = next(r for r in replicas if r is not leader)
    with grpc.insecure_channel(leader.address) as channel:
        instance = registry_pb2.Instance(service="db", id="db-1", address="10.0.0.1:5432")
        instance.ttl.FromSeconds(30)
        instance.load.in_flight = 7
        registry_pb2_grpc.RegistryServiceStub(channel).RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
        )

    # Only the follower is known to the client: its reports are forwarded to the leader.
    with Client(follower.address, service="web", timeout=5) as client:
        for i in range(100):
            client.record_call("db", failed=i % 10 == 0, latency=0.020)
        client.record_call("cache", failed=False, latency=0.001)
    on_leader = wait_for(lambda: (s := _signals(leader.address, "db")).inbound.calls and s, 10)
    assert isinstance(on_leader, signals_pb2.ServiceSignals)
    assert (on_leader.inbound.calls, on_leader.inbound.errors) == (100, 10)
    assert on_leader.inbound.error_rate == pytest.approx(0.1)
    p50 = on_leader.inbound.latency_p50.ToNanoseconds() / 1e6
    assert 20 / 1.19 < p50 < 20 * 1.19, p50  # within a bucket of 20 ms
    assert list(on_leader.by_caller) == ["web"]
    assert (on_leader.serving_instances, on_leader.in_flight) == (1, 7)
    # The caller's own view: what it called.
    web = _signals(follower.address, "web")
    assert sorted(web.downstream) == ["cache", "db"]
    assert web.downstream["db"].calls == 100
    # The follower answers from the leader: the same sums, counted once.
    assert _signals(follower.address, "db").inbound.calls == 100

    with grpc.insecure_channel(follower.address) as channel:
        request = signals_pb2.WatchServiceSignalsRequest(services=["db", "cache"])
        request.interval.FromSeconds(1)
        stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchServiceSignals(
            request, timeout=10
        )
        first = [next(stream).signals for _ in range(2)]
        began = time.monotonic()
        again = next(stream).signals
        stream.cancel()
    assert [s.service for s in first] == ["cache", "db"]
    assert first[1].inbound.calls == 100
    assert again.service == "cache" and time.monotonic() - began >= 0.5


def test_bad_signal_requests_name_their_field(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("s1", [etcd.endpoint])
    with grpc.insecure_channel(replica.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        bad_report = signals_pb2.ReportSignalsRequest(reporter="web")
        bad_report.reports.add(service="db").counts.errors = 1  # more errors than calls
        too_long = signals_pb2.GetServiceSignalsRequest(service="db")
        too_long.window.FromSeconds(3600)
        cases = [
            (lambda: stub.ReportSignals(bad_report, timeout=5), "reports[0].counts.errors"),
            (lambda: stub.GetServiceSignals(too_long, timeout=5), "window"),
            (
                lambda: next(
                    stub.WatchServiceSignals(signals_pb2.WatchServiceSignalsRequest(), timeout=5)
                ),
                "services",
            ),
        ]
        for call, field in cases:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in (caught.value.details() or "")


def test_the_leader_exports_each_service_s_signals_and_the_remediation_switch(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica, port = with_metrics(replica_factory, etcd, "s1")
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        request = signals_pb2.ReportSignalsRequest(reporter="web")
        report = request.reports.add(service="db")
        report.counts.calls, report.counts.errors = 120, 30
        report.counts.latency.offset = 17  # (2^(17/4), 2^(18/4)] ms: about 19-23 ms
        report.counts.latency.counts.append(120)
        registry_pb2_grpc.RegistryServiceStub(channel).ReportSignals(request, timeout=5)
        remediation_pb2_grpc.RemediationServiceStub(channel).SetRemediationPaused(
            remediation_pb2.SetRemediationPausedRequest(paused=True, reason="maintenance"),
            timeout=5,
        )
    found = wait_for(
        lambda: (s := samples(port)) and value(s, "bulwark_remediation_paused") and s, 5
    )
    assert isinstance(found, dict)
    assert value(found, "bulwark_service_error_ratio", service="db") == pytest.approx(0.25)
    rate = value(found, "bulwark_service_calls_per_second", service="db")
    assert rate is not None and rate > 0
    p99 = value(found, "bulwark_service_latency_seconds", service="db", quantile="0.99")
    assert p99 is not None and 2 ** (17 / 4) / 1000 < p99 <= 2 ** (18 / 4) / 1000
    assert value(found, "bulwark_signal_reports_dropped_total") == 0
