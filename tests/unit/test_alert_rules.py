"""Alert rules with an injected clock: fingerprints, matchers, silences, routes,
de-duplication, throttling, acknowledgement and escalation."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import alert_pb2
from bulwark_server import timestamps
from bulwark_server.alerts import rules
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import validate_id

NOW = 1_800_000_000.0
CRITICAL = alert_pb2.ALERT_SEVERITY_CRITICAL
WARNING = alert_pb2.ALERT_SEVERITY_WARNING


def refuse_ftp(url: str, field: str) -> None:
    if not url.startswith("http"):
        raise InvalidArgument(field, "must be an http(s) URL")


def seconds(s: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(s * 1e9))
    return out


def route(**kwargs: object) -> alert_pb2.AlertRoute:
    base = alert_pb2.AlertRoute(
        name="oncall",
        receivers=[
            alert_pb2.Receiver(
                name="am", alertmanager=alert_pb2.AlertmanagerReceiver(urls=["http://am:9093"])
            ),
            alert_pb2.Receiver(name="team", webhook=alert_pb2.WebhookReceiver(url="http://t/h")),
            alert_pb2.Receiver(name="lead", webhook=alert_pb2.WebhookReceiver(url="http://l/h")),
        ],
    )
    for key, value in kwargs.items():
        if isinstance(value, list):
            getattr(base, key).extend(value)
        elif isinstance(value, alert_pb2.Matcher | duration_pb2.Duration):
            getattr(base, key).CopyFrom(value)
        else:
            setattr(base, key, value)
    return base


def team_only(**kwargs: object) -> alert_pb2.AlertRoute:
    only = route(**kwargs)
    del only.receivers[:]
    only.receivers.add(name="team", webhook=alert_pb2.WebhookReceiver(url="http://t/h"))
    return only


def firing(severity: int = CRITICAL, started: float = NOW) -> alert_pb2.Alert:
    labels = {"alertname": "BulwarkBreakerOpen", "breaker": "payments"}
    alert = alert_pb2.Alert(
        fingerprint=rules.fingerprint(labels),
        severity=severity,
        state=alert_pb2.ALERT_STATE_FIRING,
        starts_at=timestamps.at(started),
    )
    alert.labels.update(labels)
    return alert


def delivered(
    alert: alert_pb2.Alert, due: list[tuple[str, str]], at: float, error: str = ""
) -> None:
    for receiver, transition in due:
        key = rules.key_of(alert, transition)
        attempts = 1 + sum(1 for d in alert.deliveries if d.idempotency_key == key)
        alert.deliveries.add(
            receiver=receiver,
            at=timestamps.at(at),
            idempotency_key=key,
            error=error,
            attempts=attempts,
        )


def test_the_fingerprint_is_the_labels_whatever_their_order() -> None:
    assert rules.fingerprint({"a": "1", "b": "2"}) == rules.fingerprint({"b": "2", "a": "1"})
    assert rules.fingerprint({"a": "1"}) != rules.fingerprint({"a": "2"})


def test_matchers_follow_alertmanager() -> None:
    labels = {"alertname": "BulwarkBreakerOpen", "breaker": "payments-eu"}
    m = alert_pb2.Matcher
    assert rules.matches([m(name="breaker", value="payments-.*", is_regex=True)], labels)
    assert not rules.matches(
        [m(name="breaker", value="payments", is_regex=True)], labels
    )  # anchored
    assert rules.matches([m(name="zone", value="")], labels)  # a missing label is ""
    assert not rules.matches([m(name="breaker", value="payments-eu", negate=True)], labels)
    with pytest.raises(InvalidArgument, match=r"matchers\[0\]\.value"):
        rules.check_matchers([m(name="breaker", value="(", is_regex=True)], "matchers")
    with pytest.raises(InvalidArgument, match=r"matchers\[0\]\.name"):
        rules.check_matchers([m(name="2bad", value="x")], "matchers")


def test_silences_must_select_something_and_end_in_the_future() -> None:
    good = alert_pb2.Silence(
        matchers=[alert_pb2.Matcher(name="breaker", value="payments")],
        ends_at=timestamps.at(NOW + 3600),
    )
    assert rules.check_silence(good, NOW) == (NOW, NOW + 3600)
    past = alert_pb2.Silence()
    past.CopyFrom(good)
    past.ends_at.CopyFrom(timestamps.at(NOW - 1))
    with pytest.raises(InvalidArgument, match=r"silence\.ends_at: is in the past"):
        rules.check_silence(past, NOW)
    everything = alert_pb2.Silence(
        matchers=[alert_pb2.Matcher(name="x", value="y", negate=True)],
        ends_at=timestamps.at(NOW + 60),
    )
    with pytest.raises(InvalidArgument, match=r"silence\.matchers"):
        rules.check_silence(everything, NOW)
    stored = alert_pb2.Silence(id="s1", matchers=good.matchers)
    stored.starts_at.CopyFrom(timestamps.at(NOW))
    stored.ends_at.CopyFrom(timestamps.at(NOW + 3600))
    assert rules.silenced_by([stored], firing().labels, NOW + 10) == ["s1"]
    assert rules.silenced_by([stored], firing().labels, NOW + 3600) == []  # ended


def test_routes_refuse_unknown_receivers_loops_and_bad_urls() -> None:
    rules.check_route(route(), refuse_ftp)
    step = alert_pb2.EscalationStep
    with pytest.raises(InvalidArgument, match=r"route.escalation\[1\].receiver: unknown receiver"):
        rules.check_route(
            route(escalation=[step(receiver="team"), step(receiver="boss", after=seconds(60))]),
            refuse_ftp,
        )
    with pytest.raises(InvalidArgument, match="escalation loop"):
        rules.check_route(
            route(
                escalation=[
                    step(receiver="team"),
                    step(receiver="lead", after=seconds(60)),
                    step(receiver="team", after=seconds(60)),
                ]
            ),
            refuse_ftp,
        )
    bad = route()
    bad.receivers[1].webhook.url = "ftp://t/h"
    with pytest.raises(InvalidArgument, match=r"route.receivers\[1\].webhook.url"):
        rules.check_route(bad, refuse_ftp)


def test_a_notification_goes_out_once_and_alertmanager_hears_it_again_each_minute() -> None:
    alert, plain = firing(), route()
    due, _ = rules.due_notifications(alert, plain, NOW)
    assert due == [("am", "firing"), ("team", "firing"), ("lead", "firing")]
    delivered(alert, due, NOW)
    assert rules.due_notifications(alert, plain, NOW + 30)[0] == []  # de-duplicated
    assert rules.due_notifications(alert, plain, NOW + 61)[0] == [("am", "firing")]


def test_a_failed_delivery_is_retried_with_a_growing_wait() -> None:
    alert, plain = firing(), team_only()
    delivered(alert, [("team", "firing")], NOW, error="HTTP 500")
    assert rules.due_notifications(alert, plain, NOW + 1.5)[0] == []  # waits 2 s
    assert rules.due_notifications(alert, plain, NOW + 2)[0] == [("team", "firing")]
    delivered(alert, [("team", "firing")], NOW + 2, error="HTTP 500")
    assert rules.due_notifications(alert, plain, NOW + 5)[0] == []  # now 4 s
    assert rules.due_notifications(alert, plain, NOW + 6)[0] == [("team", "firing")]


def test_a_flapping_alert_is_throttled_per_route() -> None:
    plain = team_only(max_notifications=2, throttle_interval=seconds(600))
    alert = firing(started=NOW)
    for episode in range(3):
        # Each episode is a new firing transition (its own start), sharing the history.
        alert.starts_at.CopyFrom(timestamps.at(NOW + 60 * episode))
        due, _ = rules.due_notifications(alert, plain, NOW + 60 * episode)
        if episode < 2:
            assert due == [("team", "firing")], episode
            delivered(alert, due, NOW + 60 * episode)
        else:
            assert due == []  # two within ten minutes already
    assert rules.due_notifications(alert, plain, NOW + 601)[0] == [("team", "firing")]


def test_an_unacknowledged_critical_alert_escalates_and_an_acknowledged_one_stops() -> None:
    step = alert_pb2.EscalationStep
    chain = route(
        escalation=[
            step(receiver="team"),
            step(receiver="lead", after=seconds(300)),
            step(receiver="am", after=seconds(600)),
        ]
    )
    alert = firing()
    due, at = rules.due_notifications(alert, chain, NOW)
    assert (due, at) == ([("team", "firing")], 0)
    delivered(alert, due, NOW)
    assert rules.due_notifications(alert, chain, NOW + 299) == ([], 0)
    due, at = rules.due_notifications(alert, chain, NOW + 300)
    assert (due, at) == ([("lead", "escalation-1")], 1)
    delivered(alert, due, NOW + 300)
    alert.escalation_step = at
    alert.acknowledgement.CopyFrom(alert_pb2.Acknowledgement(by="ana", at=timestamps.at(NOW + 400)))
    assert rules.due_notifications(alert, chain, NOW + 2000) == ([], 1)  # acknowledged: stays
    warning = firing(severity=WARNING)
    assert rules.due_notifications(warning, chain, NOW + 2000)[1] == 0  # only critical ones


def test_a_silenced_alert_sends_nothing_and_a_resolved_one_tells_who_heard_it() -> None:
    alert, plain = firing(), route()
    alert.silenced_by.append("s1")
    assert rules.due_notifications(alert, plain, NOW)[0] == []
    del alert.silenced_by[:]
    delivered(alert, [("am", "firing")], NOW)
    delivered(alert, [("team", "firing")], NOW, error="down")
    alert.state = alert_pb2.ALERT_STATE_RESOLVED
    assert rules.due_notifications(alert, plain, NOW + 5)[0] == [("am", "resolved")]


def test_an_expired_silence_is_forgotten_after_a_day_once_no_alertmanager_holds_it() -> None:
    day = 24 * 3600.0
    ended = alert_pb2.Silence(
        id="s1", starts_at=timestamps.at(NOW - 2 * day), ends_at=timestamps.at(NOW - day)
    )
    mirrors = ["http://am:9093"]
    assert rules.forgettable(ended, NOW, day, mirrors)
    assert not rules.forgettable(ended, NOW - 1, day, mirrors)  # listed as expired a day first
    ended.mirrored["http://am:9093"] = "5c1e"  # its copy there is still to be ended
    assert not rules.forgettable(ended, NOW, day, mirrors)
    # An Alertmanager no longer configured is not waited for.
    assert rules.forgettable(ended, NOW, day, ["http://other:9093"])
    active = alert_pb2.Silence(id="s2", ends_at=timestamps.at(NOW + 60))
    assert not rules.forgettable(active, NOW, day, mirrors)


def test_a_fingerprint_is_16_hexadecimal_digits() -> None:
    made = rules.fingerprint({"alertname": "BulwarkBreakerOpen"})
    assert rules.check_fingerprint(made, "fingerprint") == made
    for bad in ("", "é" * 200, made.upper(), made[:15], made + "0"):
        with pytest.raises(InvalidArgument) as refused:
            rules.check_fingerprint(bad, "fingerprint")
        assert refused.value.field == "fingerprint"


def test_an_id_is_limited_in_bytes_as_the_etcd_key_it_may_become() -> None:
    assert validate_id("é" * 128, "reporter") == "é" * 128  # 256 bytes
    with pytest.raises(InvalidArgument, match="256 bytes"):
        validate_id("é" * 129, "reporter")
