"""Scaling on the leader, with fake instances and signals: readings, the HPA's answer,
one history per service and spec, KEDA values; and what specs and triggers must be."""

from __future__ import annotations

import pytest

from bulwark.v1 import registry_pb2, remediation_pb2, signals_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.remediation.scaling import MAX_HISTORIES, ScalingManager
from bulwark_server.remediation.scaling_rules import hpa_settings, parse_metadata

IN_FLIGHT = remediation_pb2.SCALING_METRIC_IN_FLIGHT
CALLS = remediation_pb2.SCALING_METRIC_CALLS_PER_SECOND


class Fleet:
    def __init__(self) -> None:
        self.loads: dict[str, list[int | None]] = {}
        self.rate = 0.0
        self.now = 0.0

    def serving(self, service: str) -> list[registry_pb2.Instance]:
        out = []
        for n, in_flight in enumerate(self.loads.get(service, [])):
            instance = registry_pb2.Instance(service=service, id=f"i{n}")
            if in_flight is not None:
                instance.load.in_flight = in_flight
                instance.load.cpu = in_flight / 100
            out.append(instance)
        return out

    def signals(self, service: str) -> signals_pb2.Signals:
        return signals_pb2.Signals(calls_per_second=self.rate, error_rate=0.25)

    def manager(self) -> ScalingManager:
        return ScalingManager(self.serving, self.signals, clock=lambda: self.now, wall=lambda: 0)


def spec(
    *targets: tuple[int, float], maximum: int = 10, **more: object
) -> remediation_pb2.ScalingSpec:
    out = remediation_pb2.ScalingSpec(max_replicas=maximum, **more)  # type: ignore[arg-type]
    for metric, target in targets:
        out.targets.add(metric=metric, target=target)
    return out


def test_the_largest_metric_wins_and_each_reading_says_its_own() -> None:
    fleet = Fleet()
    fleet.loads["web"] = [10, 30]  # 20 in flight per instance
    fleet.rate = 300.0  # 150 per instance
    answer = fleet.manager().recommend("web", spec((IN_FLIGHT, 10), (CALLS, 50)))
    assert (answer.current_replicas, answer.desired_replicas) == (2, 6)
    assert answer.recommended_replicas == 6 and answer.reason == "scale up"
    readings = {r.metric: (r.current, r.desired_replicas) for r in answer.readings}
    assert readings == {IN_FLIGHT: (20.0, 4), CALLS: (150.0, 6)}


def test_an_instance_without_load_does_not_count_as_reporting() -> None:
    fleet = Fleet()
    fleet.loads["web"] = [40, None]
    answer = fleet.manager().recommend("web", spec((IN_FLIGHT, 10)))
    (reading,) = answer.readings
    assert reading.current == 40.0  # the mean over the instance that reported
    # The silent instance counts as using nothing on a scale-up: ceil(40 / 10) = 4.
    assert answer.recommended_replicas == 4


def test_a_drop_is_held_per_service_and_spec_and_released_after_the_window() -> None:
    fleet = Fleet()
    fleet.loads["web"] = [50, 50]
    manager = fleet.manager()
    window = spec((IN_FLIGHT, 10))
    assert manager.recommend("web", window).recommended_replicas == 10
    fleet.loads["web"] = [0] * 10
    fleet.now = 100.0
    held = manager.recommend("web", window)
    assert (held.recommended_replicas, held.reason) == (
        10,
        "held by the scale-down stabilization window",
    )
    fleet.now = 401.0
    assert manager.recommend("web", window).recommended_replicas == 1
    # Another spec has a history of its own.
    other = spec((IN_FLIGHT, 10), maximum=20)
    assert manager.recommend("web", other).recommended_replicas == 10  # seeded: current


def test_histories_are_bounded() -> None:
    fleet = Fleet()
    manager = fleet.manager()
    for n in range(MAX_HISTORIES + 5):
        manager.recommend(f"s{n}", spec((IN_FLIGHT, 10)))
    assert len(manager._histories) == MAX_HISTORIES


def test_keda_values_are_totals_rates_and_the_recommendation() -> None:
    fleet = Fleet()
    fleet.loads["web"] = [10, 30]
    fleet.rate = 12.5
    manager = fleet.manager()
    value = lambda **m: manager.value(parse_metadata({"service": "web", **m}))  # noqa: E731
    assert value(metric="inFlight", target="5") == 40.0
    assert value(metric="cpu", target="0.5") == pytest.approx(0.4)
    assert value(metric="callsPerSecond", target="5") == 12.5
    assert value(metric="errorRate", target="0.1") == 0.25
    assert value(metric="recommendedReplicas", targetInFlight="5", maxReplicas="6") == 6.0


def test_a_trigger_names_its_metric_and_takes_defaults() -> None:
    query = parse_metadata({"service": "web", "metric": "inFlight", "target": "7.5"})
    assert (query.metric_name, query.target, query.activation) == ("bulwark-web-inflight", 7.5, 0)
    recommended = parse_metadata(
        {
            "service": "web",
            "metric": "recommendedReplicas",
            "targetCpu": "0.6",
            "maxReplicas": "9",
            "scaleDownStabilizationSeconds": "60",
        }
    )
    assert recommended.target == 1.0 and recommended.spec is not None
    settings = hpa_settings(recommended.spec)
    assert (settings.max_replicas, settings.scale_down_window_seconds) == (9, 60.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.ClearField("targets"), "spec.targets"),
        (lambda s: s.targets.add(metric=IN_FLIGHT, target=3), "spec.targets[1].metric"),
        (lambda s: setattr(s.targets[0], "target", 0), "spec.targets[0].target"),
        (lambda s: setattr(s.targets[0], "metric", 99), "spec.targets[0].metric"),
        (lambda s: setattr(s, "max_replicas", 0), "spec.max_replicas"),
        (lambda s: setattr(s, "min_replicas", 11), "spec.max_replicas"),
        (lambda s: setattr(s, "tolerance", 2.0), "spec.tolerance"),
        (lambda s: s.scale_down_stabilization.FromSeconds(4000), "spec.scale_down_stabilization"),
    ],
)
def test_a_bad_spec_names_its_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    bad = spec((IN_FLIGHT, 10))
    hpa_settings(bad)
    change(bad)
    with pytest.raises(InvalidArgument) as caught:
        hpa_settings(bad)
    assert caught.value.field == field
