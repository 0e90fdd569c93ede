"""Experiments on real replicas: refused when the steady state does not hold or the
blast radius is exceeded; aborted on a hypothesis breach, by the kill switch, by a
lapsed dead-man's switch or by an operator, each time with every rule it created
deleted and its rollbacks run; completed with a verdict from its expectations; and a
leader killed mid-experiment leaves no fault behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import (
    alert_pb2,
    alert_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    chaos_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
)
from bulwark.v1 import chaos_pb2 as C
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, start_replicas, wait_for
from tests.integration.test_metrics import samples, value, with_metrics

OPEN, CLOSED = breaker_pb2.BREAKER_STATE_OPEN, breaker_pb2.BREAKER_STATE_CLOSED
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
RUNNING = C.EXPERIMENT_STATE_RUNNING
ABORTED, COMPLETED = C.EXPERIMENT_STATE_ABORTED, C.EXPERIMENT_STATE_COMPLETED


def seconds(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(s * 1e9))
    return d


def payments_not_open() -> C.Probe:
    return C.Probe(breaker=C.BreakerProbe(breaker="payments", not_state=OPEN))


def flaky_payments(percentage: float = 30) -> C.MethodStep:
    return C.MethodStep(
        fault=C.FaultRule(
            target=C.FaultTarget(downstream="payments"),
            abort=C.FaultAbort(code=14, percentage=percentage),
        )
    )


class Chaos:
    """The stubs an operator uses, on one replica."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.metrics_port = 0
        self.channel = grpc.insecure_channel(address)
        self.chaos = chaos_pb2_grpc.ChaosServiceStub(self.channel)
        self.breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(self.channel)
        self.features = feature_pb2_grpc.FeatureServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def start(self, **spec: object) -> C.Experiment:
        spec.setdefault("duration", seconds(60))
        request = C.StartExperimentRequest(spec=C.ExperimentSpec(**spec))  # type: ignore[arg-type]
        return self.chaos.StartExperiment(request, timeout=10).experiment

    def get(self, experiment_id: str) -> C.Experiment:
        return self.chaos.GetExperiment(
            C.GetExperimentRequest(id=experiment_id), timeout=5
        ).experiment

    def rules(self) -> list[str]:
        listed = self.chaos.ListFaultRules(C.ListFaultRulesRequest(), timeout=5)
        return [r.name for r in listed.rules]

    def ended(self, experiment_id: str, within: float = 10) -> C.Experiment:
        def done() -> C.Experiment | None:
            try:
                experiment = self.get(experiment_id)
            except grpc.RpcError:
                return None
            return experiment if experiment.state != RUNNING else None

        return wait_for(done, within)  # type: ignore[return-value]

    def trip(self, breaker: str) -> None:
        """Fail enough calls to open the breaker, as its callers would report them."""
        counts = breaker_pb2.OutcomeCounts(failures=200)
        self.breakers.ReportOutcomes(
            breaker_pb2.ReportOutcomesRequest(
                reporter="test", outcomes=[breaker_pb2.BreakerOutcomes(name=breaker, counts=counts)]
            ),
            timeout=5,
        )
        wait_for(lambda: self.state(breaker) == OPEN, 5)

    def state(self, breaker: str) -> int:
        got = self.breakers.GetBreaker(breaker_pb2.GetBreakerRequest(name=breaker), timeout=5)
        return got.breaker.status.state

    def reset(self, breaker: str) -> None:
        self.breakers.ForceState(
            breaker_pb2.ForceStateRequest(name=breaker, state=CLOSED, reason="test"), timeout=5
        )


@pytest.fixture
def chaos(etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]) -> Chaos:
    replica, port = with_metrics(replica_factory, etcd, "x1")
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    operator = Chaos(replica.address)
    operator.metrics_port = port
    operator.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
    yield operator
    operator.close()


def test_refused_before_the_start_when_the_steady_state_or_the_caps_say_no(chaos: Chaos) -> None:
    chaos.trip("payments")
    with pytest.raises(grpc.RpcError) as refused:
        chaos.start(hypothesis=[payments_not_open()], method=[flaky_payments()])
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "breaker payments is not OPEN (OPEN)" in refused.value.details()  # type: ignore[attr-defined]
    chaos.reset("payments")
    with pytest.raises(grpc.RpcError) as capped:
        chaos.start(hypothesis=[payments_not_open()], method=[flaky_payments(80)])
    assert capped.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "blast radius of 50 %" in capped.value.details()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as bad:
        chaos.start(method=[flaky_payments()], duration=seconds(0.5))
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "spec.duration" in bad.value.details()  # type: ignore[attr-defined]
    assert chaos.rules() == []


def test_a_breach_aborts_deletes_its_rules_and_runs_its_rollbacks(chaos: Chaos) -> None:
    chaos.features.PutFeature(
        feature_pb2.PutFeatureRequest(feature=feature_pb2.Feature(name="express-checkout")),
        timeout=5,
    )
    experiment = chaos.start(
        title="payments at 30 % errors",
        hypothesis=[payments_not_open()],
        method=[flaky_payments()],
        rollbacks=[
            C.Rollback(
                set_feature=C.SetFeatureRollback(
                    feature="express-checkout", status=feature_pb2.FEATURE_STATUS_DEGRADED
                )
            )
        ],
        expected_alerts=['BulwarkBreakerOpen{breaker="payments"}', "BulwarkFeatureUnavailable"],
    )
    assert experiment.state == RUNNING and len(experiment.fault_rules) == 1
    assert chaos.rules() == list(experiment.fault_rules) and len(experiment.silence_ids) == 2
    assert chaos.chaos.GetChaosStatus(C.GetChaosStatusRequest(), timeout=5).running == [
        experiment.id
    ]
    chaos.trip("payments")  # the steady state breaks
    ended = chaos.ended(experiment.id)
    assert ended.state == ABORTED and ended.verdict == C.VERDICT_FAILED
    assert ended.reason == "hypothesis breached: breaker payments is not OPEN (OPEN)"
    assert chaos.rules() == []
    events = [t.event for t in ended.timeline]
    assert any(e.startswith("hypothesis breached") for e in events)
    assert "rollback: feature express-checkout set" in events
    feature = chaos.features.GetFeature(
        feature_pb2.GetFeatureRequest(name="express-checkout"), timeout=5
    )
    assert feature.feature.feature.status == feature_pb2.FEATURE_STATUS_DEGRADED
    silences = alert_pb2_grpc.AlertServiceStub(chaos.channel).ListSilences(
        alert_pb2.ListSilencesRequest(include_expired=True), timeout=5
    )
    mine = {s.id: s for s in silences.silences if s.id in ended.silence_ids}
    first = mine[ended.silence_ids[0]]
    assert [(m.name, m.value) for m in first.matchers] == [
        ("alertname", "BulwarkBreakerOpen"),
        ("breaker", "payments"),
    ]
    for silence in mine.values():
        assert experiment.id in silence.comment and silence.ends_at.ToSeconds() <= time.time() + 1


def test_the_kill_switch_stops_everything_and_refuses_more(chaos: Chaos) -> None:
    experiment = chaos.start(method=[flaky_payments()])
    by_hand = C.FaultRule(
        name="by-hand",
        abort=C.FaultAbort(code=14, percentage=5),
        expires_at=experiment.ends_at,
    )
    chaos.chaos.PutFaultRule(C.PutFaultRuleRequest(rule=by_hand), timeout=5)
    assert len(chaos.rules()) == 2
    running = samples(chaos.metrics_port)
    assert value(running, "bulwark_chaos_experiments", state="running", verdict="unspecified") == 1
    assert value(running, "bulwark_chaos_fault_rules") == 2
    chaos.chaos.SetChaosHalted(C.SetChaosHaltedRequest(halted=True, reason="incident"), timeout=5)
    assert chaos.rules() == []
    ended = chaos.ended(experiment.id)
    assert (ended.state, ended.reason) == (ABORTED, "kill switch: incident")
    for attempt in (
        lambda: chaos.chaos.PutFaultRule(C.PutFaultRuleRequest(rule=by_hand), timeout=5),
        lambda: chaos.start(method=[flaky_payments()]),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            attempt()
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "halted by the kill switch: incident" in refused.value.details()  # type: ignore[attr-defined]
    status = chaos.chaos.GetChaosStatus(C.GetChaosStatusRequest(), timeout=5)
    assert (status.halted, status.reason, list(status.running)) == (True, "incident", [])
    halted = samples(chaos.metrics_port)
    assert value(halted, "bulwark_chaos_halted") == 1
    assert value(halted, "bulwark_chaos_experiments", state="aborted", verdict="failed") == 1
    chaos.chaos.SetChaosHalted(C.SetChaosHaltedRequest(halted=False), timeout=5)
    chaos.chaos.PutFaultRule(C.PutFaultRuleRequest(rule=by_hand), timeout=5)
    assert chaos.rules() == ["by-hand"]


def test_a_dead_mans_switch_and_an_operator_stop_abort(chaos: Chaos) -> None:
    held = chaos.start(method=[flaky_payments()], renew_within=seconds(1.5))
    for _ in range(3):
        time.sleep(0.7)
        chaos.chaos.RenewExperiment(C.RenewExperimentRequest(id=held.id), timeout=5)
    assert chaos.get(held.id).state == RUNNING  # renewed: still running after 2.1 s
    ended = chaos.ended(held.id, within=10)
    assert ended.state == ABORTED and ended.reason.startswith("dead-man's switch: not renewed")
    stopped = chaos.start(method=[flaky_payments()])
    answer = chaos.chaos.StopExperiment(
        C.StopExperimentRequest(id=stopped.id, reason="enough"), timeout=5
    ).experiment
    assert (answer.state, answer.reason) == (ABORTED, "stopped by anonymous: enough")
    assert chaos.rules() == []
    with pytest.raises(grpc.RpcError) as again:
        chaos.chaos.StopExperiment(C.StopExperimentRequest(id=stopped.id), timeout=5)
    assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]


def test_a_completed_experiment_reports_its_expectations(chaos: Chaos) -> None:
    experiment = chaos.start(
        method=[
            C.MethodStep(force_breaker=C.ForceBreakerStep(breaker="payments", state=FORCED_OPEN))
        ],
        duration=seconds(1.5),
        expectations=[
            C.Expectation(
                probe=C.Probe(breaker=C.BreakerProbe(breaker="payments", state=FORCED_OPEN)),
                within=seconds(1),
            ),
            C.Expectation(
                probe=C.Probe(breaker=C.BreakerProbe(breaker="payments", state=CLOSED)),
                within=seconds(2),
                after_end=True,
            ),
            C.Expectation(
                probe=C.Probe(primary=C.PrimaryProbe(service="nowhere")), within=seconds(0.5)
            ),
        ],
    )
    watch = chaos.chaos.WatchExperiment(C.WatchExperimentRequest(id=experiment.id), timeout=20)
    versions = [response.experiment for response in watch]  # ends when the experiment does
    final = versions[-1]
    assert final.state == COMPLETED and final.verdict == C.VERDICT_FAILED  # 'nowhere' never
    met = [(r.probe, r.met) for r in final.expectations]
    assert met == [
        ("breaker payments is FORCED_OPEN", True),
        ("breaker payments is CLOSED", True),
        ("service nowhere has a primary", False),
    ]
    assert final.expectations[0].after_seconds < 1.0
    assert final.HasField("method_ended_at") and final.HasField("ended_at")
    assert len(versions) >= 2


def test_killing_the_leader_mid_experiment_leaves_no_faults_behind(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint], prefix="k")
    leader = wait_for(
        lambda: next((r for r in replicas if (v := get_leader(r.address)) and v.is_self), None), 10
    )
    other = next(r for r in replicas if r is not leader)
    operator = Chaos(other.address)  # a follower: StartExperiment goes to the leader
    try:
        operator.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        experiment = operator.start(hypothesis=[payments_not_open()], method=[flaky_payments()])
        assert operator.rules() == list(experiment.fault_rules)
        leader.signal(signal.SIGKILL)
        wait_for(lambda: (v := get_leader(other.address)) and v.is_self, 20)
        assert operator.get(experiment.id).state == RUNNING  # the new leader goes on
        operator.trip("payments")
        ended = operator.ended(experiment.id, within=10)
        assert ended.state == ABORTED and ended.reason.startswith("hypothesis breached")
        assert operator.rules() == []
    finally:
        operator.close()


def _bulwark(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulwark_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_runs_an_experiment_to_its_verdict(chaos: Chaos, tmp_path: Path) -> None:
    server = chaos.address
    spec = tmp_path / "force.yaml"
    spec.write_text(
        "title: payments forced open\n"
        "method:\n"
        "  - forceBreaker: {breaker: payments, state: BREAKER_STATE_FORCED_OPEN}\n"
        "duration: 1s\n"
        "renewWithin: 1s\n"
        "expectations:\n"
        "  - probe: {breaker: {breaker: payments, state: BREAKER_STATE_FORCED_OPEN}}\n"
        "    within: 1s\n"
    )
    ran = _bulwark("chaos", "run", str(spec), "--server", server)
    assert ran.returncode == 0, ran.stderr
    assert "step 0: breaker payments forced BREAKER_STATE_FORCED_OPEN" in ran.stdout
    assert "COMPLETED, verdict PASSED" in ran.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": [{"fault": {"abort": {"percentage": "lots"}}}]}')
    refused = _bulwark("chaos", "run", str(bad), "--server", server)
    assert refused.returncode == 2 and "percentage" in refused.stderr
    assert _bulwark("chaos", "halt", "--reason", "drill", "--server", server).returncode == 0
    status = _bulwark("chaos", "status", "--server", server)
    assert "kill switch: ON (drill)" in status.stdout
    assert _bulwark("chaos", "resume", "--server", server).returncode == 0
