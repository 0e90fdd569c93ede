"""The remediation engine's view of the other capabilities, and its hands on them.

The remediation capability never imports another one: it asks ``Observations`` and
acts through ``Actuators`` (``remediation.conditions``, ``remediation.engine``).
Here, beside the runner, both are made from the registry, the breakers, the
features, the signals and the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bulwark.v1 import alert_pb2, registry_pb2, signals_pb2
from bulwark_server import timestamps
from bulwark_server.alerts import rules as alert_rules
from bulwark_server.alerts.delivery import Notifier
from bulwark_server.alerts.manager import AlertCenter
from bulwark_server.breakers.manager import BreakerManager
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.features.manager import FeatureManager
from bulwark_server.registry.manager import RegistryManager
from bulwark_server.signals.manager import SignalsManager

ACTOR = "bulwark-remediation"
SEVERITY = {
    "critical": alert_pb2.ALERT_SEVERITY_CRITICAL,
    "warning": alert_pb2.ALERT_SEVERITY_WARNING,
    "info": alert_pb2.ALERT_SEVERITY_INFO,
}


class FleetView:
    """``conditions.Observations`` over the capabilities."""

    def __init__(
        self, registry: RegistryManager, breakers: BreakerManager, signals: SignalsManager
    ) -> None:
        self._registry = registry
        self._breakers = breakers
        self._signals = signals

    def instances(self, service: str) -> Sequence[registry_pb2.Instance]:
        return list(self._registry.instances(service).values())

    async def silent_for(self, service: str, instance_id: str) -> float | None:
        return await self._registry.silent_for(service, instance_id)

    def breaker(self, name: str) -> tuple[int, float] | None:
        try:
            breaker, _ = self._breakers.current(name)
        except NotFound:
            return None
        return breaker.status.state, timestamps.unix(breaker.status.state_since)

    def signals(self, service: str, window_s: float) -> signals_pb2.ServiceSignals:
        return self._signals.signals(service, window_s)

    def primary(self, service: str) -> registry_pb2.Primary | None:
        return self._registry.primary(service)


class FleetHands:
    """``engine.Actuators`` over the capabilities."""

    def __init__(
        self,
        registry: RegistryManager,
        breakers: BreakerManager,
        features: FeatureManager,
        alerts: AlertCenter,
        notifier: Notifier,
    ) -> None:
        self._registry = registry
        self._breakers = breakers
        self._features = features
        self._alerts = alerts
        self._notifier = notifier

    async def drain(self, service: str, instance_id: str) -> None:
        await self._registry.drain(service, instance_id)

    async def deregister(self, service: str, instance_id: str) -> None:
        await self._registry.deregister(service, instance_id)

    async def failover(self, service: str, from_instance: str = "") -> str:
        primary = self._registry.primary(service)
        if primary is None or not primary.instance_id:
            raise FailedPrecondition(f"service {service!r} has no primary to fail over")
        if from_instance and primary.instance_id != from_instance:
            return f"nothing to do: {from_instance} is not the primary of {service}"
        # Marking the primary DRAINING makes the registry's leader loop promote the
        # best SERVING backup at once, as a failover does.
        await self._registry.drain(service, primary.instance_id)
        return ""

    def epoch(self, service: str) -> int:
        primary = self._registry.primary(service)
        return primary.epoch if primary is not None else 0

    async def force_breaker(self, name: str, state: int, reason: str) -> None:
        await self._breakers.force(name, state, ACTOR, reason)

    async def set_feature(self, name: str, status: int, reason: str) -> None:
        await self._features.set_status(name, status, reason, None, ACTOR)

    async def webhook(self, url: str, body: Mapping[str, object], key: str) -> None:
        error = await self._notifier.post_json(url, body, key)
        if error:
            raise RuntimeError(error)

    async def alert(
        self, labels: Mapping[str, str], severity: str, summary: str, description: str
    ) -> None:
        await self._alerts.fire(
            {**labels, "source": "bulwark"},
            {"summary": summary, "description": description},
            SEVERITY[severity],
        )

    async def resolve_alert(self, labels: Mapping[str, str]) -> None:
        for severity in alert_rules.SEVERITIES.values():
            fingerprint = alert_rules.fingerprint(
                {**labels, "source": "bulwark", "severity": severity}
            )
            await self._alerts.resolve(fingerprint)
