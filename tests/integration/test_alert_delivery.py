"""Alert delivery against a real Alertmanager and a webhook receiver of the test's own.

One Alertmanager serves the whole module (each test uses alert names and matchers of
its own); the webhook receiver is ``http.server`` on 127.0.0.1 in a thread, which
answers by path: ``/ok`` 200, ``/fail`` 500 with a long body, ``/moved`` 302, and
``/hang`` never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bulwark.v1 import alert_pb2
from bulwark_server.alerts.delivery import (
    DeliveryError,
    Notifier,
    Outgoing,
    group_key,
    rfc3339,
    slack_text,
    webhook_json,
)
from bulwark_server.loopback.etcd import free_port
from bulwark_server.timestamps import at
from tests.monitoring_tools import AlertmanagerProcess

# Local exchanges take milliseconds; a timeout must fire within this much of its bound.
MARGIN = 0.4


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerProcess]:
    with AlertmanagerProcess(tmp_path_factory.mktemp("alertmanager")) as am:
        yield am


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[Received]
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(Received(self.path, dict(self.headers.items()), body))
        if self.path == "/hang":
            self.server.release.wait(10)
            return
        if self.path == "/fail":
            self._answer(500, b"database on fire: " + b"x" * 400)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200, b"ok")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_ReceiverServer]:
    server = _ReceiverServer(("127.0.0.1", 0), _Handler)
    server.received = []
    server.release = threading.Event()
    # A short poll interval: shutdown() waits for the loop to look.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def url_of(server: _ReceiverServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def alert(name: str, transition: str = "firing", *, ends_at: float | None = None) -> Outgoing:
    return Outgoing(
        fingerprint=f"fp-{name}",
        labels={"alertname": name, "severity": "critical", "breaker": "payments"},
        annotations={"summary": f"{name} on payments", "description": "tripped at 52% errors"},
        starts_at=time.time() - 30,
        ends_at=ends_at,
        transition=transition,
    )


def listed(am: AlertmanagerProcess) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alertname"]: a for a in am.alerts()}


def unix_of(rfc3339_text: str) -> float:
    return datetime.fromisoformat(rfc3339_text).timestamp()


async def test_alerts_arrive_with_labels_and_annotations_and_resolved_ones_end(
    alertmanager: AlertmanagerProcess,
) -> None:
    notifier = Notifier(timeout=2.0)
    firing, ending = alert("DeliveryFiring"), alert("DeliveryEnding")
    assert await notifier.alertmanager([alertmanager.url], [firing, ending]) == ""

    shown = listed(alertmanager)
    got = shown["DeliveryFiring"]
    assert got["labels"] == dict(firing.labels)
    assert got["annotations"] == dict(firing.annotations)
    assert got["startsAt"] == rfc3339(firing.starts_at)
    # Sent without endsAt, it ends resolve_timeout (5 min by default) after it was posted
    # unless posted again: Alertmanager's own guard against a sender that died.
    assert 4 * 60 < unix_of(got["endsAt"]) - time.time() <= 5 * 60
    assert "DeliveryEnding" in shown

    resolved = Outgoing(
        fingerprint=ending.fingerprint,
        labels=ending.labels,
        annotations=ending.annotations,
        starts_at=ending.starts_at,
        ends_at=time.time(),
        transition="resolved",
    )
    assert await notifier.alertmanager([alertmanager.url], [resolved]) == ""
    # An alert whose endsAt has passed is no longer listed (not even with active=false).
    shown = listed(alertmanager)
    assert "DeliveryEnding" not in shown
    assert "DeliveryFiring" in shown


async def test_one_alertmanager_taking_the_alerts_is_enough(
    alertmanager: AlertmanagerProcess,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    sent = alert("DeliveryOneUp")
    assert await Notifier(timeout=2.0).alertmanager([down, alertmanager.url], [sent]) == ""
    assert listed(alertmanager)["DeliveryOneUp"]["labels"] == dict(sent.labels)


async def test_every_alertmanager_down_names_each_within_the_timeout(silent_port: int) -> None:
    refused_port = free_port()
    refused = f"http://admin:hunter2@127.0.0.1:{refused_port}"
    silent = f"http://127.0.0.1:{silent_port}/prefix"
    started = time.monotonic()
    error = await Notifier(timeout=0.5).alertmanager([refused, silent], [alert("DeliveryDown")])
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + MARGIN, error
    first, second = error.split("; ")
    assert first.startswith(f"http://127.0.0.1:{refused_port}: ") and "refused" in first, error
    assert second == f"{silent}: timed out after 0.5s"
    assert "hunter2" not in error


async def test_silences_are_created_replaced_and_expired(
    alertmanager: AlertmanagerProcess,
) -> None:
    notifier = Notifier(timeout=2.0)
    now = time.time()
    silence = alert_pb2.Silence(
        id="bulwark-silence-1",
        matchers=[
            alert_pb2.Matcher(name="alertname", value="DeliverySilenced.*", is_regex=True),
            alert_pb2.Matcher(name="severity", value="info", negate=True),
        ],
        starts_at=at(now),
        ends_at=at(now + 3600),
        comment="deploying payments",
    )
    first_id = await notifier.put_silence(alertmanager.url, silence)

    def ours() -> dict[str, dict[str, Any]]:
        return {
            s["id"]: s
            for s in alertmanager.silences()
            if s["matchers"][0]["value"] == "DeliverySilenced.*"
        }

    created = ours()[first_id]
    assert created["status"]["state"] == "active"
    assert created["matchers"] == [
        {"name": "alertname", "value": "DeliverySilenced.*", "isRegex": True, "isEqual": True},
        {"name": "severity", "value": "info", "isRegex": False, "isEqual": False},
    ]
    assert created["endsAt"] == rfc3339(now + 3600)
    assert created["comment"] == "deploying payments"
    assert created["createdBy"] == "bulwark"  # Bulwark's left it empty

    silence.ends_at.CopyFrom(at(now + 7200))
    silence.comment = "deploying payments, longer"
    second_id = await notifier.put_silence(alertmanager.url, silence, existing_id=first_id)
    silences = ours()
    active = [s for s in silences.values() if s["status"]["state"] == "active"]
    assert [s["id"] for s in active] == [second_id]
    assert active[0]["comment"] == "deploying payments, longer"
    assert active[0]["endsAt"] == rfc3339(now + 7200)
    # Alertmanager 0.25 replaces rather than updates an active silence (the start it
    # stored is its own clock's, not the one sent): the first stays as history.
    if second_id != first_id:
        assert silences[first_id]["status"]["state"] == "expired"

    await notifier.delete_silence(alertmanager.url, second_id)
    assert ours()[second_id]["status"]["state"] == "expired"
    # Gone already, or never there: not an error.
    await notifier.delete_silence(alertmanager.url, second_id)
    await notifier.delete_silence(alertmanager.url, str(uuid.uuid4()))


async def test_an_id_alertmanager_forgot_is_created_anew(
    alertmanager: AlertmanagerProcess,
) -> None:
    silence = alert_pb2.Silence(
        matchers=[alert_pb2.Matcher(name="alertname", value="DeliveryForgotten")],
        ends_at=at(time.time() + 600),
    )
    forgotten = str(uuid.uuid4())
    silence_id = await Notifier(timeout=2.0).put_silence(
        alertmanager.url, silence, existing_id=forgotten
    )
    assert silence_id != forgotten
    shown = {s["id"]: s for s in alertmanager.silences()}[silence_id]
    assert shown["status"]["state"] == "active"
    assert shown["comment"] == "Silence mirrored from Bulwark"


async def test_silences_that_cannot_be_put_raise(alertmanager: AlertmanagerProcess) -> None:
    notifier = Notifier(timeout=2.0)
    ended = alert_pb2.Silence(
        matchers=[alert_pb2.Matcher(name="alertname", value="DeliveryEnded")],
        starts_at=at(time.time() - 600),
        ends_at=at(time.time() - 60),
    )
    with pytest.raises(DeliveryError, match=rf"^{alertmanager.url}: HTTP 400: .*past"):
        await notifier.put_silence(alertmanager.url, ended)
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DeliveryError, match=rf"^{down}: .*refused"):
        await notifier.delete_silence(down, str(uuid.uuid4()))


async def test_webhooks_get_json_and_slack_bodies_with_the_idempotency_key(
    receiver: _ReceiverServer,
) -> None:
    notifier = Notifier(timeout=2.0)
    sent = [alert("DeliveryWebhook", "escalation-1")]
    listed = {"fingerprint": sent[0].fingerprint, "labels": dict(sent[0].labels)}
    body = {"receiver": "team", "groupLabels": {}, "alerts": [listed]}
    url = url_of(receiver, "/ok")
    assert await notifier.webhook(url, alert_pb2.WEBHOOK_FORMAT_JSON, sent, body) == ""
    assert await notifier.webhook(url, alert_pb2.WEBHOOK_FORMAT_UNSPECIFIED, sent, body) == ""
    assert await notifier.webhook(url, alert_pb2.WEBHOOK_FORMAT_SLACK, sent, body) == ""
    pair = [*sent, alert("DeliveryWebhookToo", "escalation-1")]
    two = {**body, "alerts": [listed, {"fingerprint": pair[1].fingerprint}]}
    assert await notifier.webhook(url, alert_pb2.WEBHOOK_FORMAT_SLACK, pair, two) == ""

    as_json, unspecified, slack, slack_pair = receiver.received
    for got in receiver.received:
        assert got.headers["Content-Type"] == "application/json"
    for got in (as_json, unspecified, slack):
        assert got.headers["Idempotency-Key"] == sent[0].idempotency_key
    assert slack_pair.headers["Idempotency-Key"] == group_key(pair)
    assert as_json.json() == webhook_json(sent, body) == unspecified.json()
    assert as_json.json()["transition"] == "escalation-1"
    assert slack.json() == {"text": slack_text(sent[0])}
    assert slack.json()["text"].startswith("[CRITICAL] DeliveryWebhook: DeliveryWebhook on")
    assert slack_pair.json()["text"].split("\n") == [slack_text(a) for a in pair]


async def test_a_webhook_answering_otherwise_than_2xx_is_an_error(
    receiver: _ReceiverServer,
) -> None:
    notifier = Notifier(timeout=2.0)
    sent, fmt = [alert("DeliveryWebhookFails")], alert_pb2.WEBHOOK_FORMAT_SLACK
    error = await notifier.webhook(url_of(receiver, "/fail"), fmt, sent, {})
    assert error == "HTTP 500: database on fire: " + "x" * (200 - len("database on fire: "))
    # Not followed: a POST turned into a GET by a redirect would pass for a delivery.
    assert await notifier.webhook(url_of(receiver, "/moved"), fmt, sent, {}) == "HTTP 302"
    assert [r.path for r in receiver.received] == ["/fail", "/moved"]
    refused = await notifier.webhook(f"http://127.0.0.1:{free_port()}/x", fmt, sent, {})
    assert "refused" in refused


async def test_a_webhook_that_never_answers_times_out_without_blocking_the_loop(
    receiver: _ReceiverServer,
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        error = await Notifier(timeout=0.5).webhook(
            url_of(receiver, "/hang"), alert_pb2.WEBHOOK_FORMAT_SLACK, [alert("DeliveryHang")], {}
        )
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    elapsed = time.monotonic() - started
    assert error == "timed out after 0.5s"
    assert 0.5 <= elapsed < 0.5 + MARGIN
    assert ticks >= 20  # the loop ran all along
    assert [r.path for r in receiver.received] == ["/hang"]
