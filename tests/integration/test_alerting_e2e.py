"""A tripped breaker reaches Alertmanager through the shipped rules, every part real.

Two replicas share one etcd and serve metrics; a real Prometheus scrapes both under
job ``bulwark`` with a copy of ``deploy/prometheus/bulwark.rules.yml`` whose ``for:``
durations are shortened (the copy is checked to differ in nothing else), and sends to
a real Alertmanager. Failures reported through the client stubs trip a breaker; the
test reads ``BulwarkBreakerOpenTooLong`` back from Alertmanager's API, then SIGKILLs the
leader and checks that the same alert goes on firing through the failover, whose gap
(no replica exports the fleet's series until the other one wins) the rule must bridge,
that ``BulwarkReplicaDown`` names the killed replica, and that every rule Prometheus
loaded evaluated without error on the real series.

Prometheus discovers its targets and its Alertmanager about 5 s after it starts, so it
starts first and the replicas come up during that wait.
"""

from __future__ import annotations

import copy
import itertools
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import duration_pb2

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, free_port
from tests.integration.conftest import get_leader, wait_for
from tests.monitoring_tools import RULES_FILE, AlertmanagerProcess, PrometheusProcess

ALERT = "BulwarkBreakerOpenTooLong"
BREAKER = "payments"
# Every `for:` of the copy. Two evaluations at the 0.5 s interval: a real pending
# phase, yet the alert fires within a second or two of the trip.
SHORT_FOR = "1s"
# Leases are renewed every TTL/3, so the survivor wins 2/3 TTL to TTL after the kill,
# while the dead leader's series go stale at its next scrape (within 0.5 s). At 3 s the
# gap in which nobody exports the breaker's state lasts at least 1.5 s, so the rule is
# evaluated (every 0.5 s) at least twice inside it: the case the rule must bridge.
LEASE_TTL_S = 3
EVALUATION_INTERVAL_S = 0.5
# The series must reappear on the survivor within the TTL and a scrape or two; the
# slack is for a loaded machine.
FAILOVER_TIMEOUT_S = 20.0


def _without_for(rules: Any) -> Any:
    """The parsed rule file with every rule's ``for`` removed."""
    stripped = copy.deepcopy(rules)
    for group in stripped["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return stripped


def write_shortened_rules(destination: Path) -> Path:
    """The shipped rules with every ``for:`` set to ``SHORT_FOR``, written to ``destination``.

    Fails the test unless what was written, read back as Prometheus will read it,
    differs from the shipped file in ``for:`` values alone.
    """
    shipped = yaml.safe_load(RULES_FILE.read_text())
    shortened = copy.deepcopy(shipped)
    for group in shortened["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    destination.write_text(yaml.safe_dump(shortened, sort_keys=False))
    written = yaml.safe_load(destination.read_text())
    assert _without_for(written) == _without_for(shipped)
    assert _rule(written, ALERT)["for"] == SHORT_FOR != _rule(shipped, ALERT)["for"]
    return destination


def _rule(rules: Any, alert: str) -> dict[str, Any]:
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    return dict(rule)


def _expected_alert(rule: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations the rule gives ``BREAKER``'s alert, templates filled in."""
    labels = {"alertname": ALERT, "job": "bulwark", "breaker": BREAKER, **rule["labels"]}
    annotations = {
        key: text.replace("{{ $labels.breaker }}", BREAKER)
        for key, text in rule["annotations"].items()
    }
    # Only $labels.breaker is filled in here: a template this test does not know about
    # must make it fail, not compare against unrendered text.
    assert not any("{{" in text for text in annotations.values()), annotations
    return labels, annotations


def _ours(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        alert
        for alert in alerts
        if alert["labels"].get("alertname") == ALERT and alert["labels"].get("breaker") == BREAKER
    ]


def _stub(address: str) -> tuple[grpc.Channel, breaker_pb2_grpc.CircuitBreakerServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, breaker_pb2_grpc.CircuitBreakerServiceStub(channel)


def _leads(replica: ReplicaProcess) -> bool:
    answer = get_leader(replica.address)
    return answer is not None and answer.is_self


def _report(stub: breaker_pb2_grpc.CircuitBreakerServiceStub, ok: int, failed: int) -> None:
    stub.ReportOutcomes(
        breaker_pb2.ReportOutcomesRequest(
            reporter="checkout",
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name=BREAKER, counts=breaker_pb2.OutcomeCounts(successes=ok, failures=failed)
                )
            ],
        ),
        timeout=5,
    )


def _state(stub: breaker_pb2_grpc.CircuitBreakerServiceStub) -> int:
    response = stub.GetBreaker(breaker_pb2.GetBreakerRequest(name=BREAKER), timeout=5)
    return int(response.breaker.status.state)


def _fleet_group_evaluated_after(prometheus: PrometheusProcess, unix: float) -> bool:
    (group,) = [g for g in prometheus.rule_groups() if g["name"] == "bulwark.fleet"]
    return datetime.fromisoformat(group["lastEvaluation"]).timestamp() > unix


def _longest_absence(prometheus: PrometheusProcess, expr: str, start: float, end: float) -> float:
    """Seconds of the longest stretch in [start, end] in which ``expr`` had no sample.

    A range query evaluates ``expr`` as the rules do, every 0.1 s here.
    """
    step = 0.1
    data = prometheus.api(
        "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step)
    )
    present = sorted({float(t) for series in data["result"] for t, _ in series["values"]})
    edges = [start, *present, end]
    return max(later - earlier for earlier, later in itertools.pairwise(edges)) - step


def test_a_tripped_breaker_reaches_alertmanager_and_fires_through_a_failover(
    tmp_path: Path, etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    rules = write_shortened_rules(tmp_path / "bulwark.rules.yml")
    expected_labels, expected_annotations = _expected_alert(
        _rule(yaml.safe_load(RULES_FILE.read_text()), ALERT)
    )
    # Picked now, bound by the replicas later: Prometheus must know its targets first.
    metrics = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    assert metrics[0] != metrics[1]
    with (
        AlertmanagerProcess(tmp_path / "alertmanager") as alertmanager,
        PrometheusProcess(
            tmp_path / "prometheus",
            targets=metrics,
            rule_files=[rules],
            alertmanagers=[alertmanager.address],
            scrape_interval=f"{EVALUATION_INTERVAL_S * 1000:.0f}ms",
            evaluation_interval=f"{EVALUATION_INTERVAL_S * 1000:.0f}ms",
        ) as prometheus,
    ):
        replicas = {
            listen: replica_factory(
                f"r{i}",
                [etcd.endpoint],
                "--metrics-listen",
                listen,
                f"--lease-ttl={LEASE_TTL_S}",
                wait=False,  # both start side by side
            )
            for i, listen in enumerate(metrics)
        }
        for replica in replicas.values():
            replica.wait_serving()
        leader_metrics = wait_for(
            lambda: next((m for m, r in replicas.items() if _leads(r)), None), 10
        )
        leader = replicas[str(leader_metrics)]
        (survivor_metrics,) = [m for m in replicas if m != leader_metrics]
        survivor = replicas[survivor_metrics]

        leader_channel, leader_stub = _stub(leader.address)
        survivor_channel, survivor_stub = _stub(survivor.address)
        with leader_channel, survivor_channel:
            leader_stub.PutBreaker(
                breaker_pb2.PutBreakerRequest(
                    name=BREAKER,
                    config=breaker_pb2.BreakerConfig(
                        failure_rate_threshold=50,
                        sliding_window_size=10,
                        minimum_number_of_calls=10,
                        # Long enough to stay OPEN for the whole test (HALF_OPEN would
                        # fire the alert too, but OPEN is the plain case).
                        wait_duration_in_open_state=duration_pb2.Duration(seconds=600),
                    ),
                ),
                timeout=5,
            )

            # Before the trip: Prometheus has the breaker CLOSED, has evaluated the rule
            # on that, and knows the Alertmanager; neither shows the alert.
            closed_series = (
                f'bulwark_breaker_state{{job="bulwark", breaker="{BREAKER}", state="closed"}} == 1'
            )
            (closed,) = wait_for(lambda: prometheus.query(closed_series), 15)
            wait_for(lambda: _fleet_group_evaluated_after(prometheus, closed["value"][0]), 5)
            wait_for(lambda: prometheus.api("alertmanagers")["activeAlertmanagers"], 15)
            assert _ours(prometheus.alerts()) == []
            assert _ours(alertmanager.alerts()) == []

            # 10 calls, 8 failures, reported half to each replica: 80 % >= 50 % trips it.
            _report(leader_stub, ok=1, failed=4)
            _report(survivor_stub, ok=1, failed=4)
            wait_for(lambda: _state(survivor_stub) == breaker_pb2.BREAKER_STATE_OPEN, 5)

        (alert,) = wait_for(lambda: _ours(alertmanager.alerts()), 15)
        assert alert["labels"] == expected_labels
        assert alert["annotations"] == expected_annotations
        assert alert["status"]["state"] == "active"
        assert [receiver["name"] for receiver in alert["receivers"]] == ["default"]
        (firing,) = _ours(prometheus.alerts())
        assert firing["state"] == "firing"

        # The failover: the alert must neither resolve nor start over (a new activeAt in
        # Prometheus, a new startsAt in Alertmanager) while no replica exports the
        # breaker's state, nor after the survivor does.
        killed_at = time.time()
        leader.signal(signal.SIGKILL)
        open_series = f'bulwark_breaker_state{{job="bulwark", breaker="{BREAKER}", state="open"}}'
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, "the survivor's series never reached Prometheus"
            exported = {s["metric"]["instance"] for s in prometheus.query(open_series)}
            in_prometheus = _ours(prometheus.alerts())
            in_alertmanager = _ours(alertmanager.alerts())
            assert [(a["state"], a["activeAt"]) for a in in_prometheus] == [
                ("firing", firing["activeAt"])
            ]
            assert [(a["status"]["state"], a["startsAt"]) for a in in_alertmanager] == [
                ("active", alert["startsAt"])
            ]
            if exported == {survivor_metrics} and _leads(survivor):
                break
            time.sleep(0.2)
        handed_over = time.time()
        assert not leader.running
        # Without an evaluation while nobody exported the series, the bridge went untested.
        gap = _longest_absence(prometheus, open_series, killed_at, handed_over)
        assert gap >= EVALUATION_INTERVAL_S, f"no replica exported {BREAKER} for only {gap:.1f} s"
        # One more evaluation on the survivor's series alone, then the same check.
        wait_for(lambda: _fleet_group_evaluated_after(prometheus, handed_over), 5)
        (after,) = _ours(prometheus.alerts())
        assert (after["state"], after["activeAt"]) == ("firing", firing["activeAt"])
        (after_am,) = _ours(alertmanager.alerts())
        assert after_am["startsAt"] == alert["startsAt"]
        assert after_am["labels"] == expected_labels

        # The rules notice the killed replica, and every rule evaluated without error on
        # real series.
        (down,) = wait_for(lambda: _down(prometheus, leader_metrics), 5)
        assert down["state"] in ("pending", "firing")
        assert _unhealthy_rules(prometheus, rules) == []


def _down(prometheus: PrometheusProcess, instance: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == "BulwarkReplicaDown"
        and alert["labels"]["instance"] == instance
    ]


def _unhealthy_rules(prometheus: PrometheusProcess, rules: Path) -> list[tuple[str, str, str]]:
    """Rules of the file Prometheus loaded that are not all healthy: each group evaluated
    and every rule in it ``ok``; fails unless Prometheus loaded every rule of the file."""
    loaded = [g for g in prometheus.rule_groups() if g["file"] == str(rules.resolve())]
    expected = {
        group["name"]: [rule.get("alert") or rule.get("record") for rule in group["rules"]]
        for group in yaml.safe_load(rules.read_text())["groups"]
    }
    assert {g["name"]: [r["name"] for r in g["rules"]] for g in loaded} == expected
    return [
        (rule["name"], rule["health"], rule.get("lastError", ""))
        for group in loaded
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
