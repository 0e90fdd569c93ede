"""The leader's remediation loop: detect, act, verify, escalate, behind guards.

Each round (``step``), on the leader only (a ``LeaderTask`` body; every record is a
fenced write, so a deposed leader cannot record a step):

1. Each RUNNING remediation: RESOLVED when its condition no longer holds for its
   target; STOPPED when its playbook is gone or disabled, or remediation is paused;
   else, once the current action's deadline (``verify_within``) has passed, the
   next action runs, and when none is left it is ESCALATED with a critical alert
   (``BulwarkRemediationEscalated``). A step is recorded as started before its
   action runs and as done after, so a new leader resumes a remediation at its
   recorded step: it never runs a done step again, and runs again a step that was
   started but not recorded done (a failover only if the primary's epoch has not
   moved since; a webhook with the same Idempotency-Key), then goes on verifying.
2. Unless paused, each enabled playbook's condition is evaluated; a target it
   holds for with no RUNNING remediation and out of its cooldown starts one,
   unless a guard refuses (then a REFUSED record says which, and starts the
   cooldown): the minimum healthy share of the target's service, or the caps on
   actions per hour (the playbook's, and ``fleet_cap`` over all playbooks). A
   dry-run playbook records what it would do (DRY_RUN) and does nothing.
3. Records that ended more than a day ago are deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from bulwark.v1 import breaker_pb2, feature_pb2, registry_pb2, remediation_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import in_rounds
from bulwark_server.remediation import playbooks as rules
from bulwark_server.remediation.conditions import Conditions, Target
from bulwark_server.remediation.manager import RemediationManager

log = logging.getLogger(__name__)

RUNNING = remediation_pb2.REMEDIATION_STATE_RUNNING
RESOLVED = remediation_pb2.REMEDIATION_STATE_RESOLVED
ESCALATED = remediation_pb2.REMEDIATION_STATE_ESCALATED
REFUSED = remediation_pb2.REMEDIATION_STATE_REFUSED
DRY_RUN = remediation_pb2.REMEDIATION_STATE_DRY_RUN
STOPPED = remediation_pb2.REMEDIATION_STATE_STOPPED
SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
KEPT_S = 24 * 3600.0
TICK_S = 1.0


class Actuators(Protocol):
    """What an action does, asked of the capabilities that hold the state."""

    async def drain(self, service: str, instance_id: str) -> None: ...

    async def deregister(self, service: str, instance_id: str) -> None: ...

    async def failover(self, service: str, from_instance: str = "") -> str:
        """Move the service's primary away (only from ``from_instance`` when given);
        what was done when it was nothing ("" otherwise)."""
        ...

    def epoch(self, service: str) -> int: ...

    async def force_breaker(self, name: str, state: int, reason: str) -> None: ...

    async def set_feature(self, name: str, status: int, reason: str) -> None: ...

    async def webhook(self, url: str, body: Mapping[str, object], key: str) -> None:
        """Post ``body`` with the Idempotency-Key ``key``; raises when not delivered."""
        ...

    async def alert(
        self, labels: Mapping[str, str], severity: str, summary: str, description: str
    ) -> None: ...

    async def resolve_alert(self, labels: Mapping[str, str]) -> None: ...


def describe(action: remediation_pb2.Action, target: Target) -> str:
    """What an action does, in words (a dry run's record)."""
    kind = action.WhichOneof("kind")
    if kind == "force_breaker":
        state = breaker_pb2.BreakerState.Name(action.force_breaker.state)
        return f"force breaker {action.force_breaker.breaker or target.name} to {state}"
    if kind == "set_feature":
        status = feature_pb2.FeatureStatus.Name(action.set_feature.status)
        return f"set feature {action.set_feature.feature} to {status}"
    if kind == "webhook":
        return f"post to {action.webhook.url}"
    if kind == "alert":
        return f"raise a {action.alert.severity or 'warning'} alert"
    if kind == "failover":
        return f"fail over the primary of service {target.service}"
    return f"{kind} {target.text}"


class RemediationEngine:
    """See the module docstring."""

    def __init__(
        self,
        manager: RemediationManager,
        conditions: Conditions,
        actuators: Actuators,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = TICK_S,
        fleet_cap: int = rules.FLEET_ACTIONS_PER_HOUR,
    ) -> None:
        self._manager = manager
        self._conditions = conditions
        self._act = actuators
        self._clock = clock
        self._tick = tick
        self._fleet_cap = fleet_cap

    async def run(self) -> None:
        await in_rounds(self.step, self._tick, "remediation")

    async def step(self) -> None:
        """One round (see the module docstring)."""
        now = self._clock()
        playbooks = {p.name: p for p in self._manager.playbooks()}
        records = self._manager.remediations()
        running = {(r.playbook, r.target): r for r in records if r.state == RUNNING}
        for record in running.values():
            await self._progress(record, playbooks.get(record.playbook), records, now)
        await self._follow_escalated(records, playbooks, now)
        if not self._manager.paused:
            for playbook in playbooks.values():
                if playbook.disabled:
                    continue
                for target in await self._conditions.matching(playbook.condition, now):
                    if (playbook.name, target.text) not in running:
                        await self._start(playbook, target, records, now)
        for record in records:
            if record.state != RUNNING and now - _ended(record) > KEPT_S:
                await self._manager.forget(record.id)

    # -- starting -----------------------------------------------------------------

    async def _start(
        self,
        playbook: remediation_pb2.Playbook,
        target: Target,
        records: list[remediation_pb2.Remediation],
        now: float,
    ) -> None:
        guards = rules.guards_of(playbook)
        mine = [r for r in records if r.playbook == playbook.name]
        last = max(
            (_ended(r) for r in mine if r.target == target.text and r.state != RUNNING),
            default=None,
        )
        if last is not None and now - last < guards.cooldown_s:
            return
        record = remediation_pb2.Remediation(
            id=rules.remediation_id(playbook.name, target.text, now),
            playbook=playbook.name,
            target=target.text,
            started_at=timestamps.at(now),
        )
        # Counted by the guards of the targets that come after it in this round.
        records.append(record)
        refusal = self._refusal(playbook, target, records, now)
        if refusal:
            await self._end(record, REFUSED, refusal, now)
            return
        if playbook.dry_run:
            for i, action in enumerate(playbook.actions):
                record.steps.add(
                    action=i,
                    started_at=timestamps.at(now),
                    done=True,
                    outcome=f"would {describe(action, target)}",
                )
            await self._end(record, DRY_RUN, "dry run: nothing done", now)
            return
        record.state = RUNNING
        log.info(
            "remediation %s: %s on %s",
            record.id,
            playbook.name,
            target.text,
            extra={"event": "remediation.started", "playbook": playbook.name},
        )
        await self._run_step(record, playbook, target, 0, now)

    def _refusal(
        self,
        playbook: remediation_pb2.Playbook,
        target: Target,
        records: list[remediation_pb2.Remediation],
        now: float,
    ) -> str:
        """Why a guard refuses the next action ("" when none does)."""
        guards = rules.guards_of(playbook)
        if self._manager.paused:
            return "remediation is paused"
        if target.service:
            instances = self._conditions.instances(target.service)
            serving = sum(1 for i in instances if i.health == SERVING)
            if not rules.healthy_enough(serving, len(instances), guards.min_healthy_share):
                return (
                    f"guard: only {serving} of {len(instances)} instances of "
                    f"{target.service} are SERVING (minimum share {guards.min_healthy_share:g})"
                )
        starts: dict[str, list[float]] = {r.playbook: [] for r in records}
        for r in records:
            starts[r.playbook].extend(
                timestamps.unix(s.started_at) for s in r.steps if r.state != DRY_RUN
            )
        if rules.actions_within(starts.get(playbook.name, []), now) >= guards.max_actions_per_hour:
            return f"cap: {guards.max_actions_per_hour} actions of this playbook in the last hour"
        everyone = [t for times in starts.values() for t in times]
        if rules.actions_within(everyone, now) >= self._fleet_cap:
            return f"cap: {self._fleet_cap} actions fleet-wide in the last hour"
        return ""

    # -- progressing ----------------------------------------------------------------

    async def _progress(
        self,
        record: remediation_pb2.Remediation,
        playbook: remediation_pb2.Playbook | None,
        records: list[remediation_pb2.Remediation],
        now: float,
    ) -> None:
        target = Target.parse(record.target)
        if playbook is None or playbook.disabled:
            await self._end(record, STOPPED, "the playbook was deleted or disabled", now)
            return
        step = record.steps[-1]
        if step.action >= len(playbook.actions):
            await self._end(record, STOPPED, "the playbook changed: its step is gone", now)
            return
        if not step.done:  # started by a leader that did not live to record it
            await self._run_step(record, playbook, target, step.action, now, resumed=True)
            return
        if not await self._conditions.holds(playbook.condition, target, now):
            step.verification = "cleared"
            await self._end(record, RESOLVED, f"cleared after action {step.action}", now)
            return
        verify_s = rules.guards_of(playbook).verify_s
        if now - timestamps.unix(step.started_at) < verify_s:
            return
        step.verification = f"not cleared within {verify_s:g}s"
        if self._manager.paused:  # stop before the next action, and do not escalate
            await self._end(record, STOPPED, "remediation is paused", now)
            return
        following = step.action + 1
        if following >= len(playbook.actions):
            await self._escalate(record, playbook, target, now)
            return
        refusal = self._refusal(playbook, target, records, now)  # its own actions count too
        if refusal:
            await self._end(record, STOPPED, refusal, now)
            return
        await self._run_step(record, playbook, target, following, now)

    async def _run_step(
        self,
        record: remediation_pb2.Remediation,
        playbook: remediation_pb2.Playbook,
        target: Target,
        index: int,
        now: float,
        *,
        resumed: bool = False,
    ) -> None:
        action = playbook.actions[index]
        if resumed:
            step = record.steps[-1]
        else:
            step = record.steps.add(action=index, started_at=timestamps.at(now))
            if action.WhichOneof("kind") == "failover":
                step.epoch_before = self._act.epoch(target.service)
            await self._manager.record(record)  # started: a new leader resumes here
        if (
            resumed
            and action.WhichOneof("kind") == "failover"  # epoch_before 0: no primary before
            and self._act.epoch(target.service) > step.epoch_before
        ):
            step.outcome = "done (the primary had moved)"
        else:
            step.outcome = await self._perform(action, record, target, index)
        step.done = True
        await self._manager.record(record)
        log.info(
            "remediation %s: step %d: %s",
            record.id,
            index,
            step.outcome,
            extra={"event": "remediation.step", "playbook": playbook.name},
        )

    async def _perform(
        self,
        action: remediation_pb2.Action,
        record: remediation_pb2.Remediation,
        target: Target,
        index: int,
    ) -> str:
        kind = action.WhichOneof("kind")
        reason = f"remediation {record.id} (playbook {record.playbook})"
        try:
            if kind == "drain":
                await self._act.drain(target.service, target.name)
            elif kind == "deregister":
                await self._act.deregister(target.service, target.name)
            elif kind == "failover":
                only = target.name if target.kind == "instance" else ""
                return await self._act.failover(target.service, only) or "done"
            elif kind == "force_breaker":
                force = action.force_breaker
                await self._act.force_breaker(force.breaker or target.name, force.state, reason)
            elif kind == "set_feature":
                feature = action.set_feature
                await self._act.set_feature(feature.feature, feature.status, reason)
            elif kind == "webhook":
                body = {
                    "remediation": record.id,
                    "playbook": record.playbook,
                    "target": record.target,
                    "step": index,
                }
                await self._act.webhook(action.webhook.url, body, f"{record.id}:{index}")
            elif kind == "alert":
                await self._act.alert(
                    _labels("BulwarkRemediationAlert", record),
                    action.alert.severity or "warning",
                    action.alert.summary or f"Playbook {record.playbook} acting on {record.target}",
                    f"Remediation {record.id} raised this alert as its step {index}.",
                )
        except Exception as exc:  # the verification decides what comes next
            return f"failed: {type(exc).__name__}: {exc}"
        return "done"

    async def _escalate(
        self,
        record: remediation_pb2.Remediation,
        playbook: remediation_pb2.Playbook,
        target: Target,
        now: float,
    ) -> None:
        await self._act.alert(
            _labels("BulwarkRemediationEscalated", record),
            "critical",
            f"Playbook {playbook.name} could not heal {target.text}",
            f"Remediation {record.id} ran {len(record.steps)} action(s) and the condition "
            "still holds: a person is needed.",
        )
        await self._end(record, ESCALATED, "no action cleared the condition", now)

    async def _follow_escalated(
        self,
        records: list[remediation_pb2.Remediation],
        playbooks: Mapping[str, remediation_pb2.Playbook],
        now: float,
    ) -> None:
        """Resolve the alert of an escalation whose condition has cleared since."""
        for record in records:
            playbook = playbooks.get(record.playbook)
            if record.state != ESCALATED or record.reason.endswith("; cleared since"):
                continue
            if now - _ended(record) > rules.HOUR_S:
                continue  # followed for an hour; the alert's own receivers take it from there
            gone = playbook is None
            if gone or not await self._conditions.holds(
                playbook.condition, Target.parse(record.target), now
            ):
                await self._act.resolve_alert(_labels("BulwarkRemediationEscalated", record))
                record.reason += "; cleared since"
                await self._manager.record(record)

    async def _end(
        self, record: remediation_pb2.Remediation, state: int, reason: str, now: float
    ) -> None:
        record.state = state  # type: ignore[assignment]
        record.reason = reason
        record.ended_at.CopyFrom(timestamps.at(now))
        await self._manager.record(record)
        log.info(
            "remediation %s: %s: %s",
            record.id,
            remediation_pb2.RemediationState.Name(state),
            reason,
            extra={"event": "remediation.ended", "playbook": record.playbook},
        )


def _labels(alertname: str, record: remediation_pb2.Remediation) -> dict[str, str]:
    return {"alertname": alertname, "playbook": record.playbook, "target": record.target}


def _ended(record: remediation_pb2.Remediation) -> float:
    if record.HasField("ended_at"):
        return timestamps.unix(record.ended_at)
    return timestamps.unix(record.started_at)
