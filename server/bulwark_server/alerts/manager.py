"""AlertCenter: alerts, silences and routes in etcd, and the leader that sends them.

* Alerts are keyed by fingerprint. Raising an alert that fires already counts an
  occurrence: the same condition on the same object is one alert. Only the leader
  raises, resolves and records deliveries (fenced writes), so a deposed leader
  cannot; a new leader carries on from what is stored (``leader``).
* Silences and routes are configuration: any replica writes them, checked by
  ``rules`` first. A silence ends, it is not deleted, so it can still be listed;
  its copies in the Alertmanagers are made and ended by the leader.
* Acknowledging an alert stops its escalation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from bulwark.v1 import alert_pb2, watch_pb2
from bulwark_server import timestamps
from bulwark_server.alerts import rules
from bulwark_server.alerts.delivery import check_url
from bulwark_server.cluster.election import Election
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.store import (
    Entry,
    EtcdStore,
    Event,
    EventType,
    Page,
    follow,
    put_message,
    scan_page,
    take_page,
    with_revision,
)
from bulwark_server.store.keys import ALERT_KIND, ALERT_ROUTE_KIND, SILENCE_KIND, kind_prefix

MAX_DELIVERIES = 20
STALE = "stale:"  # a mirrored silence id whose copy must be replaced
SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT, DELETE = watch_pb2.WATCH_EVENT_TYPE_PUT, watch_pb2.WATCH_EVENT_TYPE_DELETE
RESOLVED_KEPT_S = 24 * 3600.0  # a resolved alert, or an expired silence, stays listed this long


def decode(entry: Entry) -> alert_pb2.Alert:
    return with_revision(alert_pb2.Alert, entry)


class AlertCenter:
    """Reads and writes of alerts, silences and routes; see the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._election = election
        self._clock = clock

    # -- reads (from the cache) -------------------------------------------------

    def alert(self, fingerprint: str) -> alert_pb2.Alert:
        entry = self._store.get(ALERT_KIND, fingerprint)
        if entry is None:
            raise NotFound(f"alert {fingerprint!r} does not exist")
        return decode(entry)

    def alerts(self, start_after: str = "") -> list[alert_pb2.Alert]:
        """Every alert (after fingerprint ``start_after``), in fingerprint order."""
        return [decode(e) for e in self._store.scan(ALERT_KIND, start_after)]

    def list_alerts(
        self,
        firing_only: bool,
        matchers: Sequence[alert_pb2.Matcher],
        size: int,
        start_after: str,
    ) -> Page[alert_pb2.Alert]:
        """One page of the alerts selected, in fingerprint order."""
        selected = (
            a
            for a in self.alerts(start_after)
            if (not firing_only or a.state == alert_pb2.ALERT_STATE_FIRING)
            and rules.matches(matchers, a.labels)
        )
        return take_page(selected, size, lambda a: a.fingerprint)

    def silences(self, start_after: str = "") -> list[alert_pb2.Silence]:
        """Every silence (after id ``start_after``), in id order."""
        return [
            with_revision(alert_pb2.Silence, e) for e in self._store.scan(SILENCE_KIND, start_after)
        ]

    def list_silences(
        self, include_expired: bool, size: int, start_after: str
    ) -> Page[alert_pb2.Silence]:
        """One page of silences in id order; ended ones only when asked."""
        now = self._clock()
        kept = (
            s
            for s in self.silences(start_after)
            if include_expired or timestamps.unix(s.ends_at) > now
        )
        return take_page(kept, size, lambda s: s.id)

    def routes(self) -> list[alert_pb2.AlertRoute]:
        """Every route, in name order."""
        return [with_revision(alert_pb2.AlertRoute, e) for e in self._store.scan(ALERT_ROUTE_KIND)]

    def route(self, name: str) -> alert_pb2.AlertRoute:
        entry = self._store.get(ALERT_ROUTE_KIND, name)
        if entry is None:
            raise NotFound(f"alert route {name!r} does not exist")
        return with_revision(alert_pb2.AlertRoute, entry)

    def list_routes(self, size: int, start_after: str) -> Page[alert_pb2.AlertRoute]:
        page = scan_page(self._store.cache, kind_prefix(ALERT_ROUTE_KIND), size, start_after)
        return page.map(lambda e: with_revision(alert_pb2.AlertRoute, e))

    def summary(self) -> alert_pb2.AlertSummary:
        """Firing alerts by severity, and how many are silenced or acknowledged."""
        out = alert_pb2.AlertSummary()
        for alert in self.alerts():
            if alert.state != alert_pb2.ALERT_STATE_FIRING:
                continue
            if alert.severity == alert_pb2.ALERT_SEVERITY_CRITICAL:
                out.critical += 1
            elif alert.severity == alert_pb2.ALERT_SEVERITY_WARNING:
                out.warning += 1
            else:
                out.info += 1
            out.silenced += bool(alert.silenced_by)
            out.acknowledged += alert.HasField("acknowledgement")
        return out

    def watch(
        self, matchers: Sequence[alert_pb2.Matcher], start_revision: int = 0
    ) -> AsyncIterator[alert_pb2.WatchAlertsResponse]:
        """A snapshot of the alerts ``matchers`` select (SNAPSHOT events, then SYNCED),
        then a PUT or DELETE for each change of one."""
        prefix = kind_prefix(ALERT_KIND)

        def snapshot() -> tuple[list[alert_pb2.WatchAlertsResponse], int]:
            revision = self._store.cache.revision
            out = [
                alert_pb2.WatchAlertsResponse(type=SNAPSHOT, alert=a, revision=revision)
                for a in self.alerts()
                if rules.matches(matchers, a.labels)
            ]
            out.append(alert_pb2.WatchAlertsResponse(type=SYNCED, revision=revision))
            return out, revision

        def convert(events: list[Event]) -> list[alert_pb2.WatchAlertsResponse]:
            out = []
            for event in events:
                if event.type == EventType.DELETE:
                    gone = alert_pb2.Alert(fingerprint=event.entry.key[len(prefix) :].decode())
                    out.append(
                        alert_pb2.WatchAlertsResponse(
                            type=DELETE, alert=gone, revision=event.revision
                        )
                    )
                    continue
                alert = decode(event.entry)
                if rules.matches(matchers, alert.labels):
                    out.append(
                        alert_pb2.WatchAlertsResponse(
                            type=PUT, alert=alert, revision=event.revision
                        )
                    )
            return out

        return follow(self._store, (prefix,), start_revision, snapshot, convert)

    # -- configuration ----------------------------------------------------------

    async def put_route(
        self, route: alert_pb2.AlertRoute, expected_revision: int = 0
    ) -> tuple[alert_pb2.AlertRoute, bool]:
        rules.check_route(route, check_url)
        complete = alert_pb2.AlertRoute()
        complete.CopyFrom(route)
        if not complete.group_by:
            complete.group_by.extend(rules.DEFAULT_GROUP_BY)
        return await put_message(
            self._store, ALERT_ROUTE_KIND, route.name, complete, expected_revision=expected_revision
        )

    async def delete_route(self, name: str) -> int:
        try:
            return await self._store.delete(ALERT_ROUTE_KIND, name)
        except NotFound:
            raise NotFound(f"alert route {name!r} does not exist") from None

    async def put_silence(self, silence: alert_pb2.Silence, by: str) -> alert_pb2.Silence:
        """Store a new silence (or replace the one of ``silence.id``)."""
        now = self._clock()
        starts, ends = rules.check_silence(silence, now)
        stored = alert_pb2.Silence()
        stored.CopyFrom(silence)
        stored.ClearField("revision")
        stored.ClearField("mirrored")
        stored.starts_at.CopyFrom(timestamps.at(starts))
        stored.ends_at.CopyFrom(timestamps.at(ends))
        stored.created_by = by
        if silence.id:
            existing = self._store.get(SILENCE_KIND, silence.id)
            if existing is None:
                raise NotFound(f"silence {silence.id!r} does not exist")
            # Its copies are replaced by the leader (``leader.AlertLeader._mirror``), by
            # their ids there, marked stale until then.
            mirrored = alert_pb2.Silence.FromString(existing.value).mirrored
            stored.mirrored.update(
                {url: STALE + there.removeprefix(STALE) for url, there in mirrored.items()}
            )
        else:
            stored.id = secrets.token_hex(8)
        revision, _ = await self._store.upsert(
            SILENCE_KIND, stored.id, lambda _: stored.SerializeToString()
        )
        stored.revision = revision
        return stored

    async def end_silence(self, silence_id: str) -> int:
        """End a silence now (it stays listed as expired)."""
        now = self._clock()

        def end(entry: Entry) -> bytes | None:
            silence = alert_pb2.Silence.FromString(entry.value)
            if timestamps.unix(silence.ends_at) <= now:
                return None
            silence.ends_at.CopyFrom(timestamps.at(now))
            return silence.SerializeToString()

        try:
            entry, _ = await self._store.modify(SILENCE_KIND, silence_id, end)
        except NotFound:
            raise NotFound(f"silence {silence_id!r} does not exist") from None
        return entry.mod_revision

    async def acknowledge(self, fingerprint: str, by: str, comment: str) -> alert_pb2.Alert:
        now = self._clock()

        def ack(entry: Entry) -> bytes | None:
            alert = alert_pb2.Alert.FromString(entry.value)
            if alert.state != alert_pb2.ALERT_STATE_FIRING:
                raise FailedPrecondition(f"alert {fingerprint!r} is resolved")
            alert.acknowledgement.CopyFrom(
                alert_pb2.Acknowledgement(by=by, comment=comment, at=timestamps.at(now))
            )
            return alert.SerializeToString()

        try:
            entry, _ = await self._store.modify(ALERT_KIND, fingerprint, ack)
        except NotFound:
            raise NotFound(f"alert {fingerprint!r} does not exist") from None
        return decode(entry)

    # -- the leader's writes ------------------------------------------------------

    async def fire(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        severity: int,
        impact: alert_pb2.Impact | None = None,
        caused_by: str = "",
    ) -> alert_pb2.Alert:
        """Raise an alert (fenced): a new one fires; one firing already counts again."""
        now = self._clock()
        full = {**labels, "severity": rules.SEVERITIES[severity]}
        fingerprint = rules.fingerprint(full)
        written: list[alert_pb2.Alert] = []

        def build(entry: Entry | None) -> bytes:
            alert = alert_pb2.Alert.FromString(entry.value) if entry else alert_pb2.Alert()
            if alert.state != alert_pb2.ALERT_STATE_FIRING:
                # A new alert, or a resolved one firing again: a new episode, which
                # keeps the last one's deliveries (a flapping alert is throttled).
                episode = alert_pb2.Alert(
                    fingerprint=fingerprint,
                    severity=severity,
                    state=alert_pb2.ALERT_STATE_FIRING,
                    starts_at=timestamps.at(now),
                    deliveries=alert.deliveries,
                )
                episode.labels.update(full)
                alert = episode
            alert.annotations.clear()
            alert.annotations.update(annotations)
            alert.occurrences += 1
            if impact is not None:
                alert.impact.CopyFrom(impact)
            alert.caused_by = caused_by
            written[:] = [alert]
            return alert.SerializeToString()

        revision, _ = await self._store.upsert(
            ALERT_KIND, fingerprint, build, fence=self._election.fence()
        )
        written[0].revision = revision
        return written[0]

    async def resolve(self, fingerprint: str) -> None:
        """Resolve a firing alert (fenced); nothing for one not firing."""
        now = self._clock()

        def end(entry: Entry) -> bytes | None:
            alert = alert_pb2.Alert.FromString(entry.value)
            if alert.state != alert_pb2.ALERT_STATE_FIRING:
                return None
            alert.state = alert_pb2.ALERT_STATE_RESOLVED
            alert.ends_at.CopyFrom(timestamps.at(now))
            return alert.SerializeToString()

        try:
            await self._store.modify(ALERT_KIND, fingerprint, end, fence=self._election.fence())
        except NotFound:
            pass

    async def record(self, alert: alert_pb2.Alert) -> None:
        """Store the leader's bookkeeping of ``alert`` (deliveries, escalation, silences),
        fenced, unless its state changed meanwhile."""
        value = alert_pb2.Alert()
        value.CopyFrom(alert)
        value.ClearField("revision")
        del value.deliveries[: max(0, len(value.deliveries) - MAX_DELIVERIES)]
        await self._store.update(
            ALERT_KIND,
            alert.fingerprint,
            value.SerializeToString(),
            expected_mod_revision=alert.revision,
            fence=self._election.fence(),
        )

    async def record_silence(self, silence: alert_pb2.Silence) -> None:
        """Store where a silence was mirrored (the leader's, fenced), unless it changed."""
        value = alert_pb2.Silence()
        value.CopyFrom(silence)
        value.ClearField("revision")
        await self._store.update(
            SILENCE_KIND,
            silence.id,
            value.SerializeToString(),
            expected_mod_revision=silence.revision,
            fence=self._election.fence(),
        )

    async def forget_silence(self, silence: alert_pb2.Silence) -> None:
        """Delete an expired silence (fenced) once it has been listed long enough."""
        await self._store.delete(
            SILENCE_KIND,
            silence.id,
            expected_mod_revision=silence.revision,
            fence=self._election.fence(),
        )

    async def forget(self, alert: alert_pb2.Alert) -> None:
        """Delete a resolved alert (fenced) once it has been listed long enough."""
        await self._store.delete(
            ALERT_KIND,
            alert.fingerprint,
            expected_mod_revision=alert.revision,
            fence=self._election.fence(),
        )
