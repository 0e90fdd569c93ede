"""Which targets a playbook's condition holds for, from what the capabilities say.

Targets: an instance (``instance <service>/<id>``), a breaker (``breaker <name>``) or
a service (``service <name>``). Everything is asked of ``Observations`` (the runner
wires it to the registry, the breakers and the signals): this package never reads
their keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bulwark.v1 import breaker_pb2, registry_pb2, remediation_pb2, signals_pb2
from bulwark_server.remediation.anomaly import AnomalyDetectors

TRIPPED = (breaker_pb2.BREAKER_STATE_OPEN, breaker_pb2.BREAKER_STATE_HALF_OPEN)
ANOMALY_WINDOW_S = 10.0  # one sample per service and signal this often
DEFAULT_WINDOW_S = 60.0


class Observations(Protocol):
    """What a condition reads, asked of the capabilities that hold it."""

    def instances(self, service: str) -> Sequence[registry_pb2.Instance]: ...

    async def silent_for(self, service: str, instance_id: str) -> float | None:
        """Seconds since the instance's last heartbeat; None when it is gone."""
        ...

    def breaker(self, name: str) -> tuple[int, float] | None:
        """(state, unix time it began), or None when there is no such breaker."""
        ...

    def signals(self, service: str, window_s: float) -> signals_pb2.ServiceSignals: ...

    def primary(self, service: str) -> registry_pb2.Primary | None: ...


@dataclass(frozen=True)
class Target:
    kind: str  # "instance", "breaker" or "service"
    service: str  # the service (instances and services), or ""
    name: str  # the instance id, breaker or service name

    @property
    def text(self) -> str:
        if self.kind == "instance":
            return f"instance {self.service}/{self.name}"
        return f"{self.kind} {self.name}"

    @classmethod
    def parse(cls, text: str) -> Target:
        kind, _, rest = text.partition(" ")
        if kind == "instance":
            service, _, name = rest.partition("/")
            return cls(kind, service, name)
        return cls(kind, rest if kind == "service" else "", rest)


class Conditions:
    """Evaluates conditions; keeps the anomaly detectors' baselines between rounds."""

    def __init__(self, observe: Observations, anomalies: AnomalyDetectors | None = None) -> None:
        self._observe = observe
        # Not `or`: an empty AnomalyDetectors is falsy (it has __len__).
        self._anomalies = anomalies if anomalies is not None else AnomalyDetectors()
        self._sampled: dict[tuple[str, int], tuple[float, bool]] = {}

    def instances(self, service: str) -> Sequence[registry_pb2.Instance]:
        """The service's instances (for the guards)."""
        return self._observe.instances(service)

    async def matching(self, condition: remediation_pb2.Condition, now: float) -> list[Target]:
        """Every target the condition holds for now."""
        kind = condition.WhichOneof("kind")
        if kind == "instance":
            spec = condition.instance
            found = []
            for instance in self._observe.instances(spec.service):
                if await self._unhealthy(spec, instance):
                    found.append(Target("instance", spec.service, instance.id))
            return found
        if kind == "breaker":
            target = Target("breaker", "", condition.breaker.breaker)
        else:
            service = getattr(condition, kind).service
            target = Target("service", service, service)
        return [target] if await self.holds(condition, target, now) else []

    async def holds(self, condition: remediation_pb2.Condition, target: Target, now: float) -> bool:
        """Whether the condition still holds for ``target`` (False: cleared)."""
        kind = condition.WhichOneof("kind")
        if kind == "instance":
            found = [i for i in self._observe.instances(target.service) if i.id == target.name]
            return bool(found) and await self._unhealthy(condition.instance, found[0])
        if kind == "breaker":
            state = self._observe.breaker(target.name)
            open_for = condition.breaker.open_for.ToNanoseconds() / 1e9
            return state is not None and state[0] in TRIPPED and now - state[1] >= open_for
        if kind == "no_primary":
            primary = self._observe.primary(target.name)
            if primary is not None and primary.instance_id:
                return False
            since = primary.since.ToNanoseconds() / 1e9 if primary is not None else now
            return now - since >= condition.no_primary.vacant_for.ToNanoseconds() / 1e9
        return self._signal(condition.signal, now)

    async def _unhealthy(
        self, spec: remediation_pb2.InstanceCondition, instance: registry_pb2.Instance
    ) -> bool:
        if instance.health == registry_pb2.INSTANCE_HEALTH_DRAINING:
            return False  # being dealt with
        not_serving = spec.not_serving or not spec.missed_heartbeats
        if not_serving and instance.health == registry_pb2.INSTANCE_HEALTH_NOT_SERVING:
            return True
        if not spec.missed_heartbeats:
            return False
        silent = await self._observe.silent_for(instance.service, instance.id)
        period = instance.ttl.ToNanoseconds() / 1e9 / 3
        return silent is not None and silent >= spec.missed_heartbeats * period

    def _signal(self, spec: remediation_pb2.SignalCondition, now: float) -> bool:
        window = spec.window.ToNanoseconds() / 1e9 if spec.HasField("window") else DEFAULT_WINDOW_S
        value = self.value(spec.service, spec.signal, window)
        if not spec.anomalous:
            return value is not None and value > spec.above
        key = (spec.service, spec.signal)
        sampled = self._sampled.get(key)
        if sampled is not None and now - sampled[0] < ANOMALY_WINDOW_S:
            return sampled[1]
        anomalous = False
        if value is not None:
            name = remediation_pb2.ServiceSignal.Name(spec.signal)
            anomalous = self._anomalies.observe(spec.service, name, value, now).anomalous
        self._sampled[key] = (now, anomalous)
        return anomalous

    def value(self, service: str, signal: int, window_s: float) -> float | None:
        """A service's signal now; None when nothing says it (no calls, no instances)."""
        if signal == remediation_pb2.SERVICE_SIGNAL_REPLICATION_LAG:
            lags = [
                i.load.replication_lag.ToNanoseconds() / 1e9
                for i in self._observe.instances(service)
                if i.health == registry_pb2.INSTANCE_HEALTH_SERVING and i.HasField("load")
            ]
            return max(lags, default=None)
        signals = self._observe.signals(service, window_s)
        if signal == remediation_pb2.SERVICE_SIGNAL_IN_FLIGHT:
            return float(signals.in_flight)
        if not signals.inbound.calls:
            return None
        if signal == remediation_pb2.SERVICE_SIGNAL_ERROR_RATE:
            return signals.inbound.error_rate
        return signals.inbound.latency_p99.ToNanoseconds() / 1e9
