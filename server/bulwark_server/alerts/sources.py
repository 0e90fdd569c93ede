"""What Bulwark alerts on by itself: the moment something happens, from the state the
capabilities hold (so a new leader reaches the same alerts from the same state).

* A breaker that trips (OPEN or HALF_OPEN) fires ``BulwarkBreakerOpen``, critical
  when features depend on it, else a warning; its impact names those features and
  the breaker's recent callers. One forced open fires ``BulwarkBreakerForcedOpen``
  (info). Both resolve when it closes.
* A feature whose effective status is DEGRADED (warning) or DISABLED (critical)
  fires ``BulwarkFeatureUnavailable``; when that comes from an open breaker, the
  alert is ``caused_by`` the breaker's (an inhibition).
* A service whose primary is gone with no SERVING backup fires
  ``BulwarkPrimaryLost`` (critical) until one is promoted, or for ``RECENT_S``
  when no instance of it is left at all. A failover (a primary that left or
  reported NOT_SERVING, replaced) fires ``BulwarkPrimaryFailover`` (warning) for
  ``RECENT_S`` after it.
* A snapshot restore fires ``BulwarkSnapshotRestored`` (info) for ``RECENT_S``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from bulwark.v1 import alert_pb2, breaker_pb2, feature_pb2, recovery_pb2, registry_pb2
from bulwark_server import timestamps
from bulwark_server.alerts import rules
from bulwark_server.alerts.manager import AlertCenter
from bulwark_server.errors import BulwarkError, NotFound
from bulwark_server.store import Event

SOURCE = "bulwark"  # the `source` label of the alerts raised here
OPEN_ALERT = "BulwarkBreakerOpen"
FAILOVER_ALERT = "BulwarkPrimaryFailover"
RESTORED_ALERT = "BulwarkSnapshotRestored"
# How long an alert about a moment (a failover, a restore) fires: long enough for
# a person to see it and for Alertmanager's group_wait and repeat.
RECENT_S = 900.0
NAMED = 10  # dependants a description names; the alert's impact lists them all
TRIPPED = (breaker_pb2.BREAKER_STATE_OPEN, breaker_pb2.BREAKER_STATE_HALF_OPEN)
CRITICAL, WARNING = alert_pb2.ALERT_SEVERITY_CRITICAL, alert_pb2.ALERT_SEVERITY_WARNING
INFO = alert_pb2.ALERT_SEVERITY_INFO
AVAILABLE, FEATURE_UNSPECIFIED = feature_pb2.FEATURE_STATUS_AVAILABLE, 0


class Breakers(Protocol):
    def states(self) -> list[tuple[str, int]]: ...

    def state(self, name: str) -> int | None: ...

    def changed(self, events: Sequence[Event]) -> set[str]: ...

    def callers_of(self, name: str) -> list[str]: ...


class Features(Protocol):
    def depending_on_breaker(self, name: str) -> list[str]: ...

    def affected_by(self, events: Sequence[Event]) -> set[str]: ...

    def names(self) -> list[str]: ...

    def view(self, name: str) -> feature_pb2.FeatureView: ...


class Primaries(Protocol):
    def services(self) -> set[str]: ...

    def instances(self, service: str) -> Mapping[str, registry_pb2.Instance]: ...

    def primary(self, service: str) -> registry_pb2.Primary | None: ...

    def touched(self, events: Iterable[Event]) -> set[str]: ...

    def failed_over(self, record: registry_pb2.Primary) -> bool: ...


class Restores(Protocol):
    def last_restore(self) -> recovery_pb2.RestoreRecord | None: ...


def _first(names: Sequence[str], shown: int = NAMED) -> str:
    """The first ``shown`` of ``names``, and how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def recent(at: float, now: float) -> bool:
    """Whether a moment at ``at`` is still alerted on at ``now`` (one a little ahead, by
    the clock of the replica that recorded it, is as good as now)."""
    return now - at < RECENT_S


class Sources:
    """Brings each source's alerts up to date (the leader's loop says when)."""

    def __init__(
        self,
        center: AlertCenter,
        breakers: Breakers,
        features: Features,
        primaries: Primaries,
        restores: Restores,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._center = center
        self.breakers = breakers
        self.features = features
        self.primaries = primaries
        self._restores = restores
        self._clock = clock

    # -- breakers ---------------------------------------------------------------

    async def breaker(self, name: str) -> None:
        state = self.breakers.state(name)
        opened = {"alertname": OPEN_ALERT, "breaker": name, "source": SOURCE}
        forced = {"alertname": "BulwarkBreakerForcedOpen", "breaker": name, "source": SOURCE}
        if state in TRIPPED:
            features = self.features.depending_on_breaker(name)
            # A new leader knows no caller until the next reports: the alert keeps
            # those it names meanwhile.
            callers = self.breakers.callers_of(name) or self._named_callers(opened)
            impact = alert_pb2.Impact(
                features=features, callers=callers, dependants=len(features) + len(callers)
            )
            who = [*(f"feature {f}" for f in features), *(f"caller {c}" for c in callers)]
            await self._fire(
                opened,
                CRITICAL if features else WARNING,
                f"Breaker {name} is open",
                f"Calls through breaker {name} are refused: its dependency is failing."
                + (f" Depending on it: {_first(who)}." if who else ""),
                impact,
            )
        else:
            await self._resolve(opened)
        if state == breaker_pb2.BREAKER_STATE_FORCED_OPEN:
            await self._fire(
                forced,
                INFO,
                f"Breaker {name} was forced open",
                f"Breaker {name} refuses every call until someone resets it.",
            )
        else:
            await self._resolve(forced)

    def _firing(self, labels: Mapping[str, str]) -> alert_pb2.Alert | None:
        """The firing alert of ``labels``, of whichever severity; None if none fires."""
        for severity in rules.SEVERITIES.values():
            with contextlib.suppress(NotFound):
                alert = self._center.alert(rules.fingerprint({**labels, "severity": severity}))
                if alert.state == alert_pb2.ALERT_STATE_FIRING:
                    return alert
        return None

    def _named_callers(self, labels: Mapping[str, str]) -> list[str]:
        """The callers the breaker's firing alert names."""
        alert = self._firing(labels)
        return list(alert.impact.callers) if alert is not None else []

    # -- features ---------------------------------------------------------------

    async def feature(self, name: str) -> None:
        labels = {"alertname": "BulwarkFeatureUnavailable", "feature": name, "source": SOURCE}
        try:
            view = self.features.view(name)
        except NotFound:
            await self._resolve(labels)
            return
        if view.effective_status in (AVAILABLE, FEATURE_UNSPECIFIED):
            await self._resolve(labels)
            return
        disabled = view.effective_status == feature_pb2.FEATURE_STATUS_DISABLED
        status = "disabled" if disabled else "degraded"
        await self._fire(
            labels,
            CRITICAL if disabled else WARNING,
            f"Feature {name} is {status}",
            f"Feature {name} is {status}: {view.effective_reason or 'no reason given'}."
            + (
                f" It depends on {' -> '.join(d.name for d in view.blocked_by)}."
                if view.blocked_by
                else ""
            ),
            caused_by=self._cause(view),
        )

    def _cause(self, view: feature_pb2.FeatureView) -> str:
        """The fingerprint of the firing alert of an open breaker the feature's state
        comes from (an inhibition: the feature's alert is a consequence); "" if none."""
        for dependency in view.blocked_by:
            if dependency.kind != feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER:
                continue
            labels = {"alertname": OPEN_ALERT, "breaker": dependency.name, "source": SOURCE}
            alert = self._firing(labels)
            if alert is not None:
                return alert.fingerprint
        return ""

    # -- primaries --------------------------------------------------------------

    async def service(self, service: str) -> None:
        record = self.primaries.primary(service)
        vacant = {"alertname": "BulwarkPrimaryLost", "service": service, "source": SOURCE}
        failed = {"alertname": FAILOVER_ALERT, "service": service, "source": SOURCE}
        # A service with no instance left at all may have been scaled to zero on
        # purpose (a service cannot be deleted): alerted on for RECENT_S only.
        if (
            record is not None
            and not record.instance_id
            and (
                self.primaries.instances(service)
                or recent(timestamps.unix(record.since), self._clock())
            )
        ):
            await self._fire(
                vacant,
                CRITICAL,
                f"Service {service} has no primary",
                f"Service {service} has no primary since epoch {record.epoch}: {record.reason}.",
            )
        else:
            await self._resolve(vacant)
        if (
            record is not None
            and self.primaries.failed_over(record)
            and recent(timestamps.unix(record.since), self._clock())
        ):
            await self._fire(
                failed,
                WARNING,
                f"Service {service} failed over to {record.instance_id}",
                f"{record.instance_id} replaced {record.previous_instance_id} as primary of "
                f"{service} at epoch {record.epoch}: {record.reason}.",
            )
        else:
            await self._resolve(failed)

    # -- restores ---------------------------------------------------------------

    async def restore(self) -> None:
        record = self._restores.last_restore()
        labels = {"alertname": RESTORED_ALERT, "source": SOURCE}
        if record is None or not recent(timestamps.unix(record.finished_at), self._clock()):
            await self._resolve(labels)
            return
        await self._fire(
            labels,
            INFO,
            f"Snapshot {record.snapshot_id} was restored",
            f"Bulwark's state was restored from snapshot {record.snapshot_id}: "
            f"{record.restored} keys written, {record.wiped} deleted first.",
        )

    def recent_moments(self) -> set[str]:
        """The services whose alerts fire: each round looks again whether their moment
        has passed."""
        return {
            alert.labels["service"]
            for alert in self._center.alerts()
            if alert.labels.get("service")
            and alert.labels.get("source") == SOURCE
            and alert.state == alert_pb2.ALERT_STATE_FIRING
        }

    # -- raising and resolving --------------------------------------------------

    async def _fire(
        self,
        labels: Mapping[str, str],
        severity: int,
        summary: str,
        description: str,
        impact: alert_pb2.Impact | None = None,
        caused_by: str = "",
    ) -> None:
        fingerprint = rules.fingerprint({**labels, "severity": rules.SEVERITIES[severity]})
        annotations = {"summary": summary, "description": description}
        with contextlib.suppress(BulwarkError):
            current = self._center.alert(fingerprint)
            if (
                current.state == alert_pb2.ALERT_STATE_FIRING
                and current.caused_by == caused_by
                and dict(current.annotations) == annotations
            ):
                return  # raised already (by this term or the last one), and unchanged
        # A severity change (features came to depend on it) is another alert: end
        # the one of the other severity first.
        for other in rules.SEVERITIES:
            if other != severity:
                await self.resolve_one(
                    rules.fingerprint({**labels, "severity": rules.SEVERITIES[other]})
                )
        await self._center.fire(labels, annotations, severity, impact, caused_by)

    async def _resolve(self, labels: Mapping[str, str]) -> None:
        for severity in rules.SEVERITIES.values():
            await self.resolve_one(rules.fingerprint({**labels, "severity": severity}))

    async def resolve_one(self, fingerprint: str) -> None:
        with contextlib.suppress(BulwarkError):
            if self._center.alert(fingerprint).state == alert_pb2.ALERT_STATE_FIRING:
                await self._center.resolve(fingerprint)

    async def resolve_gone(self) -> None:
        """Resolve the alerts of breakers, features and services gone while no one led."""
        features, services = set(self.features.names()), self.primaries.services()
        for alert in self._center.alerts():
            if alert.labels.get("source") != SOURCE:
                continue
            labels = alert.labels
            breaker, feature, service = (labels.get(k) for k in ("breaker", "feature", "service"))
            if (
                (breaker and self.breakers.state(breaker) is None)
                or (feature and feature not in features)
                or (service and service not in services)
            ):
                await self.resolve_one(alert.fingerprint)
