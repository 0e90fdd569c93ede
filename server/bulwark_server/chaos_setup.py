"""The chaos engine's view of the other capabilities, and its hands on them.

The chaos capability never imports another one: probes ask ``SteadyState`` and
steps act through ``Hands`` (``chaos.probes``, ``chaos.engine``). Here, beside the
runner, both are made from the breakers, the features, the signals, the registry
and the alerts; a load step is a ``bulwark loadtest`` child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bulwark.v1 import alert_pb2, chaos_pb2, registry_pb2
from bulwark_server import timestamps
from bulwark_server.alerts.manager import AlertCenter
from bulwark_server.breakers.manager import BreakerManager
from bulwark_server.chaos.manager import ChaosManager
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.features.manager import FeatureManager
from bulwark_server.registry.manager import RegistryManager
from bulwark_server.signals.manager import SignalsManager
from bulwark_server.store import EtcdStore

log = logging.getLogger(__name__)

ACTOR = "bulwark-chaos"
SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
LOAD_STOP_GRACE_S = 5.0


class FleetState:
    """``probes.SteadyState`` over the capabilities."""

    def __init__(
        self,
        breakers: BreakerManager,
        features: FeatureManager,
        signals: SignalsManager,
        registry: RegistryManager,
    ) -> None:
        self._breakers = breakers
        self._features = features
        self._signals = signals
        self._registry = registry

    def breaker_state(self, name: str) -> int | None:
        try:
            breaker, _ = self._breakers.current(name)
        except NotFound:
            return None
        return int(breaker.status.state)

    def feature_status(self, name: str) -> int | None:
        try:
            return int(self._features.view(name).effective_status)
        except NotFound:
            return None

    def error_rate(self, service: str, window_s: float) -> tuple[float, int]:
        inbound = self._signals.signals(service, window_s).inbound
        return inbound.error_rate, int(inbound.calls)

    def primary(self, service: str) -> str:
        primary = self._registry.primary(service)
        return primary.instance_id if primary is not None else ""


class LoadProcess:
    """A ``bulwark loadtest`` child writing its JSON report to a scratch file."""

    def __init__(
        self, step: chaos_pb2.LoadStep, seconds: float, bulwark_address: str, token: str
    ) -> None:
        handle, self._path = tempfile.mkstemp(prefix="bulwark-load-", suffix=".json")
        os.close(handle)
        timeout = step.timeout.ToNanoseconds() / 1e9 if step.HasField("timeout") else 2.0
        # Values joined to their flags: one starting with "-" is still a value.
        command = [
            sys.executable,
            "-m",
            "bulwark_server",
            "loadtest",
            step.address,
            f"--call={step.method}",
            "--insecure",  # a load step's target speaks plaintext gRPC (chaos.proto)
            f"--rps={step.rate:g}",
            f"--concurrency={step.concurrency or 50}",
            f"--duration={max(round(seconds * 1000), 100)}ms",
            f"--timeout={max(round(timeout * 1000), 1)}ms",
            f"--data={step.data or '{}'}",
            "-O",
            "json",
            "-o",
            self._path,
            "--no-progress",
        ]
        for key, value in sorted(step.metadata.items()):
            command.append(f"--metadata={key}={value}")
        env = {k: v for k, v in os.environ.items() if k != "BULWARK_TOKEN"}
        if step.report_as:
            command += ["--report-as", step.report_as, "--bulwark", bulwark_address]
            if token:
                # The replica's own token, for the signal reports (a data-plane
                # identity): loadtest sends it to --bulwark only, never to the target.
                env["BULWARK_TOKEN"] = token
        # Its errors go to a file: a pipe nobody reads until the end would fill up and
        # hold the child still.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,
            )
        except OSError as exc:
            self._stderr.close()
            os.unlink(self._path)
            raise FailedPrecondition(f"the load step could not start: {exc}") from None
        self._deadline = time.monotonic() + seconds + LOAD_STOP_GRACE_S

    def stop(self) -> None:
        # Stopped early (an abort), it has its grace from now, not from its planned
        # end: the engine waits for the report before it records the abort.
        self._deadline = min(self._deadline, time.monotonic() + LOAD_STOP_GRACE_S)
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # it reports what it measured so far

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
        self._stderr.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path)

    async def report(self) -> str:
        while self._process.poll() is None and time.monotonic() < self._deadline:
            await asyncio.sleep(0.05)
        if self._process.poll() is None:
            self._process.kill()
        await asyncio.to_thread(self._process.wait)
        try:
            text = await asyncio.to_thread(Path(self._path).read_text, encoding="utf-8")
            json.loads(text)
            return text
        except (OSError, ValueError):
            self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, self._stderr.tell() - 2000))
            problem = self._stderr.read().decode(errors="replace").strip()[-500:]
            return json.dumps({"error": problem or f"exit status {self._process.returncode}"})
        finally:
            self._stderr.close()
            with contextlib.suppress(OSError):
                os.unlink(self._path)


class FleetHands:
    """``engine.Hands`` over the capabilities."""

    def __init__(
        self,
        breakers: BreakerManager,
        features: FeatureManager,
        registry: RegistryManager,
        alerts: AlertCenter,
        bulwark_address: Callable[[], str],
        token: Callable[[], str],
    ) -> None:
        self._breakers = breakers
        self._features = features
        self._registry = registry
        self._alerts = alerts
        self._address = bulwark_address
        self._token = token

    async def force_breaker(self, name: str, state: int, reason: str) -> None:
        await self._breakers.force(name, state, ACTOR, reason)

    async def set_feature(self, name: str, status: int, reason: str) -> None:
        await self._features.set_status(name, status, reason, None, ACTOR)

    async def switchover(self, service: str) -> str:
        primary = self._registry.primary(service)
        if primary is None or not primary.instance_id:
            raise FailedPrecondition(f"service {service!r} has no primary to switch over")
        return (await self._registry.switchover(service, "")).instance_id

    async def drain(self, service: str, instance_id: str) -> None:
        await self._registry.drain(service, instance_id)

    def serving(self, service: str) -> list[str]:
        return sorted(i.id for i in self._registry.serving(service))

    async def silence(
        self, alertname: str, labels: Mapping[str, str], until: float, comment: str
    ) -> str:
        matchers = [alert_pb2.Matcher(name="alertname", value=alertname)]
        matchers += [alert_pb2.Matcher(name=k, value=v) for k, v in sorted(labels.items())]
        silence = alert_pb2.Silence(
            matchers=matchers, ends_at=timestamps.at(until), comment=comment
        )
        return (await self._alerts.put_silence(silence, ACTOR)).id

    async def end_silence(self, silence_id: str) -> None:
        await self._alerts.end_silence(silence_id)

    def start_load(self, step: chaos_pb2.LoadStep, seconds: float) -> LoadProcess:
        return LoadProcess(step, seconds, self._address(), self._token())


def make_chaos(
    store: EtcdStore,
    election: Election,
    breakers: BreakerManager,
    features: FeatureManager,
    signals: SignalsManager,
    registry: RegistryManager,
    alerts: AlertCenter,
    bulwark_address: Callable[[], str],
    token: Callable[[], str],
) -> tuple[ChaosManager, LeaderTask]:
    """The chaos capability and its leader loop."""
    chaos = ChaosManager(
        store,
        election.fence,
        FleetState(breakers, features, signals, registry),
        FleetHands(breakers, features, registry, alerts, bulwark_address, token),
    )
    return chaos, LeaderTask(election, chaos.engine.run, "chaos-leader")
