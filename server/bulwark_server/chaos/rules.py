"""What fault rules and experiments must be, and the caps that guard them. Pure.

A fault rule follows Envoy's fault filter and gRFC A33: a delay and/or an abort,
each on a percentage of the matching calls, at most ``max_active_faults`` at once,
header-controlled variants; unlike them, every rule here expires (at most a day
ahead), so a forgotten rule cannot outlive its purpose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from bulwark.v1 import breaker_pb2, chaos_pb2, feature_pb2
from bulwark_server.errors import FailedPrecondition, InvalidArgument
from bulwark_server.validation import (
    duration_seconds,
    timestamp_seconds,
    validate_id,
    validate_name,
)

MAX_RULE_LIFETIME_S = 24 * 3600.0
MAX_DELAY_S = 3600.0
MAX_HEADERS = 16
MAX_ACTIVE_FAULTS = 1_000_000
MAX_PROBES = 32
MAX_STEPS = 32
MAX_ROLLBACKS = 32
MAX_ALERTS = 32
MAX_LOAD_RATE = 100_000.0
DEFAULT_TRAFFIC_CAP = 50.0
DEFAULT_INSTANCE_CAP = 50.0
DEFAULT_CHECK_INTERVAL_S = 0.1
DEFAULT_ERROR_WINDOW_S = 10.0
# An experiment's record holds its spec, timeline and load reports in one etcd value
# (etcd refuses requests above 1.5 MiB by default): the spec gets at most this much.
MAX_SPEC_BYTES = 256 * 1024
MAX_RULE_BYTES = 16 * 1024
# The wire forms: a gRPC path (printable ASCII), a text metadata key, host and method
# of a load step (neither may start with "-", see _check_load).
_METHOD = re.compile(r"/[\x21-\x2e\x30-\x7e]+/[\x21-\x2e\x30-\x7e]*")
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_HOST = re.compile(r"[A-Za-z0-9_.\[][A-Za-z0-9_.:%\[\]-]*")
_LOAD_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*")
# What a method may force a breaker to (reset to CLOSED at its end), and a rollback.
METHOD_FORCES = {
    breaker_pb2.BREAKER_STATE_FORCED_OPEN: "FORCED_OPEN",
    breaker_pb2.BREAKER_STATE_DISABLED: "DISABLED",
    breaker_pb2.BREAKER_STATE_METRICS_ONLY: "METRICS_ONLY",
}
ROLLBACK_FORCES = {**METHOD_FORCES, breaker_pb2.BREAKER_STATE_CLOSED: "CLOSED (to reset)"}


def check_rule(rule: chaos_pb2.FaultRule, now: float, where: str = "rule") -> None:
    """InvalidArgument naming the first field of ``rule`` that is wrong."""
    if rule.ByteSize() > MAX_RULE_BYTES:
        # Every opted-in client holds every rule; a key or method of megabytes would
        # also fail in etcd, as UNAVAILABLE, as if a retry could help.
        raise InvalidArgument(where, f"at most {MAX_RULE_BYTES // 1024} KiB serialized")
    validate_name(rule.name, f"{where}.name")
    _check_target(rule.target, f"{where}.target")
    if not rule.HasField("delay") and not rule.HasField("abort"):
        raise InvalidArgument(f"{where}.delay", "a rule needs a delay, an abort or both")
    if rule.HasField("delay"):
        _check_delay(rule.delay, f"{where}.delay")
    if rule.HasField("abort"):
        _check_abort(rule.abort, f"{where}.abort")
    if not 0 <= rule.max_active_faults <= MAX_ACTIVE_FAULTS:
        raise InvalidArgument(f"{where}.max_active_faults", f"must be 0-{MAX_ACTIVE_FAULTS}")
    if not rule.HasField("expires_at"):
        raise InvalidArgument(f"{where}.expires_at", "is required: every fault rule expires")
    expires = timestamp_seconds(rule.expires_at, f"{where}.expires_at")
    if expires <= now:
        raise InvalidArgument(f"{where}.expires_at", "must be in the future")
    if expires > now + MAX_RULE_LIFETIME_S:
        raise InvalidArgument(f"{where}.expires_at", "must be at most 24 h ahead")
    validate_id(rule.description, f"{where}.description", required=False)


def _check_target(target: chaos_pb2.FaultTarget, where: str) -> None:
    for field in ("source_service", "source_instance"):
        validate_id(getattr(target, field), f"{where}.{field}", required=False)
    if target.downstream:
        validate_name(target.downstream, f"{where}.downstream")
    # A gRPC path is printable ASCII: "//", or one with a space, could never match a call.
    if target.method and not _METHOD.fullmatch(target.method):
        raise InvalidArgument(
            f"{where}.method", 'must be "/package.Service/Method" or "/package.Service/"'
        )
    _check_metadata(target.headers, f"{where}.headers")


def _check_metadata(metadata: Mapping[str, str], where: str) -> None:
    if len(metadata) > MAX_HEADERS:
        raise InvalidArgument(where, f"at most {MAX_HEADERS}")
    for key, value in metadata.items():
        # gRPC's metadata keys; a "-bin" key carries bytes, which a rule's text never equals.
        if not _METADATA_KEY.fullmatch(key) or key.endswith("-bin"):
            raise InvalidArgument(where, f"{key!r} is not a lower-case text metadata key")
        validate_id(value, f"{where}[{key}]", required=False)


def _percentage(value: float, field: str) -> None:
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise InvalidArgument(field, "must be 0-100")


def _check_delay(delay: chaos_pb2.FaultDelay, where: str) -> None:
    _percentage(delay.percentage, f"{where}.percentage")
    kind = delay.WhichOneof("delay")
    if kind is None and not delay.header_controlled:
        raise InvalidArgument(f"{where}.fixed", "set fixed, uniform or exponential_mean")
    if kind == "fixed":
        duration_seconds(delay.fixed, f"{where}.fixed", maximum=MAX_DELAY_S)
    elif kind == "exponential_mean":
        duration_seconds(
            delay.exponential_mean, f"{where}.exponential_mean", minimum=0.001, maximum=MAX_DELAY_S
        )
    elif kind == "uniform":
        low = duration_seconds(delay.uniform.min, f"{where}.uniform.min", maximum=MAX_DELAY_S)
        high = duration_seconds(delay.uniform.max, f"{where}.uniform.max", maximum=MAX_DELAY_S)
        if high < low:
            raise InvalidArgument(f"{where}.uniform.max", "must be at least min")


def _check_abort(abort: chaos_pb2.FaultAbort, where: str) -> None:
    _percentage(abort.percentage, f"{where}.percentage")
    if not abort.header_controlled and not 1 <= abort.code <= 16:
        raise InvalidArgument(f"{where}.code", "must be a gRPC status code 1-16 (not OK)")
    if abort.header_controlled and abort.code and not 1 <= abort.code <= 16:
        raise InvalidArgument(f"{where}.code", "must be 1-16, or 0 with header_controlled")
    validate_id(abort.message, f"{where}.message", required=False)


def max_percentage(rule: chaos_pb2.FaultRule) -> float:
    """The largest share of traffic the rule touches."""
    shares = [0.0]
    if rule.HasField("delay"):
        shares.append(rule.delay.percentage)
    if rule.HasField("abort"):
        shares.append(rule.abort.percentage)
    return max(shares)


# --------------------------------------------------------------------- experiments


def traffic_cap(spec: chaos_pb2.ExperimentSpec) -> float:
    return spec.blast_radius.max_traffic_percentage or DEFAULT_TRAFFIC_CAP


def instance_cap(spec: chaos_pb2.ExperimentSpec) -> float:
    return spec.blast_radius.max_instance_percentage or DEFAULT_INSTANCE_CAP


def check_interval(spec: chaos_pb2.ExperimentSpec) -> float:
    if spec.HasField("check_interval"):
        return spec.check_interval.ToNanoseconds() / 1e9
    return DEFAULT_CHECK_INTERVAL_S


def check_spec(spec: chaos_pb2.ExperimentSpec, now: float) -> float:
    """InvalidArgument naming the first wrong field; returns the duration in seconds."""
    if spec.ByteSize() > MAX_SPEC_BYTES:
        raise InvalidArgument("spec", f"at most {MAX_SPEC_BYTES // 1024} KiB serialized")
    validate_id(spec.title, "spec.title", required=False)
    duration = duration_seconds(spec.duration, "spec.duration", minimum=1, maximum=86400)
    if not spec.method:
        raise InvalidArgument("spec.method", "an experiment needs at least one step")
    for field, items, cap in (
        ("hypothesis", spec.hypothesis, MAX_PROBES),
        ("method", spec.method, MAX_STEPS),
        ("expectations", spec.expectations, MAX_PROBES),
        ("rollbacks", spec.rollbacks, MAX_ROLLBACKS),
        ("expected_alerts", spec.expected_alerts, MAX_ALERTS),
    ):
        if len(items) > cap:
            raise InvalidArgument(f"spec.{field}", f"at most {cap}")
    for i, probe in enumerate(spec.hypothesis):
        check_probe(probe, f"spec.hypothesis[{i}]")
    for i, expectation in enumerate(spec.expectations):
        check_probe(expectation.probe, f"spec.expectations[{i}].probe")
        field = f"spec.expectations[{i}].within"
        within = duration_seconds(expectation.within, field, maximum=3600)
        if within > duration and not expectation.after_end:
            # It is looked for only while the method is in effect: past its end it could
            # never be met, whatever the fleet did in its time.
            raise InvalidArgument(field, "must be at most spec.duration (or set after_end)")
    blast = spec.blast_radius
    for field in ("max_traffic_percentage", "max_instance_percentage"):
        value = getattr(blast, field)
        if not (math.isfinite(value) and (value == 0 or 1 <= value <= 100)):
            raise InvalidArgument(f"spec.blast_radius.{field}", "must be 1-100 (0: 50)")
    for i, step in enumerate(spec.method):
        _check_step(step, f"spec.method[{i}]", traffic_cap(spec), now)
    for i, rollback in enumerate(spec.rollbacks):
        _check_rollback(rollback, f"spec.rollbacks[{i}]")
    if spec.HasField("renew_within"):
        duration_seconds(spec.renew_within, "spec.renew_within", minimum=1, maximum=3600)
    if spec.HasField("check_interval"):
        duration_seconds(spec.check_interval, "spec.check_interval", minimum=0.1, maximum=10)
    for i, text in enumerate(spec.expected_alerts):
        # Bounded and printable before it is parsed: each becomes a stored silence.
        validate_id(text, f"spec.expected_alerts[{i}]")
        parse_alert(text, f"spec.expected_alerts[{i}]")
    return duration


_ALERT = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s*")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


def parse_alert(text: str, where: str) -> tuple[str, dict[str, str]]:
    """``Name`` or ``Name{label="value", ...}``: the alert name and its label matchers."""
    match = _ALERT.fullmatch(text)
    if match is None:
        raise InvalidArgument(where, 'must be an alert name, as Name or Name{label="value"}')
    labels: dict[str, str] = {}
    body = match.group(2)
    if body is not None and body.strip():
        for part in body.split(","):
            label = _LABEL.fullmatch(part)
            if label is None:
                raise InvalidArgument(where, f'{part.strip()!r} is not label="value"')
            labels[label.group(1)] = label.group(2).replace('\\"', '"')
    return match.group(1), labels


def check_probe(probe: chaos_pb2.Probe, where: str) -> None:
    validate_id(probe.name, f"{where}.name", required=False)
    kind = probe.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where}.breaker", "set breaker, feature, error_rate or primary")
    if kind == "breaker":
        validate_name(probe.breaker.breaker, f"{where}.breaker.breaker")
        want = probe.breaker.WhichOneof("want")
        if want is None:
            raise InvalidArgument(f"{where}.breaker.state", "set state or not_state")
        if getattr(probe.breaker, want) not in breaker_pb2.BreakerState.values()[1:]:
            raise InvalidArgument(f"{where}.breaker.{want}", "must be a breaker state")
    elif kind == "feature":
        validate_name(probe.feature.feature, f"{where}.feature.feature")
        want = probe.feature.WhichOneof("want")
        if want is None:
            raise InvalidArgument(f"{where}.feature.status", "set status or not_status")
        if getattr(probe.feature, want) not in (1, 2, 3):
            raise InvalidArgument(f"{where}.feature.{want}", "must be a feature status")
    elif kind == "error_rate":
        validate_name(probe.error_rate.service, f"{where}.error_rate.service")
        below = probe.error_rate.below
        if not (math.isfinite(below) and 0 < below <= 1):
            raise InvalidArgument(f"{where}.error_rate.below", "must be above 0 and at most 1")
        if probe.error_rate.HasField("window"):
            duration_seconds(
                probe.error_rate.window, f"{where}.error_rate.window", minimum=1, maximum=3600
            )
    else:
        validate_name(probe.primary.service, f"{where}.primary.service")


def _check_step(step: chaos_pb2.MethodStep, where: str, cap: float, now: float) -> None:
    kind = step.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(
            f"{where}.fault", "set fault, switchover, force_breaker, drain or load"
        )
    if kind == "fault":
        rule = chaos_pb2.FaultRule()
        rule.CopyFrom(step.fault)
        # Its name and expiry are the experiment's; check the rest as a rule.
        rule.name = "step"
        rule.expires_at.FromSeconds(int(now) + 60)
        check_rule(rule, now, f"{where}.fault")
        if max_percentage(step.fault) > cap:
            raise FailedPrecondition(
                f"{where}.fault touches {max_percentage(step.fault):g} % of calls, above the "
                f"blast radius of {cap:g} %"
            )
    elif kind == "switchover":
        validate_name(step.switchover, f"{where}.switchover")
    elif kind == "force_breaker":
        _check_force(step.force_breaker, f"{where}.force_breaker", METHOD_FORCES)
    elif kind == "drain":
        validate_name(step.drain.service, f"{where}.drain.service")
        for i, instance in enumerate(step.drain.instance_ids):
            validate_id(instance, f"{where}.drain.instance_ids[{i}]")
        if not 0 <= step.drain.count <= 1000:
            raise InvalidArgument(f"{where}.drain.count", "must be 0-1000 (0: 1)")
    else:
        _check_load(step.load, f"{where}.load")


def _check_force(
    step: chaos_pb2.ForceBreakerStep, where: str, allowed: dict[int, str] | None = None
) -> None:
    validate_name(step.breaker, f"{where}.breaker")
    allowed = allowed or ROLLBACK_FORCES
    if step.state not in allowed:
        raise InvalidArgument(f"{where}.state", f"must be {', '.join(allowed.values())}")


def _check_load(load: chaos_pb2.LoadStep, where: str) -> None:
    # Both go on `bulwark loadtest`'s command line: one starting with "-" would be
    # read as an option (the address as --bulwark, say), not as what it names.
    host, sep, port = load.address.rpartition(":")
    if not (sep and _HOST.fullmatch(host) and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidArgument(f"{where}.address", "must be host:port")
    if not _LOAD_METHOD.fullmatch(load.method):
        raise InvalidArgument(f"{where}.method", 'must be "package.Service/Method"')
    _check_metadata(load.metadata, f"{where}.metadata")
    if not (math.isfinite(load.rate) and 1 <= load.rate <= MAX_LOAD_RATE):
        raise InvalidArgument(f"{where}.rate", f"must be 1-{MAX_LOAD_RATE:g} per second")
    if not 0 <= load.concurrency <= 10_000:
        raise InvalidArgument(f"{where}.concurrency", "must be 0-10000 (0: 50)")
    if load.HasField("timeout"):
        duration_seconds(load.timeout, f"{where}.timeout", minimum=0.001, maximum=60)
    if len(load.data) > 65536:
        raise InvalidArgument(f"{where}.data", "at most 64 KiB")
    if load.report_as:
        validate_name(load.report_as, f"{where}.report_as")


def _check_rollback(rollback: chaos_pb2.Rollback, where: str) -> None:
    kind = rollback.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where}.force_breaker", "set force_breaker or set_feature")
    if kind == "force_breaker":
        _check_force(rollback.force_breaker, f"{where}.force_breaker")
    else:
        validate_name(rollback.set_feature.feature, f"{where}.set_feature.feature")
        if rollback.set_feature.status not in feature_pb2.FeatureStatus.values()[1:]:
            raise InvalidArgument(f"{where}.set_feature.status", "must be a feature status")


def drain_cap(requested: int, serving: int, cap_percentage: float, where: str) -> None:
    """FailedPrecondition when draining ``requested`` of ``serving`` exceeds the cap."""
    if serving == 0 or requested > serving * cap_percentage / 100:
        raise FailedPrecondition(
            f"{where} drains {requested} of {serving} SERVING instances, above the blast "
            f"radius of {cap_percentage:g} %"
        )
