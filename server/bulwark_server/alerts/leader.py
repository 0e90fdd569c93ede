"""The leader's alert loop: raises and resolves alerts from what the capabilities hold
(``sources``), and delivers them.

* Sources. The loop brings every breaker's, feature's and service's alerts up to
  date once at the start of a term, then only those the store's changes touch (and
  those it could not write, again each round, and the moments still alerted on,
  until they pass), so its cost follows what happens, not how many exist. A change
  is acted on within ``PROMPT_S``, not at the next tick.
* Delivery, each tick and within ``PROMPT_S`` of a write of alerts, silences or
  routes: the route that takes an alert (the first in name order
  whose matchers select it; without one, the Alertmanagers of
  ``BULWARK_ALERTMANAGER_URLS``), its silences, and then the notifications due:
  which notifications are due is ``rules.due_notifications``'s to say. A failed
  delivery is recorded and retried with a growing wait. What was sent is
  stored with the alert (fenced), so a new leader resumes where this one left off:
  a notification may go out twice across a failover (with the same
  Idempotency-Key), never not at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf import json_format

from bulwark.v1 import alert_pb2
from bulwark_server import timestamps
from bulwark_server.alerts import rules
from bulwark_server.alerts.delivery import Notifier, Outgoing
from bulwark_server.alerts.manager import RESOLVED_KEPT_S, STALE, AlertCenter
from bulwark_server.alerts.sources import Sources
from bulwark_server.errors import BulwarkError
from bulwark_server.store import EtcdStore, Event
from bulwark_server.store.keys import ALERT_KIND, ALERT_ROUTE_KIND, SILENCE_KIND, kind_prefix

log = logging.getLogger(__name__)

TICK_S = 1.0
# A change is acted on this soon; rounds come no closer together.
PROMPT_S = 0.1
# ...but not sooner than this: the watch streams send a trip to every client first (a
# round right away would take the event loop in the very milliseconds they need).
SETTLE_S = 0.01
# Alerts, silences and routes: a write of any calls for a delivery round.
_ALERTING = tuple(kind_prefix(kind) for kind in (ALERT_KIND, SILENCE_KIND, ALERT_ROUTE_KIND))
DEFAULT_ROUTE = "default"
# Alerts in one notification at most: a receiver's limit on a body's size must not
# hold back every alert of a storm.
MAX_GROUP = 50
# A group: route, receiver, transition, and the values of the route's group_by labels.
GroupKey = tuple[str, str, str, tuple[tuple[str, str], ...]]


@dataclass
class _Group:
    """Notifications that go out as one: to one receiver, of one transition, of alerts
    with the same values of their route's ``group_by`` labels."""

    receiver: alert_pb2.Receiver
    transition: str
    labels: dict[str, str]
    alerts: list[alert_pb2.Alert] = field(default_factory=list)


@dataclass
class Behind:
    """Breakers, features and services whose alerts are not yet up to date."""

    breakers: set[str] = field(default_factory=set)
    features: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.breakers or self.features or self.services)

    def update(self, other: Behind) -> None:
        self.breakers |= other.breakers
        self.features |= other.features
        self.services |= other.services


class AlertLeader:
    """Runs while this replica leads (``run`` is a ``LeaderTask`` body)."""

    def __init__(
        self,
        center: AlertCenter,
        store: EtcdStore,
        notifier: Notifier,
        sources: Sources,
        *,
        alertmanager_urls: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        tick: float = TICK_S,
    ) -> None:
        self._center = center
        self._store = store
        self._notifier = notifier
        self._sources = sources
        self._default = _default_route(alertmanager_urls)
        self._mirrors = tuple(alertmanager_urls)
        self._clock = clock
        self._tick = tick

    async def run(self) -> None:
        changes = self._store.subscribe()
        # What could not be brought up to date (etcd away, say): tried again each
        # round, so no change is missed. None: all.
        behind: Behind | None = None
        sources = self._sources
        # A change is acted on within PROMPT_S, not at the next tick: a trip reaches
        # its receivers at once. A change that touched a source brings its alerts up to
        # date; only a write of alerts, silences or routes calls for a delivery round,
        # which costs a look at every alert (heartbeats alone never do).
        prompt = math.inf
        deliver = False
        earliest = -math.inf  # the next prompt round, not before
        try:
            due = time.monotonic()
            while True:
                try:
                    events = await asyncio.wait_for(
                        changes.get(), max(0.0, min(due, prompt) - time.monotonic())
                    )
                except TimeoutError:
                    events = None
                soon = max(earliest, time.monotonic() + SETTLE_S)
                if events == []:
                    behind = None  # this reader fell behind and changes were dropped
                    prompt = min(prompt, soon)
                elif events:
                    touched = Behind(
                        sources.breakers.changed(events),
                        sources.features.affected_by(events),
                        sources.primaries.touched(events),
                    )
                    if behind is not None:
                        behind.update(touched)
                    if touched or _alerting(events):
                        prompt = min(prompt, soon)
                        deliver = deliver or _alerting(events)
                now = time.monotonic()
                if now >= min(due, prompt):
                    behind = await self._catch_up(behind)
                    if deliver or now >= due:
                        await self._guarded(self.deliver())
                        deliver = False
                    if now >= due:
                        due = now + self._tick
                    # In a storm of changes the loop takes at most about a tenth of
                    # the replica's time: a long round puts the next prompt one further off.
                    after = time.monotonic()
                    prompt, earliest = math.inf, after + max(PROMPT_S, 9 * (after - now))
        finally:
            self._store.unsubscribe(changes)

    async def _catch_up(self, behind: Behind | None) -> Behind | None:
        """Bring the alerts of ``behind`` (None: everything, as at a new term) up to
        date; what is still behind."""
        sources = self._sources
        if behind is None:
            if not await self._guarded(sources.resolve_gone()):
                return None
            behind = Behind(
                {name for name, _ in sources.breakers.states()},
                set(sources.features.names()),
                sources.primaries.services(),
            )
        behind.services |= sources.recent_moments()
        left = Behind()
        for name in sorted(behind.breakers):
            if not await self._guarded(sources.breaker(name)):
                left.breakers.add(name)
        for name in sorted(behind.features):
            if not await self._guarded(sources.feature(name)):
                left.features.add(name)
        for name in sorted(behind.services):
            if not await self._guarded(sources.service(name)):
                left.services.add(name)
        await self._guarded(sources.restore())
        return left

    async def _guarded(self, step: Awaitable[None]) -> bool:
        """Whether ``step`` ran through; a failure is logged and left to the next round."""
        try:
            await step
            return True
        except BulwarkError as exc:  # etcd away, a deposed term: the next round retries
            log.debug("alert loop: %s", exc)
        except Exception:
            log.exception("alert loop failed; continuing")
        return False

    # -- delivery -----------------------------------------------------------------

    async def deliver(self) -> None:
        """One round of notifications (see the module docstring). The notifications
        due this round to one receiver, of one transition, of alerts with the same
        values of the route's ``group_by`` labels, go out as one."""
        now = self._clock()
        routes = self._center.routes()
        silences = self._center.silences()
        for silence in silences:
            await self._guarded(self._mirror(silence, now))
        changed: dict[str, alert_pb2.Alert] = {}
        groups: dict[GroupKey, list[_Group]] = {}
        for alert in self._center.alerts():
            # One alert's failure (etcd away as it is forgotten) leaves the others to
            # go on; it is tried again next round.
            await self._guarded(self._plan(alert, routes, silences, now, changed, groups))
        for group in (g for chunks in groups.values() for g in chunks):
            error = await self._send(group)
            for alert in group.alerts:
                self._record(alert, group.receiver.name, group.transition, error, now)
                changed[alert.fingerprint] = alert
        for alert in changed.values():
            # An acknowledgement that won the race to write an alert: its deliveries
            # are recorded next round (sent again, with the same key).
            await self._guarded(self._center.record(alert))

    async def _plan(
        self,
        alert: alert_pb2.Alert,
        routes: Sequence[alert_pb2.AlertRoute],
        silences: Sequence[alert_pb2.Silence],
        now: float,
        changed: dict[str, alert_pb2.Alert],
        groups: dict[GroupKey, list[_Group]],
    ) -> None:
        """Bring ``alert``'s bookkeeping up to date (into ``changed``) and put the
        notifications due into their ``groups``."""
        if alert.state == alert_pb2.ALERT_STATE_RESOLVED and (
            now - timestamps.unix(alert.ends_at) > RESOLVED_KEPT_S
        ):
            await self._center.forget(alert)
            return
        route = rules.route_for(routes, alert.labels) or self._default
        if route is None:
            return
        if self._bookkeep(alert, route, silences, now):
            changed[alert.fingerprint] = alert
        if alert.silenced_by:
            return
        due, step = rules.due_notifications(alert, route, now)
        if step != alert.escalation_step:
            alert.escalation_step = step
            changed[alert.fingerprint] = alert
        receivers = {r.name: r for r in route.receivers}
        labels = rules.group_of(route, alert.labels)
        for name, transition in due:
            key = (route.name, name, transition, tuple(sorted(labels.items())))
            chunks = groups.setdefault(key, [])
            if not chunks or len(chunks[-1].alerts) >= MAX_GROUP:
                chunks.append(_Group(receivers[name], transition, labels))
            chunks[-1].alerts.append(alert)

    async def _mirror(self, silence: alert_pb2.Silence, now: float) -> None:
        """Copy an active silence to each configured Alertmanager, and end the copies of
        one that ended, so one silence mutes both; failures are tried again next round."""
        live = timestamps.unix(silence.ends_at) > now  # active, or still to come
        changed = False
        for url in self._mirrors:
            there = silence.mirrored.get(url, "")
            try:
                if live and (not there or there.startswith(STALE)):
                    # Alertmanager may answer a replaced silence with a new id: keep it.
                    silence.mirrored[url] = await self._notifier.put_silence(
                        url, silence, there.removeprefix(STALE)
                    )
                    changed = True
                elif not live and there:
                    await self._notifier.delete_silence(url, there.removeprefix(STALE))
                    del silence.mirrored[url]
                    changed = True
            except Exception as exc:  # an Alertmanager away must not stop the round
                log.warning(
                    "silence %s not mirrored to %s: %s",
                    silence.id,
                    url,
                    exc,
                    extra={"event": "alert.silence_unmirrored"},
                )
        if changed:
            await self._center.record_silence(silence)
        elif rules.forgettable(silence, now, RESOLVED_KEPT_S, self._mirrors):
            await self._center.forget_silence(silence)

    def _bookkeep(
        self,
        alert: alert_pb2.Alert,
        route: alert_pb2.AlertRoute,
        silences: Sequence[alert_pb2.Silence],
        now: float,
    ) -> bool:
        changed = False
        muted = rules.silenced_by(silences, alert.labels, now)
        if list(alert.silenced_by) != muted:
            alert.silenced_by[:] = muted
            changed = True
        if alert.route != route.name:
            alert.route = route.name
            changed = True
        return changed

    async def _send(self, group: _Group) -> str:
        outgoing = [_outgoing(alert, group.transition) for alert in group.alerts]
        receiver = group.receiver
        try:
            if receiver.WhichOneof("kind") == "alertmanager":
                return await self._notifier.alertmanager(receiver.alertmanager.urls, outgoing)
            body = {
                "receiver": receiver.name,
                "groupLabels": group.labels,
                "alerts": [_json(alert) for alert in group.alerts],
            }
            return await self._notifier.webhook(
                receiver.webhook.url, receiver.webhook.format, outgoing, body
            )
        except Exception as exc:  # a receiver's failure must never stop the loop
            return f"{type(exc).__name__}: {exc}"

    def _record(
        self, alert: alert_pb2.Alert, receiver: str, transition: str, error: str, now: float
    ) -> None:
        key = rules.key_of(alert, transition)
        attempts = 1 + sum(
            1 for d in alert.deliveries if d.receiver == receiver and d.idempotency_key == key
        )
        alert.deliveries.append(
            alert_pb2.Delivery(
                receiver=receiver,
                at=timestamps.at(now),
                idempotency_key=key,
                error=error,
                attempts=attempts,
            )
        )
        if error:
            log.warning(
                "alert %s not delivered to %s: %s",
                alert.labels.get("alertname", alert.fingerprint),
                receiver,
                error,
                extra={"event": "alert.undelivered", "receiver": receiver},
            )


def _alerting(events: Sequence[Event]) -> bool:
    return any(event.entry.key.startswith(_ALERTING) for event in events)


def _outgoing(alert: alert_pb2.Alert, transition: str) -> Outgoing:
    return Outgoing(
        fingerprint=alert.fingerprint,
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        starts_at=timestamps.unix(alert.starts_at),
        ends_at=timestamps.unix(alert.ends_at) if alert.HasField("ends_at") else None,
        transition=transition,
    )


def _json(alert: alert_pb2.Alert) -> dict[str, object]:
    """The alert as a webhook gets it: without its deliveries (the leader's records)."""
    sent = alert_pb2.Alert()
    sent.CopyFrom(alert)
    sent.ClearField("deliveries")
    return json_format.MessageToDict(sent, preserving_proto_field_name=True)


def _default_route(urls: Sequence[str]) -> alert_pb2.AlertRoute | None:
    if not urls:
        return None
    return alert_pb2.AlertRoute(
        name=DEFAULT_ROUTE,
        receivers=[
            alert_pb2.Receiver(
                name="alertmanager", alertmanager=alert_pb2.AlertmanagerReceiver(urls=urls)
            )
        ],
    )
