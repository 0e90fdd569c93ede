"""The client's fault-rule core: targeting, percentages, header control (gRFC A33),
max_active_faults and expiry, with an injected wall clock and random source."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from bulwark._faults import FaultInjector, FaultRuleCache
from bulwark.errors import FaultInjectedError
from bulwark.v1 import chaos_pb2 as C
from bulwark.v1 import watch_pb2

NOW = 1_800_000_000.0
SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED


def _expires(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((NOW + seconds) * 1e9))
    return ts


def rule(name: str, **fields: object) -> C.FaultRule:
    fields.setdefault("expires_at", _expires(60))
    return C.FaultRule(name=name, **fields)  # type: ignore[arg-type]


def injector(*rules: C.FaultRule, service: str = "checkout", seed: int = 7) -> FaultInjector:
    cache = FaultRuleCache()
    for r in rules:
        cache.apply(C.WatchFaultRulesResponse(type=SNAPSHOT, rule=r, revision=1), 0.0)
    cache.apply(C.WatchFaultRulesResponse(type=SYNCED, revision=1), 0.0)
    clock = {"now": NOW}
    made = FaultInjector(
        cache, service, "checkout-1", wall=lambda: clock["now"], rng=random.Random(seed)
    )
    made.clock = clock  # type: ignore[attr-defined]
    return made


ABORT_ALL = C.FaultAbort(code=grpc.StatusCode.UNAVAILABLE.value[0], percentage=100)


def test_a_rule_applies_only_to_what_it_targets() -> None:
    faults = injector(
        rule(
            "r",
            target=C.FaultTarget(
                source_service="checkout",
                downstream="payments",
                method="/pay.Payments/",
                headers={"x-test": "1"},
            ),
            abort=ABORT_ALL,
        )
    )
    test = [("x-test", "1")]
    hit = faults.decide("payments", "/pay.Payments/Charge", test)
    assert hit is not None and hit.code is grpc.StatusCode.UNAVAILABLE and hit.rule == "r"
    assert faults.decide("payments", "/pay.Payments/Charge", [("x-test", "2")]) is None
    assert faults.decide("payments", "/pay.Payments/Charge", None) is None
    assert faults.decide("inventory", "/pay.Payments/Charge", test) is None
    assert faults.decide("payments", "/inv.Inventory/Reserve", test) is None
    assert faults.decide("payments", "", test) is None  # a breaker() block has no method
    other = injector(*faults.cache.rules(), service="search")
    assert other.decide("payments", "/pay.Payments/Charge", test) is None


def test_percentages_hold_over_many_draws_and_the_counts_say_so() -> None:
    faults = injector(
        rule(
            "r",
            delay=C.FaultDelay(fixed=duration_pb2.Duration(nanos=5_000_000), percentage=30),
            abort=C.FaultAbort(code=14, percentage=10),
        )
    )
    delayed = aborted = 0
    for _ in range(20_000):
        fault = faults.decide("payments")
        if fault is not None:
            delayed += fault.delay > 0
            aborted += fault.code is not None
            assert fault.delay in (0.0, 0.005)
            fault.release()
    assert 5_700 < delayed < 6_300 and 1_800 < aborted < 2_200
    assert faults.counts() == {"r": {"delayed": delayed, "aborted": aborted, "active": 0}}


def test_the_first_matching_rule_in_name_order_applies() -> None:
    faults = injector(
        rule("b-specific", target=C.FaultTarget(downstream="payments"), abort=ABORT_ALL),
        rule("a-none", target=C.FaultTarget(downstream="payments"), abort=C.FaultAbort(code=14)),
    )
    # a-none matches first and injects nothing (0 %): one rule per call.
    assert faults.decide("payments") is None


def test_header_controlled_faults_follow_the_request_headers() -> None:
    faults = injector(
        rule(
            "h",
            delay=C.FaultDelay(header_controlled=True, percentage=100),
            abort=C.FaultAbort(header_controlled=True, percentage=100),
        )
    )
    assert faults.decide("payments", "/a.B/C", None) is None  # no header, no fault
    fault = faults.decide(
        "payments",
        "/a.B/C",
        [("x-envoy-fault-delay-request", "250"), ("x-envoy-fault-abort-grpc-request", "8")],
    )
    assert fault is not None
    assert fault.delay == pytest.approx(0.25) and fault.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    none = faults.decide(
        "payments",
        "/a.B/C",
        [
            ("x-envoy-fault-abort-grpc-request", "14"),
            ("x-envoy-fault-abort-request-percentage", "0"),
        ],
    )
    assert none is None  # the lower of the two shares: 0 %


def test_max_active_faults_caps_calls_under_a_fault_at_once() -> None:
    faults = injector(
        rule(
            "cap",
            delay=C.FaultDelay(fixed=duration_pb2.Duration(seconds=1), percentage=100),
            max_active_faults=2,
        )
    )
    first, second = faults.decide("x"), faults.decide("x")
    assert first is not None and second is not None
    assert faults.decide("x") is None
    first.release()
    first.release()  # twice is once
    third = faults.decide("x")
    assert third is not None and faults.counts()["cap"]["active"] == 2


def test_an_expired_rule_stops_by_the_local_clock() -> None:
    faults = injector(rule("soon", abort=ABORT_ALL, expires_at=_expires(5)))
    assert faults.decide("payments") is not None
    faults.clock["now"] = NOW + 5  # type: ignore[attr-defined]
    assert faults.decide("payments") is None


def test_an_abort_raises_a_typed_error_naming_the_rule() -> None:
    fault = injector(rule("r", abort=ABORT_ALL)).decide("payments")
    assert fault is not None
    with pytest.raises(FaultInjectedError) as raised:
        fault.raise_abort()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE and raised.value.rule == "r"
    assert "fault injected by Bulwark rule r" in raised.value.details


def test_distributions_stay_in_their_bounds() -> None:
    ms = duration_pb2.Duration
    faults = injector(
        rule(
            "u",
            target=C.FaultTarget(downstream="u"),
            delay=C.FaultDelay(
                uniform=C.DelayRange(min=ms(nanos=10_000_000), max=ms(nanos=20_000_000)),
                percentage=100,
            ),
        ),
        rule(
            "x",
            target=C.FaultTarget(downstream="x"),
            delay=C.FaultDelay(exponential_mean=ms(nanos=10_000_000), percentage=100),
        ),
    )
    uniform = [faults.decide("u").delay for _ in range(2000)]  # type: ignore[union-attr]
    assert 0.010 <= min(uniform) and max(uniform) <= 0.020
    assert sum(uniform) / len(uniform) == pytest.approx(0.015, rel=0.05)
    expo = [faults.decide("x").delay for _ in range(4000)]  # type: ignore[union-attr]
    assert sum(expo) / len(expo) == pytest.approx(0.010, rel=0.1)
