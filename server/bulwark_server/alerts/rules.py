"""Alert rules without I/O: fingerprints, matchers, silences, routes, throttling and
escalation, each a function of its inputs and the time given.

Every check raises ``InvalidArgument`` naming the offending request field, so a
rejected request stores nothing and never surfaces as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from google.protobuf import duration_pb2

from bulwark.v1 import alert_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds, timestamp_seconds, validate_name

# Alertmanager's label names (Prometheus's data model).
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_MATCHERS = 32
MAX_VALUE = 1024
MAX_COMMENT = 1024
MAX_RECEIVERS = 16
MAX_GROUP_BY = 16
DEFAULT_GROUP_BY = ("alertname",)
DEFAULT_THROTTLE_S = 300.0
MAX_THROTTLE_S = 7 * 86400.0
MAX_ESCALATION_WAIT_S = 7 * 86400.0
MAX_SILENCE_S = 366 * 86400.0
# Raises InvalidArgument naming ``field`` for a URL it refuses (``delivery.check_url``).
UrlCheck = Callable[[str, str], None]
SEVERITIES = {
    alert_pb2.ALERT_SEVERITY_CRITICAL: "critical",
    alert_pb2.ALERT_SEVERITY_WARNING: "warning",
    alert_pb2.ALERT_SEVERITY_INFO: "info",
}


def fingerprint(labels: Mapping[str, str]) -> str:
    """The identity of an alert: a digest of its labels, whatever their order."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


FINGERPRINT_RE = re.compile(r"[0-9a-f]{16}")


def check_fingerprint(value: str, field: str) -> str:
    """A fingerprint as ``fingerprint`` makes them; InvalidArgument naming ``field``."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not FINGERPRINT_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 16 hexadecimal digits, as ListAlerts gives it")
    return value


# -- matchers -------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(value)


def check_matchers(matchers: Sequence[alert_pb2.Matcher], field: str) -> None:
    """Label names as Prometheus has them, values of bounded size, regular expressions
    that compile."""
    if len(matchers) > MAX_MATCHERS:
        raise InvalidArgument(field, f"at most {MAX_MATCHERS} matchers")
    for i, matcher in enumerate(matchers):
        here = f"{field}[{i}]"
        if not LABEL_NAME_RE.fullmatch(matcher.name):
            raise InvalidArgument(
                f"{here}.name",
                f"must be a label name ([a-zA-Z_][a-zA-Z0-9_]*), got {matcher.name!r}",
            )
        if len(matcher.value) > MAX_VALUE:
            raise InvalidArgument(f"{here}.value", f"longer than {MAX_VALUE} characters")
        if matcher.is_regex:
            try:
                _pattern(matcher.value)
            except re.error as exc:
                raise InvalidArgument(
                    f"{here}.value", f"is not a regular expression: {exc}"
                ) from None


def matches(matchers: Iterable[alert_pb2.Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher selects ``labels`` (a missing label is the empty value, and
    a regular expression must match the whole value, as in Alertmanager)."""
    for matcher in matchers:
        value = labels.get(matcher.name, "")
        if matcher.is_regex:
            hit = _pattern(matcher.value).fullmatch(value) is not None
        else:
            hit = value == matcher.value
        if hit == matcher.negate:
            return False
    return True


# -- silences -------------------------------------------------------------------------


def check_silence(silence: alert_pb2.Silence, now: float) -> tuple[float, float]:
    """(starts_at, ends_at) of a silence to store; InvalidArgument for one that selects
    every alert, ends before it starts or in the past."""
    if not silence.matchers:
        raise InvalidArgument("silence.matchers", "at least one matcher is required")
    check_matchers(silence.matchers, "silence.matchers")
    if all(m.negate for m in silence.matchers):
        raise InvalidArgument("silence.matchers", "at least one matcher must not be negated")
    if len(silence.comment) > MAX_COMMENT:
        raise InvalidArgument("silence.comment", f"longer than {MAX_COMMENT} characters")
    starts = (
        timestamp_seconds(silence.starts_at, "silence.starts_at")
        if silence.HasField("starts_at")
        else now
    )
    if not silence.HasField("ends_at"):
        raise InvalidArgument("silence.ends_at", "is required")
    ends = timestamp_seconds(silence.ends_at, "silence.ends_at")
    if ends <= now:
        raise InvalidArgument("silence.ends_at", "is in the past")
    if ends <= starts:
        raise InvalidArgument("silence.ends_at", "must be after starts_at")
    if ends - max(starts, now) > MAX_SILENCE_S:
        raise InvalidArgument("silence.ends_at", "a silence lasts at most 366 days")
    return starts, ends


def active(silence: alert_pb2.Silence, now: float) -> bool:
    """Whether ``silence`` mutes alerts at ``now``."""
    return (
        timestamp_seconds(silence.starts_at, "starts_at")
        <= now
        < timestamp_seconds(silence.ends_at, "ends_at")
    )


def forgettable(
    silence: alert_pb2.Silence, now: float, kept: float, mirrors: Iterable[str]
) -> bool:
    """Whether an ended silence may be deleted: it ended ``kept`` seconds ago or more
    (listed that long as expired, as Alertmanager keeps them) and none of the
    Alertmanagers of ``mirrors`` still holds a copy to end (one no longer configured
    is not waited for)."""
    ended = timestamp_seconds(silence.ends_at, "ends_at")
    return now - ended >= kept and not set(silence.mirrored) & set(mirrors)


def silenced_by(
    silences: Iterable[alert_pb2.Silence], labels: Mapping[str, str], now: float
) -> list[str]:
    """Ids of the active silences that mute an alert of ``labels``."""
    return sorted(s.id for s in silences if active(s, now) and matches(s.matchers, labels))


# -- routes ---------------------------------------------------------------------------


def check_route(route: alert_pb2.AlertRoute, url_check: UrlCheck) -> None:
    """A route to store: named receivers of one kind each, URLs ``url_check`` accepts,
    an escalation that names its receivers once each (no loop), sane durations."""
    validate_name(route.name, "route.name")
    check_matchers(route.matchers, "route.matchers")
    if len(route.group_by) > MAX_GROUP_BY:
        raise InvalidArgument("route.group_by", f"at most {MAX_GROUP_BY} labels")
    for i, label in enumerate(route.group_by):
        if not LABEL_NAME_RE.fullmatch(label):
            raise InvalidArgument(f"route.group_by[{i}]", f"must be a label name, got {label!r}")
    if route.max_notifications < 0:
        raise InvalidArgument("route.max_notifications", "must not be negative")
    if route.HasField("throttle_interval"):
        duration_seconds(route.throttle_interval, "route.throttle_interval", maximum=MAX_THROTTLE_S)
    if not route.receivers:
        raise InvalidArgument("route.receivers", "at least one receiver is required")
    if len(route.receivers) > MAX_RECEIVERS:
        raise InvalidArgument("route.receivers", f"at most {MAX_RECEIVERS} receivers")
    names: set[str] = set()
    for i, receiver in enumerate(route.receivers):
        here = f"route.receivers[{i}]"
        validate_name(receiver.name, f"{here}.name")
        if receiver.name in names:
            raise InvalidArgument(f"{here}.name", f"receiver {receiver.name!r} is named twice")
        names.add(receiver.name)
        kind = receiver.WhichOneof("kind")
        if kind == "alertmanager":
            if not receiver.alertmanager.urls:
                raise InvalidArgument(f"{here}.alertmanager.urls", "at least one URL is required")
            for j, url in enumerate(receiver.alertmanager.urls):
                url_check(url, f"{here}.alertmanager.urls[{j}]")
        elif kind == "webhook":
            url_check(receiver.webhook.url, f"{here}.webhook.url")
            if receiver.webhook.format not in alert_pb2.WebhookFormat.values():
                raise InvalidArgument(f"{here}.webhook.format", "unknown format")
        else:
            raise InvalidArgument(here, "set alertmanager or webhook")
    used: set[str] = set()
    for i, step in enumerate(route.escalation):
        here = f"route.escalation[{i}]"
        if step.receiver not in names:
            raise InvalidArgument(f"{here}.receiver", f"unknown receiver {step.receiver!r}")
        if step.receiver in used:
            raise InvalidArgument(
                f"{here}.receiver",
                f"receiver {step.receiver!r} is already an earlier step (an escalation loop)",
            )
        used.add(step.receiver)
        wait = duration_seconds(step.after, f"{here}.after", maximum=MAX_ESCALATION_WAIT_S)
        if i and wait <= 0:
            raise InvalidArgument(f"{here}.after", "must be positive after the first step")


def route_for(
    routes: Iterable[alert_pb2.AlertRoute], labels: Mapping[str, str]
) -> alert_pb2.AlertRoute | None:
    """The first route, in name order, whose matchers select ``labels``."""
    for route in sorted(routes, key=lambda r: r.name):
        if matches(route.matchers, labels):
            return route
    return None


def first_receivers(route: alert_pb2.AlertRoute) -> list[str]:
    """Who hears of an alert as it fires: the first escalation step's receiver, or
    every receiver when the route has no escalation."""
    if route.escalation:
        return [route.escalation[0].receiver]
    return [r.name for r in route.receivers]


def throttle_s(route: alert_pb2.AlertRoute) -> float:
    if route.HasField("throttle_interval"):
        return duration_seconds(route.throttle_interval, "throttle_interval")
    return DEFAULT_THROTTLE_S


def may_notify(route: alert_pb2.AlertRoute, sent_at: Sequence[float], now: float) -> bool:
    """Whether one more notification of an alert goes out, given when the earlier ones
    did: at most ``max_notifications`` (default 1) per ``throttle_interval``."""
    most = route.max_notifications or 1
    window = throttle_s(route)
    return sum(1 for t in sent_at if now - t < window) < most


def escalation_due(alert: alert_pb2.Alert, route: alert_pb2.AlertRoute, now: float) -> int:
    """The escalation step an alert has reached by ``now``: a firing, critical alert that
    nobody acknowledged moves one step on after each step's wait; any other stays where
    it is."""
    if (
        alert.state != alert_pb2.ALERT_STATE_FIRING
        or alert.severity != alert_pb2.ALERT_SEVERITY_CRITICAL
        or alert.HasField("acknowledgement")
        or not route.escalation
    ):
        return alert.escalation_step
    elapsed = now - timestamp_seconds(alert.starts_at, "starts_at")
    step, waited = 0, 0.0
    for i, escalation in enumerate(route.escalation[1:], start=1):
        waited += _seconds(escalation.after)
        if elapsed < waited:
            break
        step = i
    return max(step, alert.escalation_step)


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


# -- notifications --------------------------------------------------------------------

RESEND_S = 60.0  # Prometheus re-sends firing alerts to Alertmanager every minute too
MAX_RETRY_WAIT_S = 60.0


def idempotency_key(fingerprint: str, transition: str, starts_at: float) -> str:
    """The same for every sending of one transition of one episode of an alert (the
    Idempotency-Key a webhook gets, and how deliveries are told apart)."""
    return f"{fingerprint}:{transition}:{int(starts_at)}"


def group_of(route: alert_pb2.AlertRoute, labels: Mapping[str, str]) -> dict[str, str]:
    """The values of the route's ``group_by`` labels (alertname when it names none; ""
    for a label the alert lacks): alerts with the same ones share a notification."""
    return {name: labels.get(name, "") for name in (route.group_by or DEFAULT_GROUP_BY)}


def group_key(keys: Sequence[str]) -> str:
    """The Idempotency-Key of one notification of alerts with ``keys``: an alert alone
    keeps its own; several, a digest of theirs."""
    if len(keys) == 1:
        return keys[0]
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    return f"group:{digest[:32]}"


def key_of(alert: alert_pb2.Alert, transition: str) -> str:
    """``idempotency_key`` of a stored alert."""
    return idempotency_key(alert.fingerprint, transition, alert.starts_at.seconds)


def due_notifications(
    alert: alert_pb2.Alert, route: alert_pb2.AlertRoute, now: float
) -> tuple[list[tuple[str, str]], int]:
    """The (receiver, transition) notifications of ``alert`` due at ``now``, and its
    escalation step after them.

    * A firing alert: "firing" to the route's first receivers; "escalation-<n>" to
      each further step reached (``escalation_due``). A resolved one: "resolved" to
      every receiver that heard of it. A silenced alert sends nothing.
    * Each is sent once (at least once: a failed attempt is retried after 2^attempts
      seconds, at most a minute), but an Alertmanager hears a firing alert again
      every ``RESEND_S``: it resolves alerts it stops hearing of.
    * Other receivers hear of an alert firing at most ``max_notifications`` times per
      ``throttle_interval``.
    """
    step = escalation_due(alert, route, now)
    if alert.silenced_by:
        return [], step
    kinds = {r.name: r.WhichOneof("kind") for r in route.receivers}
    wanted: list[tuple[str, str]] = []
    if alert.state == alert_pb2.ALERT_STATE_FIRING:
        wanted += [(name, "firing") for name in first_receivers(route)]
        wanted += [
            (route.escalation[n].receiver, f"escalation-{n}")
            for n in range(alert.escalation_step + 1, step + 1)
        ]
    else:
        heard = {d.receiver for d in alert.deliveries if not d.error}
        wanted += [(name, "resolved") for name in sorted(heard)]
    due = []
    for name, transition in wanted:
        if name not in kinds:
            continue  # the route changed since
        key = key_of(alert, transition)
        mine = [d for d in alert.deliveries if d.receiver == name]
        last = next((d for d in reversed(mine) if d.idempotency_key == key), None)
        if last is not None and last.error:
            ready = now - timestamp_seconds(last.at, "at") >= min(
                MAX_RETRY_WAIT_S, 2.0**last.attempts
            )
        elif kinds[name] == "alertmanager" and transition == "firing":
            ready = last is None or now - timestamp_seconds(last.at, "at") >= RESEND_S
        elif last is not None:
            ready = False
        elif transition == "firing":
            sent = [timestamp_seconds(d.at, "at") for d in mine if not d.error]
            ready = may_notify(route, sent, now)
        else:
            ready = True
        if ready:
            due.append((name, transition))
    return due, step
