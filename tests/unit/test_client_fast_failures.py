"""Failures travel fast: a burst of failures makes the outcome report urgent.

The rule lives in the I/O-free core (``bulwark._outcomes``), tested here with an
injected clock; the drivers only wake their reporter when it says so. The
driver tests stub out the network (``_run``) and stretch the reporter's timer
to 10 s, so only a wake-up can explain a report that goes out at once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import Iterable

import grpc
import pytest

from bulwark import AsyncClient, Client, UnavailableError
from bulwark._caches import BreakerView
from bulwark._outcomes import (
    NO_HURRY,
    URGENT_FAILURES,
    URGENT_GAP,
    OutcomeBuffer,
    failure_rule,
)
from bulwark._policy import ClientPolicy, Remote
from bulwark._settings import ClientOptions
from bulwark._watching import report_pause
from bulwark.v1 import breaker_pb2, watch_pb2

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
INTERVAL = 0.1
PAUSE = report_pause(INTERVAL)  # 50 ms
WORK = 1e-6  # seconds the modelled reporter spends on each look at the buffer


def view(state: int = CLOSED, threshold: float = 50.0, minimum: int = 100) -> BreakerView:
    return BreakerView(
        "dep", state, None, 1, failure_rate_threshold=threshold, minimum_number_of_calls=minimum
    )


def reported_after(start: float) -> OutcomeBuffer:
    """A buffer whose last report went out at ``start``."""
    buffer = OutcomeBuffer(interval=INTERVAL)
    buffer.add("warm-up", True)
    buffer.take(start)
    return buffer


def simulate(outcomes: Iterable[tuple[float, bool]], end: float) -> list[float]:
    """The times reports go out, for outcomes of breaker "dep" at the given times.

    A model of the drivers' loop with zero-time reports: the reporter sleeps
    ``OutcomeBuffer.wait(now, PAUSE)`` and wakes early when ``add`` says urgent.
    """
    buffer = OutcomeBuffer(interval=INTERVAL)
    rule = failure_rule(view())
    sent: list[float] = []
    wake = 0.0

    def flush(now: float) -> float:
        while buffer.pending and buffer.due(now):
            buffer.take(now)
            sent.append(now)
        # A real loop also spends a little time on each look (and a clock moves on).
        return now + max(buffer.wait(now, PAUSE), 1e-9) + WORK

    for at, success in outcomes:
        while wake <= at:
            wake = flush(wake)
        if buffer.add("dep", success, now=at, rule=rule):
            wake = flush(at)
    while wake <= end:
        wake = flush(wake)
    return sent


# -- the rule, in the buffer -----------------------------------------------------


def test_a_burst_of_failures_is_due_after_the_gap_not_the_interval() -> None:
    buffer = reported_after(10.0)
    for _ in range(URGENT_FAILURES - 1):
        assert not buffer.add("dep", False, now=10.001)
    assert not buffer.due(10.001)
    assert buffer.add("dep", False, now=10.001)  # the fifth in a row
    assert buffer.urgent
    assert not buffer.due(10.004)  # the minimum gap since the last report
    assert buffer.wait(10.001, PAUSE) == pytest.approx(URGENT_GAP - 0.001)
    assert buffer.due(10.0 + URGENT_GAP)
    buffer.take(10.0 + URGENT_GAP)
    assert not buffer.urgent and buffer.wait(10.006, PAUSE) == PAUSE


def test_successes_are_never_urgent_and_due_times_stay_the_interval() -> None:
    buffer = reported_after(10.0)
    for i in range(400):  # fewer than a full batch (500)
        assert not buffer.add("dep", True, now=10.0 + i * 1e-4)
    assert not buffer.urgent
    assert not buffer.due(10.0 + INTERVAL - 1e-6)
    assert buffer.due(10.0 + INTERVAL + 1e-9)
    assert buffer.wait(10.05, PAUSE) == PAUSE


def test_a_failure_after_a_quiet_period_wakes_the_reporter_for_a_report_due_anyway() -> None:
    buffer = reported_after(10.0)
    assert not buffer.add("dep", False, now=10.05)  # reported 50 ms ago: the timer will do
    assert not buffer.due(10.05)
    quiet = 10.0 + INTERVAL + 1e-9
    assert buffer.add("dep", False, now=quiet)  # due anyway: no extra report
    assert buffer.due(quiet)
    assert buffer.wait(quiet, PAUSE) == 0.0


def test_failures_mixed_with_successes_below_the_threshold_never_burst() -> None:
    buffer = reported_after(10.0)
    for _ in range(1000):  # 40 % failures: below the default 50 % threshold
        for success in (False, True, False, True, True):
            assert not buffer.add("dep", success, now=10.001)
    assert not buffer.urgent
    # The score starts from 0, not from history: a dead dependency bursts at once.
    for _ in range(URGENT_FAILURES - 1):
        assert not buffer.add("dep", False, now=10.001)
    assert buffer.add("dep", False, now=10.001)


def test_the_score_is_capped_so_recovery_ends_the_urgency() -> None:
    buffer = reported_after(10.0)
    for _ in range(10_000):
        buffer.add("dep", False, now=10.001)
    buffer.take(10.01)
    for _ in range(3):
        buffer.add("dep", True)
    assert not buffer.add("dep", False, now=10.02)  # 10,000 failures weigh as 5
    assert len(buffer._bursts) == 1
    for _ in range(URGENT_FAILURES):
        buffer.add("dep", True)
    assert buffer._bursts == {}  # memory: only breakers with a score are kept


def test_the_breaker_s_threshold_and_minimum_calls_shape_the_rule() -> None:
    assert failure_rule(None) == (50.0, URGENT_FAILURES)
    assert failure_rule(view(minimum=2)) == (50.0, 2)
    assert failure_rule(view(state=HALF_OPEN)) == (50.0, URGENT_FAILURES)
    assert failure_rule(view(state=OPEN))[1] == 0  # cannot trip again: no hurry
    buffer = reported_after(10.0)
    strict = failure_rule(view(threshold=80.0))
    for _ in range(100):  # 75 % failures < 80 %: a success takes off 4 failures
        for success in (False, False, False, True):
            assert not buffer.add("dep", success, now=10.001, rule=strict)
    only_all = failure_rule(view(threshold=100.0))
    for _ in range(100):  # every success ends the run of failures
        for success in (False,) * (URGENT_FAILURES - 1) + (True,):
            assert not buffer.add("other", success, now=10.001, rule=only_all)
    assert not buffer.add("dep", False, now=11.0, rule=NO_HURRY)
    assert not buffer.urgent


# -- the rule over time ----------------------------------------------------------------


def test_steady_successes_are_reported_once_per_interval_as_before() -> None:
    # 1,000 successes a second for 10 s: the reports fall on the timer's ticks.
    sent = simulate(((i / 1000, True) for i in range(1, 10_000)), 10.0)
    ticks = [(PAUSE + WORK) * k for k in range(1, 200)]
    assert sent == pytest.approx(ticks[::2])  # 0.05, 0.15, ...: every other tick
    assert len(sent) == 100


def test_background_failures_do_not_raise_the_report_rate() -> None:
    # 1,000 calls a second for 10 s, 5 % of them failing: reports stay one per interval.
    rng = random.Random(7)
    sent = simulate(((i / 1000, rng.random() >= 0.05) for i in range(1, 10_000)), 10.0)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= INTERVAL - 1e-9
    assert len(sent) <= 100


def test_a_failure_storm_sends_no_more_than_one_report_per_gap() -> None:
    # 10,000 failures a second for 1 s.
    sent = simulate(((i / 10_000, False) for i in range(1, 10_000)), 1.0)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= URGENT_GAP - 1e-9
    assert len(sent) <= 1 / URGENT_GAP + 1
    assert sent[0] <= 0.001  # the first failure goes at once


# -- the policy ------------------------------------------------------------------------


def policy(state: int = CLOSED, minimum: int = 10) -> ClientPolicy:
    p = ClientPolicy(["a:1"], ClientOptions(), "test", jitter=lambda: 0.0)
    b = breaker_pb2.CircuitBreaker(name="dep", revision=1)
    b.status.state = state
    b.config.minimum_number_of_calls = minimum
    snapshot, synced = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=snapshot, breaker=b), 0.0, 0.0)
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=synced, revision=5), 0.0, 0.0)
    p.record("warm-up", True, False, 10.0)
    assert p.next_report(10.0, drain=False) is not None
    return p


def test_the_policy_sends_a_burst_after_the_gap() -> None:
    p = policy(minimum=3)
    assert not p.record("dep", False, False, 10.001)
    assert not p.leave("dep", RuntimeError("boom"), 0.1, 10.001)
    assert p.leave("dep", RuntimeError("boom"), 0.1, 10.001)  # burst = minimum calls, 3
    assert p.next_report(10.002, drain=False) is None
    assert p.report_wait(10.002, PAUSE) == pytest.approx(0.003)
    remote = p.next_report(10.0 + URGENT_GAP, drain=False)
    assert remote is not None and remote.request.outcomes[0].counts.failures == 3


@pytest.mark.parametrize("state", [OPEN, breaker_pb2.BREAKER_STATE_FORCED_OPEN])
def test_failures_of_an_open_breaker_are_not_urgent(state: int) -> None:
    p = policy(state)
    assert not any(p.record("dep", False, False, 10.2) for _ in range(20))


def test_no_hurry_while_bulwark_is_away_nor_after_a_failed_report() -> None:
    p = policy()
    burst = [p.record("dep", False, False, 10.001) for _ in range(URGENT_FAILURES)]
    assert burst[-1]
    remote = p.next_report(10.01, drain=False)
    assert remote is not None
    with pytest.raises(UnavailableError):
        remote.failed(UnavailableError(grpc.StatusCode.UNAVAILABLE, "down"), 10.02)
    assert p.outcomes.pending == URGENT_FAILURES and not p.outcomes.urgent  # kept, no retry
    p.reachable = False
    assert not any(p.record("dep", False, False, 10.5) for _ in range(20))


# -- the drivers -------------------------------------------------------------------------


@pytest.fixture
def slow_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reporters' timer fires every 10 s: only a wake-up sends a report sooner."""
    import bulwark.aio
    import bulwark.sync

    monkeypatch.setattr(bulwark.aio, "report_pause", lambda interval: 10.0)
    monkeypatch.setattr(bulwark.sync, "report_pause", lambda interval: 10.0)


def know_dep(p: ClientPolicy) -> None:
    """The breakers cache holds "dep", CLOSED: ``breaker("dep")`` decides from it."""
    b = breaker_pb2.CircuitBreaker(name="dep", revision=1)
    b.status.state = CLOSED
    snapshot, synced = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=snapshot, breaker=b), 0.0, 0.0)
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=synced, revision=5), 0.0, 0.0)


def failures(reports: list[breaker_pb2.ReportOutcomesRequest]) -> list[int]:
    return [sum(o.counts.failures for o in r.outcomes) for r in reports]


@pytest.mark.usefixtures("slow_timer")
def test_the_async_reporter_wakes_for_urgent_failures_and_close_drains() -> None:
    async def scenario() -> None:
        client = AsyncClient("127.0.0.1:1", timeout=0.5)
        know_dep(client._policy)
        reports: list[breaker_pb2.ReportOutcomesRequest] = []
        sent = asyncio.Event()

        async def run(remote: Remote[None]) -> None:
            reports.append(remote.request)
            sent.set()

        client._run = run  # type: ignore[method-assign]
        client._reporter = asyncio.create_task(client._report_loop())
        await asyncio.sleep(0)  # the reporter is now asleep on its 10 s timer
        client.record("dep", False)  # the first failure after a quiet period
        await asyncio.wait_for(sent.wait(), 2.0)
        sent.clear()
        for _ in range(URGENT_FAILURES):  # a burst, through breaker() as well
            with pytest.raises(RuntimeError):
                async with client.breaker("dep"):
                    raise RuntimeError("boom")
        await asyncio.wait_for(sent.wait(), 2.0)
        client.record("dep", True)  # not urgent: waits for the timer, or close()
        await asyncio.wait_for(client.close(), 2.0)
        assert client._reporter.done()
        assert failures(reports) == [1, URGENT_FAILURES, 0]
        assert reports[-1].outcomes[0].counts.successes == 1

    asyncio.run(scenario())


@pytest.mark.usefixtures("slow_timer")
def test_the_sync_reporter_wakes_for_urgent_failures_and_close_drains() -> None:
    client = Client("127.0.0.1:1", timeout=0.5)
    know_dep(client._policy)
    reports: list[breaker_pb2.ReportOutcomesRequest] = []
    sent = threading.Event()
    under_lock: list[bool] = []

    def run(remote: Remote[None]) -> None:
        under_lock.append(client._lock._is_owned())  # type: ignore[attr-defined]
        reports.append(remote.request)
        sent.set()

    client._run = run  # type: ignore[method-assign]
    client._reporter = threading.Thread(target=client._report_loop, daemon=True)
    client._reporter.start()
    client.record("dep", False)  # the first failure after a quiet period
    assert sent.wait(2.0)
    sent.clear()
    for _ in range(URGENT_FAILURES):  # a burst, through breaker() as well
        with pytest.raises(RuntimeError), client.breaker("dep"):
            raise RuntimeError("boom")
    assert sent.wait(2.0)
    client.record("dep", True)  # not urgent: waits for the timer, or close()
    closing = threading.Thread(target=client.close, daemon=True)
    closing.start()
    closing.join(2.0)
    assert not closing.is_alive() and not client._reporter.is_alive()
    # The burst may be split if this thread stalls past the gap between two failures.
    assert failures(reports)[0] == 1 and failures(reports)[-1] == 0
    assert sum(failures(reports)) == 1 + URGENT_FAILURES
    assert reports[-1].outcomes[0].counts.successes == 1
    assert not any(under_lock)  # the network is never called under the lock
