"""The shipped Prometheus rules and their promtool tests stay in step.

promtool only runs the cases that exist; these checks make a missing case fail: every
alert needs a case where it fires and one where it must not, every recording rule a
promql_expr_test with samples. They also hold every alert to the shape operators rely on
(a severity, a summary and a description).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring_tools import RULES_FILE, RULES_TEST_FILE

SEVERITIES = {"critical", "warning", "info"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES_FILE)["groups"] for rule in group["rules"]]


ALERTS = [rule for rule in _rules() if "alert" in rule]
RECORDS = [rule["record"] for rule in _rules() if "record" in rule]
TESTS = _load(RULES_TEST_FILE)["tests"]


def _alert_cases(firing: bool) -> set[str]:
    """Alert names with at least one case expecting alerts (``firing``) or none."""
    return {
        case["alertname"]
        for test in TESTS
        for case in test.get("alert_rule_test", [])
        if bool(case.get("exp_alerts")) == firing
    }


def test_the_tests_load_the_shipped_rule_file() -> None:
    rule_files = _load(RULES_TEST_FILE)["rule_files"]
    assert [(RULES_TEST_FILE.parent / path).resolve() for path in rule_files] == [RULES_FILE]


def test_rule_names_are_unique() -> None:
    names = [rule["alert"] for rule in ALERTS] + RECORDS
    assert len(names) == len(set(names))


def test_every_tested_alert_exists() -> None:
    """A case naming an alert that is gone passes vacuously in promtool (it expects nothing)."""
    known = {rule["alert"] for rule in ALERTS}
    assert (_alert_cases(True) | _alert_cases(False)) <= known


@pytest.mark.parametrize("alert", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_has_a_firing_and_a_quiet_case(alert: dict[str, Any]) -> None:
    assert alert["alert"] in _alert_cases(True), "no case where it fires"
    assert alert["alert"] in _alert_cases(False), "no case where it must not fire (exp_alerts: [])"


@pytest.mark.parametrize("alert", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_has_severity_summary_and_description(alert: dict[str, Any]) -> None:
    assert alert.get("labels", {}).get("severity") in SEVERITIES
    assert alert["annotations"].get("summary")
    assert alert["annotations"].get("description")
    assert alert["alert"].startswith("Bulwark")


@pytest.mark.parametrize("record", RECORDS)
def test_recording_rule_is_tested(record: str) -> None:
    name = re.compile(rf"(?<![\w:]){re.escape(record)}(?![\w:])")
    assert any(
        name.search(case["expr"]) and case.get("exp_samples")
        for test in TESTS
        for case in test.get("promql_expr_test", [])
    ), "no promql_expr_test with samples queries it"
