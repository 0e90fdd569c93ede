"""The example Prometheus and Alertmanager configurations for a local run, under the real tools.

``deploy/prometheus/prometheus.yml`` and ``deploy/alertmanager/alertmanager.yml`` are what
the README's monitoring commands start beside ``make run``: ``promtool check config``
(which also checks the rule file it loads) and ``amtool check-config`` accept them, and
they point where ``make run`` and the shipped rules expect.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring_tools import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    ROOT,
    RULES_FILE,
    find_program,
)


def _run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_program(program)), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_promtool_checks_the_example_prometheus_config_and_its_rules() -> None:
    result = _run("promtool", "check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule file is found through the relative path, and checked with the config.
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert str(RULES_FILE.relative_to(ROOT)) in result.stdout


def test_amtool_checks_the_example_alertmanager_config() -> None:
    result = _run("amtool", "check-config", str(ALERTMANAGER_CONFIG.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_prometheus_config_scrapes_make_run_and_alerts_locally() -> None:
    config = _load(PROMETHEUS_CONFIG)
    # `make run`'s default metrics address, so the two stay in step.
    (make_run_metrics,) = re.findall(
        r"^BULWARK_METRICS_LISTEN \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE
    )
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "bulwark"  # the job every shipped rule selects
    assert job["static_configs"] == [{"targets": [make_run_metrics]}]
    assert [(PROMETHEUS_CONFIG.parent / p).resolve() for p in config["rule_files"]] == [RULES_FILE]
    (alertmanager,) = config["alerting"]["alertmanagers"]
    assert alertmanager["static_configs"] == [{"targets": ["127.0.0.1:9093"]}]


def test_the_example_alertmanager_config_sends_nothing_anywhere() -> None:
    config = _load(ALERTMANAGER_CONFIG)
    assert config["route"]["receiver"] == "default"
    assert "routes" not in config["route"]
    # A receiver with only a name has no integration: no mail, chat or webhook call.
    assert config["receivers"] == [{"name": "default"}]
