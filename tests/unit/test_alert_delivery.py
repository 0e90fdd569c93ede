"""Unit tests for bulwark_server.alerts.delivery: the parts that do no I/O."""

from __future__ import annotations

import base64
import http.client
import urllib.error
from typing import Any

import pytest

from bulwark.v1 import alert_pb2
from bulwark_server.alerts import delivery
from bulwark_server.alerts.delivery import (
    DEFAULT_COMMENT,
    DEFAULT_CREATED_BY,
    Notifier,
    Outgoing,
    alertmanager_alert,
    alertmanager_matcher,
    check_url,
    group_key,
    rfc3339,
    silence_body,
    slack_text,
    webhook_json,
)
from bulwark_server.errors import InvalidArgument
from bulwark_server.timestamps import at

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def outgoing(
    transition: str = "firing",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ends_at: float | None = None,
) -> Outgoing:
    return Outgoing(
        fingerprint="3f2a9c",
        labels={"alertname": "BreakerOpen", "severity": "critical"} if labels is None else labels,
        annotations={"summary": "breaker payments is open"} if annotations is None else annotations,
        starts_at=T0 + 0.75,
        ends_at=ends_at,
        transition=transition,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (T0, "2023-11-14T22:13:20.000Z"),
        (T0 + 0.5, "2023-11-14T22:13:20.500Z"),
        # Rounded to the millisecond, carrying into the seconds.
        (T0 + 0.9996, "2023-11-14T22:13:21.000Z"),
        (T0 + 0.0004, "2023-11-14T22:13:20.000Z"),
        (-1.5, "1969-12-31T23:59:58.500Z"),
    ],
)
def test_rfc3339_is_utc_with_milliseconds(seconds: float, text: str) -> None:
    assert rfc3339(seconds) == text


def test_idempotency_key_is_the_same_for_every_resend_of_a_transition() -> None:
    firing = outgoing()
    assert firing.idempotency_key == f"3f2a9c:firing:{int(T0)}"
    assert outgoing().idempotency_key == firing.idempotency_key
    assert outgoing("escalation-2").idempotency_key == f"3f2a9c:escalation-2:{int(T0)}"
    resolved = outgoing("resolved", ends_at=T0 + 60)
    assert resolved.idempotency_key == f"3f2a9c:resolved:{int(T0)}"


@pytest.mark.parametrize(
    ("transition", "ends_at", "problem"),
    [
        ("pending", None, "unknown transition"),
        ("escalation-", None, "unknown transition"),
        ("escalation-x", None, "unknown transition"),
        ("resolved", None, "ends_at"),
        ("firing", T0 + 5, "ends_at"),
        ("escalation-1", T0 + 5, "ends_at"),
    ],
)
def test_outgoing_refuses_inconsistent_transitions(
    transition: str, ends_at: float | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        outgoing(transition, ends_at=ends_at)


def test_a_firing_alert_leaves_ends_at_to_alertmanager() -> None:
    assert alertmanager_alert(outgoing()) == {
        "labels": {"alertname": "BreakerOpen", "severity": "critical"},
        "annotations": {"summary": "breaker payments is open"},
        "startsAt": "2023-11-14T22:13:20.750Z",
        "generatorURL": "",
    }
    assert "endsAt" not in alertmanager_alert(outgoing("escalation-3"))


def test_a_resolved_alert_carries_its_end() -> None:
    body = alertmanager_alert(outgoing("resolved", ends_at=T0 + 90))
    assert body["endsAt"] == "2023-11-14T22:14:50.000Z"
    assert body["startsAt"] == "2023-11-14T22:13:20.750Z"


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (
            alert_pb2.Matcher(name="service", value="payments"),
            {"name": "service", "value": "payments", "isRegex": False, "isEqual": True},
        ),
        (
            alert_pb2.Matcher(name="service", value="pay.*", is_regex=True),
            {"name": "service", "value": "pay.*", "isRegex": True, "isEqual": True},
        ),
        (
            alert_pb2.Matcher(name="severity", value="info", negate=True),
            {"name": "severity", "value": "info", "isRegex": False, "isEqual": False},
        ),
        (
            alert_pb2.Matcher(name="env", value="dev|test", is_regex=True, negate=True),
            {"name": "env", "value": "dev|test", "isRegex": True, "isEqual": False},
        ),
    ],
)
def test_matchers_map_to_alertmanager(matcher: alert_pb2.Matcher, expected: Any) -> None:
    assert alertmanager_matcher(matcher) == expected


def test_silence_body_keeps_what_is_given_and_the_matchers_order() -> None:
    silence = alert_pb2.Silence(
        id="s-1",
        matchers=[
            alert_pb2.Matcher(name="service", value="payments"),
            alert_pb2.Matcher(name="alertname", value="Breaker.*", is_regex=True),
        ],
        starts_at=at(T0),
        ends_at=at(T0 + 3600),
        created_by="alice",
        comment="deploying payments",
    )
    body = silence_body(silence, "am-7", now=T0 + 10)
    assert body == {
        "id": "am-7",
        "matchers": [
            {"name": "service", "value": "payments", "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": "Breaker.*", "isRegex": True, "isEqual": True},
        ],
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": "2023-11-14T23:13:20.000Z",
        "createdBy": "alice",
        "comment": "deploying payments",
    }


def test_silence_body_fills_what_alertmanager_requires() -> None:
    silence = alert_pb2.Silence(
        id="s-1", matchers=[alert_pb2.Matcher(name="a", value="b")], ends_at=at(T0 + 60)
    )
    body = silence_body(silence, "", now=T0)
    assert "id" not in body
    assert body["startsAt"] == rfc3339(T0)  # unset: from now, as Bulwark's default
    assert body["createdBy"] == DEFAULT_CREATED_BY
    assert body["comment"] == f"{DEFAULT_COMMENT} (silence s-1)"
    silence.ClearField("id")
    assert silence_body(silence, "", now=T0)["comment"] == DEFAULT_COMMENT


@pytest.mark.parametrize(
    ("alert", "text"),
    [
        (outgoing(), "[CRITICAL] BreakerOpen: breaker payments is open (firing)"),
        (
            outgoing("resolved", ends_at=T0 + 5),
            "[CRITICAL] BreakerOpen: breaker payments is open (resolved)",
        ),
        (
            outgoing("escalation-2"),
            "[CRITICAL] BreakerOpen: breaker payments is open (firing, escalation step 2)",
        ),
        (outgoing(annotations={}), "[CRITICAL] BreakerOpen (firing)"),
        (
            outgoing(labels={"alertname": "NoPrimary"}),
            "NoPrimary: breaker payments is open (firing)",
        ),
        (outgoing(labels={}, annotations={}), "alert 3f2a9c (firing)"),
        (
            outgoing(annotations={"summary": "errors > 50% &\n  rising <fast>"}),
            "[CRITICAL] BreakerOpen: errors &gt; 50% &amp; rising &lt;fast&gt; (firing)",
        ),
    ],
)
def test_slack_text_is_one_escaped_line(alert: Outgoing, text: str) -> None:
    assert slack_text(alert) == text


def test_webhook_json_adds_the_transition_and_keys_to_the_body() -> None:
    alert = outgoing("escalation-1")
    listed = {"fingerprint": "3f2a9c", "labels": {"alertname": "BreakerOpen"}}
    body = {"receiver": "team", "groupLabels": {"alertname": "BreakerOpen"}, "alerts": [listed]}
    # An alert alone: the group's key is its own.
    assert webhook_json([alert], body) == {
        **body,
        "transition": "escalation-1",
        "idempotencyKey": alert.idempotency_key,
        "alerts": [
            {**listed, "transition": "escalation-1", "idempotencyKey": alert.idempotency_key}
        ],
    }


def test_a_group_has_a_key_of_its_own_whatever_the_order_of_its_alerts() -> None:
    one = outgoing()
    other = Outgoing(**{**one.__dict__, "fingerprint": "77aa01"})
    body = {"receiver": "team", "alerts": [{"n": 1}, {"n": 2}]}
    sent = webhook_json([one, other], body)
    assert [a["idempotencyKey"] for a in sent["alerts"]] == [
        one.idempotency_key,
        other.idempotency_key,
    ]
    assert sent["idempotencyKey"] == group_key([other, one]) != one.idempotency_key
    assert sent["idempotencyKey"].startswith("group:")
    with pytest.raises(ValueError, match="2 alerts, but the body lists 1"):
        webhook_json([one, other], {"alerts": [{"n": 1}]})


@pytest.mark.parametrize(
    "url",
    [
        "http://alertmanager:9093",
        "https://am.example.com/prefix/",
        "http://127.0.0.1:9093",
        "http://[::1]:9093",
        "https://hooks.slack.com/services/T0/B0/XyZ?x=1",
        "http://user:p%40ss@am.internal:9093",
        "HTTPS://AM.EXAMPLE.COM",
    ],
)
def test_check_url_takes_http_urls(url: str) -> None:
    check_url(url, "route.receivers[0].webhook.url")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "is required"),
        ("alertmanager:9093", "http:// or https://"),
        ("ftp://am.example.com", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://", "has no host"),
        ("http:///path", "has no host"),
        ("http://am:99999", "not a valid URL"),
        ("http://am:port", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("http://am/#frag", "fragment"),
        ("http://am/#", "fragment"),
        ("http://am/a b", "without spaces"),
        ("http://am/\n", "without spaces"),
        ("http://bücher.example", "ASCII"),
        ("http://am/" + "a" * 2048, "longer than 2048"),
    ],
)
def test_check_url_names_the_field(url: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        check_url(url, "route.receivers[1].alertmanager.urls[0]")
    assert caught.value.field == "route.receivers[1].alertmanager.urls[0]"


def test_check_url_does_not_echo_the_url() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_url("ftp://user:secret@am.example.com", "url")
    assert "secret" not in str(caught.value)


def test_userinfo_becomes_basic_auth_and_leaves_error_messages() -> None:
    url, authorization = delivery._without_userinfo("http://bob:p%40ss@am:9093/x?y=1")
    assert url == "http://am:9093/x?y=1"
    assert base64.b64decode(authorization.removeprefix("Basic ")) == b"bob:p@ss"
    assert delivery._without_userinfo("http://am:9093") == ("http://am:9093", "")
    assert delivery._named("https://bob:secret@am") == "https://am"


@pytest.mark.parametrize(
    ("base", "endpoint"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("http://am/alertmanager/", "http://am/alertmanager/api/v2/alerts"),
    ],
)
def test_endpoints_keep_the_route_prefix(base: str, endpoint: str) -> None:
    assert delivery._endpoint(base, "/api/v2/alerts") == endpoint


def test_answers_are_described_by_status_and_the_start_of_the_body() -> None:
    answer = delivery._Answer(503, b"overloaded\n" + b"x" * 500)
    assert answer.describe() == "HTTP 503: overloaded " + "x" * 189
    assert delivery._Answer(502, b"").describe() == "HTTP 502"
    assert delivery._Answer(204, b"").ok and not delivery._Answer(302, b"").ok


async def test_nothing_to_send_sends_nothing() -> None:
    notifier = Notifier(timeout=0.1)
    # No URL is contacted: these would fail if it were.
    assert await notifier.alertmanager(["http://127.0.0.1:1"], []) == ""
    assert await notifier.alertmanager([], [outgoing()]) == "no Alertmanager URL"
    await notifier.delete_silence("http://127.0.0.1:1", "")


async def test_an_unknown_webhook_format_is_an_error() -> None:
    error = await Notifier(timeout=0.1).webhook("http://127.0.0.1:1", 99, outgoing(), {})
    assert error == "unknown webhook format 99"


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Notifier(timeout=0)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (urllib.error.URLError(TimeoutError("timed out")), "timed out"),
        (TimeoutError(), "timed out"),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "refused"),
        (urllib.error.URLError("unknown url type: ftp"), "unknown url type: ftp"),
        (http.client.RemoteDisconnected("Remote end closed connection"), "Remote end closed"),
        (http.client.BadStatusLine(""), "BadStatusLine"),
    ],
)
def test_transport_failures_are_described_in_a_few_words(error: Exception, text: str) -> None:
    assert text in delivery._describe(error)
