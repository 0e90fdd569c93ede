"""Unit tests for bulwark_server.remediation.hpa: Kubernetes' HPA arithmetic and stabilization."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bulwark_server.remediation.hpa import (
    Autoscaler,
    HpaSettings,
    Metric,
    TargetType,
    desired_replicas,
    replicas_for_metric,
)

AVG = TargetType.AVERAGE_VALUE
T0 = 1_700_000_000.0
SETTINGS = HpaSettings(max_replicas=20)


def cpu(millis: float, target: float = 100.0) -> Metric:
    return Metric("cpu", AVG, target, millis)


# Algorithm details: the Kubernetes documentation's examples.


def test_doc_example_200m_over_100m_doubles_the_replicas() -> None:
    assert replicas_for_metric(3, cpu(200.0)) == 6
    rec = desired_replicas(3, [cpu(200.0)], SETTINGS)
    assert (rec.replicas, rec.desired, rec.reason, rec.metric) == (6, 6, "scale up", "cpu")


def test_doc_example_50m_over_100m_halves_the_replicas() -> None:
    assert replicas_for_metric(4, cpu(50.0)) == 2
    rec = desired_replicas(4, [cpu(50.0)], SETTINGS)
    assert (rec.replicas, rec.reason) == (2, "scale down")


@pytest.mark.parametrize("millis", [90.0, 95.0, 105.0, 110.0])
def test_a_ratio_within_tolerance_changes_nothing(millis: float) -> None:
    # Unclamped, 10 replicas at 110m would ask for 11 and at 90m for 9.
    rec = desired_replicas(10, [cpu(millis)], SETTINGS)
    assert (rec.replicas, rec.reason) == (10, "within tolerance")


@pytest.mark.parametrize(("millis", "expected"), [(111.0, 12), (89.0, 9)])
def test_a_ratio_just_outside_tolerance_scales(millis: float, expected: int) -> None:
    assert desired_replicas(10, [cpu(millis)], SETTINGS).replicas == expected


def test_tolerance_is_configurable() -> None:
    assert replicas_for_metric(10, cpu(105.0), tolerance=0.0) == 11
    settings = HpaSettings(max_replicas=20, tolerance=0.3)
    assert desired_replicas(10, [cpu(125.0)], settings).replicas == 10


def test_the_result_is_rounded_up() -> None:
    assert replicas_for_metric(3, cpu(150.0)) == 5  # 4.5
    assert replicas_for_metric(3, cpu(130.0)) == 4  # 3.9
    assert replicas_for_metric(4, cpu(60.0)) == 3  # 2.4


def test_binary_noise_does_not_add_a_replica() -> None:
    # 2 * 2.1 / 0.7 is 6.000000000000001 in floating point.
    assert replicas_for_metric(2, Metric("rps", AVG, 0.7, 2.1)) == 6


def test_a_value_metric_is_a_total_for_the_service() -> None:
    queue = Metric("queue", TargetType.VALUE, 300.0, 900.0)
    assert replicas_for_metric(2, queue) == 6
    assert replicas_for_metric(5, queue) == 15
    assert replicas_for_metric(4, Metric("queue", TargetType.VALUE, 300.0, 310.0)) == 4


# Clamping and the special current counts.


def test_a_recommendation_above_max_replicas_is_clamped() -> None:
    rec = desired_replicas(5, [cpu(400.0)], HpaSettings(max_replicas=10))
    assert (rec.replicas, rec.desired, rec.reason) == (10, 20, "clamped to max_replicas")


def test_a_recommendation_below_min_replicas_is_clamped() -> None:
    rec = desired_replicas(4, [cpu(10.0)], HpaSettings(min_replicas=2, max_replicas=10))
    assert (rec.replicas, rec.desired, rec.reason) == (2, 1, "clamped to min_replicas")


def test_current_replicas_outside_the_range_go_to_the_bound_first() -> None:
    settings = HpaSettings(min_replicas=3, max_replicas=10)
    above = desired_replicas(15, [cpu(500.0)], settings)
    assert (above.replicas, above.desired, above.reason) == (
        10,
        None,
        "current replicas above max_replicas",
    )
    below = desired_replicas(1, [cpu(10.0)], settings)
    assert (below.replicas, below.reason) == (3, "current replicas below min_replicas")


def test_zero_current_replicas_disables_scaling() -> None:
    rec = desired_replicas(0, [cpu(500.0)], SETTINGS)
    assert (rec.replicas, rec.reason) == (0, "scaling disabled: current replicas is 0")


# Several metrics, and metrics that did not arrive.


def test_the_largest_recommendation_across_metrics_wins() -> None:
    memory = Metric("memory", AVG, 512.0, 128.0)  # asks for 1
    rps = Metric("rps", TargetType.VALUE, 1000.0, 1500.0)  # asks for 6
    for metrics in ([memory, cpu(200.0), rps], [rps, memory, cpu(200.0)]):
        rec = desired_replicas(4, metrics, SETTINGS)
        assert (rec.replicas, rec.metric) == (8, "cpu")
    assert desired_replicas(4, [memory, rps], SETTINGS).replicas == 6


def test_one_metric_within_tolerance_keeps_a_scale_down_from_another() -> None:
    rec = desired_replicas(4, [cpu(100.0), Metric("memory", AVG, 512.0, 128.0)], SETTINGS)
    assert (rec.replicas, rec.reason) == (4, "no change")


def test_an_unavailable_metric_blocks_a_scale_down_but_not_a_scale_up() -> None:
    gone = Metric("memory", AVG, 512.0, None)
    down = desired_replicas(4, [cpu(50.0), gone], SETTINGS)
    assert (down.replicas, down.reason) == (4, "scale down skipped: a metric is unavailable")
    up = desired_replicas(4, [cpu(200.0), gone], SETTINGS)
    assert (up.replicas, up.reason) == (8, "scale up")


def test_no_available_metric_holds() -> None:
    for metrics in ([], [Metric("cpu", AVG, 100.0, None)]):
        rec = desired_replicas(4, metrics, SETTINGS)
        assert (rec.replicas, rec.reason) == (4, "no metrics available")
    with pytest.raises(ValueError, match="unavailable"):
        replicas_for_metric(4, Metric("cpu", AVG, 100.0, None))


def test_average_of_takes_the_mean_of_the_reporting_instances() -> None:
    metric = Metric.average_of("cpu", [100.0, 300.0], 100.0)
    assert (metric.current, metric.reporting) == (200.0, 2)
    assert replicas_for_metric(2, metric) == 4
    assert Metric.average_of("cpu", [], 100.0).current is None


def test_silent_instances_count_as_the_target_on_a_scale_down() -> None:
    # 2 of 4 report 20m: counting the silent two at 100m gives 240m in all, so 3, not 1.
    assert replicas_for_metric(4, Metric("cpu", AVG, 100.0, 20.0, reporting=2)) == 3


def test_silent_instances_count_as_zero_on_a_scale_up() -> None:
    # 8 of 10 report 130m: 1040m over 10 replicas is within tolerance; 8 alone would say 11.
    assert replicas_for_metric(10, Metric("cpu", AVG, 100.0, 130.0, reporting=8)) == 10
    # 8 of 10 at 200m: 1600m still asks for 16.
    assert replicas_for_metric(10, Metric("cpu", AVG, 100.0, 200.0, reporting=8)) == 16


def test_silent_instances_never_reverse_the_direction() -> None:
    # 5 of 10 at 150m: 750m over 10 would be a scale-down, which the readings never asked for.
    assert replicas_for_metric(10, Metric("cpu", AVG, 100.0, 150.0, reporting=5)) == 10


# Stabilization.


def test_a_brief_dip_does_not_scale_down() -> None:
    scaler = Autoscaler(SETTINGS)
    assert scaler.recommend(4, [cpu(200.0)], T0).replicas == 8
    dip = scaler.recommend(8, [cpu(50.0)], T0 + 30)
    assert (dip.replicas, dip.desired) == (8, 4)
    assert dip.reason == "held by the scale-down stabilization window"
    assert scaler.recommend(8, [cpu(100.0)], T0 + 60).replicas == 8


@pytest.mark.parametrize("scale_up_window", [0.0, 600.0])
def test_the_scale_down_window_releases_after_300_seconds(scale_up_window: float) -> None:
    # A longer scale-up window keeps older entries around; the 300 s still counts.
    scaler = Autoscaler(HpaSettings(max_replicas=20, scale_up_window_seconds=scale_up_window))
    assert scaler.recommend(4, [cpu(100.0)], T0).replicas == 4
    assert scaler.recommend(4, [cpu(50.0)], T0 + 60).replicas == 4
    assert scaler.recommend(4, [cpu(50.0)], T0 + 299).replicas == 4
    rec = scaler.recommend(4, [cpu(50.0)], T0 + 300)
    assert (rec.replicas, rec.reason) == (2, "scale down")


def test_a_scale_down_goes_to_the_highest_recommendation_in_the_window() -> None:
    scaler = Autoscaler(SETTINGS)
    scaler.recommend(8, [cpu(100.0)], T0)
    assert scaler.recommend(8, [cpu(75.0)], T0 + 100).replicas == 8  # asks for 6
    assert scaler.recommend(8, [cpu(50.0)], T0 + 200).replicas == 8  # asks for 4
    rec = scaler.recommend(8, [cpu(50.0)], T0 + 300)
    assert (rec.replicas, rec.desired) == (6, 4)
    assert rec.reason == "held by the scale-down stabilization window"


def test_a_fresh_autoscaler_holds_a_scale_down_for_one_window() -> None:
    assert Autoscaler(SETTINGS).recommend(4, [cpu(50.0)], T0).replicas == 4
    no_window = HpaSettings(max_replicas=20, scale_down_window_seconds=0)
    assert Autoscaler(no_window).recommend(4, [cpu(50.0)], T0).replicas == 2


def test_a_scale_up_is_applied_at_once() -> None:
    scaler = Autoscaler(SETTINGS)
    assert scaler.recommend(4, [cpu(100.0)], T0).replicas == 4
    rec = scaler.recommend(4, [cpu(300.0)], T0 + 1)
    assert (rec.replicas, rec.reason) == (12, "scale up")


def test_a_scale_up_window_takes_the_lowest_recommendation_in_it() -> None:
    scaler = Autoscaler(HpaSettings(max_replicas=20, scale_up_window_seconds=60))
    assert scaler.recommend(2, [cpu(100.0)], T0).replicas == 2
    held = scaler.recommend(2, [cpu(200.0)], T0 + 10)  # asks for 4
    assert (held.replicas, held.desired) == (2, 4)
    assert held.reason == "held by the scale-up stabilization window"
    assert scaler.recommend(2, [cpu(300.0)], T0 + 30).replicas == 2  # asks for 6
    assert scaler.recommend(2, [cpu(300.0)], T0 + 60).replicas == 4  # T0's 2 has left
    rec = scaler.recommend(2, [cpu(300.0)], T0 + 70)  # and T0 + 10's 4
    assert (rec.replicas, rec.reason) == (6, "scale up")


def test_stabilized_results_are_still_clamped() -> None:
    scaler = Autoscaler(HpaSettings(max_replicas=10))
    rec = scaler.recommend(5, [cpu(400.0)], T0)
    assert (rec.replicas, rec.desired, rec.reason) == (10, 20, "clamped to max_replicas")


def test_the_history_is_bounded_by_the_longest_window() -> None:
    scaler = Autoscaler(SETTINGS)
    for step in range(361):
        scaler.recommend(4, [cpu(100.0)], T0 + 10 * step)
    now = T0 + 3600
    assert len(scaler.history) == 30
    assert all(now - 300 < t <= now for t, _ in scaler.history)

    longer_up = Autoscaler(HpaSettings(max_replicas=20, scale_up_window_seconds=600))
    for step in range(361):
        longer_up.recommend(4, [cpu(100.0)], T0 + 10 * step)
    assert len(longer_up.history) == 60

    no_windows = HpaSettings(max_replicas=20, scale_down_window_seconds=0)
    instant = Autoscaler(no_windows)
    for step in range(10):
        instant.recommend(4, [cpu(100.0)], T0 + step)
    assert instant.history == ((T0 + 9, 4),)


def test_only_metric_recommendations_enter_the_history() -> None:
    scaler = Autoscaler(HpaSettings(min_replicas=2, max_replicas=10))
    scaler.recommend(15, [cpu(100.0)], T0)
    scaler.recommend(0, [cpu(100.0)], T0 + 1)
    scaler.recommend(4, [], T0 + 2)
    assert scaler.history == ()


def test_time_must_not_go_backwards() -> None:
    scaler = Autoscaler(SETTINGS)
    scaler.recommend(4, [cpu(100.0)], T0)
    with pytest.raises(ValueError, match="now must not go backwards"):
        scaler.recommend(4, [cpu(100.0)], T0 - 1)
    with pytest.raises(ValueError, match="now must be a finite number"):
        scaler.recommend(4, [cpu(100.0)], math.nan)


# Validation.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_replicas": 2, "min_replicas": 3}, "max_replicas must be >= min_replicas"),
        ({"max_replicas": 5, "min_replicas": 0}, "min_replicas must be an integer >= 1"),
        ({"max_replicas": 0}, "max_replicas must be an integer >= 1"),
        ({"max_replicas": True}, "max_replicas must be an integer >= 1"),
        ({"max_replicas": 5.0}, "max_replicas must be an integer >= 1"),
        ({"max_replicas": 5, "tolerance": -0.1}, "tolerance must be a finite number >= 0"),
        ({"max_replicas": 5, "tolerance": math.nan}, "tolerance must be a finite number"),
        (
            {"max_replicas": 5, "scale_down_window_seconds": -1},
            "scale_down_window_seconds must be a finite number >= 0",
        ),
        (
            {"max_replicas": 5, "scale_down_window_seconds": 3601},
            "scale_down_window_seconds must be <= 3600",
        ),
        (
            {"max_replicas": 5, "scale_up_window_seconds": math.inf},
            "scale_up_window_seconds must be a finite number >= 0",
        ),
    ],
)
def test_bad_settings_raise_naming_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HpaSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_are_immutable_and_default_like_kubernetes() -> None:
    settings = HpaSettings(max_replicas=5)
    assert (settings.min_replicas, settings.tolerance) == (1, 0.1)
    assert (settings.scale_down_window_seconds, settings.scale_up_window_seconds) == (300, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_replicas = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cpu", AVG, 0.0, 50.0), r"target must be a finite number > 0 \(metric 'cpu'\)"),
        (("cpu", AVG, -1.0, 50.0), "target must be a finite number > 0"),
        (("cpu", AVG, math.nan, 50.0), "target must be a finite number > 0"),
        (("cpu", AVG, 100.0, -5.0), r"current must be a finite number >= 0 \(metric 'cpu'\)"),
        (("cpu", AVG, 100.0, 50.0, 0), "reporting must be an integer >= 1"),
        (("q", TargetType.VALUE, 100.0, 50.0, 2), "reporting applies to AverageValue only"),
        (("cpu", "AverageValue", 100.0, 50.0), "type must be a TargetType"),
    ],
)
def test_bad_metrics_raise_naming_the_field(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric(*args)  # type: ignore[arg-type]


def test_current_replicas_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="current_replicas"):
        desired_replicas(-1, [cpu(100.0)], SETTINGS)
    with pytest.raises(ValueError, match="current_replicas"):
        replicas_for_metric(0, cpu(100.0))
