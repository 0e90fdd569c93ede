"""The shipped Prometheus rules under the real tools: promtool, Prometheus and Alertmanager.

* ``promtool check rules`` accepts the rule file and ``promtool test rules`` passes its
  unit tests (``tests/unit/test_alert_rule_coverage.py`` checks those tests are complete).
* A real Prometheus loads every group and rule with health ok, scrapes a dead target under
  job ``bulwark`` and evaluates the rules on it.
* A real Alertmanager takes an alert posted to ``/api/v2/alerts`` and gives it back, and
  takes the alerts a real Prometheus fires.

The programs come from Debian packages (``make test`` installs them); a missing one fails
the test with the command to install it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulwark_server.loopback.etcd import free_port
from tests.integration.conftest import wait_for
from tests.monitoring_tools import (
    ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    AlertmanagerProcess,
    PrometheusProcess,
    find_program,
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_program("promtool")), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULES_TEST_FILE.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@dataclass
class Stack:
    """A Prometheus with the shipped rules, scraping a dead replica, alerting an Alertmanager."""

    prometheus: PrometheusProcess
    alertmanager: AlertmanagerProcess
    dead_target: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # One stack for the module: Prometheus needs about 5 s before it first scrapes and
    # first reaches the Alertmanager (its discovery managers update every 5 s), so the
    # tests share that wait rather than paying it each.
    root = tmp_path_factory.mktemp("monitoring")
    # The shipped alerts all wait a minute or more, or need Bulwark's series: a rule of the
    # test's own fires at the first evaluation, to follow an alert to the Alertmanager.
    always = root / "always.rules.yml"
    always.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "test",
                        "rules": [
                            {
                                "alert": "AlwaysFiring",
                                "expr": "vector(1)",
                                "labels": {"severity": "info"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    # Nothing listens there: a replica that is down, which the rules must notice.
    dead_target = f"127.0.0.1:{free_port()}"
    with (
        AlertmanagerProcess(root / "alertmanager") as alertmanager,
        PrometheusProcess(
            root / "prometheus",
            targets=[dead_target],
            rule_files=[RULES_FILE, always],
            alertmanagers=[alertmanager.address],
        ) as prometheus,
    ):
        yield Stack(prometheus, alertmanager, dead_target)


def test_prometheus_loads_every_rule_healthy(stack: Stack) -> None:
    expected = {
        group["name"]: [rule.get("alert") or rule.get("record") for rule in group["rules"]]
        for group in yaml.safe_load(RULES_FILE.read_text())["groups"]
    }
    prom = stack.prometheus

    def shipped_groups() -> list[dict[str, Any]]:
        # A rule's health is "unknown" until its group's first evaluation.
        groups = [g for g in prom.rule_groups() if g["file"] == str(RULES_FILE)]
        evaluated = all(rule["health"] != "unknown" for g in groups for rule in g["rules"])
        return groups if groups and evaluated else []

    groups = wait_for(shipped_groups, timeout=10)
    assert {g["name"]: [r["name"] for r in g["rules"]] for g in groups} == expected
    unhealthy = [
        (rule["name"], rule["health"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert unhealthy == []


def test_prometheus_evaluates_the_rules_on_scraped_replicas(stack: Stack) -> None:
    def replica_down() -> list[dict[str, Any]]:
        return [
            alert
            for alert in stack.prometheus.alerts()
            if alert["labels"]["alertname"] == "BulwarkReplicaDown"
            and alert["labels"]["instance"] == stack.dead_target
        ]

    (alert,) = wait_for(replica_down, timeout=15)
    assert alert["state"] == "pending"  # for: 5m
    (up,) = stack.prometheus.query('up{job="bulwark"}')
    assert up["metric"]["instance"] == stack.dead_target
    assert up["value"][1] == "0"


def test_prometheus_sends_firing_alerts_to_alertmanager(stack: Stack) -> None:
    (alert,) = wait_for(stack.alertmanager.alerts, timeout=15)
    assert alert["labels"]["alertname"] == "AlwaysFiring"
    assert alert["labels"]["severity"] == "info"
    assert alert["status"]["state"] == "active"


def test_alertmanager_takes_a_posted_alert(tmp_path: Path) -> None:
    with AlertmanagerProcess(tmp_path) as am:
        assert am.alerts() == []
        am.post_alerts(
            [
                {
                    "labels": {
                        "alertname": "BulwarkNoLeader",
                        "job": "bulwark",
                        "severity": "critical",
                    },
                    "annotations": {"summary": "Bulwark has no leader"},
                }
            ]
        )
        (alert,) = wait_for(am.alerts, timeout=10)
        assert alert["labels"] == {
            "alertname": "BulwarkNoLeader",
            "job": "bulwark",
            "severity": "critical",
        }
        assert alert["annotations"] == {"summary": "Bulwark has no leader"}
        assert alert["status"]["state"] == "active"
        assert [receiver["name"] for receiver in alert["receivers"]] == ["default"]
        assert am.silences() == []
