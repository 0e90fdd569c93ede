"""A probe's answer, from what the other capabilities say (``SteadyState``). Pure.

The chaos capability never reads another capability's keys: ``SteadyState`` is
wired beside the runner (``chaos_setup.py``) to the breakers, the features, the
signals and the registry.
"""

from __future__ import annotations

from typing import Protocol

from bulwark.v1 import breaker_pb2, chaos_pb2, feature_pb2
from bulwark_server.chaos.rules import DEFAULT_ERROR_WINDOW_S


class SteadyState(Protocol):
    """What a probe reads, asked of the capabilities that hold it."""

    def breaker_state(self, name: str) -> int | None:
        """The breaker's state, or None when there is no such breaker."""
        ...

    def feature_status(self, name: str) -> int | None:
        """The feature's status, or None when there is no such feature."""
        ...

    def error_rate(self, service: str, window_s: float) -> tuple[float, int]:
        """(error rate, calls) of the service's inbound calls over the window."""
        ...

    def primary(self, service: str) -> str:
        """The service's primary instance id ("" when it has none)."""
        ...


def _breaker(state: int) -> str:
    return breaker_pb2.BreakerState.Name(state).removeprefix("BREAKER_STATE_")


def _feature(status: int) -> str:
    return feature_pb2.FeatureStatus.Name(status).removeprefix("FEATURE_STATUS_")


def describe(probe: chaos_pb2.Probe) -> str:
    """The probe in words: its label, or what it asks."""
    if probe.name:
        return probe.name
    kind = probe.WhichOneof("kind")
    if kind == "breaker":
        want = probe.breaker.WhichOneof("want")
        verb = "is" if want == "state" else "is not"
        state = _breaker(getattr(probe.breaker, want or "state"))
        return f"breaker {probe.breaker.breaker} {verb} {state}"
    if kind == "feature":
        want = probe.feature.WhichOneof("want")
        verb = "is" if want == "status" else "is not"
        status = _feature(getattr(probe.feature, want or "status"))
        return f"feature {probe.feature.feature} {verb} {status}"
    if kind == "error_rate":
        return f"error rate of {probe.error_rate.service} below {probe.error_rate.below:g}"
    return f"service {probe.primary.service} has a primary"


def evaluate(probe: chaos_pb2.Probe, view: SteadyState) -> chaos_pb2.ProbeResult:
    """Whether the probe holds now, and what it saw."""
    label = describe(probe)
    kind = probe.WhichOneof("kind")
    if kind == "breaker":
        state = view.breaker_state(probe.breaker.breaker)
        if state is None:
            return chaos_pb2.ProbeResult(probe=label, held=False, value="no such breaker")
        want = probe.breaker.WhichOneof("want")
        target = getattr(probe.breaker, want or "state")
        held = (state == target) == (want == "state")
        return chaos_pb2.ProbeResult(probe=label, held=held, value=_breaker(state))
    if kind == "feature":
        status = view.feature_status(probe.feature.feature)
        if status is None:
            return chaos_pb2.ProbeResult(probe=label, held=False, value="no such feature")
        status = status or feature_pb2.FEATURE_STATUS_AVAILABLE
        want = probe.feature.WhichOneof("want")
        target = getattr(probe.feature, want or "status")
        held = (status == target) == (want == "status")
        return chaos_pb2.ProbeResult(probe=label, held=held, value=_feature(status))
    if kind == "error_rate":
        spec = probe.error_rate
        window = (
            spec.window.ToNanoseconds() / 1e9 if spec.HasField("window") else DEFAULT_ERROR_WINDOW_S
        )
        rate, calls = view.error_rate(spec.service, window)
        if not calls:
            return chaos_pb2.ProbeResult(probe=label, held=True, value=f"no calls in {window:g} s")
        return chaos_pb2.ProbeResult(
            probe=label,
            held=rate < spec.below,
            value=f"error rate {rate:.4f} over {calls} calls in {window:g} s",
        )
    primary = view.primary(probe.primary.service)
    return chaos_pb2.ProbeResult(
        probe=label, held=bool(primary), value=f"primary {primary}" if primary else "no primary"
    )
