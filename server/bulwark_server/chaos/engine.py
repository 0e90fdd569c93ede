"""The leader's experiment loop: start, watch the steady state, end or abort.

* ``start`` (on the leader, by the routing helper): the spec's rules and the blast
  radius are checked, then the hypothesis; the record is written RUNNING *before*
  anything is injected (so a leader that stops half-way leaves a record its
  successor finishes), then the silence, then the method's steps in order.
* Each round (``step``, a ``LeaderTask`` body, every ``TICK_S``): with the kill
  switch on, every running experiment aborts; otherwise each running one aborts
  when its dead-man's switch lapsed or a hypothesis probe fails (checked every
  ``check_interval``, 100 ms by default, only while the method is in effect); its
  expectations are tried; at its end time the method ends (rules deleted, forced
  breakers reset, rollbacks run), and once the after-end expectations were met or
  had their time it completes with a verdict (load steps run until then, so a
  recovery is measured under traffic). Expired rules, and
  rules of experiments that are not running, are deleted every round.
* Abort: every rule it created deleted, forced breakers reset, loads stopped,
  rollbacks run, its silence ended; ABORTED with the reason, verdict FAILED.

A new leader reads the records and goes on from them: nothing about a running
experiment lives only in memory but its load processes (their reports are lost
with the old leader, which the timeline says).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from bulwark.v1 import breaker_pb2, chaos_pb2
from bulwark_server import timestamps
from bulwark_server.chaos import rules
from bulwark_server.chaos.experiments import KEPT_S, Experiments, new_id
from bulwark_server.chaos.faults import FaultRules
from bulwark_server.chaos.loads import LoadRun, collect
from bulwark_server.chaos.probes import SteadyState, describe, evaluate
from bulwark_server.cluster.election import in_rounds
from bulwark_server.errors import BulwarkError, FailedPrecondition, NotFound

log = logging.getLogger(__name__)

RUNNING = chaos_pb2.EXPERIMENT_STATE_RUNNING
COMPLETED = chaos_pb2.EXPERIMENT_STATE_COMPLETED
ABORTED = chaos_pb2.EXPERIMENT_STATE_ABORTED
PASSED, FAILED = chaos_pb2.VERDICT_PASSED, chaos_pb2.VERDICT_FAILED
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
TICK_S = 0.05
SWEEP_S = 1.0  # expired and orphaned rules are looked for this often
FORGET_S = 60.0  # and ended experiments past their keeping time this often
SILENCE_GRACE_S = 60.0  # expected alerts resolve a little after the faults end


class Hands(Protocol):
    """What a step or a rollback does, asked of the capabilities that hold the state."""

    async def force_breaker(self, name: str, state: int, reason: str) -> None: ...

    async def set_feature(self, name: str, status: int, reason: str) -> None: ...

    async def switchover(self, service: str) -> str:
        """Move the service's primary to a backup; the new primary's id."""
        ...

    async def drain(self, service: str, instance_id: str) -> None: ...

    def serving(self, service: str) -> list[str]:
        """Ids of the service's SERVING instances, in id order."""
        ...

    async def silence(
        self, alertname: str, labels: Mapping[str, str], until: float, comment: str
    ) -> str:
        """A silence of this alert (with these labels) until ``until``; its id."""
        ...

    async def end_silence(self, silence_id: str) -> None: ...

    def start_load(self, step: chaos_pb2.LoadStep, seconds: float) -> LoadRun: ...


def _recovery(spec: chaos_pb2.ExperimentSpec) -> float:
    """How long after the method's end its after-end expectations may take."""
    waits = [e.within.ToNanoseconds() / 1e9 for e in spec.expectations if e.after_end]
    return max(waits, default=0.0)


def _note(
    experiment: chaos_pb2.Experiment,
    now: float,
    event: str,
    probes: Sequence[chaos_pb2.ProbeResult] = (),
) -> None:
    experiment.timeline.add(at=timestamps.at(now), event=event, probes=probes)


class ExperimentEngine:
    """See the module docstring."""

    def __init__(
        self,
        faults: FaultRules,
        experiments: Experiments,
        view: SteadyState,
        hands: Hands,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = TICK_S,
    ) -> None:
        self._faults = faults
        self._experiments = experiments
        self._view = view
        self._hands = hands
        self._clock = clock
        self._tick = tick
        self._lock = asyncio.Lock()
        self._checked: dict[str, float] = {}  # experiment id -> last hypothesis check
        self._loads: dict[str, list[LoadRun]] = {}  # started by this leader
        # Experiment id -> why it aborts, from the decision until the abort is recorded:
        # an abort cut short (etcd away) is retried whatever the probes say by then.
        self._aborting: dict[str, str] = {}
        self._reports: dict[str, list[str]] = {}  # experiment id -> its loads' reports
        self._swept = self._forgot = 0.0

    # -- requests (on the leader) ------------------------------------------------------

    async def start(self, spec: chaos_pb2.ExperimentSpec, by: str) -> chaos_pb2.Experiment:
        now = self._clock()
        duration = rules.check_spec(spec, now)
        self._faults.refuse_if_halted()
        drains = self._drain_targets(spec)
        results = [evaluate(p, self._view) for p in spec.hypothesis]
        for result in results:
            if not result.held:
                raise FailedPrecondition(
                    f"the steady-state hypothesis does not hold: {result.probe} ({result.value})"
                )
        experiment = chaos_pb2.Experiment(
            id=new_id(now),
            spec=spec,
            state=RUNNING,
            started_by=by,
            started_at=timestamps.at(now),
            ends_at=timestamps.at(now + duration),
            renewed_at=timestamps.at(now),
            hypothesis=results,
            expectations=[
                chaos_pb2.ExpectationResult(probe=describe(e.probe)) for e in spec.expectations
            ],
        )
        experiment.fault_rules.extend(
            f"exp-{experiment.id}-{i}" for i, s in enumerate(spec.method) if s.HasField("fault")
        )
        _note(experiment, now, f"started by {by}; the hypothesis holds", results)
        async with self._lock:
            await self._experiments.put(experiment)
            try:
                await self._inject(experiment, drains, now + duration)
            except Exception as exc:
                # Whatever failed, the steps before it are undone; a bug (not a
                # BulwarkError) still reaches the log and the caller as INTERNAL.
                await self._abort(experiment, f"a step failed: {exc}")
                if not isinstance(exc, BulwarkError):
                    raise
                return experiment
            try:
                await self._experiments.put(experiment)
            except BulwarkError:
                # The caller hears that the start failed: it must not run on (a retry
                # would run it twice). If this abort fails too, the next round's does.
                await self._abort(experiment, "its start could not be recorded")
                raise
        return experiment

    async def stop(self, experiment_id: str, reason: str, by: str) -> chaos_pb2.Experiment:
        async with self._lock:
            experiment = self._experiments.get(experiment_id)
            if experiment.state != RUNNING:
                raise FailedPrecondition(f"experiment {experiment_id} has already ended")
            await self._abort(experiment, f"stopped by {by}" + (f": {reason}" if reason else ""))
            return experiment

    async def renew(self, experiment_id: str) -> float:
        """Renew the dead-man's switch; the time it lapses next."""
        async with self._lock:
            experiment = self._experiments.get(experiment_id)
            if experiment.state != RUNNING:
                raise FailedPrecondition(f"experiment {experiment_id} has already ended")
            if not experiment.spec.HasField("renew_within"):
                raise FailedPrecondition(f"experiment {experiment_id} has no dead-man's switch")
            now = self._clock()
            experiment.renewed_at.CopyFrom(timestamps.at(now))
            await self._experiments.put(experiment)
            return now + experiment.spec.renew_within.ToNanoseconds() / 1e9

    # -- the leader loop ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            await in_rounds(self.step, self._tick, "chaos")
        finally:
            # Leadership ended: this replica's loads end; the new leader finishes the
            # experiments from their records.
            for runs in self._loads.values():
                for run in runs:
                    run.close()
            self._loads.clear()
            self._reports.clear()
            self._checked.clear()

    async def step(self) -> None:
        """One round (see the module docstring). An experiment that fails (etcd away, a
        record etcd refuses) is tried again next round and keeps no other from its
        checks; the first failure is raised once the round is done."""
        halted = self._faults.halted
        failed: Exception | None = None
        async with self._lock:
            for experiment in self._experiments.running():
                try:
                    await self._watch(experiment, halted)
                except Exception as exc:
                    failed = failed or exc
            now = self._clock()
            if halted is not None or now - self._swept >= SWEEP_S:
                self._swept = now
                running = frozenset(e.id for e in self._experiments.running())
                await self._faults.sweep(running, everything=halted is not None)
            if now - self._forgot >= FORGET_S:
                self._forgot = now
                await self._forget_old()
        if failed is not None:
            raise failed

    async def _watch(self, experiment: chaos_pb2.Experiment, halted: str | None) -> None:
        now = self._clock()
        if halted is not None:
            await self._abort(experiment, f"kill switch: {halted}")
        elif experiment.id in self._aborting:
            await self._abort(experiment, self._aborting[experiment.id])
        elif not experiment.HasField("method_ended_at"):
            await self._watch_method(experiment, now)
        else:
            await self._watch_recovery(experiment, now)

    async def _lapsed(self, experiment: chaos_pb2.Experiment, now: float) -> bool:
        """Abort when the dead-man's switch lapsed (its load may outlive the method)."""
        spec = experiment.spec
        if spec.HasField("renew_within"):
            lapsed = now - timestamps.unix(experiment.renewed_at)
            if lapsed > spec.renew_within.ToNanoseconds() / 1e9:
                await self._abort(experiment, f"dead-man's switch: not renewed for {lapsed:.1f} s")
                return True
        return False

    async def _watch_method(self, experiment: chaos_pb2.Experiment, now: float) -> None:
        spec = experiment.spec
        if await self._lapsed(experiment, now):
            return
        last = self._checked.get(experiment.id, 0.0)
        if now - last >= rules.check_interval(spec) - self._tick / 2:
            self._checked[experiment.id] = now
            results = [evaluate(p, self._view) for p in spec.hypothesis]
            for result in results:
                if not result.held:
                    _note(experiment, now, f"hypothesis breached: {result.probe}", results)
                    experiment.ClearField("hypothesis")
                    experiment.hypothesis.extend(results)
                    await self._abort(
                        experiment, f"hypothesis breached: {result.probe} ({result.value})"
                    )
                    return
        changed = self._try_expectations(experiment, now, after_end=False)
        if now >= timestamps.unix(experiment.ends_at):
            await self._end_method(experiment, now, "the method ran its duration")
            changed = True
        if changed:
            await self._experiments.put(experiment)

    async def _watch_recovery(self, experiment: chaos_pb2.Experiment, now: float) -> None:
        if await self._lapsed(experiment, now):
            return
        changed = self._try_expectations(experiment, now, after_end=True)
        ended = timestamps.unix(experiment.method_ended_at)
        pending = [
            r
            for e, r in zip(experiment.spec.expectations, experiment.expectations, strict=True)
            if e.after_end and not r.met
        ]
        if not pending or now >= ended + _recovery(experiment.spec):
            await self._finish(experiment, now, COMPLETED, "")
        elif changed:
            await self._experiments.put(experiment)

    def _try_expectations(
        self, experiment: chaos_pb2.Experiment, now: float, after_end: bool
    ) -> bool:
        changed = False
        reference = timestamps.unix(
            experiment.method_ended_at if after_end else experiment.started_at
        )
        for expectation, result in zip(
            experiment.spec.expectations, experiment.expectations, strict=True
        ):
            if result.met or expectation.after_end != after_end:
                continue
            if now > reference + expectation.within.ToNanoseconds() / 1e9:
                continue  # its time is up: it stays unmet
            seen = evaluate(expectation.probe, self._view)
            if seen.held:
                result.met = True
                result.met_at.CopyFrom(timestamps.at(now))
                result.after_seconds = now - reference
                _note(experiment, now, f"expectation met: {result.probe}", [seen])
                changed = True
        return changed

    # -- what an experiment does -------------------------------------------------------

    def _drain_targets(self, spec: chaos_pb2.ExperimentSpec) -> dict[int, list[str]]:
        """The instances each drain step takes, checked against the blast radius: the
        cap is on what the whole method drains of a service, so two steps cannot each
        take their share of it."""
        out: dict[int, list[str]] = {}
        taken: dict[str, set[str]] = {}
        for i, step in enumerate(spec.method):
            if not step.HasField("drain"):
                continue
            drain = step.drain
            serving = self._hands.serving(drain.service)
            before = taken.setdefault(drain.service, set())
            if drain.instance_ids:
                missing = [x for x in drain.instance_ids if x not in serving]
                if missing:
                    raise FailedPrecondition(
                        f"spec.method[{i}].drain: {', '.join(missing)} not SERVING in "
                        f"service {drain.service}"
                    )
                chosen = list(dict.fromkeys(drain.instance_ids))
            else:
                primary = self._view.primary(drain.service)
                eligible = [x for x in serving if x != primary and x not in before]
                chosen = eligible[: drain.count or 1]
            wanted = len(before | set(chosen)) if chosen else len(before) + (drain.count or 1)
            rules.drain_cap(
                wanted, len(serving), rules.instance_cap(spec), f"spec.method[{i}].drain"
            )
            before.update(chosen)
            out[i] = chosen
        return out

    async def _inject(
        self, experiment: chaos_pb2.Experiment, drains: dict[int, list[str]], ends: float
    ) -> None:
        spec = experiment.spec
        reason = f"chaos experiment {experiment.id}"
        for text in spec.expected_alerts:
            name, labels = rules.parse_alert(text, "spec.expected_alerts")
            until = ends + _recovery(spec) + SILENCE_GRACE_S
            experiment.silence_ids.append(await self._hands.silence(name, labels, until, reason))
            _note(experiment, self._clock(), f"silenced {text.strip()}")
        names = iter(experiment.fault_rules)
        for i, step in enumerate(spec.method):
            kind = step.WhichOneof("kind")
            if kind == "fault":
                rule = chaos_pb2.FaultRule()
                rule.CopyFrom(step.fault)
                rule.name = next(names)
                rule.experiment = experiment.id
                rule.expires_at.CopyFrom(timestamps.at(ends))
                rule.description = rule.description or reason
                await self._faults.put(rule, fence=self._experiments.fence())
                done = f"fault rule {rule.name} put"
            elif kind == "switchover":
                primary = await self._hands.switchover(step.switchover)
                done = f"switched {step.switchover} over to {primary}"
            elif kind == "force_breaker":
                force = step.force_breaker
                await self._hands.force_breaker(force.breaker, force.state, reason)
                state = breaker_pb2.BreakerState.Name(force.state)
                done = f"breaker {force.breaker} forced {state}"
            elif kind == "drain":
                for instance in drains[i]:
                    await self._hands.drain(step.drain.service, instance)
                done = f"drained {', '.join(drains[i])} of {step.drain.service}"
            else:
                # Load goes on after the faults, through the after-end expectations' time,
                # so that a recovery is measured under traffic.
                seconds = ends - self._clock() + _recovery(spec)
                run = self._hands.start_load(step.load, seconds)
                self._loads.setdefault(experiment.id, []).append(run)
                done = f"load on {step.load.method} at {step.load.rate:g}/s started"
            _note(experiment, self._clock(), f"step {i}: {done}")

    async def _end_method(self, experiment: chaos_pb2.Experiment, now: float, why: str) -> None:
        """Remove what the method put in place; then its rollbacks. Errors are recorded
        and the rest goes on: a failed reset must not keep a fault in place."""
        await self._faults.delete_many(list(experiment.fault_rules))
        _note(experiment, now, f"method ended ({why}); its fault rules deleted")
        reason = f"chaos experiment {experiment.id} ended"
        for step in experiment.spec.method:
            if step.HasField("force_breaker") and step.force_breaker.state != CLOSED:
                await self._attempt(
                    experiment,
                    f"reset breaker {step.force_breaker.breaker}",
                    self._hands.force_breaker(step.force_breaker.breaker, CLOSED, reason),
                )
        for rollback in experiment.spec.rollbacks:
            if rollback.HasField("force_breaker"):
                force = rollback.force_breaker
                state = breaker_pb2.BreakerState.Name(force.state)
                what = f"rollback: breaker {force.breaker} to {state}"
                action = self._hands.force_breaker(force.breaker, force.state, reason)
            else:
                feature = rollback.set_feature
                what = f"rollback: feature {feature.feature} set"
                action = self._hands.set_feature(feature.feature, feature.status, reason)
            await self._attempt(experiment, what, action)
        experiment.method_ended_at.CopyFrom(timestamps.at(self._clock()))
        self._checked.pop(experiment.id, None)

    async def _attempt(self, experiment: chaos_pb2.Experiment, what: str, action: object) -> None:
        try:
            await action  # type: ignore[misc]
            _note(experiment, self._clock(), what)
        except Exception as exc:
            # Even a bug goes no further: the rest of the undoing must run, and an
            # abort that raised would be retried (this reset with it) every round.
            if not isinstance(exc, BulwarkError):
                log.exception("chaos experiment %s: %s failed", experiment.id, what)
            _note(experiment, self._clock(), f"{what} failed: {exc}")

    async def _abort(self, experiment: chaos_pb2.Experiment, reason: str) -> None:
        now = self._clock()
        log.warning("chaos experiment %s aborted: %s", experiment.id, reason)
        self._aborting[experiment.id] = reason
        if not experiment.HasField("method_ended_at"):
            await self._end_method(experiment, now, f"aborted: {reason}")
        await self._finish(experiment, self._clock(), ABORTED, reason)
        del self._aborting[experiment.id]

    async def _finish(
        self, experiment: chaos_pb2.Experiment, now: float, state: int, reason: str
    ) -> None:
        runs = self._loads.get(experiment.id, [])
        for run in runs:
            run.stop()
        if runs and experiment.id not in self._reports:
            # Kept until the end is recorded: a report is read once, and a retry of this
            # end (etcd away) starts again from the record, without them.
            self._reports[experiment.id] = await collect(runs)
        experiment.load_reports.extend(self._reports.get(experiment.id, []))
        if not runs and any(s.HasField("load") for s in experiment.spec.method):
            _note(experiment, self._clock(), "load ran on a previous leader; its report is lost")
        for silence_id in experiment.silence_ids:
            try:
                await self._hands.end_silence(silence_id)
            except NotFound:
                pass
        experiment.state = state
        experiment.reason = reason
        passed = state == COMPLETED and all(r.met for r in experiment.expectations)
        experiment.verdict = PASSED if passed else FAILED
        experiment.ended_at.CopyFrom(timestamps.at(now))
        verdict = chaos_pb2.Verdict.Name(experiment.verdict).removeprefix("VERDICT_")
        ended = "aborted: " + reason if state == ABORTED else "completed"
        _note(experiment, now, f"{ended}; verdict {verdict}")
        await self._experiments.put(experiment)
        self._loads.pop(experiment.id, None)
        self._reports.pop(experiment.id, None)

    async def _forget_old(self) -> None:
        now = self._clock()
        for experiment in self._experiments.all():
            if experiment.state != RUNNING:
                self._aborting.pop(experiment.id, None)  # ended by another leader
            if experiment.state != RUNNING and experiment.HasField("ended_at"):
                if now - timestamps.unix(experiment.ended_at) > KEPT_S:
                    await self._experiments.forget(experiment.id)
