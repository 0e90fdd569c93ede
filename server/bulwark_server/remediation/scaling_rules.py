"""What a scaling spec and a KEDA trigger's metadata must be. Pure.

A KEDA ``ScaledObject`` trigger of type ``external`` (or ``external-push``) names
Bulwark's address and, in its metadata, what to scale on::

    metadata:
      scalerAddress: bulwark.bulwark.svc:50051
      service: checkout          # the service whose signals drive the scaling
      metric: inFlight           # inFlight | cpu | callsPerSecond | errorRate | recommendedReplicas
      target: "20"               # per instance; for recommendedReplicas, always 1
      activationThreshold: "0"   # IsActive: the metric's value above this

``recommendedReplicas`` is Bulwark's own HPA arithmetic (``GetScalingRecommendation``):
its spec comes from ``targetInFlight``, ``targetCpu``, ``targetCallsPerSecond`` (at
least one), ``minReplicas``, ``maxReplicas`` and ``scaleDownStabilizationSeconds``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bulwark.v1 import remediation_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.remediation.hpa import MAX_WINDOW_SECONDS, HpaSettings
from bulwark_server.validation import duration_seconds, validate_name

MAX_TARGETS = 8
DEFAULT_MIN_REPLICAS = 1
MAX_REPLICAS = 100_000
DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_DOWN_S = 300.0
METRIC_NAMES = {
    remediation_pb2.SCALING_METRIC_IN_FLIGHT: "in_flight",
    remediation_pb2.SCALING_METRIC_CPU: "cpu",
    remediation_pb2.SCALING_METRIC_CALLS_PER_SECOND: "calls_per_second",
}
# A KEDA trigger's metric -> what the server computes for it.
KEDA_METRICS = ("inFlight", "cpu", "callsPerSecond", "errorRate", "recommendedReplicas")
_KEDA_TARGETS = {
    "targetInFlight": remediation_pb2.SCALING_METRIC_IN_FLIGHT,
    "targetCpu": remediation_pb2.SCALING_METRIC_CPU,
    "targetCallsPerSecond": remediation_pb2.SCALING_METRIC_CALLS_PER_SECOND,
}


def hpa_settings(spec: remediation_pb2.ScalingSpec, field: str = "spec") -> HpaSettings:
    """The spec's bounds and behaviour, checked; InvalidArgument naming the field."""
    if not spec.targets:
        raise InvalidArgument(f"{field}.targets", "name at least one metric and its target")
    if len(spec.targets) > MAX_TARGETS:
        raise InvalidArgument(f"{field}.targets", f"at most {MAX_TARGETS}")
    seen: set[int] = set()
    for i, target in enumerate(spec.targets):
        where = f"{field}.targets[{i}]"
        if target.metric not in METRIC_NAMES:
            raise InvalidArgument(f"{where}.metric", f"unknown metric {target.metric}")
        if target.metric in seen:
            raise InvalidArgument(f"{where}.metric", "named twice")
        seen.add(target.metric)
        if not (math.isfinite(target.target) and target.target > 0):
            raise InvalidArgument(f"{where}.target", "must be a number above 0")
    minimum = spec.min_replicas or DEFAULT_MIN_REPLICAS
    if not 1 <= minimum <= MAX_REPLICAS:
        raise InvalidArgument(f"{field}.min_replicas", f"must be 1-{MAX_REPLICAS}")
    if not 1 <= spec.max_replicas <= MAX_REPLICAS:
        raise InvalidArgument(f"{field}.max_replicas", f"must be 1-{MAX_REPLICAS}")
    if spec.max_replicas < minimum:
        raise InvalidArgument(f"{field}.max_replicas", "must be at least min_replicas")
    tolerance = spec.tolerance if spec.HasField("tolerance") else DEFAULT_TOLERANCE
    if not 0 <= tolerance <= 1:
        raise InvalidArgument(f"{field}.tolerance", "must be 0-1")
    down = DEFAULT_SCALE_DOWN_S
    if spec.HasField("scale_down_stabilization"):
        down = duration_seconds(
            spec.scale_down_stabilization,
            f"{field}.scale_down_stabilization",
            maximum=MAX_WINDOW_SECONDS,
        )
    up = 0.0
    if spec.HasField("scale_up_stabilization"):
        up = duration_seconds(
            spec.scale_up_stabilization,
            f"{field}.scale_up_stabilization",
            maximum=MAX_WINDOW_SECONDS,
        )
    return HpaSettings(
        min_replicas=minimum,
        max_replicas=spec.max_replicas,
        tolerance=tolerance,
        scale_down_window_seconds=down,
        scale_up_window_seconds=up,
    )


@dataclass(frozen=True)
class ScalerQuery:
    """What a KEDA trigger asks for (``parse_metadata``)."""

    service: str
    metric: str  # one of KEDA_METRICS
    target: float
    activation: float
    spec: remediation_pb2.ScalingSpec | None = None  # recommendedReplicas only

    @property
    def metric_name(self) -> str:
        """The name KEDA gives the HPA (it prefixes the trigger's index itself)."""
        return f"bulwark-{self.service}-{self.metric}".lower()


def parse_metadata(metadata: Mapping[str, str]) -> ScalerQuery:
    """A trigger's ``scalerMetadata``; InvalidArgument naming the key that is wrong."""
    service = validate_name(metadata.get("service", ""), "scalerMetadata.service")
    metric = metadata.get("metric", "")
    if metric not in KEDA_METRICS:
        raise InvalidArgument("scalerMetadata.metric", f"one of {', '.join(KEDA_METRICS)}")
    activation = _number(metadata, "activationThreshold", 0.0, minimum=0.0)
    if metric != "recommendedReplicas":
        target = _number(metadata, "target", None, minimum=0.0, exclusive=True)
        return ScalerQuery(service, metric, target, activation)
    spec = remediation_pb2.ScalingSpec(
        min_replicas=int(_number(metadata, "minReplicas", DEFAULT_MIN_REPLICAS, minimum=1)),
        max_replicas=int(_number(metadata, "maxReplicas", None, minimum=1)),
    )
    for key, kind in _KEDA_TARGETS.items():
        if key in metadata:
            value = _number(metadata, key, None, minimum=0.0, exclusive=True)
            spec.targets.add(metric=kind, target=value)
    if "scaleDownStabilizationSeconds" in metadata:
        seconds = _number(metadata, "scaleDownStabilizationSeconds", None, minimum=0.0)
        spec.scale_down_stabilization.FromNanoseconds(int(seconds * 1e9))
    try:
        hpa_settings(spec)
    except InvalidArgument as exc:
        raise InvalidArgument(
            "scalerMetadata",
            f"{exc} (from targetInFlight, targetCpu, "
            "targetCallsPerSecond, minReplicas, maxReplicas)",
        ) from None
    # KEDA's HPA divides the value by the target: a target of 1 leaves the count as is.
    return ScalerQuery(service, metric, 1.0, activation, spec)


def _number(
    metadata: Mapping[str, str],
    key: str,
    default: float | None,
    *,
    minimum: float,
    exclusive: bool = False,
) -> float:
    text = metadata.get(key)
    if text is None or text == "":
        if default is None:
            raise InvalidArgument(f"scalerMetadata.{key}", "is required")
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"scalerMetadata.{key}", f"{text[:32]!r} is not a number") from None
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        bound = "above" if exclusive else "at least"
        raise InvalidArgument(f"scalerMetadata.{key}", f"must be a number {bound} {minimum:g}")
    return value
