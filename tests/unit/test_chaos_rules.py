"""chaos.rules: what a fault rule and an experiment spec must be, named field by field,
and the blast-radius caps (FailedPrecondition). Pure: ``now`` is an argument."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from bulwark.v1 import breaker_pb2, feature_pb2
from bulwark.v1 import chaos_pb2 as C
from bulwark_server.chaos import rules
from bulwark_server.errors import FailedPrecondition, InvalidArgument

NOW = 1_800_000_000.0
NAN, INF = float("nan"), float("inf")
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE


def _at(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _s(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def fault_rule(**fields: object) -> C.FaultRule:
    """A valid rule (a 10 % fixed delay, a 10 % UNAVAILABLE abort, 60 s left) with
    ``fields`` replaced."""
    fields.setdefault("name", "slow-payments")
    fields.setdefault("expires_at", _at(NOW + 60))
    if "delay" not in fields and "abort" not in fields:
        fields["delay"] = C.FaultDelay(fixed=_s(0.2), percentage=10)
        fields["abort"] = C.FaultAbort(code=14, percentage=10)
    return C.FaultRule(**fields)  # type: ignore[arg-type]


def invalid(check: Callable[[], object]) -> str:
    """The field the InvalidArgument names."""
    with pytest.raises(InvalidArgument) as caught:
        check()
    return caught.value.field


def rule_field(**fields: object) -> str:
    return invalid(lambda: rules.check_rule(fault_rule(**fields), NOW))


# -- fault rules ------------------------------------------------------------------------


def test_a_valid_rule_passes_and_header_control_needs_no_amount() -> None:
    rules.check_rule(fault_rule(), NOW)
    rules.check_rule(fault_rule(delay=C.FaultDelay(header_controlled=True, percentage=100)), NOW)
    # Code 0 is allowed only with header control: the header names the code.
    rules.check_rule(fault_rule(abort=C.FaultAbort(header_controlled=True, percentage=5)), NOW)
    rules.check_rule(
        fault_rule(
            target=C.FaultTarget(method="/pay.v1.Payments/", headers={"x-chaos": "1"}),
            delay=C.FaultDelay(uniform=C.DelayRange(min=_s(0.1), max=_s(0.1)), percentage=0),
            max_active_faults=rules.MAX_ACTIVE_FAULTS,
            expires_at=_at(NOW + rules.MAX_RULE_LIFETIME_S),
        ),
        NOW,
    )


@pytest.mark.parametrize("value", [-0.1, 100.01, NAN, INF, -INF])
def test_percentages_out_of_range_or_not_finite_are_refused(value: float) -> None:
    assert rule_field(delay=C.FaultDelay(fixed=_s(1), percentage=value)) == "rule.delay.percentage"
    assert rule_field(abort=C.FaultAbort(code=14, percentage=value)) == "rule.abort.percentage"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "rule.name"),
        ({"name": "has space"}, "rule.name"),
        ({"delay": C.FaultDelay(percentage=10)}, "rule.delay.fixed"),
        ({"delay": C.FaultDelay(fixed=_s(3600.5), percentage=1)}, "rule.delay.fixed"),
        ({"delay": C.FaultDelay(fixed=_s(-1), percentage=1)}, "rule.delay.fixed"),
        (
            {"delay": C.FaultDelay(exponential_mean=_s(0), percentage=1)},
            "rule.delay.exponential_mean",
        ),
        (
            {"delay": C.FaultDelay(uniform=C.DelayRange(min=_s(2), max=_s(1)), percentage=1)},
            "rule.delay.uniform.max",
        ),
        (
            {"delay": C.FaultDelay(uniform=C.DelayRange(min=_s(3601), max=_s(3602)))},
            "rule.delay.uniform.min",
        ),
        ({"abort": C.FaultAbort(code=0, percentage=1)}, "rule.abort.code"),
        ({"abort": C.FaultAbort(code=17, percentage=1)}, "rule.abort.code"),
        ({"abort": C.FaultAbort(code=-1, percentage=1)}, "rule.abort.code"),
        ({"abort": C.FaultAbort(code=17, header_controlled=True)}, "rule.abort.code"),
        ({"abort": C.FaultAbort(code=14, message="bad\nline")}, "rule.abort.message"),
        ({"max_active_faults": -1}, "rule.max_active_faults"),
        ({"max_active_faults": rules.MAX_ACTIVE_FAULTS + 1}, "rule.max_active_faults"),
        ({"description": "x" * 257}, "rule.description"),
    ],
)
def test_each_wrong_field_is_named(fields: dict[str, object], field: str) -> None:
    assert rule_field(**fields) == field


def test_a_rule_needs_a_delay_or_an_abort() -> None:
    bare = fault_rule()
    bare.ClearField("delay")
    bare.ClearField("abort")
    with pytest.raises(InvalidArgument, match="a delay, an abort or both") as caught:
        rules.check_rule(bare, NOW)
    assert caught.value.field == "rule.delay"


def test_every_rule_expires_in_the_future_and_within_a_day() -> None:
    missing = fault_rule()
    missing.ClearField("expires_at")
    with pytest.raises(InvalidArgument, match="every fault rule expires") as caught:
        rules.check_rule(missing, NOW)
    assert caught.value.field == "rule.expires_at"
    for when in (NOW - 1, NOW, NOW + rules.MAX_RULE_LIFETIME_S + 1):
        assert rule_field(expires_at=_at(when)) == "rule.expires_at"
    bad_nanos = timestamp_pb2.Timestamp(seconds=int(NOW) + 60, nanos=-1)
    assert rule_field(expires_at=bad_nanos) == "rule.expires_at"
    with pytest.raises(InvalidArgument, match="in the future"):
        rules.check_rule(fault_rule(expires_at=_at(NOW - 1)), NOW)
    with pytest.raises(InvalidArgument, match="24 h"):
        rules.check_rule(fault_rule(expires_at=_at(NOW + 86401)), NOW)


@pytest.mark.parametrize(
    "method",
    [
        "pay.v1.Payments/Charge",  # no leading slash
        "/pay.v1.Payments",  # no method part
        "/pay.v1.Payments/Charge/",  # three slashes
        "/pay.v1.Payments/Charge/More",
        "//Charge",  # no service
        "/pay.v1 Payments/Charge",  # a space
        "/",
    ],
)
def test_a_method_is_a_full_gRPC_path_or_a_service_prefix(method: str) -> None:
    assert rule_field(target=C.FaultTarget(method=method)) == "rule.target.method"


@pytest.mark.parametrize("method", ["/pay.v1.Payments/Charge", "/pay.v1.Payments/", ""])
def test_good_methods_pass(method: str) -> None:
    rules.check_rule(fault_rule(target=C.FaultTarget(method=method)), NOW)


@pytest.mark.parametrize("key", ["X-Test", "", "x test", "x-test\t", "x:y", "x-data-bin"])
def test_header_keys_are_lower_case_ascii_metadata_keys(key: str) -> None:
    assert rule_field(target=C.FaultTarget(headers={key: "1"})) == "rule.target.headers"


def test_header_values_count_and_the_other_target_fields_are_checked() -> None:
    assert rule_field(target=C.FaultTarget(headers={"x-test": "a\x00"})) == (
        "rule.target.headers[x-test]"
    )
    many = {f"x-{i}": "1" for i in range(rules.MAX_HEADERS + 1)}
    assert rule_field(target=C.FaultTarget(headers=many)) == "rule.target.headers"
    assert rule_field(target=C.FaultTarget(downstream="not a name")) == "rule.target.downstream"
    assert rule_field(target=C.FaultTarget(source_service="s" * 257)) == (
        "rule.target.source_service"
    )
    assert rule_field(target=C.FaultTarget(source_instance="i\n")) == (
        "rule.target.source_instance"
    )
    rules.check_rule(
        fault_rule(target=C.FaultTarget(headers={"x-env_1.a": "canary"}, downstream="pay")), NOW
    )


def test_a_rule_is_small() -> None:
    long_method = C.FaultTarget(method="/pay.v1.Payments/" + "M" * 20_000)
    assert rule_field(target=long_method) == "rule"
    long_key = C.FaultTarget(headers={"x" * 20_000: "1"})
    assert rule_field(target=long_key) == "rule"
    step = C.MethodStep(fault=C.FaultRule(abort=C.FaultAbort(code=14), target=long_method))
    assert spec_field(method=[step]) == "spec.method[0].fault"


def test_the_where_prefix_names_the_field_in_its_message() -> None:
    field = invalid(lambda: rules.check_rule(fault_rule(name=""), NOW, "spec.method[2].fault"))
    assert field == "spec.method[2].fault.name"


def test_max_percentage_is_the_larger_of_delay_and_abort() -> None:
    assert rules.max_percentage(fault_rule()) == 10
    both = fault_rule(
        delay=C.FaultDelay(fixed=_s(1), percentage=30), abort=C.FaultAbort(code=2, percentage=45)
    )
    assert rules.max_percentage(both) == 45
    assert rules.max_percentage(C.FaultRule(delay=C.FaultDelay(percentage=70))) == 70
    assert rules.max_percentage(C.FaultRule()) == 0


# -- experiment specs -------------------------------------------------------------------


def spec(**fields: object) -> C.ExperimentSpec:
    """A valid spec (a 10 % abort for 30 s) with ``fields`` replaced."""
    fields.setdefault("duration", _s(30))
    fields.setdefault(
        "method", [C.MethodStep(fault=C.FaultRule(abort=C.FaultAbort(code=14, percentage=10)))]
    )
    return C.ExperimentSpec(**fields)  # type: ignore[arg-type]


def spec_field(**fields: object) -> str:
    return invalid(lambda: rules.check_spec(spec(**fields), NOW))


def breaker_probe(**want: int) -> C.Probe:
    return C.Probe(breaker=C.BreakerProbe(breaker="payments", **want))


def feature_probe(**want: int) -> C.Probe:
    return C.Probe(feature=C.FeatureProbe(feature="express", **want))


def error_probe(below: float, window: float | None = None) -> C.Probe:
    probe = C.ErrorRateProbe(service="payments", below=below)
    if window is not None:
        probe.window.CopyFrom(_s(window))
    return C.Probe(error_rate=probe)


def step(**kind: object) -> C.MethodStep:
    return C.MethodStep(**kind)  # type: ignore[arg-type]


def load(**fields: object) -> C.MethodStep:
    fields.setdefault("address", "127.0.0.1:50051")
    fields.setdefault("method", "pay.v1.Payments/Charge")
    fields.setdefault("rate", 10)
    return step(load=C.LoadStep(**fields))  # type: ignore[arg-type]


def test_a_valid_spec_returns_its_duration_and_the_defaults_apply() -> None:
    full = spec(
        title="payments outage",
        hypothesis=[
            breaker_probe(not_state=breaker_pb2.BREAKER_STATE_OPEN),
            feature_probe(status=AVAILABLE),
            error_probe(0.05, window=30),
            C.Probe(primary=C.PrimaryProbe(service="payments")),
        ],
        method=[
            step(fault=C.FaultRule(delay=C.FaultDelay(fixed=_s(1), percentage=50))),
            step(switchover="payments"),
            step(force_breaker=C.ForceBreakerStep(breaker="payments", state=FORCED_OPEN)),
            step(drain=C.DrainStep(service="payments", count=1)),
            load(metadata={"x-chaos": "1"}, timeout=_s(1), report_as="payments"),
            load(address="[::1]:50051", method="Svc/M"),
        ],
        expectations=[
            C.Expectation(probe=breaker_probe(state=FORCED_OPEN), within=_s(30)),
            C.Expectation(probe=feature_probe(status=AVAILABLE), within=_s(3600), after_end=True),
        ],
        rollbacks=[
            C.Rollback(force_breaker=C.ForceBreakerStep(breaker="payments", state=CLOSED)),
            C.Rollback(set_feature=C.SetFeatureRollback(feature="express", status=AVAILABLE)),
        ],
        renew_within=_s(10),
        check_interval=_s(0.1),
        expected_alerts=['BulwarkBreakerOpen{breaker="payments"}'],
    )
    assert rules.check_spec(full, NOW) == 30
    assert rules.traffic_cap(full) == rules.DEFAULT_TRAFFIC_CAP == 50
    assert rules.instance_cap(full) == rules.DEFAULT_INSTANCE_CAP == 50
    assert rules.check_interval(spec()) == rules.DEFAULT_CHECK_INTERVAL_S
    assert rules.check_interval(spec(check_interval=_s(2.5))) == 2.5
    capped = spec(blast_radius=C.BlastRadius(max_traffic_percentage=5, max_instance_percentage=20))
    assert (rules.traffic_cap(capped), rules.instance_cap(capped)) == (5, 20)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "a\nb"}, "spec.title"),
        ({"duration": _s(0)}, "spec.duration"),
        ({"duration": _s(0.5)}, "spec.duration"),
        ({"duration": _s(86401)}, "spec.duration"),
        ({"method": []}, "spec.method"),
        ({"hypothesis": [feature_probe(status=AVAILABLE)] * 33}, "spec.hypothesis"),
        ({"method": [step(switchover="a")] * 33}, "spec.method"),
        ({"rollbacks": [C.Rollback()] * 33}, "spec.rollbacks"),
        ({"expected_alerts": ["A"] * 33}, "spec.expected_alerts"),
        ({"renew_within": _s(0.5)}, "spec.renew_within"),
        ({"renew_within": _s(3601)}, "spec.renew_within"),
        ({"check_interval": _s(0.05)}, "spec.check_interval"),
        ({"check_interval": _s(11)}, "spec.check_interval"),
        ({"expected_alerts": ["not an alert"]}, "spec.expected_alerts[0]"),
        ({"expected_alerts": ["A", "B{breaker=payments}"]}, "spec.expected_alerts[1]"),
        ({"expected_alerts": ['A{x="' + "v" * 300 + '"}']}, "spec.expected_alerts[0]"),
        ({"expected_alerts": ['A{x="a\nb"}']}, "spec.expected_alerts[0]"),
    ],
)
def test_each_wrong_spec_field_is_named(fields: dict[str, object], field: str) -> None:
    assert spec_field(**fields) == field


@pytest.mark.parametrize(
    ("probe", "field"),
    [
        (C.Probe(), "breaker"),
        (C.Probe(name="x\n", primary=C.PrimaryProbe(service="a")), "name"),
        (C.Probe(breaker=C.BreakerProbe(breaker="payments")), "breaker.state"),
        (C.Probe(breaker=C.BreakerProbe(state=FORCED_OPEN)), "breaker.breaker"),
        (breaker_probe(state=0), "breaker.state"),
        (breaker_probe(not_state=0), "breaker.not_state"),
        (breaker_probe(state=99), "breaker.state"),
        (breaker_probe(not_state=99), "breaker.not_state"),
        (C.Probe(feature=C.FeatureProbe(feature="express")), "feature.status"),
        (C.Probe(feature=C.FeatureProbe(status=AVAILABLE)), "feature.feature"),
        (feature_probe(status=0), "feature.status"),
        (feature_probe(not_status=9), "feature.not_status"),
        (error_probe(0), "error_rate.below"),
        (error_probe(1.5), "error_rate.below"),
        (error_probe(NAN), "error_rate.below"),
        (error_probe(0.1, window=0.5), "error_rate.window"),
        (error_probe(0.1, window=3601), "error_rate.window"),
        (C.Probe(error_rate=C.ErrorRateProbe(below=0.1)), "error_rate.service"),
        (C.Probe(primary=C.PrimaryProbe()), "primary.service"),
    ],
)
def test_probes_name_their_wrong_field(probe: C.Probe, field: str) -> None:
    assert spec_field(hypothesis=[probe]) == f"spec.hypothesis[0].{field}"
    expectation = C.Expectation(probe=probe)
    assert spec_field(expectations=[expectation]) == f"spec.expectations[0].probe.{field}"


def test_a_spec_too_large_for_its_record_is_refused_whole() -> None:
    data = "x" * 60_000  # each load's data is within its 64 KiB; five are not
    assert spec_field(method=[load(data=data)] * 5) == "spec"
    assert rules.check_spec(spec(method=[load(data=data)] * 4), NOW) == 30


def test_an_expectation_has_at_most_an_hour() -> None:
    late = C.Expectation(probe=feature_probe(status=AVAILABLE), within=_s(3601), after_end=True)
    assert spec_field(expectations=[late]) == "spec.expectations[0].within"


def test_an_expectation_during_the_method_fits_in_the_method() -> None:
    # Looked for only while the method is in effect: 31 s of a 30 s method could
    # never be met after the 30th.
    past = C.Expectation(probe=feature_probe(status=AVAILABLE), within=_s(31))
    assert spec_field(expectations=[past]) == "spec.expectations[0].within"
    for fits in (
        C.Expectation(probe=feature_probe(status=AVAILABLE), within=_s(30)),
        C.Expectation(probe=feature_probe(status=AVAILABLE), within=_s(31), after_end=True),
    ):
        assert rules.check_spec(spec(expectations=[fits]), NOW) == 30


@pytest.mark.parametrize("value", [0.5, 100.5, -1, NAN, INF])
def test_the_blast_radius_is_1_to_100_or_unset(value: float) -> None:
    for field in ("max_traffic_percentage", "max_instance_percentage"):
        blast = C.BlastRadius(**{field: value})
        assert spec_field(blast_radius=blast) == f"spec.blast_radius.{field}"


@pytest.mark.parametrize(
    ("method_step", "field"),
    [
        (step(), "fault"),
        (step(fault=C.FaultRule()), "fault.delay"),
        (step(fault=C.FaultRule(abort=C.FaultAbort(code=0, percentage=5))), "fault.abort.code"),
        (
            step(fault=C.FaultRule(delay=C.FaultDelay(fixed=_s(1), percentage=NAN))),
            "fault.delay.percentage",
        ),
        (
            step(fault=C.FaultRule(abort=C.FaultAbort(code=14), target=C.FaultTarget(method="x"))),
            "fault.target.method",
        ),
        (step(switchover="not a name"), "switchover"),
        (step(force_breaker=C.ForceBreakerStep(state=FORCED_OPEN)), "force_breaker.breaker"),
        (step(force_breaker=C.ForceBreakerStep(breaker="p", state=CLOSED)), "force_breaker.state"),
        (step(force_breaker=C.ForceBreakerStep(breaker="p")), "force_breaker.state"),
        (step(drain=C.DrainStep(count=1)), "drain.service"),
        (step(drain=C.DrainStep(service="api", count=1001)), "drain.count"),
        (step(drain=C.DrainStep(service="api", count=-1)), "drain.count"),
        (step(drain=C.DrainStep(service="api", instance_ids=[""])), "drain.instance_ids[0]"),
        (load(address="nohost"), "load.address"),
        (load(address=":50051"), "load.address"),
        (load(address="host:0"), "load.address"),
        (load(address="host:65536"), "load.address"),
        (load(address="host:http"), "load.address"),
        # On the loadtest command line these would read as options.
        (load(address="--bulwark=evil.example:1"), "load.address"),
        (load(method="-x/Charge"), "load.method"),
        (load(method="pay.v1.Payments/Charge --insecure"), "load.method"),
        (load(metadata={"X-Upper": "1"}), "load.metadata"),
        (load(metadata={"x y": "1"}), "load.metadata"),
        (load(metadata={"x-test": "a\nb"}), "load.metadata[x-test]"),
        (load(method="Charge"), "load.method"),
        (load(method="pay.v1.Payments/"), "load.method"),
        (load(rate=0), "load.rate"),
        (load(rate=100_001), "load.rate"),
        (load(rate=NAN), "load.rate"),
        (load(concurrency=10_001), "load.concurrency"),
        (load(timeout=_s(0)), "load.timeout"),
        (load(timeout=_s(61)), "load.timeout"),
        (load(data="x" * 65537), "load.data"),
        (load(report_as="not a name"), "load.report_as"),
    ],
)
def test_method_steps_name_their_wrong_field(method_step: C.MethodStep, field: str) -> None:
    assert spec_field(method=[method_step]) == f"spec.method[0].{field}"


def test_a_fault_step_needs_no_name_or_expiry_but_its_own_are_left_alone() -> None:
    fault = C.FaultRule(abort=C.FaultAbort(code=14, percentage=10))
    rules.check_spec(spec(method=[step(fault=fault)]), NOW)
    # The check works on a copy: the experiment sets the name and expiry later.
    assert fault.name == "" and not fault.HasField("expires_at")


def test_a_fault_step_above_the_blast_radius_fails_its_precondition() -> None:
    hot = step(fault=C.FaultRule(delay=C.FaultDelay(fixed=_s(1), percentage=60)))
    with pytest.raises(FailedPrecondition, match=r"spec.method\[1\].fault touches 60 %.* 50 %"):
        rules.check_spec(spec(method=[step(switchover="a"), hot]), NOW)
    # Not an InvalidArgument: the spec is well formed, the caps refuse it.
    with pytest.raises(FailedPrecondition):
        rules.check_spec(
            spec(method=[hot], blast_radius=C.BlastRadius(max_traffic_percentage=59)), NOW
        )
    raised = spec(method=[hot], blast_radius=C.BlastRadius(max_traffic_percentage=60))
    assert rules.check_spec(raised, NOW) == 30
    aborts = step(fault=C.FaultRule(abort=C.FaultAbort(code=14, percentage=51)))
    with pytest.raises(FailedPrecondition, match="51 %"):
        rules.check_spec(spec(method=[aborts]), NOW)


@pytest.mark.parametrize(
    ("rollback", "field"),
    [
        (C.Rollback(), "force_breaker"),
        (C.Rollback(force_breaker=C.ForceBreakerStep(breaker="p")), "force_breaker.state"),
        (
            C.Rollback(force_breaker=C.ForceBreakerStep(breaker="p", state=99)),
            "force_breaker.state",
        ),
        (C.Rollback(set_feature=C.SetFeatureRollback(status=AVAILABLE)), "set_feature.feature"),
        (C.Rollback(set_feature=C.SetFeatureRollback(feature="f")), "set_feature.status"),
        (C.Rollback(set_feature=C.SetFeatureRollback(feature="f", status=9)), "set_feature.status"),
    ],
)
def test_rollbacks_name_their_wrong_field(rollback: C.Rollback, field: str) -> None:
    assert spec_field(rollbacks=[rollback]) == f"spec.rollbacks[0].{field}"


def test_a_rollback_may_reset_a_breaker_where_a_method_may_not() -> None:
    reset = C.ForceBreakerStep(breaker="payments", state=CLOSED)
    rules.check_spec(spec(rollbacks=[C.Rollback(force_breaker=reset)]), NOW)
    assert spec_field(method=[step(force_breaker=reset)]) == "spec.method[0].force_breaker.state"


def test_expected_alerts_parse_into_a_name_and_exact_label_matchers() -> None:
    assert rules.parse_alert("BulwarkBreakerOpen", "f") == ("BulwarkBreakerOpen", {})
    assert rules.parse_alert(' A:b { x = "1", y="q\\"uote" } ', "f") == (
        "A:b",
        {"x": "1", "y": 'q"uote'},
    )
    assert rules.parse_alert("A{}", "f") == ("A", {})
    for bad in ("", "1abc", "A{x=1}", 'A{x="1"', 'A{"x"="1"}'):
        assert invalid(lambda bad=bad: rules.parse_alert(bad, "f")) == "f"


# -- drains -----------------------------------------------------------------------------


def test_a_drain_may_take_at_most_its_share_of_serving_instances() -> None:
    rules.drain_cap(2, 4, 50, "spec.method[0].drain")
    rules.drain_cap(1, 1, 100, "spec.method[0].drain")
    with pytest.raises(FailedPrecondition, match=r"drains 3 of 4 SERVING .* 50 %"):
        rules.drain_cap(3, 4, 50, "spec.method[0].drain")
    with pytest.raises(FailedPrecondition, match="drains 1 of 0"):
        rules.drain_cap(1, 0, 100, "spec.method[0].drain")
    with pytest.raises(FailedPrecondition, match=r"^spec.method\[3\].drain"):
        rules.drain_cap(1, 3, 30, "spec.method[3].drain")
