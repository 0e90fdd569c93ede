"""Scaling signals on a real replica: KEDA's external scaler protocol, played with the
generated ``externalscaler`` stubs, and Bulwark's own HPA recommendation, both
following the load the instances report in their heartbeats."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from bulwark.v1 import registry_pb2, registry_pb2_grpc, remediation_pb2, remediation_pb2_grpc
from bulwark_server.keda_api import externalscaler_pb2, externalscaler_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, wait_for

SERVICE = "checkout"


def _report(registry: registry_pb2_grpc.RegistryServiceStub, loads: dict[str, int]) -> None:
    for instance_id, in_flight in loads.items():
        registry.Heartbeat(
            registry_pb2.HeartbeatRequest(
                service=SERVICE,
                instance_id=instance_id,
                load=registry_pb2.Load(in_flight=in_flight, cpu=0.5),
            ),
            timeout=5,
        )


def _ref(**metadata: str) -> externalscaler_pb2.ScaledObjectRef:
    return externalscaler_pb2.ScaledObjectRef(
        name=SERVICE, namespace="shop", scalerMetadata={"service": SERVICE, **metadata}
    )


def test_keda_reads_metric_specs_values_and_activity_that_follow_the_load(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("k1", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        registry = registry_pb2_grpc.RegistryServiceStub(channel)
        for n in (1, 2):
            instance = registry_pb2.Instance(service=SERVICE, id=f"c{n}", address=f"10.0.0.{n}:80")
            instance.ttl.FromSeconds(30)
            registry.RegisterInstance(
                registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
            )
        _report(registry, {"c1": 0, "c2": 0})
        keda = externalscaler_pb2_grpc.ExternalScalerStub(channel)
        ref = _ref(metric="inFlight", target="10", activationThreshold="5")

        (spec,) = keda.GetMetricSpec(ref, timeout=5).metricSpecs
        assert (spec.metricName, spec.targetSizeFloat, spec.targetSize) == (
            "bulwark-checkout-inflight",
            10.0,
            10,
        )

        def value() -> float:
            answer = keda.GetMetrics(
                externalscaler_pb2.GetMetricsRequest(
                    scaledObjectRef=ref, metricName=spec.metricName
                ),
                timeout=5,
            )
            (metric,) = answer.metricValues
            assert metric.metricName == spec.metricName
            return metric.metricValueFloat

        assert value() == 0.0
        assert not keda.IsActive(ref, timeout=5).result
        pushed = keda.StreamIsActive(ref, timeout=30)
        assert next(pushed).result is False

        _report(registry, {"c1": 30, "c2": 20})
        wait_for(lambda: value() == 50.0, 5)  # the total: KEDA's HPA divides by the target
        assert next(pushed).result is True
        assert keda.IsActive(ref, timeout=5).result
        _report(registry, {"c1": 1, "c2": 0})
        assert next(pushed).result is False
        pushed.cancel()

        # Bulwark's own recommendation: HPA arithmetic, stabilized on the leader.
        _report(registry, {"c1": 30, "c2": 20})
        remediation = remediation_pb2_grpc.RemediationServiceStub(channel)
        target = remediation_pb2.ScalingTarget(
            metric=remediation_pb2.SCALING_METRIC_IN_FLIGHT, target=10
        )
        request = remediation_pb2.GetScalingRecommendationRequest(
            service=SERVICE,
            spec=remediation_pb2.ScalingSpec(targets=[target], min_replicas=1, max_replicas=8),
        )

        def recommendation() -> remediation_pb2.ScalingRecommendation:
            return remediation.GetScalingRecommendation(request, timeout=5).recommendation

        up = wait_for(lambda: (r := recommendation()).recommended_replicas == 5 and r, 5)
        assert isinstance(up, remediation_pb2.ScalingRecommendation)
        assert (up.current_replicas, up.desired_replicas, up.reason) == (2, 5, "scale up")
        assert up.readings[0].current == 25.0
        _report(registry, {"c1": 0, "c2": 0})
        held = wait_for(lambda: (r := recommendation()).desired_replicas == 0 and r, 5)
        assert isinstance(held, remediation_pb2.ScalingRecommendation)
        # The load asks for fewer (down to min_replicas), but a drop is held for the
        # 300 s scale-down window: the service stays at its current 2, no flapping.
        assert held.recommended_replicas == 2
        assert held.reason == "held by the scale-down stabilization window"

        # KEDA may take Bulwark's recommendation instead of the raw load.
        recommended = _ref(metric="recommendedReplicas", targetInFlight="10", maxReplicas="8")
        (rec_spec,) = keda.GetMetricSpec(recommended, timeout=5).metricSpecs
        assert rec_spec.targetSizeFloat == 1.0
        answer = keda.GetMetrics(
            externalscaler_pb2.GetMetricsRequest(
                scaledObjectRef=recommended, metricName=rec_spec.metricName
            ),
            timeout=5,
        )
        # A spec of its own: its history starts now, from the current count.
        assert answer.metricValues[0].metricValueFloat == 2.0


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"metric": "queueDepth", "target": "1"}, "scalerMetadata.metric"),
        ({"metric": "inFlight"}, "scalerMetadata.target"),
        ({"metric": "inFlight", "target": "-3"}, "scalerMetadata.target"),
        ({"metric": "recommendedReplicas", "targetCpu": "0.6"}, "scalerMetadata.maxReplicas"),
    ],
)
def test_a_bad_trigger_names_its_metadata_key(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    metadata: dict[str, str],
    field: str,
) -> None:
    replica = replica_factory("k1", [etcd.endpoint])
    with grpc.insecure_channel(replica.address) as channel:
        keda = externalscaler_pb2_grpc.ExternalScalerStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            keda.GetMetricSpec(_ref(**metadata), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
