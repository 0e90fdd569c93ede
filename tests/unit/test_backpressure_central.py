"""Central backpressure policies in the interceptors' core: which rules follow them, how a
policy becomes settings, and how a change, a deletion and a local setting play out.

The policies come through a real ``BackpressurePolicyCache`` fed the events a
WatchBackpressurePolicies stream sends; no clock is read (times are arguments).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from bulwark._adaptive import Gradient2Settings, ThrottleSettings
from bulwark._backpressure import Backpressure, policy_settings
from bulwark._caches import BackpressurePolicyCache
from bulwark._guard import Guard, Refusal
from bulwark.v1 import backpressure_pb2 as B
from bulwark.v1 import watch_pb2

PUT, DELETE, SYNCED = (
    watch_pb2.WATCH_EVENT_TYPE_PUT,
    watch_pb2.WATCH_EVENT_TYPE_DELETE,
    watch_pb2.WATCH_EVENT_TYPE_SYNCED,
)
RULE = "/pay.v1.Payments/"


def concurrency(**fields: object) -> B.BackpressurePolicy:
    return B.BackpressurePolicy(
        name="payments", concurrency=B.AdaptiveConcurrency(enabled=True, **fields)
    )


class Feed:
    """A policy cache and the stream events that fill it."""

    def __init__(self) -> None:
        self.cache = BackpressurePolicyCache()
        self.revision = 0
        self.calls = 0
        self.send(SYNCED)

    def source(self) -> BackpressurePolicyCache:
        self.calls += 1
        return self.cache

    def send(self, kind: int, policy: B.BackpressurePolicy | None = None) -> None:
        self.revision += 1
        self.cache.apply(
            B.WatchBackpressurePoliciesResponse(type=kind, policy=policy, revision=self.revision),
            0.0,
        )


def test_zero_fields_take_the_client_defaults_and_bounds_fit_around_the_set_ones() -> None:
    adaptive, throttle = policy_settings(concurrency())
    assert adaptive == Gradient2Settings() and throttle is None
    adaptive, _ = policy_settings(concurrency(min_limit=300))
    assert adaptive is not None
    assert (adaptive.min_limit, adaptive.initial_limit, adaptive.max_limit) == (300, 300, 300)
    adaptive, _ = policy_settings(concurrency(max_limit=5, smoothing=0.5, queue_size=2))
    assert adaptive == Gradient2Settings(
        initial_limit=5, min_limit=1, max_limit=5, smoothing=0.5, queue_size=2
    )
    _, throttle = policy_settings(
        B.BackpressurePolicy(
            name="p",
            throttle=B.AdaptiveThrottle(enabled=True, window=duration_pb2.Duration(seconds=30)),
        )
    )
    assert throttle == ThrottleSettings(k=2.0, window_seconds=30)
    assert policy_settings(B.BackpressurePolicy(name="off")) == (None, None)


def test_a_part_this_client_cannot_take_is_off_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adaptive, _ = policy_settings(concurrency(rtt_tolerance=0.5))
    assert adaptive is None
    assert "rtt_tolerance" in caplog.text and "payments" in caplog.text


def test_a_rule_follows_its_services_policy_through_changes_and_deletion() -> None:
    feed = Feed()
    backpressure = Backpressure({RULE: Guard(service="payments")}, central=feed.source)
    assert feed.calls == 0  # the watch starts at the first decision, not before
    downstream = backpressure.for_rule(RULE)
    assert downstream is not None and downstream.limiter is None
    assert feed.calls == 1
    downstream.admit(0.0).abandon()  # no policy: nothing limits

    feed.send(PUT, concurrency(initial_limit=2, max_limit=2))
    assert backpressure.for_rule(RULE) is downstream
    flights = [downstream.admit(0.0), downstream.admit(0.0)]
    with pytest.raises(Refusal) as refused:
        downstream.admit(0.0)
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    limiter = downstream.limiter

    feed.send(PUT, concurrency(initial_limit=3, min_limit=3, max_limit=3))
    backpressure.for_rule(RULE)
    assert downstream.limiter is limiter  # what it learned and its calls carry over
    assert (limiter.limit, limiter.in_flight) == (3, 2)
    flights.append(downstream.admit(0.0))
    with pytest.raises(Refusal):
        downstream.admit(0.0)

    feed.send(DELETE, B.BackpressurePolicy(name="payments"))
    backpressure.for_rule(RULE)
    assert downstream.limiter is None
    downstream.admit(0.0).abandon()
    for flight in flights:  # the slots go back to the limiter that gave them
        flight.finish(grpc.StatusCode.OK, 0.01)
    assert limiter.in_flight == 0
    assert feed.calls == 1


def test_a_local_setting_wins_and_the_other_part_still_follows() -> None:
    feed = Feed()
    rules = {RULE: Guard(service="payments", adaptive=False)}
    backpressure = Backpressure(rules, central=feed.source, random=lambda: 0.0)
    policy = concurrency(initial_limit=1, max_limit=1)
    policy.throttle.enabled = True
    feed.send(PUT, policy)
    downstream = backpressure.for_rule(RULE)
    assert downstream is not None
    assert downstream.limiter is None
    assert downstream.throttle is not None
    assert downstream.throttle.settings == ThrottleSettings()
    state = backpressure.states(0.0)["payments"]
    assert (state.limit, state.reject_probability) == (None, 0.0)


def test_only_rules_naming_a_service_follow_and_only_with_a_client() -> None:
    feed = Feed()
    feed.send(PUT, concurrency(initial_limit=1, max_limit=1))
    backpressure = Backpressure({RULE: Guard()}, central=feed.source)
    assert backpressure.for_rule(RULE) is None
    assert feed.calls == 0
    assert Backpressure({RULE: Guard(service="payments")}).for_rule(RULE) is None


def test_a_part_one_rule_of_a_service_sets_is_not_followed_by_its_other_rules() -> None:
    feed = Feed()
    policy = concurrency(initial_limit=1, max_limit=1)
    policy.throttle.enabled = True
    feed.send(PUT, policy)
    rules = {
        RULE: Guard(service="payments"),
        "/pay.v1.Refunds/": Guard(service="payments", adaptive=False),
    }
    backpressure = Backpressure(rules, central=feed.source)
    downstream = backpressure.for_rule(RULE)
    assert downstream is not None and downstream is backpressure.for_rule("/pay.v1.Refunds/")
    assert downstream.limiter is None and downstream.throttle is not None


def test_a_rule_without_settings_shares_its_services_limiter_with_no_conflict() -> None:
    rules = {
        RULE: Guard(service="payments", adaptive=True),
        "/pay.v1.Refunds/": Guard(service="payments", breaker="refunds"),
    }
    for central in (None, Feed().source):
        backpressure = Backpressure(rules, central=central)
        first, second = backpressure.for_rule(RULE), backpressure.for_rule("/pay.v1.Refunds/")
        assert first is not None and first is second
        assert first.limiter is not None and first.limiter.settings == Gradient2Settings()
    with pytest.raises(ValueError, match="'payments'"):
        Backpressure({**rules, "/pay.v1.Other/": Guard(service="payments", adaptive=False)})


def test_a_policy_the_server_accepts_with_a_high_initial_limit_raises_the_maximum() -> None:
    adaptive, _ = policy_settings(concurrency(initial_limit=500))
    assert adaptive is not None
    assert (adaptive.min_limit, adaptive.initial_limit, adaptive.max_limit) == (1, 500, 500)


def test_a_policy_turned_off_and_on_again_keeps_counting_the_calls_it_let_in() -> None:
    feed = Feed()
    backpressure = Backpressure({RULE: Guard(service="payments")}, central=feed.source)
    feed.send(PUT, concurrency(initial_limit=2, max_limit=2))
    downstream = backpressure.for_rule(RULE)
    assert downstream is not None
    flights = [downstream.admit(0.0), downstream.admit(0.0)]
    feed.send(PUT, B.BackpressurePolicy(name="payments"))  # disabled
    backpressure.for_rule(RULE)
    assert downstream.limiter is None
    feed.send(PUT, concurrency(initial_limit=2, max_limit=2))
    backpressure.for_rule(RULE)
    with pytest.raises(Refusal):  # the two calls from before still hold their slots
        downstream.admit(0.0)
    for flight in flights:
        flight.finish(grpc.StatusCode.OK, 0.01)
    downstream.admit(0.0).abandon()


def test_reading_the_state_never_starts_following() -> None:
    feed = Feed()
    backpressure = Backpressure({RULE: Guard(service="payments")}, central=feed.source)
    assert backpressure.states(0.0)["payments"].limit is None
    assert feed.calls == 0
    feed.send(PUT, concurrency(initial_limit=3, max_limit=3))
    backpressure.for_rule(RULE)
    assert backpressure.states(0.0)["payments"].limit == 3
