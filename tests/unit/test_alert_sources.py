"""The pure parts of what Bulwark alerts on by itself: a breaker's recent callers, which
promotions are failovers, and how long a moment is alerted on."""

from __future__ import annotations

from typing import Any

from bulwark.v1 import alert_pb2, registry_pb2
from bulwark_server import timestamps
from bulwark_server.alerts.leader import MAX_GROUP, AlertLeader, GroupKey
from bulwark_server.alerts.sources import RECENT_S, recent
from bulwark_server.breakers.callers import RecentCallers
from bulwark_server.registry.failover import LEFT, REPORTED_NOT_SERVING, failed_over


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_callers_are_the_reporters_of_the_last_minutes_in_name_order() -> None:
    clock = Clock()
    callers = RecentCallers(clock, recent=60)
    callers.note("web-2", ["payments", "search"])
    clock.now += 30
    callers.note("web-1", ["payments"])
    callers.note("", ["payments"])  # a report without a reporter names no one
    assert callers.of("payments") == ["web-1", "web-2"]
    assert callers.of("search") == ["web-2"]
    clock.now += 31  # web-2 last reported 61 s ago
    assert callers.of("payments") == ["web-1"]
    assert callers.of("search") == []
    callers.note("web-2", ["payments"])  # back again
    assert callers.of("payments") == ["web-1", "web-2"]
    assert callers.of("nobody-reports-this") == []


def test_callers_per_breaker_are_capped_forgetting_the_stalest() -> None:
    clock = Clock()
    callers = RecentCallers(clock, cap=3)
    for i in range(4):
        clock.now += 1
        callers.note(f"w{i}", ["payments"])
    clock.now += 1
    callers.note("w1", ["payments"])  # seen again: now the freshest
    callers.note("w4", ["payments"])
    assert callers.of("payments") == ["w1", "w3", "w4"]


def test_a_failover_replaced_a_primary_and_no_one_asked_for_it() -> None:
    def record(instance: str, previous: str, reason: str) -> registry_pb2.Primary:
        return registry_pb2.Primary(
            service="s", instance_id=instance, previous_instance_id=previous, reason=reason
        )

    assert failed_over(record("b", "a", f"primary a {LEFT}"))
    assert failed_over(record("b", "a", f"primary a {REPORTED_NOT_SERVING}"))
    # A primary that died during a switchover failed over all the same.
    assert failed_over(record("c", "a", f"primary a {LEFT}"))
    assert not failed_over(record("b", "a", "switchover: primary a drained"))
    assert not failed_over(record("b", "a", "primary a reported DRAINING"))
    assert not failed_over(record("b", "a", "switchover abandoned: no SERVING backup; b stays"))
    assert not failed_over(record("a", "", "promoted: first SERVING instance"))
    assert not failed_over(record("", "a", f"primary a {LEFT}; no SERVING backup"))


def test_a_moment_is_alerted_on_for_a_while_after_it() -> None:
    assert recent(100.0, 100.0)
    assert recent(100.0, 100.0 + RECENT_S - 1)
    assert not recent(100.0, 100.0 + RECENT_S)
    assert recent(100.0, 99.0)  # recorded by a replica whose clock runs ahead


async def test_a_storm_goes_out_in_groups_of_at_most_max_group() -> None:
    route = alert_pb2.AlertRoute(
        name="all",
        receivers=[alert_pb2.Receiver(name="team", webhook=alert_pb2.WebhookReceiver(url="x"))],
    )
    leader = AlertLeader(None, None, None, None)  # type: ignore[arg-type]  # _plan needs none
    groups: dict[GroupKey, list[Any]] = {}
    changed: dict[str, alert_pb2.Alert] = {}
    for n in range(MAX_GROUP * 2 + 20):
        alert = alert_pb2.Alert(
            fingerprint=f"{n:016x}",
            state=alert_pb2.ALERT_STATE_FIRING,
            starts_at=timestamps.at(1000.0),
        )
        alert.labels.update({"alertname": "BulwarkBreakerOpen", "breaker": f"b{n}"})
        await leader._plan(alert, [route], [], 1000.0, changed, groups)
    (chunks,) = groups.values()  # one group: the same alertname
    assert [len(c.alerts) for c in chunks] == [MAX_GROUP, MAX_GROUP, 20]
    assert {c.transition for c in chunks} == {"firing"}
