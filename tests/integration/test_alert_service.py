"""AlertService on real replicas: a tripped breaker raises Bulwark's own alert, which
reaches a real Alertmanager and a webhook; silences are mirrored; acknowledgement
stops an escalation; bad input names its field; a killed leader loses no alert; a
service without primary and a failover raise theirs."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import (
    alert_pb2,
    alert_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server import timestamps
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, start_replicas, wait_for
from tests.integration.test_alert_delivery import _ReceiverServer, receiver, url_of  # noqa: F401
from tests.monitoring_tools import AlertmanagerProcess

OPEN = "BulwarkBreakerOpen"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerProcess]:
    with AlertmanagerProcess(tmp_path_factory.mktemp("alertmanager")) as am:
        yield am


@pytest.fixture(scope="module")
def shared_replica(
    tmp_path_factory: pytest.TempPathFactory, alertmanager: AlertmanagerProcess
) -> Iterator[ReplicaProcess]:
    """One leading replica, on an etcd of its own, sending to the Alertmanager when no
    route takes an alert: the tests that need no other replica share it (``replica``)."""
    root = tmp_path_factory.mktemp("shared")
    member = EtcdMember("alerts", root / "etcd", unsafe_no_fsync=True)
    member.start_healthy()
    replica = ReplicaProcess(
        "a1",
        [member.endpoint],
        root / "a1.log",
        extra_args=["--alertmanager-urls", alertmanager.url],
    )
    try:
        replica.start()
        replica.wait_serving()
        wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
        yield replica
    finally:
        replica.stop()
        member.stop()


@pytest.fixture
def replica(shared_replica: ReplicaProcess) -> Iterator[ReplicaProcess]:
    """The shared leading replica; what a test leaves behind (routes, silences, tripped
    breakers, and so firing alerts) is cleared after it, so the next starts clean."""
    yield shared_replica
    with grpc.insecure_channel(shared_replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        for route in alerts.ListAlertRoutes(
            alert_pb2.ListAlertRoutesRequest(page_size=1000), timeout=5
        ).routes:
            alerts.DeleteAlertRoute(alert_pb2.DeleteAlertRouteRequest(name=route.name), timeout=5)
        for silence in alerts.ListSilences(
            alert_pb2.ListSilencesRequest(page_size=1000), timeout=5
        ).silences:
            alerts.DeleteSilence(alert_pb2.DeleteSilenceRequest(id=silence.id), timeout=5)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        for breaker in breakers.ListBreakers(
            breaker_pb2.ListBreakersRequest(page_size=1000), timeout=5
        ).breakers:
            if breaker.status.state != breaker_pb2.BREAKER_STATE_CLOSED:
                close(channel, breaker.name)
        wait_for(
            lambda: (
                not alerts.ListAlerts(
                    alert_pb2.ListAlertsRequest(firing_only=True), timeout=5
                ).alerts
            ),
            10,
        )


def close(channel: grpc.Channel, breaker: str) -> None:
    breaker_pb2_grpc.CircuitBreakerServiceStub(channel).ForceState(
        breaker_pb2.ForceStateRequest(
            name=breaker, state=breaker_pb2.BREAKER_STATE_CLOSED, reason="fixed"
        ),
        timeout=5,
    )


def seconds(s: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(s * 1e9))
    return out


def make_breaker(channel: grpc.Channel, name: str) -> None:
    breaker_pb2_grpc.CircuitBreakerServiceStub(channel).PutBreaker(
        breaker_pb2.PutBreakerRequest(name=name), timeout=5
    )


def depends(channel: grpc.Channel, feature: str, breaker: str) -> None:
    feature_pb2_grpc.FeatureServiceStub(channel).PutFeature(
        feature_pb2.PutFeatureRequest(
            feature=feature_pb2.Feature(
                name=feature,
                depends_on=[
                    feature_pb2.Dependency(
                        kind=feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER, name=breaker
                    )
                ],
            )
        ),
        timeout=5,
    )


def open_by_outcomes(channel: grpc.Channel, name: str) -> None:
    """A real trip: enough failures over the breaker's minimum number of calls."""
    stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
    config = breaker_pb2.BreakerConfig(
        failure_rate_threshold=50, sliding_window_size=10, minimum_number_of_calls=10
    )
    stub.PutBreaker(breaker_pb2.PutBreakerRequest(name=name, config=config), timeout=5)
    report = breaker_pb2.ReportOutcomesRequest(reporter="web-1")
    report.outcomes.add(name=name, counts=breaker_pb2.OutcomeCounts(successes=2, failures=8))
    stub.ReportOutcomes(report, timeout=5)


def firing(alerts: alert_pb2_grpc.AlertServiceStub, breaker: str) -> alert_pb2.Alert | None:
    response = alerts.ListAlerts(
        alert_pb2.ListAlertsRequest(
            firing_only=True,
            matchers=[
                alert_pb2.Matcher(name="alertname", value=OPEN),
                alert_pb2.Matcher(name="breaker", value=breaker),
            ],
        ),
        timeout=5,
    )
    return response.alerts[0] if response.alerts else None


def in_alertmanager(am: AlertmanagerProcess, breaker: str) -> dict | None:
    return next(
        (
            a
            for a in am.alerts()
            if a["labels"].get("alertname") == OPEN and a["labels"].get("breaker") == breaker
        ),
        None,
    )


def test_a_tripped_breaker_reaches_alertmanager_and_a_silence_is_mirrored(
    replica: ReplicaProcess, alertmanager: AlertmanagerProcess
) -> None:
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        assert firing(alerts, "payments") is None
        open_by_outcomes(channel, "payments")
        raised = wait_for(lambda: firing(alerts, "payments"), 10)
        assert isinstance(raised, alert_pb2.Alert)
        assert raised.labels["severity"] == "warning"  # no feature depends on it
        assert raised.labels["source"] == "bulwark"
        status = cluster_pb2_grpc.ClusterServiceStub(channel).GetClusterStatus(
            cluster_pb2.GetClusterStatusRequest(), timeout=5
        )
        assert (status.alerts.warning, status.alerts.critical) == (1, 0)
        sent = wait_for(lambda: in_alertmanager(alertmanager, "payments"), 10)
        assert isinstance(sent, dict)
        assert sent["annotations"]["summary"] == "Breaker payments is open"
        assert sent["status"]["state"] == "active"

        # One silence mutes it here and in Alertmanager.
        silence = alert_pb2.Silence(
            matchers=[alert_pb2.Matcher(name="breaker", value="payments")],
            ends_at=timestamps.at(time.time() + 3600),
            comment="known outage",
        )
        stored = alerts.PutSilence(alert_pb2.PutSilenceRequest(silence=silence), timeout=5).silence
        assert stored.id and stored.created_by == "anonymous"

        def mirrored() -> bool:
            return any(
                s["status"]["state"] == "active"
                and {"name": "breaker", "value": "payments", "isRegex": False, "isEqual": True}
                in s["matchers"]
                for s in alertmanager.silences()
            )

        wait_for(mirrored, 10)
        wait_for(
            lambda: (a := firing(alerts, "payments")) and list(a.silenced_by) == [stored.id], 10
        )
        alerts.DeleteSilence(alert_pb2.DeleteSilenceRequest(id=stored.id), timeout=5)
        wait_for(lambda: not mirrored(), 10)

        # Closing the breaker resolves the alert.
        close(channel, "payments")
        wait_for(lambda: firing(alerts, "payments") is None, 10)
        wait_for(lambda: in_alertmanager(alertmanager, "payments") is None, 10)


def test_an_unacknowledged_critical_alert_escalates_and_acknowledgement_stops_it(
    replica: ReplicaProcess,
    receiver: _ReceiverServer,  # noqa: F811
) -> None:
    step = alert_pb2.EscalationStep
    route = alert_pb2.AlertRoute(
        name="oncall",
        matchers=[alert_pb2.Matcher(name="alertname", value=OPEN)],
        receivers=[
            alert_pb2.Receiver(
                name="team", webhook=alert_pb2.WebhookReceiver(url=url_of(receiver, "/team"))
            ),
            alert_pb2.Receiver(
                name="lead", webhook=alert_pb2.WebhookReceiver(url=url_of(receiver, "/lead"))
            ),
        ],
        escalation=[step(receiver="team"), step(receiver="lead", after=seconds(2))],
        group_by=["alertname", "breaker"],  # a notification per breaker
    )
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        alerts.PutAlertRoute(alert_pb2.PutAlertRouteRequest(route=route), timeout=5)
        # A feature depending on a breaker makes the breaker's alert critical.
        for breaker, feature in (("billing", "invoices"), ("search", "discovery")):
            make_breaker(channel, breaker)
            depends(channel, feature, breaker)
            open_by_outcomes(channel, breaker)
        critical = wait_for(lambda: firing(alerts, "billing"), 10)
        assert isinstance(critical, alert_pb2.Alert)
        assert critical.labels["severity"] == "critical"
        # Impact: the feature graph's dependants and the callers that reported outcomes.
        assert list(critical.impact.features) == ["invoices"]
        assert list(critical.impact.callers) == ["web-1"]
        assert critical.impact.dependants == 2

        def paths(breaker: str) -> list[str]:
            return [
                r.path for r in receiver.received if r.json()["groupLabels"]["breaker"] == breaker
            ]

        wait_for(lambda: paths("billing") == ["/team"] and paths("search") == ["/team"], 10)
        first = next(r for r in receiver.received if paths("billing") and r.path == "/team")
        assert ":firing:" in first.headers["Idempotency-Key"]
        # search's alert is acknowledged at once, billing's is not: only billing
        # reaches the lead after the 2 s step.
        search = firing(alerts, "search")
        assert search is not None
        acked = alerts.AcknowledgeAlert(
            alert_pb2.AcknowledgeAlertRequest(fingerprint=search.fingerprint, comment="on it"),
            timeout=5,
        ).alert
        assert acked.acknowledgement.by == "anonymous" and acked.acknowledgement.comment == "on it"
        wait_for(lambda: paths("billing") == ["/team", "/lead"], 10)
        time.sleep(1.0)
        assert paths("search") == ["/team"]
        escalated = firing(alerts, "billing")
        assert escalated is not None and escalated.escalation_step == 1


def test_bad_routes_and_silences_name_their_field(replica: ReplicaProcess) -> None:
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        cases = [
            (
                lambda: alerts.PutAlertRoute(
                    alert_pb2.PutAlertRouteRequest(
                        route=alert_pb2.AlertRoute(
                            name="r",
                            receivers=[
                                alert_pb2.Receiver(
                                    name="team",
                                    webhook=alert_pb2.WebhookReceiver(url="http://h/x"),
                                )
                            ],
                            escalation=[alert_pb2.EscalationStep(receiver="nobody")],
                        )
                    ),
                    timeout=5,
                ),
                "route.escalation[0].receiver",
            ),
            (
                lambda: alerts.PutSilence(
                    alert_pb2.PutSilenceRequest(
                        silence=alert_pb2.Silence(
                            matchers=[alert_pb2.Matcher(name="a", value="b")],
                            ends_at=timestamps.at(time.time() - 60),
                        )
                    ),
                    timeout=5,
                ),
                "silence.ends_at",
            ),
            (
                lambda: alerts.ListAlerts(
                    alert_pb2.ListAlertsRequest(
                        matchers=[alert_pb2.Matcher(name="a", value="(", is_regex=True)]
                    ),
                    timeout=5,
                ),
                "matchers[0].value",
            ),
        ]
        for call, field in cases:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in (caught.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:
            alerts.AcknowledgeAlert(
                alert_pb2.AcknowledgeAlertRequest(fingerprint="0123456789abcdef"), timeout=5
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_killed_leader_loses_no_alert_and_the_next_sends_it_with_the_same_key(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    receiver: _ReceiverServer,  # noqa: F811
) -> None:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint], "a")
    leader = wait_for(
        lambda: next((r for r in replicas if (v := get_leader(r.address)) and v.is_self), None), 10
    )
    assert isinstance(leader, ReplicaProcess)
    other = next(r for r in replicas if r is not leader)
    route = alert_pb2.AlertRoute(
        name="hooks",
        receivers=[
            alert_pb2.Receiver(
                name="team", webhook=alert_pb2.WebhookReceiver(url=url_of(receiver, "/team"))
            )
        ],
    )
    with grpc.insecure_channel(other.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        alerts.PutAlertRoute(alert_pb2.PutAlertRouteRequest(route=route), timeout=5)
        open_by_outcomes(channel, "payments")
        raised = wait_for(lambda: firing(alerts, "payments"), 10)
        assert isinstance(raised, alert_pb2.Alert)
        wait_for(lambda: len(receiver.received) >= 1, 10)
        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        wait_for(lambda: (v := get_leader(other.address)) and v.is_self, 15)
        # The alert is still firing, the same episode; the new leader resolves it when
        # the breaker closes, and tells the receiver once.
        still = firing(alerts, "payments")
        assert still is not None and still.starts_at == raised.starts_at
        breaker_pb2_grpc.CircuitBreakerServiceStub(channel).ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments", state=breaker_pb2.BREAKER_STATE_CLOSED, reason="fixed"
            ),
            timeout=5,
        )
        wait_for(lambda: any(r.json()["transition"] == "resolved" for r in receiver.received), 10)
    keys = [r.headers["Idempotency-Key"] for r in receiver.received]
    firing_keys = [k for k in keys if ":firing:" in k]
    # At least once: the firing notification may have been sent again by the new leader,
    # always with the same key.
    assert firing_keys and len(set(firing_keys)) == 1, keys
    assert sum(":resolved:" in k for k in keys) == 1, keys


def test_a_feature_blocked_by_an_open_breaker_alerts_as_caused_by_it(
    replica: ReplicaProcess,
) -> None:
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        make_breaker(channel, "inventory")
        depends(channel, "cart", "inventory")

        def feature_alert() -> alert_pb2.Alert | None:
            found = alerts.ListAlerts(
                alert_pb2.ListAlertsRequest(
                    firing_only=True,
                    matchers=[alert_pb2.Matcher(name="feature", value="cart")],
                ),
                timeout=5,
            ).alerts
            return found[0] if found else None

        assert feature_alert() is None
        open_by_outcomes(channel, "inventory")
        breaker_alert = wait_for(lambda: firing(alerts, "inventory"), 10)
        assert isinstance(breaker_alert, alert_pb2.Alert)
        consequence = wait_for(lambda: (a := feature_alert()) and a.caused_by and a, 10)
        assert isinstance(consequence, alert_pb2.Alert)
        assert consequence.labels["alertname"] == "BulwarkFeatureUnavailable"
        assert consequence.caused_by == breaker_alert.fingerprint
        assert "inventory" in consequence.annotations["description"]
        close(channel, "inventory")
        wait_for(lambda: feature_alert() is None and firing(alerts, "inventory") is None, 10)


def test_a_service_left_without_primary_and_its_failover_alert(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    # A replica of its own: a service's alerts outlive the test (its failover alert
    # for 15 minutes), and the shared replica's tests each start with none firing.
    replica = replica_factory("a1", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        registry = registry_pb2_grpc.RegistryServiceStub(channel)

        def register(instance_id: str) -> None:
            instance = registry_pb2.Instance(
                service="ledger", id=instance_id, address=f"{instance_id}:1", ttl=seconds(30)
            )
            registry.RegisterInstance(
                registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
            )

        def leave(instance_id: str) -> None:
            registry.DeregisterInstance(
                registry_pb2.DeregisterInstanceRequest(service="ledger", instance_id=instance_id),
                timeout=5,
            )

        def raised(name: str) -> alert_pb2.Alert | None:
            found = alerts.ListAlerts(
                alert_pb2.ListAlertsRequest(
                    firing_only=True,
                    matchers=[
                        alert_pb2.Matcher(name="alertname", value=name),
                        alert_pb2.Matcher(name="service", value="ledger"),
                    ],
                ),
                timeout=5,
            ).alerts
            return found[0] if found else None

        register("l1")
        wait_for(
            lambda: (
                registry.GetPrimary(
                    registry_pb2.GetPrimaryRequest(service="ledger"), timeout=5
                ).primary.instance_id
                == "l1"
            ),
            10,
        )
        leave("l1")  # no backup: the service is left without a primary
        vacant = wait_for(lambda: raised("BulwarkPrimaryLost"), 10)
        assert isinstance(vacant, alert_pb2.Alert)
        assert vacant.labels["severity"] == "critical"
        # A promotion into a vacancy is no failover; a primary replaced by a backup is.
        register("l2")
        wait_for(lambda: raised("BulwarkPrimaryLost") is None, 10)
        # The promotion of l2 was evaluated with the vacancy's end, before this.
        assert raised("BulwarkPrimaryFailover") is None
        register("l3")
        leave("l2")
        failover = wait_for(lambda: raised("BulwarkPrimaryFailover"), 10)
        assert isinstance(failover, alert_pb2.Alert)
        assert failover.labels["severity"] == "warning"
        assert "l3 replaced l2" in failover.annotations["description"]


def test_alerts_due_together_with_the_same_group_labels_go_out_as_one(
    replica: ReplicaProcess,
    receiver: _ReceiverServer,  # noqa: F811
) -> None:
    forced = "BulwarkBreakerForcedOpen"
    with grpc.insecure_channel(replica.address) as channel:
        alerts = alert_pb2_grpc.AlertServiceStub(channel)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        for name in ("maps", "mail"):
            breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=name), timeout=5)
            breakers.ForceState(
                breaker_pb2.ForceStateRequest(
                    name=name, state=breaker_pb2.BREAKER_STATE_FORCED_OPEN, reason="drill"
                ),
                timeout=5,
            )
        request = alert_pb2.ListAlertsRequest(
            firing_only=True, matchers=[alert_pb2.Matcher(name="alertname", value=forced)]
        )
        wait_for(lambda: len(alerts.ListAlerts(request, timeout=5).alerts) == 2, 10)
        # No route took them so far: with one now, both are due in the same round.
        route = alert_pb2.AlertRoute(
            name="drills",
            matchers=[alert_pb2.Matcher(name="alertname", value=forced)],
            receivers=[
                alert_pb2.Receiver(
                    name="team", webhook=alert_pb2.WebhookReceiver(url=url_of(receiver, "/ok"))
                )
            ],
        )
        alerts.PutAlertRoute(alert_pb2.PutAlertRouteRequest(route=route), timeout=5)
        wait_for(lambda: receiver.received, 10)
        time.sleep(1.1)  # a round more (one a second): nothing else is sent
    (notification,) = receiver.received
    body = notification.json()
    assert body["groupLabels"] == {"alertname": forced}  # the default group_by
    assert sorted(a["labels"]["breaker"] for a in body["alerts"]) == ["mail", "maps"]
    assert body["transition"] == "firing"
    assert notification.headers["Idempotency-Key"] == body["idempotencyKey"]
    assert body["idempotencyKey"].startswith("group:")
    assert {a["idempotencyKey"].split(":")[1] for a in body["alerts"]} == {"firing"}
