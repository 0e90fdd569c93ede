"""Unit tests for the leader's timers: ``machine.next_due`` against ``tick``, and ``Timers``."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import allow, force, initial_status, next_due, normalize_config, tick
from bulwark_server.breakers.machine import on_outcomes
from bulwark_server.breakers.timers import Timers

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
T0 = 1_700_000_000.0


def make_config(**fields: Any) -> breaker_pb2.BreakerConfig:
    fields.setdefault("sliding_window_size", 10)
    fields.setdefault("minimum_number_of_calls", 10)
    fields.setdefault("permitted_number_of_calls_in_half_open_state", 3)
    return normalize_config(breaker_pb2.BreakerConfig(**fields))


def opened(config: breaker_pb2.BreakerConfig, now: float) -> breaker_pb2.BreakerStatus:
    stats = breaker_pb2.WindowStats(failure_rate=100.0, slow_call_rate=0.0, calls=10)
    status = on_outcomes(
        config, initial_status(now), breaker_pb2.OutcomeCounts(failures=10), stats, now
    )
    assert status is not None and status.state == OPEN
    return status


def half_open(config: breaker_pb2.BreakerConfig, now: float) -> breaker_pb2.BreakerStatus:
    decision = allow(config, opened(config, T0), now)
    assert decision.new_status is not None and decision.new_status.state == HALF_OPEN
    return decision.new_status


def configs() -> list[breaker_pb2.BreakerConfig]:
    out = []
    for automatic in (False, True):
        for max_wait in (0.0, 0.001, 5.0, 86_400.0):
            for wait in (0.001, 0.25, 60.0, 86_400.0):
                out.append(
                    make_config(
                        automatic_transition_from_open_to_half_open_enabled=automatic,
                        wait_duration_in_open_state=Duration(
                            seconds=int(wait), nanos=round((wait % 1) * 1e9)
                        ),
                        max_wait_duration_in_half_open_state=Duration(
                            seconds=int(max_wait), nanos=round((max_wait % 1) * 1e9)
                        ),
                    )
                )
    return out


def statuses(config: breaker_pb2.BreakerConfig) -> list[breaker_pb2.BreakerStatus]:
    no_open_until = opened(config, T0 + 0.3)
    no_open_until.ClearField("open_until")  # falls back to state_since + wait
    return [
        initial_status(T0),
        opened(config, T0 + 0.7),
        no_open_until,
        half_open(config, T0 + 86_400.5),
        force(config, initial_status(T0), breaker_pb2.BREAKER_STATE_FORCED_OPEN, "op", "", T0),
        force(config, initial_status(T0), breaker_pb2.BREAKER_STATE_DISABLED, "op", "", T0),
        force(config, initial_status(T0), breaker_pb2.BREAKER_STATE_METRICS_ONLY, "op", "", T0),
    ]


def test_next_due_is_exactly_when_tick_first_changes_the_status() -> None:
    rng = random.Random(7)
    for config in configs():
        for status in statuses(config):
            due = next_due(config, status)
            if due is None:
                for now in (T0, T0 + 1, T0 + 86_400, T0 + 10 * 86_400):
                    assert tick(config, status, now) is None
                continue
            assert tick(config, status, due) is not None
            assert tick(config, status, due + rng.uniform(0, 86_400)) is not None
            before = [due - 1e-6, due - 0.001, due - rng.uniform(0, 86_400), T0 - 1]
            for now in before:
                if now < due:
                    assert tick(config, status, now) is None, (config, status, now)


def test_next_due_by_state() -> None:
    auto = make_config(automatic_transition_from_open_to_half_open_enabled=True)
    manual = make_config()
    status = opened(auto, T0)
    assert next_due(auto, status) == pytest.approx(T0 + 60)
    assert next_due(manual, opened(manual, T0)) is None  # only a call moves it on
    limited = make_config(max_wait_duration_in_half_open_state=Duration(seconds=5))
    assert next_due(limited, half_open(limited, T0 + 60)) == pytest.approx(T0 + 65)
    assert next_due(manual, half_open(manual, T0 + 60)) is None
    assert next_due(auto, initial_status(T0)) is None


def test_timers_hand_out_each_due_name_once_in_order() -> None:
    timers = Timers()
    timers.set("b", 20.0)
    timers.set("a", 10.0)
    timers.set("c", 30.0)
    assert timers.next_due() == 10.0
    assert timers.pop_due(9.9) == []
    assert timers.pop_due(20.0) == ["a", "b"]
    assert timers.pop_due(25.0) == []
    assert len(timers) == 1 and "c" in timers and "a" not in timers
    assert timers.pop_due(100.0) == ["c"]
    assert timers.next_due() is None


def test_rearming_replaces_the_earlier_time() -> None:
    timers = Timers()
    timers.set("a", 10.0)
    timers.set("a", 50.0)
    assert timers.due("a") == 50.0
    assert timers.pop_due(20.0) == []
    timers.set("a", 5.0)
    assert timers.next_due() == 5.0
    assert timers.pop_due(20.0) == ["a"]
    assert timers.pop_due(60.0) == []  # the stale 50.0 entry is not handed out


def test_disarming() -> None:
    timers = Timers()
    timers.set("a", 10.0)
    timers.set("b", 10.0)
    timers.set("a", None)
    timers.discard("b")
    timers.discard("missing")
    assert timers.pop_due(100.0) == []
    assert timers.next_due() is None
    timers.set("a", 1.0)
    timers.clear()
    assert len(timers) == 0 and timers.pop_due(100.0) == []


def test_setting_the_same_time_again_adds_nothing() -> None:
    timers = Timers()
    for _ in range(1000):
        timers.set("a", 10.0)
    assert len(timers._heap) == 1
    assert timers.pop_due(10.0) == ["a"]


def test_stale_entries_stay_bounded_and_the_order_holds() -> None:
    rng = random.Random(3)
    timers = Timers()
    expected: dict[str, float] = {}
    for step in range(20_000):
        name = f"b{rng.randrange(50)}"
        if rng.random() < 0.1:
            timers.discard(name)
            expected.pop(name, None)
        else:
            due = rng.uniform(0, 1000)
            timers.set(name, due)
            expected[name] = due
        assert len(timers._heap) <= 2 * len(timers) + 65, step
    assert len(timers) == len(expected)
    popped = timers.pop_due(500.0)
    assert popped == sorted((n for n, d in expected.items() if d <= 500.0), key=expected.get)
    assert sorted(timers.pop_due(1000.0)) == sorted(n for n, d in expected.items() if d > 500.0)
