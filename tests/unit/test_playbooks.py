"""Unit tests for bulwark_server.remediation.playbooks: checks, defaults, the guards' arithmetic."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bulwark.v1 import breaker_pb2, feature_pb2
from bulwark.v1 import remediation_pb2 as rpb
from bulwark_server.alerts.delivery import check_url
from bulwark_server.errors import InvalidArgument
from bulwark_server.remediation.playbooks import (
    Guards,
    actions_within,
    check_playbook,
    guards_of,
    healthy_enough,
    remediation_id,
)
from bulwark_server.store.keys import MAX_NAME_BYTES

T0 = 1_700_000_000.0
DRAIN = rpb.Action(drain=rpb.DrainAction())
HOOK = "https://hooks.example.com/heal"


def valid() -> rpb.Playbook:
    out = rpb.Playbook(
        name="heal",
        condition=rpb.Condition(instance=rpb.InstanceCondition(service="api")),
        actions=[DRAIN, rpb.Action(webhook=rpb.WebhookAction(url=HOOK))],
    )
    out.verify_within.FromSeconds(30)
    out.guards.min_healthy_share = 0.5
    out.guards.cooldown.FromSeconds(600)
    out.guards.max_actions_per_hour = 5
    return out


def on_breaker(p: rpb.Playbook) -> None:
    p.condition.breaker.breaker = "api-db"


def on_signal(**fields: object) -> Callable[[rpb.Playbook], None]:
    def change(p: rpb.Playbook) -> None:
        p.condition.signal.CopyFrom(rpb.SignalCondition(service="api", **fields))
        p.actions[0].alert.severity = "critical"

    return change


def action(i: int, **kind: object) -> Callable[[rpb.Playbook], None]:
    def change(p: rpb.Playbook) -> None:
        p.actions[i].CopyFrom(rpb.Action(**kind))

    return change


def set_(path: str, value: object) -> Callable[[rpb.Playbook], None]:
    def change(p: rpb.Playbook) -> None:
        *parents, leaf = path.split(".")
        message = p
        for name in parents:
            message = getattr(message, name)
        if hasattr(getattr(message, leaf), "FromSeconds"):
            getattr(message, leaf).FromSeconds(value)
        else:
            setattr(message, leaf, value)

    return change


def many(p: rpb.Playbook) -> None:
    del p.actions[:]
    p.actions.extend([DRAIN] * 11)


def force(state: int, breaker: str = "api-db") -> Callable[[rpb.Playbook], None]:
    return action(0, force_breaker=rpb.ForceBreakerAction(breaker=breaker, state=state))


CASES = {
    "bad name": (set_("name", "-heal"), "playbook.name"),
    "long description": (set_("description", "x" * 1025), "playbook.description"),
    "missing condition": (lambda p: p.ClearField("condition"), "playbook.condition"),
    "missing service": (
        set_("condition.instance.service", ""),
        "playbook.condition.instance.service",
    ),
    "missed_heartbeats 3": (
        set_("condition.instance.missed_heartbeats", 3),
        "playbook.condition.instance.missed_heartbeats",
    ),
    "breaker open_for over a day": (
        lambda p: (on_breaker(p), p.condition.breaker.open_for.FromSeconds(86_401)),
        "playbook.condition.breaker.open_for",
    ),
    "no signal": (on_signal(above=1), "playbook.condition.signal.signal"),
    "negative threshold": (
        on_signal(signal=rpb.SERVICE_SIGNAL_ERROR_RATE, above=-1),
        "playbook.condition.signal.above",
    ),
    "NaN threshold": (
        on_signal(signal=rpb.SERVICE_SIGNAL_ERROR_RATE, above=float("nan")),
        "playbook.condition.signal.above",
    ),
    "short signal window": (
        lambda p: (
            on_signal(signal=rpb.SERVICE_SIGNAL_IN_FLIGHT, above=1)(p),
            p.condition.signal.window.FromSeconds(5),
        ),
        "playbook.condition.signal.window",
    ),
    "no actions": (lambda p: p.ClearField("actions"), "playbook.actions"),
    "too many actions": (many, "playbook.actions"),
    "an empty action": (action(1), "playbook.actions[1]"),
    "drain with a breaker condition": (on_breaker, "playbook.actions[0].drain"),
    "failover with a breaker condition": (
        lambda p: (on_breaker(p), action(0, failover=rpb.FailoverAction())(p)),
        "playbook.actions[0].failover",
    ),
    "bad force_breaker state": (
        force(breaker_pb2.BREAKER_STATE_OPEN),
        "playbook.actions[0].force_breaker.state",
    ),
    "force_breaker needs a breaker": (
        force(breaker_pb2.BREAKER_STATE_FORCED_OPEN, breaker=""),
        "playbook.actions[0].force_breaker.breaker",
    ),
    "bad set_feature status": (
        action(0, set_feature=rpb.SetFeatureAction(feature="search")),
        "playbook.actions[0].set_feature.status",
    ),
    "bad webhook URL": (
        action(1, webhook=rpb.WebhookAction(url="ftp://hooks.example.com/x")),
        "playbook.actions[1].webhook.url",
    ),
    "webhook URL missing": (
        action(1, webhook=rpb.WebhookAction()),
        "playbook.actions[1].webhook.url",
    ),
    "bad alert severity": (
        action(1, alert=rpb.AlertAction(severity="loud")),
        "playbook.actions[1].alert.severity",
    ),
    "verify_within under 1 s": (set_("verify_within", 0), "playbook.verify_within"),
    "verify_within over an hour": (set_("verify_within", 3601), "playbook.verify_within"),
    "min_healthy_share above 1": (
        set_("guards.min_healthy_share", 1.5),
        "playbook.guards.min_healthy_share",
    ),
    "negative min_healthy_share": (
        set_("guards.min_healthy_share", -0.1),
        "playbook.guards.min_healthy_share",
    ),
    "cooldown over a day": (set_("guards.cooldown", 86_401), "playbook.guards.cooldown"),
    "negative cooldown": (set_("guards.cooldown", -1), "playbook.guards.cooldown"),
    "too many actions per hour": (
        set_("guards.max_actions_per_hour", 1001),
        "playbook.guards.max_actions_per_hour",
    ),
    "negative actions per hour": (
        set_("guards.max_actions_per_hour", -1),
        "playbook.guards.max_actions_per_hour",
    ),
}


@pytest.mark.parametrize(("change", "field"), CASES.values(), ids=CASES.keys())
def test_check_playbook_names_the_wrong_field(
    change: Callable[[rpb.Playbook], object], field: str
) -> None:
    playbook = valid()
    change(playbook)
    with pytest.raises(InvalidArgument) as raised:
        check_playbook(playbook, check_url)
    assert raised.value.field == field


def test_check_playbook_accepts_valid_playbooks() -> None:
    check_playbook(valid(), check_url)
    every = valid()
    every.condition.breaker.breaker = "api-db"
    every.condition.breaker.open_for.FromSeconds(60)
    del every.actions[:]
    every.actions.extend(
        [
            rpb.Action(
                force_breaker=rpb.ForceBreakerAction(state=breaker_pb2.BREAKER_STATE_CLOSED)
            ),
            rpb.Action(
                set_feature=rpb.SetFeatureAction(
                    feature="search", status=feature_pb2.FEATURE_STATUS_DEGRADED
                )
            ),
            rpb.Action(alert=rpb.AlertAction(severity="info", summary="api-db is open")),
            rpb.Action(webhook=rpb.WebhookAction(url=HOOK)),
        ]
    )
    check_playbook(every, check_url)  # force_breaker takes the breaker of the condition
    anomaly = valid()
    anomaly.condition.signal.CopyFrom(
        rpb.SignalCondition(service="api", signal=rpb.SERVICE_SIGNAL_LATENCY_P99, anomalous=True)
    )
    anomaly.actions[0].failover.SetInParent()
    check_playbook(anomaly, check_url)  # a service's condition: failover is fine


def test_guards_of_fills_in_the_defaults() -> None:
    assert guards_of(rpb.Playbook()) == Guards(
        min_healthy_share=0.5, cooldown_s=300.0, max_actions_per_hour=10, verify_s=60.0
    )
    assert guards_of(valid()) == Guards(0.5, 600.0, 5, 30.0)
    explicit = rpb.Playbook()
    explicit.guards.min_healthy_share = 0.0  # set: kept, though zero
    explicit.guards.cooldown.FromSeconds(0)
    assert guards_of(explicit) == Guards(0.0, 0.0, 10, 60.0)


@pytest.mark.parametrize(
    ("serving", "total", "share", "enough"),
    [
        (0, 0, 0.5, True),  # nothing to keep healthy
        (1, 3, 0.5, False),
        (2, 4, 0.5, True),  # exactly the share
        (2, 3, 1.0, False),
        (3, 3, 1.0, True),
        (0, 5, 0.0, True),
    ],
)
def test_healthy_enough(serving: int, total: int, share: float, enough: bool) -> None:
    assert healthy_enough(serving, total, share) is enough


def test_actions_within_counts_the_last_hour_only() -> None:
    started = [T0 - 3600.0, T0 - 3599.5, T0 - 10, T0]
    assert actions_within(started, T0) == 3
    assert actions_within([], T0) == 0
    assert actions_within(started, T0 + 3600) == 0


def test_remediation_id_sorts_by_start_time_within_a_playbook_and_target() -> None:
    first = remediation_id("heal", "instance api/c", T0)
    assert first == "heal:instance_api_c:001700000000000"
    later = [remediation_id("heal", "instance api/c", T0 + dt) for dt in (0.001, 9.5, 1e6)]
    assert sorted([*reversed(later), first]) == [first, *later]
    assert len({first, *later}) == 4


def test_remediation_id_is_a_valid_key_name_and_unique_for_long_targets() -> None:
    service, pod = "s" * 128, "checkout-production-7f9c8d"
    targets = [f"instance {service}/{pod}-{suffix}" for suffix in ("xk2p", "zz9q")]
    ids = [remediation_id("p" * 128, target, T0) for target in targets]
    assert all(len(i.encode()) <= MAX_NAME_BYTES for i in ids)
    assert ids[0] != ids[1]  # they share their first 100 characters
    # Still sortable: one target's ids differ only in the time.
    again = remediation_id("p" * 128, targets[0], T0 + 1)
    assert again.rsplit(":", 1)[0] == ids[0].rsplit(":", 1)[0] and again > ids[0]
