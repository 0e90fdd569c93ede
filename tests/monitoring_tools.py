"""Real Prometheus and Alertmanager processes on 127.0.0.1, and the promtool beside them.

The programs come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages,
which ``make test`` installs through ``tools/install-debian-tools``. A test that needs
one that is missing fails and names that command: it is never skipped, since a skipped
monitoring test looks the same as a passing one in a long run.

Each process gets a free port, a data folder of its own and a configuration written
here; ``start`` waits for ``/-/ready`` and fails the test with the log's tail if that
does not come. A port taken between picking and binding (free-port checks race) is
retried on another, as the etcd fixtures do. Both classes are context managers, and
``stop`` is SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import yaml

from bulwark_server.loopback.etcd import free_port, stop_process, tail_lines

ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = ROOT / "deploy" / "prometheus" / "bulwark.rules.yml"
RULES_TEST_FILE = ROOT / "deploy" / "prometheus" / "tests" / "bulwark.rules.test.yml"
# The example configurations for a local run beside `make run`.
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

INSTALL_HINT = (
    "`make debian-tools` installs it (`make test` does too), that is"
    " `tools/install-debian-tools prometheus:prometheus,promtool"
    " prometheus-alertmanager:prometheus-alertmanager,amtool` as root"
    " (apt-get install prometheus prometheus-alertmanager)"
)

# Names each program goes by: Debian renames Alertmanager's binary, upstream's archive does not.
_PROGRAM_NAMES = {
    "promtool": ("promtool",),
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "amtool": ("amtool",),
}
# Debian puts them in /usr/bin; PATH may be a venv's or lack the sbin folders.
_SYSTEM_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


def find_program(program: str) -> Path:
    """Path of ``promtool``, ``prometheus``, ``alertmanager`` or ``amtool``; fails the test
    if missing."""
    for name in _PROGRAM_NAMES[program]:
        found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SYSTEM_DIRS))
        if found:
            return Path(found)
    names = " or ".join(_PROGRAM_NAMES[program])
    pytest.fail(f"{names} not found on PATH or in {', '.join(_SYSTEM_DIRS)}: {INSTALL_HINT}")


def _die_with_parent() -> None:
    """In the child: have Linux SIGTERM it when pytest dies, so no daemon is orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _http_json(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


class _ServerProcess:
    """What Prometheus and Alertmanager share: a port, a folder, a log, readiness, stop."""

    program = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.program}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _write_config(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start on a free port and wait for ``/-/ready``; fail the test with the log's tail."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        for attempt in range(attempts):
            self.port = free_port()
            with self.log_path.open("ab") as log_file:
                self.process = subprocess.Popen(
                    self._args(),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if self._wait_ready(timeout):
                return
            self.stop()
            if attempt < attempts - 1 and "address already in use" in self.log_tail(20):
                continue
            pytest.fail(f"{self.program} on {self.address} not ready: {self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(tail_lines(self.log_path, lines))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrometheusProcess(_ServerProcess):
    """A real ``prometheus`` scraping ``targets`` under job ``bulwark``, with ``rule_files``.

    Alerts go to ``alertmanagers`` (``host:port`` of each). Intervals are short so that
    a test sees rules evaluated within seconds.
    """

    program = "prometheus"

    def __init__(
        self,
        workdir: Path,
        *,
        targets: list[str] | None = None,
        rule_files: list[Path] | None = None,
        alertmanagers: list[str] | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        super().__init__(workdir)
        self.targets = list(targets or [])
        self.rule_files = list(rule_files or [])
        self.alertmanagers = list(alertmanagers or [])
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(path.resolve()) for path in self.rule_files],
            # The job name the shipped rules select.
            "scrape_configs": [
                {"job_name": "bulwark", "static_configs": [{"targets": self.targets}]}
            ],
        }
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _args(self) -> list[str]:
        return [
            str(find_program("prometheus")),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            # Alerts that fire before the Alertmanager is discovered are dropped; by default
            # the next try is a minute later.
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a GET on ``/api/v1/<path>``; fails the test unless the status is success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = _http_json(f"{self.url}/api/v1/{path}{query}")
        if answer.get("status") != "success":
            pytest.fail(f"prometheus /api/v1/{path}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the vector's samples, each ``{"metric": {...}, "value": [t, "v"]}``."""
        data = self.api("query", query=expr)
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), each with ``labels``, ``annotations``, ``state``."""
        return list(self.api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups, each with its ``rules`` and their ``health``."""
        return list(self.api("rules")["groups"])


class AlertmanagerProcess(_ServerProcess):
    """A real Alertmanager, alone (gossip off), routing every alert to one receiver."""

    program = "alertmanager"

    @property
    def config_path(self) -> Path:
        return self.workdir / "alertmanager.yml"

    def _write_config(self) -> None:
        # A receiver with no integrations: alerts are kept and shown, never sent anywhere.
        config = {
            "route": {"receiver": "default", "group_wait": "0s", "group_interval": "1s"},
            "receivers": [{"name": "default"}],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _args(self) -> list[str]:
        return [
            str(find_program("alertmanager")),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            # An empty address turns clustering off: no gossip port to collide with others.
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST ``alerts`` (each with ``labels``, optionally ``annotations``, ``startsAt``...)."""
        _http_json(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode())

    def alerts(self) -> list[dict[str, Any]]:
        return list(_http_json(f"{self.url}/api/v2/alerts"))

    def silences(self) -> list[dict[str, Any]]:
        return list(_http_json(f"{self.url}/api/v2/silences"))
