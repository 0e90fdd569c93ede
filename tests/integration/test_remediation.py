"""Playbooks on real replicas: a silent primary is drained and replaced and the
verification passes; an action that does not help escalates to an alert; the guards
refuse, cap and cool down; a dry run acts on nothing; a leader SIGKILLed mid-way is
followed by one that neither repeats a done step nor drops the verification."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import (
    alert_pb2,
    alert_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    remediation_pb2,
    remediation_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, start_replicas, wait_for
from tests.integration.test_alert_delivery import _ReceiverServer, receiver, url_of  # noqa: F401

R = remediation_pb2
SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
NOT_SERVING = registry_pb2.INSTANCE_HEALTH_NOT_SERVING
DRAINING = registry_pb2.INSTANCE_HEALTH_DRAINING


def seconds(s: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(s * 1e9))
    return out


class Agents:
    """Instances of services heartbeating every second from a thread, until told to stop."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._registry = registry_pb2_grpc.RegistryServiceStub(channel)
        self.beating: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def register(self, service: str, instance_id: str, health: int = SERVING) -> None:
        instance = registry_pb2.Instance(
            service=service, id=instance_id, address=f"{instance_id}:1", ttl=seconds(6)
        )
        instance.health = health  # type: ignore[assignment]
        self._registry.RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
        )
        self.beating.add((service, instance_id))

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            for service, instance_id in list(self.beating):
                try:
                    # Health unset: it keeps what was registered, or what a drain set.
                    self._registry.Heartbeat(
                        registry_pb2.HeartbeatRequest(service=service, instance_id=instance_id),
                        timeout=2,
                    )
                except grpc.RpcError:
                    pass  # a replica moving; the next beat goes on

    def __enter__(self) -> Agents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def leader(etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]) -> ReplicaProcess:
    replica = replica_factory("h1", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    return replica


def remediations(channel: grpc.Channel, playbook: str) -> list[R.Remediation]:
    return list(
        remediation_pb2_grpc.RemediationServiceStub(channel)
        .ListRemediations(R.ListRemediationsRequest(playbook=playbook), timeout=5)
        .remediations
    )


def ended(channel: grpc.Channel, playbook: str, count: int = 1) -> list[R.Remediation]:
    """The playbook's remediations, once ``count`` of them have ended."""
    found = wait_for(
        lambda: (
            len(
                done := [
                    r
                    for r in remediations(channel, playbook)
                    if r.state != R.REMEDIATION_STATE_RUNNING
                ]
            )
            >= count
            and done
        ),
        20,
    )
    assert isinstance(found, list)
    return found


def put(channel: grpc.Channel, playbook: R.Playbook) -> None:
    remediation_pb2_grpc.RemediationServiceStub(channel).PutPlaybook(
        R.PutPlaybookRequest(playbook=playbook), timeout=5
    )


def on_instances(name: str, service: str, *actions: R.Action, **fields: object) -> R.Playbook:
    # Two missed heartbeats (4 s of silence): an agent thread held up for a second on
    # a busy machine is not silent.
    return R.Playbook(
        name=name,
        condition=R.Condition(
            instance=R.InstanceCondition(service=service, missed_heartbeats=2, not_serving=True)
        ),
        actions=list(actions),
        verify_within=seconds(5),
        **fields,  # type: ignore[arg-type]
    )


def test_a_silent_primary_is_drained_replaced_and_the_verification_passes(
    leader: ReplicaProcess,
) -> None:
    with grpc.insecure_channel(leader.address) as channel, Agents(channel) as agents:
        for n in (1, 2, 3):
            agents.register("ledger", f"l{n}")
        registry = registry_pb2_grpc.RegistryServiceStub(channel)

        def primary() -> registry_pb2.Primary:
            return registry.GetPrimary(
                registry_pb2.GetPrimaryRequest(service="ledger"), timeout=5
            ).primary

        first = wait_for(lambda: (p := primary()).instance_id and p, 10)
        assert isinstance(first, registry_pb2.Primary)
        put(
            channel,
            on_instances(
                "ledger-heal",
                "ledger",
                R.Action(drain=R.DrainAction()),
                R.Action(failover=R.FailoverAction()),
            ),
        )
        agents.beating.discard(("ledger", first.instance_id))  # its agent goes silent

        (done,) = ended(channel, "ledger-heal")
        assert done.state == R.REMEDIATION_STATE_RESOLVED, done
        assert done.target == f"instance ledger/{first.instance_id}"
        # The drain cleared it: the failover step was never needed.
        assert [(s.action, s.done, s.outcome, s.verification) for s in done.steps] == [
            (0, True, "done", "cleared")
        ]
        replaced = wait_for(lambda: (p := primary()).instance_id != first.instance_id and p, 10)
        assert isinstance(replaced, registry_pb2.Primary)
        assert replaced.epoch > first.epoch
        instances = registry.ListInstances(
            registry_pb2.ListInstancesRequest(service="ledger"), timeout=5
        ).instances
        assert {i.id: i.health for i in instances}[first.instance_id] == DRAINING


def test_guards_refuse_cap_and_a_dry_run_acts_on_nothing(leader: ReplicaProcess) -> None:
    drain = R.Action(drain=R.DrainAction())
    with grpc.insecure_channel(leader.address) as channel, Agents(channel) as agents:
        # Two of three unhealthy: draining one would leave too few serving.
        agents.register("orders", "o1")
        agents.register("orders", "o2", NOT_SERVING)
        agents.register("orders", "o3", NOT_SERVING)
        put(channel, on_instances("orders-heal", "orders", drain))
        refused = ended(channel, "orders-heal", 2)
        assert {r.state for r in refused} == {R.REMEDIATION_STATE_REFUSED}
        assert all("guard: only 1 of 3" in r.reason and not r.steps for r in refused)
        # The refusal started each target's cooldown: no new record since.
        assert len(remediations(channel, "orders-heal")) == 2

        # One action an hour: of two unhealthy targets, one is drained, one refused.
        for n in range(1, 6):
            agents.register("search", f"s{n}", NOT_SERVING if n <= 2 else SERVING)
        capped = R.PlaybookGuards(max_actions_per_hour=1)
        put(channel, on_instances("search-heal", "search", drain, guards=capped))
        outcomes = sorted(r.state for r in ended(channel, "search-heal", 2))
        assert outcomes == [R.REMEDIATION_STATE_RESOLVED, R.REMEDIATION_STATE_REFUSED]
        assert any(
            r.reason.startswith("cap: 1 actions of this playbook")
            for r in remediations(channel, "search-heal")
        )

        # A dry run records what it would do and does nothing.
        agents.register("mail", "m1")
        agents.register("mail", "m2")
        agents.register("mail", "m3", NOT_SERVING)
        put(channel, on_instances("mail-heal", "mail", drain, dry_run=True))
        (dry,) = ended(channel, "mail-heal")
        assert dry.state == R.REMEDIATION_STATE_DRY_RUN
        assert [s.outcome for s in dry.steps] == ["would drain instance mail/m3"]
        instances = (
            registry_pb2_grpc.RegistryServiceStub(channel)
            .ListInstances(registry_pb2.ListInstancesRequest(service="mail"), timeout=5)
            .instances
        )
        assert {i.id: i.health for i in instances}["m3"] == NOT_SERVING


def _trip(channel: grpc.Channel, name: str) -> None:
    """A real trip: enough failures over the minimum number of calls; OPEN for 10 min."""
    breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
    config = breaker_pb2.BreakerConfig(
        failure_rate_threshold=50,
        sliding_window_size=10,
        minimum_number_of_calls=10,
        wait_duration_in_open_state=seconds(600),
    )
    breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=name, config=config), timeout=5)
    report = breaker_pb2.ReportOutcomesRequest(reporter="web-1")
    report.outcomes.add(name=name, counts=breaker_pb2.OutcomeCounts(successes=2, failures=8))
    breakers.ReportOutcomes(report, timeout=5)


def _unhelpful(name: str, breaker: str, url: str, verify_s: float) -> R.Playbook:
    """Two webhooks that change nothing Bulwark sees: the breaker stays open."""
    return R.Playbook(
        name=name,
        condition=R.Condition(breaker=R.BreakerCondition(breaker=breaker)),
        actions=[
            R.Action(webhook=R.WebhookAction(url=f"{url}/restart")),
            R.Action(webhook=R.WebhookAction(url=f"{url}/page")),
        ],
        verify_within=seconds(verify_s),
    )


def _escalation(channel: grpc.Channel, playbook: str) -> alert_pb2.Alert | None:
    found = (
        alert_pb2_grpc.AlertServiceStub(channel)
        .ListAlerts(
            alert_pb2.ListAlertsRequest(
                firing_only=True,
                matchers=[
                    alert_pb2.Matcher(name="alertname", value="BulwarkRemediationEscalated"),
                    alert_pb2.Matcher(name="playbook", value=playbook),
                ],
            ),
            timeout=5,
        )
        .alerts
    )
    return found[0] if found else None


def test_actions_that_do_not_help_escalate_to_an_alert(
    leader: ReplicaProcess,
    receiver: _ReceiverServer,  # noqa: F811
) -> None:
    with grpc.insecure_channel(leader.address) as channel:
        _trip(channel, "payments")
        put(channel, _unhelpful("payments-heal", "payments", url_of(receiver, ""), 1))
        (done,) = ended(channel, "payments-heal")
        assert done.state == R.REMEDIATION_STATE_ESCALATED
        assert [s.verification for s in done.steps] == ["not cleared within 1s"] * 2
        alert = wait_for(lambda: _escalation(channel, "payments-heal"), 10)
        assert isinstance(alert, alert_pb2.Alert)
        assert alert.labels["severity"] == "critical"
        assert alert.labels["target"] == "breaker payments"
        keys = [r.headers["Idempotency-Key"] for r in receiver.received]
        assert keys == [f"{done.id}:0", f"{done.id}:1"]
        assert [r.json()["step"] for r in receiver.received] == [0, 1]
        # Closed by hand later: the escalation's alert resolves.
        breaker_pb2_grpc.CircuitBreakerServiceStub(channel).ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments", state=breaker_pb2.BREAKER_STATE_CLOSED, reason="fixed"
            ),
            timeout=5,
        )
        wait_for(lambda: _escalation(channel, "payments-heal") is None, 10)


def test_a_new_leader_neither_repeats_a_done_step_nor_drops_the_verification(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    receiver: _ReceiverServer,  # noqa: F811
) -> None:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint], "h")
    first = wait_for(
        lambda: next((r for r in replicas if (v := get_leader(r.address)) and v.is_self), None), 10
    )
    assert isinstance(first, ReplicaProcess)
    other = next(r for r in replicas if r is not first)
    with grpc.insecure_channel(other.address) as channel:
        _trip(channel, "search")
        put(channel, _unhelpful("search-heal", "search", url_of(receiver, ""), 4))
        # Step 0 done and recorded; its verification pending: kill the leader now.
        wait_for(
            lambda: any(r.steps and r.steps[0].done for r in remediations(channel, "search-heal")),
            10,
        )
        first.signal(signal.SIGKILL)
        wait_for(lambda: (v := get_leader(other.address)) and v.is_self, 15)
        (done,) = ended(channel, "search-heal")
    assert done.state == R.REMEDIATION_STATE_ESCALATED
    assert [(s.action, s.done) for s in done.steps] == [(0, True), (1, True)]
    assert [s.verification for s in done.steps] == ["not cleared within 4s"] * 2
    # Each step's webhook once: the new leader took the recorded step as done.
    keys = [r.headers["Idempotency-Key"] for r in receiver.received]
    assert keys == [f"{done.id}:0", f"{done.id}:1"]
