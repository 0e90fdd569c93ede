"""chaos.engine: the leader's experiment loop driven by hand, with the real FaultRules and
Experiments over an in-memory store, fake probes and hands, and a fake clock.

The store keeps etcd's state and a cache of it that follows at once, or, with
``lagging``, only on ``catch_up()`` (the watch-fed cache a replica reads); ``down``
fails every write as an unreachable etcd does.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping

import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import breaker_pb2, feature_pb2
from bulwark.v1 import chaos_pb2 as C
from bulwark_server import timestamps
from bulwark_server.chaos.engine import SILENCE_GRACE_S, SWEEP_S, ExperimentEngine
from bulwark_server.chaos.experiments import KEPT_S, Experiments
from bulwark_server.chaos.faults import FaultRules
from bulwark_server.errors import (
    Conflict,
    FailedPrecondition,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.store import Entry, Fence
from bulwark_server.store.keys import FAULT_RULE_KIND, key_for, kind_prefix

T0 = 1_800_000_000.0
RUNNING = C.EXPERIMENT_STATE_RUNNING
COMPLETED = C.EXPERIMENT_STATE_COMPLETED
ABORTED = C.EXPERIMENT_STATE_ABORTED
PASSED, FAILED = C.VERDICT_PASSED, C.VERDICT_FAILED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
FENCE = Fence(b"/bulwark/v1/leader", 7)


# -- fakes ------------------------------------------------------------------------------


class FakeStore:
    """The parts of EtcdStore that FaultRules and Experiments use, over dicts."""

    def __init__(self) -> None:
        self.etcd: dict[bytes, Entry] = {}
        self.cache: dict[bytes, Entry] = {}
        self.revision = 1
        self.lagging = False
        self.down = False
        self.deposed = False
        self.refused: set[bytes] = set()  # keys whose writes fail (too large, say)

    def catch_up(self) -> None:
        self.cache = dict(self.etcd)

    def _write(self, key: bytes, value: bytes | None, fence: Fence | None) -> int:
        if self.down:
            raise StoreUnavailable("etcd is away")
        if key in self.refused:
            raise StoreUnavailable(f"{key!r} refused")
        if fence is not None and self.deposed:
            raise NotLeader("deposed")
        self.revision += 1
        if value is None:
            self.etcd.pop(key, None)
        else:
            old = self.etcd.get(key)
            created = old.create_revision if old else self.revision
            self.etcd[key] = Entry(key, value, created, self.revision)
        if not self.lagging:
            self.catch_up()
        return self.revision

    def get(self, kind: str, name: str) -> Entry | None:
        return self.cache.get(key_for(kind, name))

    def scan(self, kind: str) -> list[Entry]:
        prefix = kind_prefix(kind)
        return [self.cache[k] for k in sorted(self.cache) if k.startswith(prefix)]

    async def upsert(
        self,
        kind: str,
        name: str,
        build: Callable[[Entry | None], bytes],
        *,
        expected_revision: int = 0,
        fence: Fence | None = None,
    ) -> tuple[int, bool]:
        key = key_for(kind, name)
        current = self.etcd.get(key)
        if expected_revision and (current is None or current.mod_revision != expected_revision):
            raise Conflict(f"{name} changed")
        return self._write(key, build(current), fence), current is None

    async def delete(self, kind: str, name: str, *, fence: Fence | None = None) -> int:
        key = key_for(kind, name)
        if key not in self.etcd:
            raise NotFound(f"{name} does not exist")
        return self._write(key, None, fence)

    async def delete_many(self, kind: str, names: list[str], *, fence: Fence | None = None) -> int:
        if self.down:
            raise StoreUnavailable("etcd is away")
        revision = self.revision
        for name in names:
            if key_for(kind, name) in self.etcd:
                revision = self._write(key_for(kind, name), None, fence)
        return revision

    def record(self, experiment_id: str) -> C.Experiment:
        """The experiment as etcd holds it."""
        return C.Experiment.FromString(self.etcd[key_for("experiments", experiment_id)].value)

    def rules(self) -> list[str]:
        prefix = kind_prefix(FAULT_RULE_KIND)
        return sorted(k[len(prefix) :].decode() for k in self.etcd if k.startswith(prefix))


class View:
    """probes.SteadyState over dicts."""

    def __init__(self) -> None:
        self.breakers: dict[str, int] = {"payments": CLOSED}
        self.features: dict[str, int] = {"express": AVAILABLE}
        self.primaries: dict[str, str] = {}

    def breaker_state(self, name: str) -> int | None:
        return self.breakers.get(name)

    def feature_status(self, name: str) -> int | None:
        return self.features.get(name)

    def error_rate(self, service: str, window_s: float) -> tuple[float, int]:
        return 0.0, 0

    def primary(self, service: str) -> str:
        return self.primaries.get(service, "")


class FakeLoad:
    """engine.LoadRun: a report once stopped."""

    def __init__(self, step: C.LoadStep, seconds: float) -> None:
        self.step = step
        self.seconds = seconds
        self.stopped = self.closed = False
        self.text = json.dumps({"count": 42, "rps": 10.0})

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True

    async def report(self) -> str:
        assert self.stopped, "a report is asked for only once the run was stopped"
        return self.text


class Hands:
    """engine.Hands recording every call; ``fail`` maps a kind to what it raises."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.calls: list[tuple[object, ...]] = []
        self.fail: dict[str, BaseException] = {}
        self.instances: dict[str, list[str]] = {}
        self.loads: list[FakeLoad] = []
        self.silences = 0

    def _call(self, kind: str, *args: object) -> None:
        self.calls.append((kind, *args))
        if kind in self.fail:
            raise self.fail[kind]

    def kinds(self) -> list[object]:
        return [c[0] for c in self.calls]

    async def force_breaker(self, name: str, state: int, reason: str) -> None:
        self._call("force_breaker", name, state)
        self.view.breakers[name] = state

    async def set_feature(self, name: str, status: int, reason: str) -> None:
        self._call("set_feature", name, status)

    async def switchover(self, service: str) -> str:
        self._call("switchover", service)
        return f"{service}-2"

    async def drain(self, service: str, instance_id: str) -> None:
        self._call("drain", service, instance_id)

    def serving(self, service: str) -> list[str]:
        return list(self.instances.get(service, []))

    async def silence(
        self, alertname: str, labels: Mapping[str, str], until: float, comment: str
    ) -> str:
        self._call("silence", alertname, dict(labels), until)
        self.silences += 1
        return f"silence-{self.silences}"

    async def end_silence(self, silence_id: str) -> None:
        self._call("end_silence", silence_id)

    def start_load(self, step: C.LoadStep, seconds: float) -> FakeLoad:
        self._call("start_load", step.method, seconds)
        run = FakeLoad(step, seconds)
        self.loads.append(run)
        return run


class Rig:
    def __init__(self) -> None:
        self.now = T0
        self.store = FakeStore()
        self.view = View()
        self.hands = Hands(self.view)
        self.faults = FaultRules(self.store, lambda: self.now)  # type: ignore[arg-type]
        self.experiments = Experiments(self.store, lambda: FENCE)  # type: ignore[arg-type]
        self.engine = ExperimentEngine(
            self.faults, self.experiments, self.view, self.hands, clock=lambda: self.now
        )

    async def start(self, spec: C.ExperimentSpec, by: str = "alice") -> C.Experiment:
        return await self.engine.start(spec, by)

    async def step(self, at: float) -> None:
        self.now = T0 + at
        await self.engine.step()

    def record(self, experiment: C.Experiment) -> C.Experiment:
        return self.store.record(experiment.id)

    def events(self, experiment: C.Experiment) -> list[str]:
        return [e.event for e in self.record(experiment).timeline]


# -- specs ------------------------------------------------------------------------------


def _s(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def flaky(percentage: float = 20) -> C.MethodStep:
    return C.MethodStep(
        fault=C.FaultRule(
            target=C.FaultTarget(downstream="payments"),
            abort=C.FaultAbort(code=14, percentage=percentage),
        )
    )


def force_open(name: str = "payments") -> C.MethodStep:
    return C.MethodStep(force_breaker=C.ForceBreakerStep(breaker=name, state=FORCED_OPEN))


def breaker_is(state: int = 0, not_state: int = 0, name: str = "payments") -> C.Probe:
    want = {"state": state} if state else {"not_state": not_state}
    return C.Probe(breaker=C.BreakerProbe(breaker=name, **want))


def feature_is(status: int) -> C.Probe:
    return C.Probe(feature=C.FeatureProbe(feature="express", status=status))


def expect(probe: C.Probe, within: float, after_end: bool = False) -> C.Expectation:
    return C.Expectation(probe=probe, within=_s(within), after_end=after_end)


def set_feature(status: int) -> C.Rollback:
    return C.Rollback(set_feature=C.SetFeatureRollback(feature="express", status=status))


def load_step(**fields: object) -> C.MethodStep:
    fields.setdefault("address", "127.0.0.1:50051")
    fields.setdefault("method", "pay.v1.Payments/Charge")
    fields.setdefault("rate", 10)
    return C.MethodStep(load=C.LoadStep(**fields))  # type: ignore[arg-type]


def spec(*method: C.MethodStep, duration: float = 10, **fields: object) -> C.ExperimentSpec:
    out = C.ExperimentSpec(method=method or [flaky()], **fields)  # type: ignore[arg-type]
    out.duration.CopyFrom(_s(duration))
    return out


# -- starting ---------------------------------------------------------------------------


async def test_start_records_running_before_it_injects_then_does_its_steps_in_order() -> None:
    rig = Rig()
    rig.hands.instances["api"] = ["api-1", "api-2", "api-3", "api-4"]
    rig.view.primaries["api"] = "api-1"
    experiment = await rig.start(
        spec(
            flaky(),
            force_open(),
            C.MethodStep(switchover="api"),
            C.MethodStep(drain=C.DrainStep(service="api", count=2)),
            hypothesis=[breaker_is(not_state=OPEN)],
        )
    )
    assert experiment.state == RUNNING and experiment.started_by == "alice"
    assert timestamps.unix(experiment.ends_at) == T0 + 10
    rule_name = f"exp-{experiment.id}-0"
    assert list(experiment.fault_rules) == [rule_name] and rig.store.rules() == [rule_name]
    rule = rig.faults.get(rule_name)
    assert rule.experiment == experiment.id
    assert timestamps.unix(rule.expires_at) == T0 + 10  # the rule ends with the method
    assert rule.description == f"chaos experiment {experiment.id}"
    # Drains take the first SERVING instances in id order, never the primary.
    assert rig.hands.calls == [
        ("force_breaker", "payments", FORCED_OPEN),
        ("switchover", "api"),
        ("drain", "api", "api-2"),
        ("drain", "api", "api-3"),
    ]
    assert rig.events(experiment) == [
        "started by alice; the hypothesis holds",
        f"step 0: fault rule {rule_name} put",
        "step 1: breaker payments forced BREAKER_STATE_FORCED_OPEN",
        "step 2: switched api over to api-2",
        "step 3: drained api-2, api-3 of api",
    ]
    assert [r.held for r in rig.record(experiment).hypothesis] == [True]


async def test_the_record_is_written_running_before_the_first_fault() -> None:
    rig = Rig()
    seen: list[list[int]] = []
    put = rig.faults.put

    async def spy(
        rule: C.FaultRule, expected_revision: int = 0, fence: Fence | None = None
    ) -> C.FaultRule:
        seen.append([e.state for e in rig.experiments.all()])
        return await put(rule, expected_revision, fence)

    rig.faults.put = spy  # type: ignore[method-assign]
    await rig.start(spec())
    assert seen == [[RUNNING]]


async def test_a_start_is_refused_by_the_hypothesis_the_kill_switch_or_a_drain_cap() -> None:
    rig = Rig()
    rig.view.breakers["payments"] = OPEN
    with pytest.raises(FailedPrecondition, match=r"does not hold: breaker payments is not OPEN"):
        await rig.start(spec(hypothesis=[breaker_is(not_state=OPEN)]))
    with pytest.raises(FailedPrecondition, match="no such breaker"):
        await rig.start(spec(hypothesis=[breaker_is(not_state=OPEN, name="nope")]))
    await rig.faults.set_halted(True, "game day over")
    with pytest.raises(FailedPrecondition, match="kill switch: game day over"):
        await rig.start(spec())
    await rig.faults.set_halted(False, "")
    rig.hands.instances["api"] = ["api-1", "api-2"]
    with pytest.raises(FailedPrecondition, match=r"drains 2 of 2 SERVING"):
        await rig.start(spec(C.MethodStep(drain=C.DrainStep(service="api", count=2))))
    with pytest.raises(FailedPrecondition, match="api-9 not SERVING"):
        await rig.start(
            spec(C.MethodStep(drain=C.DrainStep(service="api", instance_ids=["api-9"])))
        )
    assert rig.store.etcd == {} and rig.hands.calls == []  # nothing written, nothing done


async def test_a_failed_step_aborts_the_start_and_undoes_the_steps_before_it() -> None:
    rig = Rig()
    rig.hands.fail["switchover"] = FailedPrecondition("service 'api' has no primary")
    experiment = await rig.start(
        spec(
            flaky(),
            force_open(),
            C.MethodStep(switchover="api"),
            rollbacks=[set_feature(AVAILABLE)],
        )
    )
    assert experiment.state == ABORTED and experiment.verdict == FAILED
    assert experiment.reason == "a step failed: service 'api' has no primary"
    assert rig.store.rules() == []  # the fault rule put by step 0 is gone
    assert rig.hands.calls[-2:] == [
        ("force_breaker", "payments", CLOSED),  # step 1's breaker reset
        ("set_feature", "express", AVAILABLE),  # the rollback
    ]
    assert rig.record(experiment).state == ABORTED


# -- aborting ---------------------------------------------------------------------------


async def test_a_breach_aborts_deletes_the_rules_resets_breakers_and_runs_rollbacks() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            flaky(),
            force_open("ledger"),
            hypothesis=[feature_is(AVAILABLE)],
            rollbacks=[set_feature(AVAILABLE)],
        )
    )
    rig.view.breakers["ledger"] = FORCED_OPEN
    await rig.step(0.1)
    assert rig.record(experiment).state == RUNNING and len(rig.store.rules()) == 1
    rig.view.features["express"] = DEGRADED
    await rig.step(0.2)
    record = rig.record(experiment)
    assert record.state == ABORTED and record.verdict == FAILED
    assert record.reason == "hypothesis breached: feature express is AVAILABLE (DEGRADED)"
    assert rig.store.rules() == []
    assert rig.hands.calls[1:] == [
        ("force_breaker", "ledger", CLOSED),
        ("set_feature", "express", AVAILABLE),
    ]
    assert [(r.probe, r.held, r.value) for r in record.hypothesis] == [
        ("feature express is AVAILABLE", False, "DEGRADED")
    ]
    events = [e.event for e in record.timeline]
    assert "hypothesis breached: feature express is AVAILABLE" in events
    assert events[-1] == (
        "aborted: hypothesis breached: feature express is AVAILABLE (DEGRADED); verdict FAILED"
    )
    assert timestamps.unix(record.ended_at) == T0 + 0.2
    calls = len(rig.hands.calls)
    await rig.step(0.3)  # ended: nothing more is done
    assert len(rig.hands.calls) == calls


async def test_the_hypothesis_is_checked_every_check_interval() -> None:
    rig = Rig()
    experiment = await rig.start(spec(hypothesis=[feature_is(AVAILABLE)], check_interval=_s(1)))
    await rig.step(0)  # checked
    rig.view.features["express"] = DEGRADED
    await rig.step(0.5)
    assert rig.record(experiment).state == RUNNING  # not yet due
    await rig.step(1.0)
    assert rig.record(experiment).state == ABORTED


async def test_the_dead_mans_switch_aborts_unless_renewed() -> None:
    rig = Rig()
    held = await rig.start(spec(renew_within=_s(2), duration=60))
    await rig.step(1.9)
    assert rig.record(held).state == RUNNING
    rig.now = T0 + 1.5
    assert await rig.engine.renew(held.id) == T0 + 3.5
    await rig.step(3.4)
    assert rig.record(held).state == RUNNING
    await rig.step(3.6)
    record = rig.record(held)
    assert record.state == ABORTED and record.reason.startswith("dead-man's switch: not renewed")
    assert rig.store.rules() == []
    with pytest.raises(FailedPrecondition, match="already ended"):
        await rig.engine.renew(held.id)
    free = await rig.start(spec(duration=60))
    with pytest.raises(FailedPrecondition, match="no dead-man's switch"):
        await rig.engine.renew(free.id)
    with pytest.raises(NotFound):
        await rig.engine.renew("20270101T000000-000000")


async def test_the_dead_mans_switch_also_stops_a_load_in_the_recovery_window() -> None:
    rig = Rig()
    recovering = spec(
        load_step(),
        duration=2,
        renew_within=_s(3),
        expectations=[expect(breaker_is(OPEN), within=600, after_end=True)],
    )
    experiment = await rig.start(recovering)
    await rig.step(2.5)  # the method ended; its load goes on, waiting for the breaker
    record = rig.record(experiment)
    assert record.state == RUNNING and record.HasField("method_ended_at")
    assert not rig.hands.loads[0].stopped
    await rig.step(3.5)  # nobody renewed it: the load must not run on for 10 minutes
    record = rig.record(experiment)
    assert record.state == ABORTED and record.reason.startswith("dead-man's switch")
    assert rig.hands.loads[0].stopped


async def test_an_operator_stop_aborts_once() -> None:
    rig = Rig()
    experiment = await rig.start(spec(rollbacks=[set_feature(AVAILABLE)]))
    stopped = await rig.engine.stop(experiment.id, "wrong service", "bob")
    assert stopped.state == ABORTED and stopped.reason == "stopped by bob: wrong service"
    assert rig.store.rules() == [] and rig.hands.kinds() == ["set_feature"]
    with pytest.raises(FailedPrecondition, match="already ended"):
        await rig.engine.stop(experiment.id, "", "bob")
    assert rig.hands.kinds() == ["set_feature"]


async def test_the_kill_switch_aborts_everything_and_sweeps_rules_that_raced_it() -> None:
    rig = Rig()
    first = await rig.start(spec())
    second = await rig.start(spec(flaky(10)))
    await rig.faults.set_halted(True, "incident 42")
    assert rig.store.rules() == []  # deleted at once by the switch
    # A rule put by a replica that had not seen the switch yet.
    racer = C.FaultRule(name="late", abort=C.FaultAbort(code=14, percentage=5))
    racer.expires_at.CopyFrom(timestamps.at(T0 + 600))
    await rig.store.upsert(FAULT_RULE_KIND, "late", lambda _: racer.SerializeToString())
    await rig.step(0.05)
    for experiment in (first, second):
        record = rig.record(experiment)
        assert (record.state, record.reason) == (ABORTED, "kill switch: incident 42")
    assert rig.store.rules() == []
    with pytest.raises(FailedPrecondition, match="halted"):
        await rig.faults.put(racer)


# -- ending -----------------------------------------------------------------------------


async def test_expectations_met_in_time_pass_the_verdict_after_the_recovery() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            flaky(),
            force_open(),
            duration=10,
            expectations=[
                expect(breaker_is(FORCED_OPEN), within=5),
                expect(breaker_is(CLOSED), within=30, after_end=True),
            ],
        )
    )
    await rig.step(1.5)
    record = rig.record(experiment)
    assert [(r.met, r.after_seconds) for r in record.expectations] == [(True, 1.5), (False, 0)]
    assert timestamps.unix(record.expectations[0].met_at) == T0 + 1.5
    rig.hands.fail["force_breaker"] = StoreUnavailable("no")  # the reset at the end fails
    await rig.step(10)
    record = rig.record(experiment)
    # The method ended (its rules deleted) but the experiment waits for its recovery.
    assert record.state == RUNNING and record.HasField("method_ended_at")
    assert rig.store.rules() == []
    assert "reset breaker payments failed: no" in [e.event for e in record.timeline]
    await rig.step(20)
    assert rig.record(experiment).state == RUNNING
    rig.view.breakers["payments"] = CLOSED
    await rig.step(25)
    record = rig.record(experiment)
    assert (record.state, record.verdict, record.reason) == (COMPLETED, PASSED, "")
    assert record.expectations[1].met and record.expectations[1].after_seconds == 15
    assert record.timeline[-1].event == "completed; verdict PASSED"


async def test_an_expectation_not_met_in_time_fails_the_verdict() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            duration=5,
            expectations=[
                expect(breaker_is(OPEN), within=2),
                expect(feature_is(AVAILABLE), within=3, after_end=True),
            ],
        )
    )
    await rig.step(2.5)
    rig.view.breakers["payments"] = OPEN  # too late: its 2 s are over
    await rig.step(4)
    await rig.step(5)  # the method ends
    await rig.step(5.05)  # the next round: the after-end expectation held at once
    record = rig.record(experiment)
    assert (record.state, record.verdict) == (COMPLETED, FAILED)
    assert [r.met for r in record.expectations] == [False, True]


async def test_after_end_expectations_get_their_time_then_the_experiment_completes() -> None:
    rig = Rig()
    rig.view.features["express"] = DEGRADED
    experiment = await rig.start(
        spec(duration=5, expectations=[expect(feature_is(AVAILABLE), within=8, after_end=True)])
    )
    await rig.step(5)
    await rig.step(12.9)
    assert rig.record(experiment).state == RUNNING
    await rig.step(13)
    record = rig.record(experiment)
    assert (record.state, record.verdict) == (COMPLETED, FAILED)
    assert not record.expectations[0].met and not record.expectations[0].HasField("met_at")


async def test_expected_alerts_are_silenced_through_the_recovery_and_ended_after() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            duration=10,
            expected_alerts=['BulwarkBreakerOpen{breaker="payments"}', "PaymentsSlow"],
            expectations=[expect(feature_is(DEGRADED), within=40, after_end=True)],
        )
    )
    until = T0 + 10 + 40 + SILENCE_GRACE_S
    assert rig.hands.calls == [
        ("silence", "BulwarkBreakerOpen", {"breaker": "payments"}, until),
        ("silence", "PaymentsSlow", {}, until),
    ]
    assert list(experiment.silence_ids) == ["silence-1", "silence-2"]
    rig.hands.fail["end_silence"] = NotFound("gone")  # already ended by hand: no matter
    await rig.engine.stop(experiment.id, "", "bob")
    assert rig.hands.calls[-2:] == [("end_silence", "silence-1"), ("end_silence", "silence-2")]
    assert rig.record(experiment).state == ABORTED


# -- loads ------------------------------------------------------------------------------


async def test_a_load_runs_through_the_recovery_and_its_report_is_kept() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            load_step(),
            duration=10,
            expectations=[expect(feature_is(DEGRADED), within=20, after_end=True)],
        )
    )
    (run,) = rig.hands.loads
    assert run.seconds == 30  # the method's 10 s, then the recovery's 20
    await rig.step(10)
    assert not run.stopped  # the method ended; the load goes on through the recovery
    await rig.step(30)
    record = rig.record(experiment)
    assert run.stopped and record.state == COMPLETED
    assert list(record.load_reports) == [run.text]


async def test_an_abort_stops_the_load_and_keeps_what_it_measured() -> None:
    rig = Rig()
    experiment = await rig.start(spec(load_step(), hypothesis=[feature_is(AVAILABLE)]))
    (run,) = rig.hands.loads
    rig.view.features["express"] = DEGRADED
    await rig.step(0.1)
    record = rig.record(experiment)
    assert record.state == ABORTED and run.stopped
    assert json.loads(record.load_reports[0]) == {"count": 42, "rps": 10.0}


async def test_a_load_started_by_a_previous_leader_is_noted_as_lost() -> None:
    old = Rig()
    experiment = await old.start(spec(load_step(), duration=5))
    new = Rig()  # a new leader on the same records
    new.store = old.store
    new.faults = FaultRules(new.store, lambda: new.now)  # type: ignore[arg-type]
    new.experiments = Experiments(new.store, lambda: FENCE)  # type: ignore[arg-type]
    new.engine = ExperimentEngine(
        new.faults, new.experiments, new.view, new.hands, clock=lambda: new.now
    )
    await new.step(5)
    await new.step(5.05)
    record = new.record(experiment)
    assert record.state == COMPLETED and list(record.load_reports) == []
    assert "load ran on a previous leader; its report is lost" in new.events(experiment)


async def test_leadership_ending_ends_this_leaders_loads() -> None:
    rig = Rig()
    await rig.start(spec(load_step(), duration=60))
    task = asyncio.create_task(rig.engine.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.hands.loads[0].closed


# -- housekeeping -----------------------------------------------------------------------


async def test_expired_and_orphaned_rules_are_swept_and_old_records_forgotten() -> None:
    rig = Rig()
    experiment = await rig.start(spec(duration=60))
    by_hand = C.FaultRule(name="by-hand", abort=C.FaultAbort(code=14, percentage=5))
    by_hand.expires_at.CopyFrom(timestamps.at(T0 + 0.4))
    await rig.faults.put(by_hand)
    orphan = C.FaultRule(name="orphan", experiment="20260101T000000-abcdef")
    orphan.abort.CopyFrom(C.FaultAbort(code=14, percentage=5))
    orphan.expires_at.CopyFrom(timestamps.at(T0 + 600))
    await rig.store.upsert(FAULT_RULE_KIND, "orphan", lambda _: orphan.SerializeToString())
    await rig.step(0)
    assert rig.store.rules() == ["by-hand", f"exp-{experiment.id}-0"]  # orphan: not running
    await rig.step(0.5)
    assert "by-hand" in rig.store.rules()  # expired, but the sweep is once a second
    await rig.step(SWEEP_S)
    assert rig.store.rules() == [f"exp-{experiment.id}-0"]
    await rig.engine.stop(experiment.id, "", "bob")
    await rig.step(KEPT_S)
    assert rig.experiments.all() != []
    await rig.step(KEPT_S + 61)
    assert rig.experiments.all() == []


# -- races and failures -----------------------------------------------------------------


async def test_a_lagging_cache_cannot_bring_an_ended_experiment_back() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(
            hypothesis=[feature_is(AVAILABLE)],
            rollbacks=[set_feature(AVAILABLE)],
            renew_within=_s(5),
            duration=60,
        )
    )
    rig.store.lagging = True  # the watch falls behind the leader's own writes
    rig.view.features["express"] = DEGRADED
    await rig.step(0.1)
    assert rig.store.record(experiment.id).state == ABORTED
    done = list(rig.hands.calls)
    # The cache still says RUNNING: neither a renewal, a stop nor the next rounds may
    # act on that version (it would write the experiment back as RUNNING).
    with pytest.raises(FailedPrecondition, match="already ended"):
        await rig.engine.renew(experiment.id)
    with pytest.raises(FailedPrecondition, match="already ended"):
        await rig.engine.stop(experiment.id, "", "bob")
    rig.view.features["express"] = AVAILABLE
    await rig.step(0.2)
    await rig.step(60)
    assert rig.store.record(experiment.id).state == ABORTED
    assert rig.hands.calls == done  # no second rollback
    assert rig.experiments.running() == []
    rig.store.catch_up()
    assert rig.experiments.get(experiment.id).state == ABORTED


async def test_a_renewal_on_a_lagging_cache_keeps_what_the_round_before_recorded() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(force_open(), expectations=[expect(breaker_is(FORCED_OPEN), 5)], renew_within=_s(5))
    )
    rig.store.lagging = True
    await rig.step(1)  # the expectation is met and recorded
    await rig.engine.renew(experiment.id)
    record = rig.store.record(experiment.id)
    assert record.expectations[0].met and timestamps.unix(record.renewed_at) == T0 + 1


async def test_an_abort_cut_short_by_etcd_is_finished_whatever_the_probes_say_next() -> None:
    rig = Rig()
    experiment = await rig.start(
        spec(flaky(), force_open("ledger"), hypothesis=[feature_is(AVAILABLE)], duration=60)
    )
    rig.view.features["express"] = DEGRADED
    rig.store.down = True  # etcd away: not even the rules can be deleted
    with pytest.raises(StoreUnavailable):
        await rig.step(0.1)
    assert rig.store.rules() != []
    rig.view.features["express"] = AVAILABLE  # the breach is over when etcd is back
    rig.store.down = False
    rig.store.refused.add(key_for("experiments", experiment.id))  # half-way this time
    with pytest.raises(StoreUnavailable):
        await rig.step(0.2)
    assert rig.store.rules() == [] and rig.store.record(experiment.id).state == RUNNING
    rig.store.refused.clear()
    await rig.step(0.3)
    record = rig.record(experiment)
    assert record.state == ABORTED and record.verdict == FAILED
    assert record.reason == "hypothesis breached: feature express is AVAILABLE (DEGRADED)"


async def test_a_stop_that_etcd_refused_is_carried_out_by_the_next_round() -> None:
    rig = Rig()
    experiment = await rig.start(spec(duration=60))
    rig.store.down = True
    with pytest.raises(StoreUnavailable):
        await rig.engine.stop(experiment.id, "enough", "bob")
    rig.store.down = False
    await rig.step(0.1)
    record = rig.record(experiment)
    assert (record.state, record.reason) == (ABORTED, "stopped by bob: enough")
    assert rig.store.rules() == []


async def test_one_experiment_failing_keeps_no_other_from_its_checks() -> None:
    rig = Rig()
    stuck = await rig.start(spec(renew_within=_s(1), duration=60))
    rig.now = T0 + 1  # ids are time-ordered: this one comes second
    other = await rig.start(spec(flaky(5), hypothesis=[feature_is(AVAILABLE)], duration=60))
    rig.store.refused.add(key_for("experiments", stuck.id))  # its record cannot be written
    rig.view.features["express"] = DEGRADED
    with pytest.raises(StoreUnavailable):
        await rig.step(1.5)  # the first one's dead-man's switch lapses; its end fails
    assert rig.record(other).state == ABORTED  # the second one's breach was still seen
    assert rig.store.rules() == []  # and the first one's rules went all the same


async def test_drains_share_one_blast_radius_and_never_take_an_instance_twice() -> None:
    rig = Rig()
    rig.hands.instances["api"] = ["api-1", "api-2", "api-3", "api-4"]
    one = C.MethodStep(drain=C.DrainStep(service="api", count=1))
    await rig.start(spec(one, one))
    assert rig.hands.calls == [("drain", "api", "api-1"), ("drain", "api", "api-2")]
    rig.hands.calls.clear()
    by_id = [
        C.MethodStep(drain=C.DrainStep(service="api", instance_ids=["api-1", "api-2"])),
        C.MethodStep(drain=C.DrainStep(service="api", instance_ids=["api-3"])),
    ]
    with pytest.raises(FailedPrecondition, match=r"method\[1\].drain drains 3 of 4"):
        await rig.start(spec(*by_id))
    with pytest.raises(FailedPrecondition, match=r"method\[2\].drain drains 3 of 4"):
        await rig.start(spec(one, one, one))
    assert rig.hands.calls == []


async def test_a_bug_in_a_step_still_aborts_the_experiment_it_started() -> None:
    rig = Rig()
    rig.hands.fail["switchover"] = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        await rig.start(spec(flaky(), C.MethodStep(switchover="api"), duration=60))
    (record,) = rig.experiments.all()
    assert (record.state, record.reason) == (ABORTED, "a step failed: a bug")
    assert rig.store.rules() == []


async def test_a_bug_in_a_rollback_is_noted_and_the_rest_still_runs() -> None:
    rig = Rig()
    experiment = await rig.start(spec(force_open(), rollbacks=[set_feature(AVAILABLE)], duration=5))
    rig.hands.fail["force_breaker"] = RuntimeError("a bug")
    await rig.step(5)
    await rig.step(5.05)
    record = rig.record(experiment)
    assert record.state == COMPLETED
    assert "reset breaker payments failed: a bug" in [e.event for e in record.timeline]
    assert rig.hands.kinds()[-2:] == ["force_breaker", "set_feature"]


class SlowLoad(FakeLoad):
    """Reports only once every run of the experiment was asked for its report."""

    asked = 0

    async def report(self) -> str:
        SlowLoad.asked += 1
        while SlowLoad.asked < 2:
            await asyncio.sleep(0)
        return await super().report()


async def test_reports_are_awaited_together_fitted_to_the_record_and_kept_over_a_retry() -> None:
    rig = Rig()
    SlowLoad.asked = 0

    def start_load(step: C.LoadStep, seconds: float) -> FakeLoad:
        rig.hands.loads.append(SlowLoad(step, seconds))
        return rig.hands.loads[-1]

    rig.hands.start_load = start_load  # type: ignore[method-assign]
    experiment = await rig.start(spec(load_step(), load_step(), duration=60))
    big = rig.hands.loads[1]
    big.text = json.dumps({"count": 9, "rps": 1.5, "details": ["x" * 100] * 2000})
    rig.store.refused.add(key_for("experiments", experiment.id))
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(rig.engine.stop(experiment.id, "", "bob"), 2)
    rig.store.refused.clear()
    await asyncio.wait_for(rig.step(0.1), 2)
    record = rig.record(experiment)
    assert record.state == ABORTED
    first, second = (json.loads(r) for r in record.load_reports)
    assert first == {"count": 42, "rps": 10.0}
    assert second == {"count": 9, "rps": 1.5, "truncated": ["details"]}
    assert "report is lost" not in " ".join(e.event for e in record.timeline)


# -- load processes (chaos_setup.LoadProcess, with a fake child) --------------------------


class FakeChild:
    """subprocess.Popen for a loadtest that ignores SIGINT and runs until killed."""

    made: list[FakeChild] = []

    def __init__(self, command: list[str], **kwargs: object) -> None:
        self.command = command
        self.env = kwargs["env"]
        self.returncode: int | None = None
        self.signals: list[int] = []
        FakeChild.made.append(self)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[FakeChild]:
    from bulwark_server import chaos_setup

    FakeChild.made = []
    monkeypatch.setattr(chaos_setup.subprocess, "Popen", FakeChild)
    monkeypatch.setattr(chaos_setup, "LOAD_STOP_GRACE_S", 0.1)
    monkeypatch.setenv("BULWARK_TOKEN", "inherited-secret")
    return FakeChild.made


async def test_a_stopped_load_gets_its_grace_from_the_stop_not_its_planned_end(
    children: list[FakeChild],
) -> None:
    from bulwark_server.chaos_setup import LoadProcess

    run = LoadProcess(load_step().load, 3600, "127.0.0.1:1", "replica-token")
    run.stop()
    # Aborted an hour early: the report comes after the grace, the child killed.
    report = await asyncio.wait_for(run.report(), 2)
    assert children[0].returncode == -9 and children[0].signals
    assert json.loads(report) == {"error": "exit status -9"}


def test_a_load_command_reads_as_meant_and_carries_the_token_only_to_report(
    children: list[FakeChild],
) -> None:
    from bulwark_server.chaos_setup import LoadProcess

    step = load_step(data="-1", metadata={"-x": "1"}).load
    LoadProcess(step, 10, "127.0.0.1:1", "replica-token").close()
    command, env = children[0].command, children[0].env
    assert command[4:7] == ["127.0.0.1:50051", "--call=pay.v1.Payments/Charge", "--insecure"]
    assert "--data=-1" in command and "--metadata=-x=1" in command
    assert "BULWARK_TOKEN" not in env  # type: ignore[operator]
    step.report_as = "payments"
    LoadProcess(step, 10, "127.0.0.1:1", "replica-token").close()
    command, env = children[1].command, children[1].env
    assert command[-4:] == ["--report-as", "payments", "--bulwark", "127.0.0.1:1"]
    assert env["BULWARK_TOKEN"] == "replica-token"  # type: ignore[index]
    # Closed (leadership ended): killed at once, its scratch report gone.
    assert children[1].returncode == -9 and not os.path.exists(command[command.index("-o") + 1])


def test_a_load_that_cannot_start_fails_its_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from bulwark_server import chaos_setup

    def broken(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("no python")

    monkeypatch.setattr(chaos_setup.subprocess, "Popen", broken)
    with pytest.raises(FailedPrecondition, match="could not start: no python"):
        chaos_setup.LoadProcess(load_step().load, 10, "127.0.0.1:1", "")


async def test_a_start_whose_record_fails_after_its_steps_does_not_run_on() -> None:
    rig = Rig()
    writes = 0
    put = rig.experiments.put

    async def put_once(experiment: C.Experiment) -> C.Experiment:
        nonlocal writes
        writes += 1
        if writes == 2:  # the record of the steps done
            raise StoreUnavailable("timed out")
        return await put(experiment)

    rig.experiments.put = put_once  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await rig.start(spec(flaky(), force_open(), duration=60))
    (record,) = rig.experiments.all()
    # The caller saw the start fail (and may retry): this one must not go on.
    assert (record.state, record.reason) == (ABORTED, "its start could not be recorded")
    assert rig.store.rules() == [] and rig.hands.calls[-1] == ("force_breaker", "payments", CLOSED)


async def test_a_start_the_cache_has_not_seen_yet_is_found_and_its_rules_kept() -> None:
    rig = Rig()
    rig.store.lagging = True  # the leader's first write has not reached its cache yet
    experiment = await rig.start(spec(flaky(10), renew_within=_s(5)))
    assert rig.experiments.get(experiment.id).state == RUNNING
    assert await rig.engine.renew(experiment.id) == T0 + 5
    await rig.step(1.5)  # a sweep: its rules are no dead experiment's
    assert rig.store.rules() == list(experiment.fault_rules)
    assert rig.record(experiment).state == RUNNING
