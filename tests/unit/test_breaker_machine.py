"""Unit tests for bulwark_server.breakers.machine: resilience4j's state machine, step by step."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import (
    Decision,
    SlidingWindow,
    allow,
    check_force,
    force,
    initial_status,
    normalize_config,
    on_outcomes,
    state_name,
    tick,
)
from bulwark_server.errors import InvalidArgument

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = breaker_pb2.BREAKER_STATE_DISABLED
METRICS_ONLY = breaker_pb2.BREAKER_STATE_METRICS_ONLY
TIME = breaker_pb2.SLIDING_WINDOW_TYPE_TIME_BASED
T0 = 1_700_000_000.0


def make_config(**fields: Any) -> breaker_pb2.BreakerConfig:
    fields.setdefault("sliding_window_size", 10)
    fields.setdefault("minimum_number_of_calls", 10)
    fields.setdefault("permitted_number_of_calls_in_half_open_state", 3)
    return normalize_config(breaker_pb2.BreakerConfig(**fields))


def counts(successes: int = 0, failures: int = 0, slow: int = 0) -> breaker_pb2.OutcomeCounts:
    return breaker_pb2.OutcomeCounts(successes=successes, failures=failures, slow_calls=slow)


def report(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    window: SlidingWindow,
    batch: breaker_pb2.OutcomeCounts,
    now: float,
) -> breaker_pb2.BreakerStatus | None:
    """What the service does with a report: count it in the window, then ask the machine."""
    window.add(batch.successes + batch.failures, batch.failures, batch.slow_calls, now)
    stats = window.stats(now, config.minimum_number_of_calls)
    return on_outcomes(config, status, batch, stats, now)


def window_for(config: breaker_pb2.BreakerConfig) -> SlidingWindow:
    return SlidingWindow(config.sliding_window_type, config.sliding_window_size)


def at(ts: Any) -> float:
    return ts.ToNanoseconds() / 1e9


def opened(config: breaker_pb2.BreakerConfig, now: float = T0) -> breaker_pb2.BreakerStatus:
    status = report(config, initial_status(now), window_for(config), counts(0, 10), now)
    assert status is not None and status.state == OPEN
    return status


def half_open(config: breaker_pb2.BreakerConfig, now: float) -> breaker_pb2.BreakerStatus:
    """A breaker that opened at T0 and moved to HALF_OPEN at ``now``, no permits granted."""
    decision = allow(config, opened(config), now)
    assert decision.new_status is not None and decision.new_status.state == HALF_OPEN
    status = decision.new_status
    status.half_open_permits_granted = 0
    return status


def test_initial_status_is_closed_without_a_transition() -> None:
    status = initial_status(T0)
    assert status.state == CLOSED
    assert at(status.state_since) == T0
    assert status.transitions == 0
    assert not status.HasField("last_transition")
    assert not status.HasField("open_until")


def test_count_window_trips_at_exactly_the_threshold() -> None:
    config = make_config()
    status = report(config, initial_status(T0), window_for(config), counts(5, 5), T0 + 1)
    assert status is not None
    assert status.state == OPEN
    assert at(status.state_since) == T0 + 1
    assert at(status.open_until) == T0 + 61
    assert status.transitions == 1
    t = status.last_transition
    assert (t.from_state, t.to_state) == (CLOSED, OPEN)
    assert t.reason == "failure rate 50.0% >= 50.0% over 10 calls"
    assert t.failure_rate == 50.0
    assert t.slow_call_rate == 0.0
    assert t.calls == 10
    assert t.actor == ""
    assert at(t.at) == T0 + 1


def test_count_window_below_the_threshold_stays_closed() -> None:
    config = make_config()
    assert report(config, initial_status(T0), window_for(config), counts(6, 4), T0) is None


def test_minimum_number_of_calls_not_reached_is_not_evaluated() -> None:
    config = make_config(sliding_window_size=100, minimum_number_of_calls=20)
    window = window_for(config)
    status = initial_status(T0)
    assert report(config, status, window, counts(0, 19), T0) is None
    assert window.stats(T0, 20).failure_rate == -1.0
    tripped = report(config, status, window, counts(0, 1), T0)
    assert tripped is not None and tripped.state == OPEN


def test_old_failures_slide_out_of_the_count_window() -> None:
    config = make_config()
    window = window_for(config)
    status = initial_status(T0)
    assert report(config, status, window, counts(0, 5), T0) is None  # 5 calls: below minimum
    assert report(config, status, window, counts(10, 0), T0 + 1) is None  # failures evicted
    assert window.stats(T0 + 1, 10).failures == 0
    tripped = report(config, status, window, counts(0, 5), T0 + 2)
    assert tripped is not None
    assert tripped.last_transition.failure_rate == 50.0


def test_time_window_forgets_failures_older_than_its_size() -> None:
    config = make_config(
        sliding_window_type=TIME, sliding_window_size=10, minimum_number_of_calls=4
    )
    window = window_for(config)
    status = initial_status(T0)
    assert report(config, status, window, counts(3, 1), T0) is None  # 25%: no trip
    # Ten seconds later the earlier calls are gone: 2 fresh calls are below the minimum.
    assert report(config, status, window, counts(0, 2), T0 + 10) is None
    tripped = report(config, status, window, counts(0, 2), T0 + 10.5)
    assert tripped is not None and tripped.last_transition.calls == 4


def test_slow_call_rate_trips_with_its_own_threshold() -> None:
    config = make_config(slow_call_rate_threshold=50.0)
    assert report(config, initial_status(T0), window_for(config), counts(10, 0, 4), T0) is None
    status = report(config, initial_status(T0), window_for(config), counts(10, 0, 5), T0)
    assert status is not None and status.state == OPEN
    assert status.last_transition.reason == "slow-call rate 50.0% >= 50.0% over 10 calls"
    assert status.last_transition.failure_rate == 0.0


def test_default_slow_call_threshold_needs_every_call_slow() -> None:
    config = make_config()
    assert report(config, initial_status(T0), window_for(config), counts(10, 0, 9), T0) is None
    status = report(config, initial_status(T0), window_for(config), counts(10, 0, 10), T0)
    assert status is not None and status.state == OPEN


def test_both_rates_over_are_named_in_the_reason() -> None:
    config = make_config()
    status = report(config, initial_status(T0), window_for(config), counts(0, 10, 10), T0)
    assert status is not None
    assert status.last_transition.reason == (
        "failure rate 100.0% >= 50.0% and slow-call rate 100.0% >= 100.0% over 10 calls"
    )


def test_closed_allows_without_changing_status() -> None:
    assert allow(make_config(), initial_status(T0), T0) == Decision(True, False, 0.0, None)


def test_open_refuses_until_the_wait_has_passed() -> None:
    config = make_config()
    status = opened(config)
    decision = allow(config, status, T0 + 30)
    assert not decision.allowed
    assert not decision.trial
    assert decision.retry_after == pytest.approx(30.0)
    assert decision.new_status is None
    assert not allow(config, status, T0 + 59.999).allowed


def test_first_allow_after_the_wait_moves_to_half_open_with_one_permit() -> None:
    config = make_config()
    decision = allow(config, opened(config), T0 + 60)
    assert decision.allowed and decision.trial
    new = decision.new_status
    assert new is not None
    assert new.state == HALF_OPEN
    assert new.half_open_permits_granted == 1
    assert at(new.state_since) == T0 + 60
    assert not new.HasField("open_until")
    assert new.transitions == 2
    assert (new.last_transition.from_state, new.last_transition.to_state) == (OPEN, HALF_OPEN)
    assert new.last_transition.failure_rate == -1.0
    assert new.last_transition.slow_call_rate == -1.0


def test_half_open_grants_exactly_the_permitted_number_of_trials() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=3)
    first = allow(config, opened(config), T0 + 60)
    assert first.new_status is not None
    status = first.new_status
    for expected in (2, 3):
        decision = allow(config, status, T0 + 61)
        assert decision.allowed and decision.trial
        assert decision.new_status is not None
        assert decision.new_status.half_open_permits_granted == expected
        assert decision.new_status.transitions == status.transitions  # not a transition
        status = decision.new_status
    refused = allow(config, status, T0 + 61)
    assert refused == Decision(False, False, 1.0, None)


def test_half_open_refusal_waits_no_longer_than_the_max_wait() -> None:
    config = make_config(
        permitted_number_of_calls_in_half_open_state=1,
        max_wait_duration_in_half_open_state=Duration(seconds=5),
    )
    status = half_open(config, T0 + 60)
    status.half_open_permits_granted = 1
    assert allow(config, status, T0 + 62).retry_after == 1.0
    assert allow(config, status, T0 + 64.75).retry_after == pytest.approx(0.25)
    assert allow(config, status, T0 + 70).retry_after == 0.0


def test_half_open_partial_trials_only_accumulate() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=3)
    status = half_open(config, T0 + 60)
    updated = on_outcomes(config, status, counts(1, 1, 1), breaker_pb2.WindowStats(), T0 + 61)
    assert updated is not None
    assert updated.state == HALF_OPEN
    assert updated.transitions == status.transitions
    assert updated.half_open_outcomes == counts(1, 1, 1)
    assert on_outcomes(config, updated, counts(), breaker_pb2.WindowStats(), T0 + 61) is None


def test_half_open_successful_trials_close_the_breaker() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=3)
    status = half_open(config, T0 + 60)
    status.half_open_permits_granted = 3
    step = on_outcomes(config, status, counts(2), breaker_pb2.WindowStats(), T0 + 61)
    assert step is not None
    closed = on_outcomes(config, step, counts(1), breaker_pb2.WindowStats(), T0 + 62)
    assert closed is not None
    assert closed.state == CLOSED
    assert closed.half_open_permits_granted == 0
    assert not closed.HasField("half_open_outcomes")
    assert not closed.HasField("open_until")
    t = closed.last_transition
    assert (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)
    assert t.reason.startswith("trial calls: ")
    assert t.calls == 3
    assert t.failure_rate == 0.0


def test_half_open_failures_at_the_threshold_reopen_with_a_new_wait() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=4)
    status = half_open(config, T0 + 60)
    reopened = on_outcomes(config, status, counts(2, 2), breaker_pb2.WindowStats(), T0 + 70)
    assert reopened is not None
    assert reopened.state == OPEN
    assert at(reopened.open_until) == T0 + 130
    assert reopened.last_transition.reason == (
        "trial calls: failure rate 50.0% >= 50.0% over 4 calls"
    )
    assert reopened.last_transition.failure_rate == 50.0
    assert reopened.transitions == status.transitions + 1


def test_half_open_failures_below_the_threshold_close() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=4)
    status = half_open(config, T0 + 60)
    closed = on_outcomes(config, status, counts(3, 1), breaker_pb2.WindowStats(), T0 + 70)
    assert closed is not None and closed.state == CLOSED


def test_half_open_slow_trials_reopen() -> None:
    config = make_config(
        permitted_number_of_calls_in_half_open_state=4, slow_call_rate_threshold=50.0
    )
    status = half_open(config, T0 + 60)
    reopened = on_outcomes(config, status, counts(4, 0, 2), breaker_pb2.WindowStats(), T0 + 70)
    assert reopened is not None and reopened.state == OPEN
    assert reopened.last_transition.slow_call_rate == 50.0


def test_max_wait_in_half_open_reopens_by_tick() -> None:
    config = make_config(max_wait_duration_in_half_open_state=Duration(seconds=5))
    status = half_open(config, T0 + 60)
    assert tick(config, status, T0 + 64.9) is None
    reopened = tick(config, status, T0 + 65)
    assert reopened is not None
    assert reopened.state == OPEN
    assert at(reopened.open_until) == T0 + 125
    assert "did not complete" in reopened.last_transition.reason
    assert reopened.last_transition.failure_rate == -1.0


def test_without_max_wait_half_open_waits_for_all_trials() -> None:
    config = make_config()
    assert tick(config, half_open(config, T0 + 60), T0 + 86_400) is None


def test_automatic_transition_by_tick_only_when_enabled() -> None:
    manual = make_config()
    assert tick(manual, opened(manual), T0 + 600) is None
    auto = make_config(automatic_transition_from_open_to_half_open_enabled=True)
    status = opened(auto)
    assert tick(auto, status, T0 + 59.5) is None
    moved = tick(auto, status, T0 + 60)
    assert moved is not None
    assert moved.state == HALF_OPEN
    assert moved.half_open_permits_granted == 0
    assert "automatic" in moved.last_transition.reason


def test_tick_leaves_closed_and_forced_states_alone() -> None:
    config = make_config(
        automatic_transition_from_open_to_half_open_enabled=True,
        max_wait_duration_in_half_open_state=Duration(seconds=1),
    )
    for state in (CLOSED, FORCED_OPEN, DISABLED, METRICS_ONLY):
        status = force(config, initial_status(T0), state, "ops", "", T0)
        assert tick(config, status, T0 + 86_400) is None


FAILING_WINDOW = breaker_pb2.WindowStats(
    calls=10, failures=10, slow_calls=10, failure_rate=100.0, slow_call_rate=100.0
)


def test_forced_open_refuses_and_ignores_outcomes() -> None:
    config = make_config(wait_duration_in_open_state=Duration(seconds=30))
    status = force(config, initial_status(T0), FORCED_OPEN, "alice", "maintenance", T0)
    assert status.state == FORCED_OPEN
    assert not status.HasField("open_until")
    assert allow(config, status, T0 + 86_400) == Decision(False, False, 30.0, None)
    assert on_outcomes(config, status, counts(10), FAILING_WINDOW, T0 + 1) is None


def test_disabled_allows_and_ignores_outcomes() -> None:
    config = make_config()
    status = force(config, initial_status(T0), DISABLED, "alice", "", T0)
    assert allow(config, status, T0) == Decision(True, False, 0.0, None)
    assert on_outcomes(config, status, counts(0, 10), FAILING_WINDOW, T0) is None


def test_metrics_only_allows_and_never_trips() -> None:
    config = make_config()
    status = force(config, initial_status(T0), METRICS_ONLY, "alice", "", T0)
    window = window_for(config)
    assert report(config, status, window, counts(0, 10, 10), T0) is None
    assert window.stats(T0, 10).failure_rate == 100.0  # still counted
    assert allow(config, status, T0).allowed


def test_open_ignores_outcomes() -> None:
    config = make_config()
    assert on_outcomes(config, opened(config), counts(0, 10), FAILING_WINDOW, T0 + 1) is None


def test_force_closed_resets_from_half_open() -> None:
    config = make_config()
    status = half_open(config, T0 + 60)
    status.half_open_permits_granted = 2
    status.half_open_outcomes.CopyFrom(counts(1, 1))
    reset = force(config, status, CLOSED, "bob", "dependency fixed", T0 + 61)
    assert reset.state == CLOSED
    assert reset.half_open_permits_granted == 0
    assert not reset.HasField("half_open_outcomes")
    assert reset.transitions == status.transitions + 1
    t = reset.last_transition
    assert (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)
    assert (t.actor, t.reason) == ("bob", "dependency fixed")
    assert t.failure_rate == -1.0
    assert allow(config, reset, T0 + 61).allowed


def test_force_closed_clears_open_until() -> None:
    config = make_config()
    reset = force(config, opened(config), CLOSED, "bob", "", T0 + 1)
    assert not reset.HasField("open_until")
    assert allow(config, reset, T0 + 1).allowed


def test_force_reason_defaults_to_the_actor() -> None:
    config = make_config()
    status = force(config, initial_status(T0), FORCED_OPEN, "alice", "", T0)
    assert status.last_transition.reason == "forced by alice"
    assert status.last_transition.actor == "alice"


@pytest.mark.parametrize("state", [OPEN, HALF_OPEN, breaker_pb2.BREAKER_STATE_UNSPECIFIED, 42])
def test_force_rejects_other_states(state: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        force(make_config(), initial_status(T0), state, "alice", "", T0)
    assert err.value.field == "state"


def test_inputs_are_never_mutated() -> None:
    config = make_config(
        permitted_number_of_calls_in_half_open_state=2,
        automatic_transition_from_open_to_half_open_enabled=True,
        max_wait_duration_in_half_open_state=Duration(seconds=5),
    )
    config_bytes = config.SerializeToString()
    closed = initial_status(T0)
    open_ = opened(config)
    half = half_open(config, T0 + 60)
    statuses = [closed, open_, half]
    before = [s.SerializeToString() for s in statuses]
    batch = counts(0, 2, 1)
    batch_bytes = batch.SerializeToString()
    stats_bytes = FAILING_WINDOW.SerializeToString()

    for status in statuses:
        for now in (T0, T0 + 60, T0 + 70):
            on_outcomes(config, status, batch, FAILING_WINDOW, now)
            allow(config, status, now)
            tick(config, status, now)
            force(config, status, CLOSED, "ops", "", now)

    assert [s.SerializeToString() for s in statuses] == before
    assert config.SerializeToString() == config_bytes
    assert batch.SerializeToString() == batch_bytes
    assert FAILING_WINDOW.SerializeToString() == stats_bytes


def test_returned_status_is_a_new_message() -> None:
    config = make_config()
    status = half_open(config, T0 + 60)
    decision = allow(config, status, T0 + 60)
    assert decision.new_status is not None
    assert decision.new_status is not status
    assert status.half_open_permits_granted == 0


def test_decision_is_frozen() -> None:
    decision = allow(make_config(), initial_status(T0), T0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]


def test_transitions_count_across_a_full_cycle() -> None:
    config = make_config(permitted_number_of_calls_in_half_open_state=1)
    status = opened(config)
    decision = allow(config, status, T0 + 60)
    assert decision.new_status is not None
    closed = on_outcomes(config, decision.new_status, counts(1), FAILING_WINDOW, T0 + 61)
    assert closed is not None
    assert closed.state == CLOSED
    assert closed.transitions == 3


def test_state_names() -> None:
    assert state_name(CLOSED) == "CLOSED"
    assert state_name(HALF_OPEN) == "HALF_OPEN"
    assert state_name(FORCED_OPEN) == "FORCED_OPEN"
    assert state_name(METRICS_ONLY) == "METRICS_ONLY"
    assert state_name(99) == "UNKNOWN(99)"


# -- ForceState's rules (checked before the breaker is read) ------------------


@pytest.mark.parametrize("state", [FORCED_OPEN, DISABLED, METRICS_ONLY, CLOSED])
def test_check_force_accepts_the_forceable_states(state: int) -> None:
    check_force(state, "x" * 1024)


@pytest.mark.parametrize("state", [OPEN, HALF_OPEN, breaker_pb2.BREAKER_STATE_UNSPECIFIED, 99])
def test_check_force_refuses_other_states(state: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_force(state, "")
    assert err.value.field == "state"
    assert "FORCED_OPEN, DISABLED, METRICS_ONLY or CLOSED" in err.value.message


def test_check_force_bounds_the_reason() -> None:
    with pytest.raises(InvalidArgument) as err:
        check_force(FORCED_OPEN, "x" * 1025)
    assert err.value.field == "reason"


def test_force_applies_the_same_rules() -> None:
    with pytest.raises(InvalidArgument):
        force(make_config(), initial_status(T0), HALF_OPEN, "ops", "", T0)
