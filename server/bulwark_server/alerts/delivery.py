"""How an alert reaches a receiver: Alertmanager's v2 API and webhooks (JSON or Slack).

This module decides nothing about *when* to send (routes, throttling, escalation and
silences are the alert manager's); it carries out one send and says how it went.

Guarantees and failure behaviour:

* Nothing here blocks the event loop: each HTTP exchange runs in a thread pool of the
  ``Notifier``'s own (a hung receiver cannot starve the loop's default executor) and
  ends within ``timeout`` seconds, whatever the receiver does. A call makes one
  exchange per URL, concurrently; ``put_silence`` at most two in a row.
* Sends report failure as an error string ("" is success) so that the caller records
  it on the alert and retries: delivery is at least once. Receivers de-duplicate: an
  Alertmanager by labels, a webhook by the ``Idempotency-Key`` header, which is the
  same for every re-send of one transition of an alert sent alone (a group's is a
  digest of its alerts' keys, which its body also carries one by one).
* Silences raise ``DeliveryError``: the silence's mirror in that Alertmanager is
  missing or stale until a later attempt succeeds.
* Redirects are not followed: a POST turned into a GET by a 302 would look like a
  delivery. Proxies from the environment (``https_proxy``, ``no_proxy``) apply.
* ``user:password@`` in a URL becomes HTTP basic authentication (Alertmanager's
  ``web.config.file``); error messages name URLs without it. Webhook errors do not
  name the URL at all: Slack-style URLs carry their secret in the path.

    Exception
    └── DeliveryError    a silence could not be put in, or deleted from, an Alertmanager
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from bulwark.v1 import alert_pb2
from bulwark_server.alerts import rules
from bulwark_server.errors import InvalidArgument
from bulwark_server.timestamps import unix

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
# What an error message quotes of a receiver's answer.
ERROR_BODY_BYTES = 200
# What is read of any answer: enough for a silence id or an error, bounded for the
# receiver that answers with a page of HTML.
_MAX_ANSWER_BYTES = 64 * 1024
# Concurrent exchanges per Notifier; more wait for a thread (within their timeout).
_WORKERS = 8
_USER_AGENT = "bulwark-alerts"
_JSON = "application/json"

# Alertmanager requires a createdBy and a comment on every silence (its v2 API marks
# both required, and people reading its UI need to know where a silence came from),
# while Bulwark's may leave the comment empty and has no creator when one is mirrored
# by the leader on its own: these fill the gaps.
DEFAULT_CREATED_BY = "bulwark"
DEFAULT_COMMENT = "Silence mirrored from Bulwark"

_ESCALATION_RE = re.compile(r"escalation-(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DeliveryError(Exception):
    """A silence could not be created, replaced or deleted in an Alertmanager."""


@dataclass(frozen=True)
class Outgoing:
    """One alert as receivers get it.

    ``transition`` is "firing", "resolved" or "escalation-<n>" (still firing, sent to
    step n of its route's escalation). ``ends_at`` is set exactly when it is resolved;
    anything else is a bug in the caller and raises ValueError here rather than
    telling Alertmanager that a resolved alert still fires.
    """

    fingerprint: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float  # Unix seconds
    ends_at: float | None  # None while firing
    transition: str  # "firing", "resolved", or "escalation-<n>"

    def __post_init__(self) -> None:
        if self.transition not in ("firing", "resolved") and not _ESCALATION_RE.fullmatch(
            self.transition
        ):
            raise ValueError(f"unknown transition {self.transition!r}")
        if (self.transition == "resolved") != (self.ends_at is not None):
            raise ValueError(f"ends_at must be set exactly when resolved ({self.transition})")

    @property
    def idempotency_key(self) -> str:
        """The same for every re-send of one transition of one alert's episode."""
        return rules.idempotency_key(self.fingerprint, self.transition, self.starts_at)


def check_url(url: str, field: str) -> None:
    """Raise InvalidArgument naming ``field`` unless ``url`` is one this module can send to.

    http or https, a host, a valid port, no fragment, ASCII without spaces (IDN hosts in
    punycode, other characters percent-encoded), at most 2048 characters. The URL is
    not echoed: it may hold a password or a token.
    """
    if not url:
        raise InvalidArgument(field, "is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidArgument(
            field, "must be ASCII without spaces (percent-encode other characters)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is the check: ValueError when invalid
    except ValueError as error:
        raise InvalidArgument(field, f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidArgument(field, "has no host")
    if "#" in url:
        # A fragment is never sent to the server: whatever it means to the user is lost.
        raise InvalidArgument(field, "must not have a fragment (#...)")


def rfc3339(seconds: float) -> str:
    """Unix seconds as RFC 3339 in UTC with milliseconds, as Alertmanager writes times."""
    # Integer milliseconds: float seconds would round differently across the epoch.
    moment = _EPOCH + timedelta(milliseconds=round(seconds * 1000))
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def alertmanager_alert(alert: Outgoing) -> dict[str, Any]:
    """One element of the body of Alertmanager's ``POST /api/v2/alerts``.

    A firing alert carries no ``endsAt``: Alertmanager then ends it ``resolve_timeout``
    (default 5 minutes) after it last heard of it, so the sender must re-post firing
    alerts more often than that, and an alert whose sender died resolves by itself.
    A resolved one carries its ``endsAt`` (in the past), which ends it at once.
    """
    body: dict[str, Any] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "generatorURL": "",
    }
    if alert.ends_at is not None:
        body["endsAt"] = rfc3339(alert.ends_at)
    return body


def alertmanager_matcher(matcher: alert_pb2.Matcher) -> dict[str, Any]:
    """A Bulwark matcher as Alertmanager's v2 API writes one."""
    return {
        "name": matcher.name,
        "value": matcher.value,
        "isRegex": matcher.is_regex,
        "isEqual": not matcher.negate,
    }


def silence_body(silence: alert_pb2.Silence, existing_id: str, now: float) -> dict[str, Any]:
    """The body of Alertmanager's ``POST /api/v2/silences``; with ``id`` to replace one.

    ``startsAt`` defaults to ``now`` as Bulwark's does; createdBy and comment get the
    defaults above when empty. Matchers keep their order: Alertmanager updates a
    silence in place (same id) only when they are equal, order included.
    """
    if silence.HasField("starts_at"):
        starts_at = unix(silence.starts_at)
    else:
        starts_at = now
    comment = silence.comment or (
        f"{DEFAULT_COMMENT} (silence {silence.id})" if silence.id else DEFAULT_COMMENT
    )
    body: dict[str, Any] = {
        "matchers": [alertmanager_matcher(m) for m in silence.matchers],
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(unix(silence.ends_at)),
        "createdBy": silence.created_by or DEFAULT_CREATED_BY,
        "comment": comment,
    }
    if existing_id:
        body["id"] = existing_id
    return body


def slack_text(alert: Outgoing) -> str:
    """One line: ``[SEVERITY] alertname: summary (state)``, escaped for Slack.

    Severity and summary are left out when the alert has none; an alert without an
    alertname is named by its fingerprint.
    """
    severity = alert.labels.get("severity", "")
    text = f"[{severity.upper()}] " if severity else ""
    text += alert.labels.get("alertname") or f"alert {alert.fingerprint}"
    summary = alert.annotations.get("summary", "")
    if summary:
        text += f": {summary}"
    escalation = _ESCALATION_RE.fullmatch(alert.transition)
    state = f"firing, escalation step {escalation[1]}" if escalation else alert.transition
    text += f" ({state})"
    # One line whatever the annotation holds; &, < and > are Slack's control characters.
    text = " ".join(text.split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def group_key(alerts: Sequence[Outgoing]) -> str:
    """The Idempotency-Key of one notification of ``alerts`` (``rules.group_key``)."""
    return rules.group_key([a.idempotency_key for a in alerts])


def webhook_json(alerts: Sequence[Outgoing], body: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON webhook body: ``body`` (the receiver, the group's labels, and its
    ``alerts`` as Alert messages in JSON, in the order of ``alerts``) with the group's
    transition and idempotency key, and each alert's own, so a receiver that drops
    headers, or de-duplicates alert by alert, can."""
    listed = body.get("alerts", [])
    if len(listed) != len(alerts):
        raise ValueError(f"{len(alerts)} alerts, but the body lists {len(listed)}")
    return {
        **body,
        "transition": alerts[0].transition,
        "idempotencyKey": group_key(alerts),
        "alerts": [
            {**json_alert, "transition": a.transition, "idempotencyKey": a.idempotency_key}
            for a, json_alert in zip(alerts, listed, strict=True)
        ],
    }


@dataclass(frozen=True)
class _Answer:
    """A receiver's HTTP answer: its status and the start of its body."""

    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        text = self.body[:ERROR_BODY_BYTES].decode("utf-8", "replace")
        text = " ".join(text.split())
        return f"HTTP {self.status}: {text}" if text else f"HTTP {self.status}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every 3xx into an HTTPError instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _without_userinfo(url: str) -> tuple[str, str]:
    """(the URL without ``user:password@``, an Authorization header value or "")."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def _named(url: str) -> str:
    """The URL as error messages name it: without its password."""
    return _without_userinfo(url)[0]


def _endpoint(base: str, path: str) -> str:
    """``path`` under an Alertmanager's base URL (which may have a route prefix)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


def _describe(error: BaseException) -> str:
    """A transport failure in a few words, for an error string."""
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, http.client.HTTPException):
        # Their text alone is often just the offending line, say "''".
        return f"{type(error).__name__}: {error}"
    return str(error) or type(error).__name__


class Notifier:
    """Sends alerts and silences over HTTP; one per process, safe to share between tasks.

    ``timeout`` bounds every HTTP exchange, connection included. The worker threads start when
    first needed and stay idle between sends.
    """

    def __init__(self, *, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="alert-delivery")
        # Proxy settings are read from the environment once, here.
        self._opener = urllib.request.build_opener(_NoRedirects)

    async def alertmanager(self, urls: Sequence[str], alerts: Sequence[Outgoing]) -> str:
        """POST {url}/api/v2/alerts to every URL (Alertmanager's HA mode: each instance gets
        every alert; it de-duplicates by labels). "" when at least one URL took them; else
        the errors, one per URL, naming the URL."""
        if not alerts:
            return ""
        if not urls:
            return "no Alertmanager URL"
        payload = json.dumps([alertmanager_alert(a) for a in alerts]).encode()
        # Concurrently: one instance that hangs must not use up the others' time.
        errors = await asyncio.gather(*(self._post_alerts(url, payload) for url in urls))
        failed = [error for error in errors if error]
        if len(failed) < len(errors):
            if failed:
                # Alertmanager's cluster shares what one instance took: delivered.
                log.debug("alerts delivered, but not to every Alertmanager: %s", failed)
            return ""
        return "; ".join(failed)

    async def _post_alerts(self, url: str, payload: bytes) -> str:
        try:
            answer = await self._exchange("POST", _endpoint(url, "/api/v2/alerts"), payload)
        except DeliveryError as error:
            return f"{_named(url)}: {error}"
        return "" if answer.ok else f"{_named(url)}: {answer.describe()}"

    async def webhook(
        self, url: str, fmt: int, alerts: Sequence[Outgoing], body: Mapping[str, Any]
    ) -> str:
        """POST one notification of ``alerts`` (a group: same route, receiver and
        transition) as a JSON body (fmt is alert_pb2.WebhookFormat: JSON -> ``body`` as
        ``webhook_json`` completes it; SLACK -> {"text": a line per alert with severity,
        alertname, summary annotation and state}) with headers Content-Type:
        application/json and Idempotency-Key: ``group_key(alerts)``. "" when the
        receiver answered 2xx; else the error (status and the first 200 bytes of the
        body, or the exception). A ``body`` that is not JSON-serializable raises
        TypeError: a bug."""
        if not alerts:
            return ""
        if fmt == alert_pb2.WEBHOOK_FORMAT_SLACK:
            payload: Mapping[str, Any] = {"text": "\n".join(slack_text(a) for a in alerts)}
        elif fmt in (alert_pb2.WEBHOOK_FORMAT_UNSPECIFIED, alert_pb2.WEBHOOK_FORMAT_JSON):
            payload = webhook_json(alerts, body)
        else:
            return f"unknown webhook format {fmt}"
        data = json.dumps(payload).encode()
        try:
            answer = await self._exchange("POST", url, data, {"Idempotency-Key": group_key(alerts)})
        except DeliveryError as error:
            return str(error)
        return "" if answer.ok else answer.describe()

    async def post_json(self, url: str, body: Mapping[str, Any], idempotency_key: str) -> str:
        """POST ``body`` as JSON with an Idempotency-Key header (a remediation's webhook
        step). "" when the receiver answered 2xx; else the error."""
        data = json.dumps(body).encode()
        try:
            answer = await self._exchange("POST", url, data, {"Idempotency-Key": idempotency_key})
        except DeliveryError as error:
            return str(error)
        return "" if answer.ok else answer.describe()

    async def put_silence(self, url: str, silence: alert_pb2.Silence, existing_id: str = "") -> str:
        """Create (or replace, when existing_id is given: Alertmanager's POST
        /api/v2/silences with "id") the silence in one Alertmanager; its id there.
        Raises DeliveryError on failure.

        The id returned may differ from ``existing_id``: Alertmanager updates a silence
        in place only when its matchers and (while active) its start are unchanged;
        otherwise it expires the old one, keeping it as history, and creates a new one.
        An ``existing_id`` that Alertmanager does not know (restarted without its data,
        or past its ``--data.retention``) is created anew.
        """
        endpoint = _endpoint(url, "/api/v2/silences")
        now = time.time()
        answer = await self._silence_exchange(
            url, "POST", endpoint, silence_body(silence, existing_id, now)
        )
        if existing_id and answer.status == 404:
            answer = await self._silence_exchange(
                url, "POST", endpoint, silence_body(silence, "", now)
            )
        if not answer.ok:
            raise DeliveryError(f"{_named(url)}: {answer.describe()}")
        try:
            silence_id = json.loads(answer.body)["silenceID"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(f"{_named(url)}: no silenceID in {answer.describe()}") from None
        if not isinstance(silence_id, str) or not silence_id:
            raise DeliveryError(f"{_named(url)}: no silenceID in {answer.describe()}")
        return silence_id

    async def delete_silence(self, url: str, silence_id: str) -> None:
        """DELETE /api/v2/silence/{id}: the silence expires (Alertmanager keeps it,
        expired, for its retention). One already gone or expired is not an error.
        Raises DeliveryError otherwise."""
        if not silence_id:
            return
        endpoint = _endpoint(url, f"/api/v2/silence/{quote(silence_id, safe='')}")
        answer = await self._silence_exchange(url, "DELETE", endpoint, None)
        if answer.ok or answer.status == 404:
            return
        # Alertmanager up to 0.25 answers 500 for an unknown id, and older ones 500 for
        # a silence expired already, rather than 404 / 200.
        if answer.status == 500 and (
            b"silence not found" in answer.body or b"already expired" in answer.body
        ):
            return
        raise DeliveryError(f"{_named(url)}: {answer.describe()}")

    async def _silence_exchange(
        self, url: str, method: str, endpoint: str, body: Mapping[str, Any] | None
    ) -> _Answer:
        data = None if body is None else json.dumps(body).encode()
        try:
            return await self._exchange(method, endpoint, data)
        except DeliveryError as error:
            raise DeliveryError(f"{_named(url)}: {error}") from error

    async def _exchange(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str] | None = None
    ) -> _Answer:
        """One HTTP exchange within the timeout; DeliveryError when there is no answer."""
        call = functools.partial(self._send, method, url, data, headers or {})
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        # TimeoutError (ours, or the socket's in the thread) is an OSError. On ours, the
        # thread, if still waiting, ends at its socket timeout; nobody waits for it.
        except (OSError, http.client.HTTPException, ValueError) as error:
            problem = _describe(error)
            if problem == "timed out":
                problem = f"timed out after {self._timeout:g}s"
            raise DeliveryError(problem) from error

    def _send(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]
    ) -> _Answer:
        """Blocking, in a worker thread; each socket operation bounded by the timeout."""
        target, authorization = _without_userinfo(url)
        request = urllib.request.Request(target, data=data, method=method)
        request.add_header("User-Agent", _USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", _JSON)
        if authorization:
            request.add_header("Authorization", authorization)
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _Answer(response.status, response.read(_MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as error:
            # Not 2xx: still an answer, whose body says why.
            with error:
                try:
                    body = error.read(_MAX_ANSWER_BYTES)
                except OSError:
                    body = b""
            return _Answer(error.code, body)
