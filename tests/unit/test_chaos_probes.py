"""chaos.probes: each kind of probe evaluated over a small SteadyState, what it says it
saw, and the probe in words. Pure: no store, no clock."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import breaker_pb2, feature_pb2
from bulwark.v1 import chaos_pb2 as C
from bulwark_server.chaos.probes import describe, evaluate

OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
UNSPECIFIED = feature_pb2.FEATURE_STATUS_UNSPECIFIED
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED


class View:
    """probes.SteadyState over dicts; records the error-rate windows asked for."""

    def __init__(self) -> None:
        self.breakers: dict[str, int] = {}
        self.features: dict[str, int] = {}
        self.rates: dict[str, tuple[float, int]] = {}
        self.primaries: dict[str, str] = {}
        self.windows: list[tuple[str, float]] = []

    def breaker_state(self, name: str) -> int | None:
        return self.breakers.get(name)

    def feature_status(self, name: str) -> int | None:
        return self.features.get(name)

    def error_rate(self, service: str, window_s: float) -> tuple[float, int]:
        self.windows.append((service, window_s))
        return self.rates.get(service, (0.0, 0))

    def primary(self, service: str) -> str:
        return self.primaries.get(service, "")


def breaker(**want: int) -> C.Probe:
    return C.Probe(breaker=C.BreakerProbe(breaker="payments", **want))


def feature(**want: int) -> C.Probe:
    return C.Probe(feature=C.FeatureProbe(feature="express", **want))


def error_rate(below: float, window_s: float | None = None) -> C.Probe:
    probe = C.ErrorRateProbe(service="payments", below=below)
    if window_s is not None:
        probe.window.CopyFrom(duration_pb2.Duration(seconds=int(window_s)))
    return C.Probe(error_rate=probe)


def seen(probe: C.Probe, view: View) -> tuple[bool, str]:
    result = evaluate(probe, view)
    assert result.probe == describe(probe)  # every result carries the probe's label
    return result.held, result.value


# -- breakers ---------------------------------------------------------------------------


def test_a_breaker_probe_holds_in_its_state_and_not_state_is_the_opposite() -> None:
    view = View()
    view.breakers["payments"] = OPEN
    assert seen(breaker(state=OPEN), view) == (True, "OPEN")
    assert seen(breaker(state=CLOSED), view) == (False, "OPEN")
    assert seen(breaker(not_state=OPEN), view) == (False, "OPEN")
    assert seen(breaker(not_state=CLOSED), view) == (True, "OPEN")
    view.breakers["payments"] = FORCED_OPEN
    # FORCED_OPEN is its own state: "not OPEN" holds.
    assert seen(breaker(not_state=OPEN), view) == (True, "FORCED_OPEN")


def test_a_missing_breaker_fails_either_way() -> None:
    view = View()
    assert seen(breaker(state=CLOSED), view) == (False, "no such breaker")
    # Even "not OPEN": a probe about something that is not there cannot vouch for it.
    assert seen(breaker(not_state=OPEN), view) == (False, "no such breaker")


# -- features ---------------------------------------------------------------------------


def test_a_feature_probe_holds_in_its_status_and_not_status_is_the_opposite() -> None:
    view = View()
    view.features["express"] = DEGRADED
    assert seen(feature(status=DEGRADED), view) == (True, "DEGRADED")
    assert seen(feature(status=AVAILABLE), view) == (False, "DEGRADED")
    assert seen(feature(not_status=AVAILABLE), view) == (True, "DEGRADED")
    assert seen(feature(not_status=DEGRADED), view) == (False, "DEGRADED")
    view.features["express"] = DISABLED
    assert seen(feature(status=DISABLED), view) == (True, "DISABLED")


def test_an_unspecified_feature_status_counts_as_available() -> None:
    view = View()
    view.features["express"] = UNSPECIFIED
    assert seen(feature(status=AVAILABLE), view) == (True, "AVAILABLE")
    assert seen(feature(not_status=AVAILABLE), view) == (False, "AVAILABLE")
    assert seen(feature(not_status=DEGRADED), view) == (True, "AVAILABLE")


def test_a_missing_feature_fails_either_way() -> None:
    view = View()
    assert seen(feature(status=AVAILABLE), view) == (False, "no such feature")
    assert seen(feature(not_status=DISABLED), view) == (False, "no such feature")


# -- error rates ------------------------------------------------------------------------


def test_an_error_rate_probe_holds_strictly_below_its_bound() -> None:
    view = View()
    view.rates["payments"] = (0.0099, 1000)
    held, value = seen(error_rate(0.01), view)
    assert held is True
    assert value == "error rate 0.0099 over 1000 calls in 10 s"
    view.rates["payments"] = (0.01, 1000)
    assert seen(error_rate(0.01), view)[0] is False  # at the bound: breached
    view.rates["payments"] = (0.31, 200)
    assert seen(error_rate(0.01), view) == (False, "error rate 0.3100 over 200 calls in 10 s")
    assert seen(error_rate(1.0), view)[0] is True


def test_no_calls_in_the_window_holds_whatever_the_rate_says() -> None:
    view = View()
    view.rates["payments"] = (1.0, 0)
    assert seen(error_rate(0.01), view) == (True, "no calls in 10 s")
    assert seen(error_rate(0.01, window_s=30), view) == (True, "no calls in 30 s")


def test_the_window_asked_for_is_the_probes_or_ten_seconds() -> None:
    view = View()
    evaluate(error_rate(0.5), view)
    evaluate(error_rate(0.5, window_s=60), view)
    assert view.windows == [("payments", 10.0), ("payments", 60.0)]


# -- primaries --------------------------------------------------------------------------


def test_a_primary_probe_holds_while_the_service_has_one() -> None:
    view = View()
    probe = C.Probe(primary=C.PrimaryProbe(service="payments"))
    assert seen(probe, view) == (False, "no primary")
    view.primaries["payments"] = "payments-2"
    assert seen(probe, view) == (True, "primary payments-2")


# -- describe ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "words"),
    [
        (breaker(state=OPEN), "breaker payments is OPEN"),
        (breaker(not_state=FORCED_OPEN), "breaker payments is not FORCED_OPEN"),
        (feature(status=AVAILABLE), "feature express is AVAILABLE"),
        (feature(not_status=DISABLED), "feature express is not DISABLED"),
        (error_rate(0.05), "error rate of payments below 0.05"),
        (error_rate(0.125, window_s=30), "error rate of payments below 0.125"),
        (C.Probe(primary=C.PrimaryProbe(service="payments")), "service payments has a primary"),
    ],
)
def test_describe_says_what_a_probe_asks(probe: C.Probe, words: str) -> None:
    assert describe(probe) == words


def test_a_probes_name_is_its_label_in_results() -> None:
    probe = breaker(state=CLOSED)
    probe.name = "payments healthy"
    assert describe(probe) == "payments healthy"
    view = View()
    view.breakers["payments"] = CLOSED
    result = evaluate(probe, view)
    assert (result.probe, result.held, result.value) == ("payments healthy", True, "CLOSED")
