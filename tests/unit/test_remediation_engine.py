"""Unit tests for bulwark_server.remediation.engine (with conditions): fakes, no etcd, fake time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import breaker_pb2, registry_pb2, signals_pb2
from bulwark.v1 import remediation_pb2 as rpb
from bulwark_server import timestamps
from bulwark_server.remediation.anomaly import AnomalyDetectors
from bulwark_server.remediation.conditions import Conditions, Target
from bulwark_server.remediation.engine import (
    DRY_RUN,
    ESCALATED,
    REFUSED,
    RESOLVED,
    RUNNING,
    STOPPED,
    RemediationEngine,
)

T0 = 1_700_000_000.0
SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
NOT_SERVING = registry_pb2.INSTANCE_HEALTH_NOT_SERVING
DRAINING = registry_pb2.INSTANCE_HEALTH_DRAINING
ERROR_RATE = rpb.SERVICE_SIGNAL_ERROR_RATE
HOOK = "https://hooks.example.com/heal"
ESCALATION = "BulwarkRemediationEscalated"


class FakeManager:
    """Playbooks, records (copies, by id) and the pause switch, as RemediationManager has them."""

    def __init__(self, books: Sequence[rpb.Playbook]) -> None:
        self.books = {b.name: b for b in books}
        self.records: dict[str, rpb.Remediation] = {}
        self.paused = False
        self.writes: list[rpb.Remediation] = []
        self.forgotten: list[str] = []

    def playbooks(self) -> list[rpb.Playbook]:
        return [_copy(self.books[name]) for name in sorted(self.books)]

    def remediations(self) -> list[rpb.Remediation]:
        return [_copy(self.records[rid]) for rid in sorted(self.records)]

    async def record(self, remediation: rpb.Remediation) -> None:
        remediation.revision = len(self.writes) + 1
        self.records[remediation.id] = _copy(remediation)
        self.writes.append(_copy(remediation))

    async def forget(self, remediation_id: str) -> None:
        self.forgotten.append(remediation_id)
        self.records.pop(remediation_id, None)


class FakeFleet:
    """conditions.Observations over plain dicts."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, registry_pb2.Instance]] = {}
        self.silence: dict[tuple[str, str], float | None] = {}
        self.breakers: dict[str, tuple[int, float]] = {}
        self.stats: dict[str, signals_pb2.ServiceSignals] = {}
        self.primaries: dict[str, registry_pb2.Primary] = {}
        self.windows: list[float] = []

    def add(self, service: str, *ids: str, health: int = SERVING, ttl: float = 6.0) -> None:
        for i in ids:
            pod = registry_pb2.Instance(service=service, id=i, health=health)
            pod.ttl.FromNanoseconds(int(ttl * 1e9))
            self.pods.setdefault(service, {})[i] = pod

    def set_health(self, service: str, instance_id: str, health: int) -> None:
        self.pods[service][instance_id].health = health  # type: ignore[assignment]

    def instances(self, service: str) -> Sequence[registry_pb2.Instance]:
        return list(self.pods.get(service, {}).values())

    async def silent_for(self, service: str, instance_id: str) -> float | None:
        return self.silence.get((service, instance_id), 0.0)

    def breaker(self, name: str) -> tuple[int, float] | None:
        return self.breakers.get(name)

    def signals(self, service: str, window_s: float) -> signals_pb2.ServiceSignals:
        self.windows.append(window_s)
        return self.stats.get(service, signals_pb2.ServiceSignals(service=service))

    def primary(self, service: str) -> registry_pb2.Primary | None:
        return self.primaries.get(service)


class FakeHands:
    """engine.Actuators recording every call; the kinds in ``fail`` raise."""

    def __init__(self, fleet: FakeFleet) -> None:
        self.fleet = fleet
        self.calls: list[tuple[object, ...]] = []
        self.fail: set[str] = set()
        self.epochs: dict[str, int] = {}

    def _call(self, kind: str, *args: object) -> None:
        self.calls.append((kind, *args))
        if kind in self.fail:
            raise RuntimeError(f"{kind} broke")

    def kinds(self) -> list[object]:
        return [c[0] for c in self.calls]

    async def drain(self, service: str, instance_id: str) -> None:
        self._call("drain", service, instance_id)
        self.fleet.set_health(service, instance_id, DRAINING)

    async def deregister(self, service: str, instance_id: str) -> None:
        self._call("deregister", service, instance_id)

    async def failover(self, service: str, from_instance: str = "") -> str:
        self._call("failover", service, from_instance)
        return ""

    def epoch(self, service: str) -> int:
        return self.epochs.get(service, 0)

    async def force_breaker(self, name: str, state: int, reason: str) -> None:
        self._call("force_breaker", name, state, reason)

    async def set_feature(self, name: str, status: int, reason: str) -> None:
        self._call("set_feature", name, status, reason)

    async def webhook(self, url: str, body: Mapping[str, object], key: str) -> None:
        self._call("webhook", url, dict(body), key)

    async def alert(
        self, labels: Mapping[str, str], severity: str, summary: str, description: str
    ) -> None:
        self._call("alert", dict(labels), severity, summary)

    async def resolve_alert(self, labels: Mapping[str, str]) -> None:
        self._call("resolve_alert", dict(labels))


def _copy(message):  # type: ignore[no-untyped-def]
    out = type(message)()
    out.CopyFrom(message)
    return out


def act(kind: str, **fields: object) -> rpb.Action:
    name = kind.title().replace("_", "")  # force_breaker: ForceBreakerAction
    return rpb.Action(**{kind: getattr(rpb, f"{name}Action")(**fields)})


def on_pods(service: str = "api", **fields: object) -> rpb.Condition:
    return rpb.Condition(instance=rpb.InstanceCondition(service=service, **fields))


DRAIN, WEBHOOK = act("drain"), act("webhook", url=HOOK)


def book(
    name: str, condition: rpb.Condition, *actions: rpb.Action, verify_s: int = 60, **guards: object
) -> rpb.Playbook:
    """A playbook; ``guards``: dry_run, or fields of PlaybookGuards."""
    dry_run = bool(guards.pop("dry_run", False))
    out = rpb.Playbook(name=name, condition=condition, actions=actions, dry_run=dry_run)
    out.guards.CopyFrom(rpb.PlaybookGuards(**guards))
    out.verify_within.FromSeconds(verify_s)
    return out


class Rig:
    def __init__(self, *books: rpb.Playbook, fleet_cap: int = 30, sick: bool = True) -> None:
        self.now = T0
        self.fleet = FakeFleet()
        if sick:  # api: a and b SERVING, c NOT_SERVING
            self.fleet.add("api", "a", "b")
            self.fleet.add("api", "c", health=NOT_SERVING)
        self.hands = FakeHands(self.fleet)
        self.manager = FakeManager(books)
        self.engine = RemediationEngine(
            self.manager,  # type: ignore[arg-type]
            Conditions(self.fleet),
            self.hands,
            clock=lambda: self.now,
            fleet_cap=fleet_cap,
        )

    async def step(self, at: float) -> None:
        self.now = T0 + at
        await self.engine.step()

    def records(self) -> list[rpb.Remediation]:
        return list(self.manager.records.values())

    def only(self) -> rpb.Remediation:
        (record,) = self.manager.records.values()
        return record

    def store(self, playbook: str, target: str, *steps: rpb.RemediationStep) -> str:
        """A RUNNING record left behind by a previous leader."""
        rid = f"{playbook}.stored"
        self.manager.records[rid] = rpb.Remediation(
            id=rid, playbook=playbook, target=target, state=RUNNING, steps=steps
        )
        return rid


def started(
    action: int, ago: float = 10, *, done: bool, epoch_before: int = 0
) -> rpb.RemediationStep:
    at = timestamps.at(T0 - ago)
    return rpb.RemediationStep(action=action, started_at=at, done=done, epoch_before=epoch_before)


# 1. Detect, act, verify.


async def test_an_unhealthy_instance_is_drained_once_then_resolved() -> None:
    rig = Rig(book("heal", on_pods(), DRAIN, act("alert")))
    await rig.step(0)
    record = rig.only()
    assert record.state == RUNNING and record.target == "instance api/c"
    assert rig.hands.calls == [("drain", "api", "c")]
    # Recorded as started (not done) before the action, then as done after it.
    assert [(w.steps[0].done, w.steps[0].outcome) for w in rig.manager.writes] == [
        (False, ""),
        (True, "done"),
    ]
    await rig.step(1)
    record = rig.only()
    assert record.state == RESOLVED
    assert record.steps[0].verification == "cleared"
    assert record.reason == "cleared after action 0"
    assert timestamps.unix(record.ended_at) == T0 + 1
    await rig.step(500)  # DRAINING never matches: nothing starts again
    assert rig.hands.calls == [("drain", "api", "c")] and len(rig.records()) == 1


async def test_silence_matches_after_missed_heartbeats_of_a_third_of_the_ttl() -> None:
    fleet = FakeFleet()
    fleet.add("api", "a", ttl=6.0)
    fleet.add("api", "b", health=NOT_SERVING)
    conditions = Conditions(fleet)
    silent = on_pods(missed_heartbeats=2)
    fleet.silence[("api", "a")] = 3.9
    # a: 3.9 s < 2 periods of 2 s; b: NOT_SERVING, not asked for with missed_heartbeats set.
    assert await conditions.matching(silent, T0) == []
    fleet.silence[("api", "a")] = 4.0
    assert await conditions.matching(silent, T0) == [Target("instance", "api", "a")]
    both = on_pods(missed_heartbeats=2, not_serving=True)
    assert [t.name for t in await conditions.matching(both, T0)] == ["a", "b"]
    fleet.silence[("api", "a")] = None  # gone
    assert await conditions.holds(silent, Target("instance", "api", "a"), T0) is False


# 3. Verification, the next action, escalation.


async def test_no_action_helps_next_action_then_escalation_then_cleared_since() -> None:
    force = act("force_breaker", breaker="api-db", state=breaker_pb2.BREAKER_STATE_FORCED_OPEN)
    rig = Rig(book("heal", on_pods(), WEBHOOK, force, verify_s=30), sick=False)
    rig.fleet.add("api", "a", "b", "c")
    rig.fleet.add("api", "d", health=NOT_SERVING)
    await rig.step(0)
    await rig.step(29)
    assert rig.hands.kinds() == ["webhook"]
    await rig.step(30)
    assert rig.hands.kinds() == ["webhook", "force_breaker"]
    assert rig.hands.calls[1][1:3] == ("api-db", breaker_pb2.BREAKER_STATE_FORCED_OPEN)
    assert rig.only().steps[0].verification == "not cleared within 30s"
    await rig.step(59)
    assert rig.only().state == RUNNING
    await rig.step(60)
    record = rig.only()
    assert record.state == ESCALATED and record.reason == "no action cleared the condition"
    assert record.steps[1].verification == "not cleared within 30s"
    labels = {"alertname": ESCALATION, "playbook": "heal", "target": "instance api/d"}
    summary = "Playbook heal could not heal instance api/d"
    assert rig.hands.calls[2] == ("alert", labels, "critical", summary)
    await rig.step(61)
    assert rig.hands.kinds() == ["webhook", "force_breaker", "alert"]
    rig.fleet.set_health("api", "d", SERVING)
    await rig.step(90)
    await rig.step(91)
    assert rig.hands.calls[3:] == [("resolve_alert", labels)]
    assert rig.only().reason.endswith("; cleared since")


# 4. Guards: minimum healthy share, cooldown.


async def test_min_healthy_guard_refuses_then_cooldown_then_a_new_attempt() -> None:
    rig = Rig(
        book("heal", on_pods(), DRAIN, min_healthy_share=0.5, cooldown=Duration(seconds=120)),
        sick=False,
    )
    rig.fleet.add("api", "a")
    rig.fleet.add("api", "b", "c", health=NOT_SERVING)
    await rig.step(0)
    refused = rig.records()
    assert [r.state for r in refused] == [REFUSED, REFUSED]
    reason = "guard: only 1 of 3 instances of api are SERVING (minimum share 0.5)"
    assert refused[0].reason == reason
    assert all(not r.steps for r in refused) and rig.hands.calls == []
    rig.fleet.add("api", "d")  # 2 of 4 SERVING: enough
    await rig.step(119)
    assert len(rig.records()) == 2 and rig.hands.calls == []  # cooling down
    await rig.step(120)
    assert rig.hands.calls == [("drain", "api", "b"), ("drain", "api", "c")]
    assert sorted(r.state for r in rig.records()) == [RUNNING, RUNNING, REFUSED, REFUSED]


# 5. Caps.


async def test_playbook_cap_counts_the_actions_of_this_round_and_the_last_hour() -> None:
    rig = Rig(
        book("heal", on_pods(), DRAIN, min_healthy_share=0, max_actions_per_hour=2),
        sick=False,
    )
    rig.fleet.add("api", "a", "b", "c", health=NOT_SERVING)
    await rig.step(0)
    assert rig.hands.calls == [("drain", "api", "a"), ("drain", "api", "b")]
    (third,) = [r for r in rig.records() if r.target == "instance api/c"]
    assert third.state == REFUSED
    assert third.reason == "cap: 2 actions of this playbook in the last hour"
    await rig.step(301)  # out of the cooldown, still within the hour
    assert len(rig.hands.calls) == 2
    await rig.step(3601)  # the first two actions are more than an hour old
    assert rig.hands.calls[2:] == [("drain", "api", "c")]


async def test_playbook_cap_counts_the_remediations_own_actions() -> None:
    rig = Rig(book("heal", on_pods(), WEBHOOK, DRAIN, max_actions_per_hour=1))
    await rig.step(0)
    await rig.step(60)
    record = rig.only()
    assert rig.hands.kinds() == ["webhook"]
    assert (record.state, record.reason) == (
        STOPPED,
        "cap: 1 actions of this playbook in the last hour",
    )


async def test_fleet_cap_holds_over_every_playbook() -> None:
    rig = Rig(
        book("heal-api", on_pods("api"), DRAIN),
        book("heal-web", on_pods("web"), DRAIN),
        fleet_cap=1,
        sick=False,
    )
    for service in ("api", "web"):
        rig.fleet.add(service, "a", "b")
        rig.fleet.add(service, "c", health=NOT_SERVING)
    await rig.step(0)
    assert rig.hands.calls == [("drain", "api", "c")]
    web = next(r for r in rig.records() if r.playbook == "heal-web")
    assert (web.state, web.reason) == (REFUSED, "cap: 1 actions fleet-wide in the last hour")


# 6. Dry run.


async def test_dry_run_records_what_it_would_do_and_does_nothing() -> None:
    force = act("force_breaker", breaker="x", state=breaker_pb2.BREAKER_STATE_FORCED_OPEN)
    actions = (DRAIN, force, WEBHOOK, act("alert", severity="critical"))
    rig = Rig(
        book("a-dry", on_pods(), *actions, dry_run=True),
        book("b-real", on_pods(), DRAIN),
        fleet_cap=1,
    )
    await rig.step(0)
    dry = next(r for r in rig.records() if r.playbook == "a-dry")
    assert (dry.state, dry.reason) == (DRY_RUN, "dry run: nothing done")
    assert [s.outcome for s in dry.steps] == [
        "would drain instance api/c",
        "would force breaker x to BREAKER_STATE_FORCED_OPEN",
        f"would post to {HOOK}",
        "would raise a critical alert",
    ]
    assert all(s.done for s in dry.steps)
    # Only the real playbook acted; the dry run's steps do not count against the fleet cap.
    assert rig.hands.calls == [("drain", "api", "c")]


# 7. Pause.


async def test_paused_nothing_starts_but_a_running_remediation_still_resolves() -> None:
    rig = Rig(book("heal", on_pods(), WEBHOOK))
    rig.manager.paused = True
    await rig.step(0)
    assert rig.records() == [] and rig.hands.calls == []
    rig.manager.paused = False
    await rig.step(1)
    rig.manager.paused = True
    rig.fleet.set_health("api", "c", SERVING)
    await rig.step(5)
    assert rig.only().state == RESOLVED and rig.hands.kinds() == ["webhook"]


@pytest.mark.parametrize("actions", [1, 2], ids=["last-action", "more-actions"])
async def test_paused_a_running_remediation_stops_at_its_deadline(actions: int) -> None:
    rig = Rig(book("heal", on_pods(), *[WEBHOOK] * actions))
    await rig.step(0)
    rig.manager.paused = True
    await rig.step(30)
    assert rig.only().state == RUNNING  # before the deadline: still verifying
    await rig.step(60)
    record = rig.only()
    assert (record.state, record.reason) == (STOPPED, "remediation is paused")
    assert rig.hands.kinds() == ["webhook"]  # no next action, no escalation alert


# 8. Resuming after a leader crash.


async def test_resume_runs_a_started_step_again_once() -> None:
    rig = Rig(book("heal", on_pods(), WEBHOOK, DRAIN))
    rid = rig.store("heal", "instance api/c", started(0, 70, done=True), started(1, done=False))
    await rig.step(0)
    record = rig.only()
    assert rig.hands.calls == [("drain", "api", "c")]
    assert (record.id, record.state, len(record.steps)) == (rid, RUNNING, 2)
    assert record.steps[1].done and record.steps[1].outcome == "done"
    await rig.step(1)
    assert rig.only().state == RESOLVED and len(rig.hands.calls) == 1


async def test_resume_after_a_done_step_goes_on_verifying() -> None:
    rig = Rig(book("heal", on_pods(), DRAIN, WEBHOOK))
    rig.store("heal", "instance api/c", started(0, done=True))
    await rig.step(0)
    assert rig.hands.calls == [] and rig.only().state == RUNNING
    await rig.step(50)  # the stored step's deadline (started 10 s before T0)
    assert rig.hands.kinds() == ["webhook"]
    assert [s.action for s in rig.only().steps] == [0, 1]


async def test_resume_of_a_step_the_edited_playbook_no_longer_has_stops_it() -> None:
    rig = Rig(book("heal", on_pods(), DRAIN))  # edited down to one action meanwhile
    rig.store("heal", "instance api/c", started(0, done=True), started(1, done=False))
    await rig.step(0)
    (record,) = [r for r in rig.records() if r.id == "heal.stored"]
    assert record.state == STOPPED and "the playbook changed" in record.reason
    assert "webhook" not in rig.hands.kinds()


@pytest.mark.parametrize(
    ("before", "now", "runs"),
    [(3, 4, False), (3, 3, True), (0, 1, False), (0, 0, True)],
    ids=["moved", "not-moved", "moved-from-none", "still-none"],
)
async def test_resume_a_failover_only_if_the_epoch_has_not_moved(
    before: int, now: int, runs: bool
) -> None:
    no_primary = rpb.Condition(no_primary=rpb.PrimaryCondition(service="db"))
    rig = Rig(book("promote", no_primary, act("failover")), sick=False)
    rig.fleet.add("db", "a", "b")
    rig.fleet.primaries["db"] = registry_pb2.Primary(service="db", since=timestamps.at(T0 - 60))
    rig.hands.epochs["db"] = now
    rig.store("promote", "service db", started(0, done=False, epoch_before=before))
    await rig.step(0)
    step = rig.only().steps[0]
    assert step.done
    if runs:
        assert rig.hands.calls == [("failover", "db", "")] and step.outcome == "done"
    else:
        assert rig.hands.calls == [] and step.outcome == "done (the primary had moved)"


# 9. Playbook deleted or disabled.


@pytest.mark.parametrize("change", ["deleted", "disabled"])
async def test_a_deleted_or_disabled_playbook_stops_its_remediation(change: str) -> None:
    rig = Rig(book("heal", on_pods(), WEBHOOK, DRAIN))
    await rig.step(0)
    if change == "deleted":
        del rig.manager.books["heal"]
    else:
        rig.manager.books["heal"].disabled = True
    await rig.step(400)
    record = rig.only()
    assert (record.state, record.reason) == (STOPPED, "the playbook was deleted or disabled")
    assert rig.hands.kinds() == ["webhook"]


# 10. Webhooks.


async def test_webhook_key_and_a_failed_delivery_leaves_the_verdict_to_verification() -> None:
    rig = Rig(book("heal", on_pods(), WEBHOOK, WEBHOOK))
    rig.hands.fail.add("webhook")
    await rig.step(0)
    record = rig.only()
    body = {"remediation": record.id, "playbook": "heal", "target": "instance api/c", "step": 0}
    assert rig.hands.calls == [("webhook", HOOK, body, f"{record.id}:0")]
    assert record.state == RUNNING and record.steps[0].done
    assert record.steps[0].outcome == "failed: RuntimeError: webhook broke"
    await rig.step(60)
    assert rig.hands.calls[1][2:] == ({**body, "step": 1}, f"{record.id}:1")
    rig.fleet.set_health("api", "c", SERVING)
    await rig.step(61)
    assert rig.only().state == RESOLVED


# 11. Signal conditions.


def calls(error_rate: float, count: int = 100) -> signals_pb2.ServiceSignals:
    return signals_pb2.ServiceSignals(
        service="api", inbound=signals_pb2.Signals(calls=count, error_rate=error_rate)
    )


async def test_signal_above_a_threshold() -> None:
    fleet = FakeFleet()
    conditions = Conditions(fleet)
    cond = rpb.Condition(signal=rpb.SignalCondition(service="api", signal=ERROR_RATE, above=0.1))
    fleet.stats["api"] = calls(0.1)
    assert await conditions.matching(cond, T0) == []
    fleet.stats["api"] = calls(0.2)
    assert await conditions.matching(cond, T0) == [Target("service", "api", "api")]
    fleet.stats["api"] = calls(0.2, count=0)  # no calls: nothing to judge
    assert await conditions.matching(cond, T0) == []
    cond.signal.window.FromSeconds(30)
    await conditions.matching(cond, T0)
    assert fleet.windows == [60.0, 60.0, 60.0, 30.0]


async def test_signal_anomalous_after_warmup_judged_once_per_ten_seconds() -> None:
    fleet = FakeFleet()
    detectors = AnomalyDetectors()
    conditions = Conditions(fleet, detectors)
    spec = rpb.SignalCondition(service="api", signal=ERROR_RATE, anomalous=True)
    cond = rpb.Condition(signal=spec)

    async def at(t: float, rate: float) -> list[Target]:
        fleet.stats["api"] = calls(rate)
        return await conditions.matching(cond, T0 + t)

    for i in range(30):  # the warm-up: a stable series
        assert await at(10 * i, 0.010 + 0.002 * (i % 2)) == []
    assert await at(300, 0.5) == []  # one window out of band: not yet
    assert await at(305, 0.5) == []  # within 10 s: the last verdict, the value unused
    assert detectors.get("api", "SERVICE_SIGNAL_ERROR_RATE").samples == 31  # type: ignore[union-attr]
    assert await at(310, 0.5) == [Target("service", "api", "api")]
    assert await at(315, 0.011) == [Target("service", "api", "api")]  # reused
    assert await at(320, 0.011) == []


async def test_no_primary_matches_once_vacant_long_enough() -> None:
    fleet = FakeFleet()
    conditions = Conditions(fleet)
    spec = rpb.PrimaryCondition(service="db")
    spec.vacant_for.FromSeconds(30)
    cond = rpb.Condition(no_primary=spec)
    assert await conditions.matching(cond, T0) == []  # never had a primary: unknown since when
    fleet.primaries["db"] = registry_pb2.Primary(service="db", since=timestamps.at(T0 - 20))
    assert await conditions.matching(cond, T0) == []
    assert await conditions.matching(cond, T0 + 10) == [Target("service", "db", "db")]
    fleet.primaries["db"].instance_id = "a"
    assert await conditions.matching(cond, T0 + 10) == []


# Housekeeping.


async def test_records_ended_more_than_a_day_ago_are_forgotten() -> None:
    rig = Rig()
    for rid, state, ended in (("old", RESOLVED, 86_401), ("recent", REFUSED, 86_399)):
        rig.manager.records[rid] = rpb.Remediation(
            id=rid, state=state, ended_at=timestamps.at(T0 - ended)
        )
    rig.manager.records["running"] = rpb.Remediation(
        id="running", state=RUNNING, started_at=timestamps.at(T0 - 90_000)
    )
    await rig.step(0)
    assert rig.manager.forgotten == ["old"]
    assert sorted(rig.manager.records) == ["recent", "running"]
