"""The shipped Prometheus rules under the real tools: promtool, Prometheus and Alertmanager.

* ``promtool check rules`` accepts the rule file and ``promtool test rules`` passes its
  unit tests (``tests/unit/test_alert_rule_coverage.py`` checks those tests are complete).
* A real Alertmanager takes an alert posted to ``/api/v2/alerts`` and gives it back.

A real Prometheus scraping real replicas with the rules, and firing to a real
Alertmanager, is ``test_alerting_e2e.py``'s.

The programs come from Debian packages (``make test`` installs them); a missing one fails
the test with the command to install it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import wait_for
from tests.monitoring_tools import (
    ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    AlertmanagerProcess,
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
