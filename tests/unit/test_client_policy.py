"""Unit tests for the shared ClientPolicy: the behaviours chosen where Client and
AsyncClient used to differ, with an injected clock (``now``) and no server."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from bulwark import AsyncClient, Client, UnavailableError
from bulwark._core import ClientPolicy, Decision, Remote, WatchRetry, report_pause, serving
from bulwark._settings import ClientOptions
from bulwark.v1 import breaker_pb2, ratelimit_pb2, watch_pb2

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED


def policy(*addresses: str, **options: object) -> ClientPolicy:
    return ClientPolicy(
        list(addresses) or ["a:1"], ClientOptions(**options), "test", jitter=lambda: 0.0
    )


def synced(p: ClientPolicy, state: int = CLOSED, now: float = 100.0) -> None:
    b = breaker_pb2.CircuitBreaker(name="dep", revision=1)
    b.status.state = state
    snapshot = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=snapshot, breaker=b), now, now)
    done = watch_pb2.WATCH_EVENT_TYPE_SYNCED
    p.on_event(p.breakers, breaker_pb2.WatchBreakersResponse(type=done, revision=5), now, now)


def test_allow_from_the_cache_hands_out_one_shared_decision() -> None:
    p = policy()
    synced(p)
    first, second = p.allow("dep", 100.0), p.allow("dep", 101.0)
    assert first == Decision(True, CLOSED, "cache")
    assert first is second  # the hot path allocates nothing


def test_allow_the_cache_cannot_decide_names_the_remote_call_and_its_fallback() -> None:
    p = policy()
    synced(p)
    remote = p.allow("unknown", 100.0)
    assert isinstance(remote, Remote) and remote.method == "Allow" and not remote.idempotent
    # No replica answered: the local breaker decides; any other error is the caller's.
    local = remote.failed(UnavailableError(UNAVAILABLE, "down"), 100.0)
    assert local == Decision(True, CLOSED, "local")
    with pytest.raises(ValueError):
        remote.failed(ValueError("x"), 100.0)  # type: ignore[arg-type]


def test_report_pause_is_half_the_interval_within_5_to_50_ms() -> None:
    # Drift: AsyncClient slept interval/2 unbounded (30 s with report_interval=60, a
    # busy loop with 0); Client capped it at 50 ms. Both now follow Client.
    assert report_pause(60.0) == 0.05
    assert report_pause(0.1) == 0.05
    assert report_pause(0.02) == 0.01
    assert report_pause(0.0) == 0.005


def test_a_later_endpoint_is_chosen_when_its_turn_comes() -> None:
    # Drift: Client fixed the candidates when a call started, AsyncClient looked at
    # each endpoint's backoff when its turn came. Both now decide at the turn.
    p = policy("a:1", "b:1", "c:1")
    p.endpoints.failed("b:1", 0.0)  # b backs off until 0.1
    plan = p.plan(idempotent=True, now=0.0)
    assert plan.next_address(0.0) == "a:1"
    assert p.attempt_failed(plan, "a:1", UNAVAILABLE, 1.0)  # a timed out after a second
    assert plan.next_address(1.0) == "b:1"  # b's backoff ended meanwhile: worth a try
    p.endpoints.failed("c:1", 1.0)  # another caller saw c fail meanwhile
    assert p.attempt_failed(plan, "b:1", UNAVAILABLE, 1.0)
    assert plan.next_address(1.0) is None  # c is skipped, not waited for
    error = p.exhausted(plan, UnavailableError(UNAVAILABLE, "down"))
    assert isinstance(error, UnavailableError) and not p.reachable


def test_when_bulwark_counts_as_unreachable() -> None:
    p = policy("a:1")
    plan = p.plan(idempotent=False, now=0.0)
    assert plan.next_address(0.0) == "a:1"
    # A deadline on a call that may have been applied: not retried, and Bulwark is away.
    assert not p.attempt_failed(plan, "a:1", DEADLINE, 0.0)
    assert not p.reachable
    p.attempt_succeeded("a:1")
    assert p.reachable
    # A call that tried no endpoint at all counts as unreachable too.
    plan = p.plan(idempotent=False, now=1.0)
    assert plan.next_address(1.0) == "a:1"
    assert plan.next_address(1.0) is None
    p.exhausted(plan, None)
    assert not p.reachable
    # A refusal by a replica that answered says nothing about reachability.
    p.attempt_succeeded("a:1")
    plan = p.plan(idempotent=False, now=2.0)
    plan.next_address(2.0)
    assert not p.attempt_failed(plan, "a:1", grpc.StatusCode.PERMISSION_DENIED, 2.0)
    assert p.reachable
    # A watch event proves it reachable again; a watch ending AWAY makes it away.
    p.on_watch_end(p.features, "a:1", UNAVAILABLE, 3.0)
    assert not p.reachable
    synced(p)
    assert p.reachable


def test_records_while_away_feed_the_local_breaker_until_a_sync() -> None:
    p = policy()
    p.reachable = False
    p.record("dep", False, False, 0.0)
    assert "dep" in p.local
    synced(p)
    assert p.local == {}


def test_a_refused_watch_backs_off_doubling_and_warns_once() -> None:
    # Drift: Client retried a refused watch after 0.05-0.15 s, then 0.2, 0.4 ...;
    # AsyncClient after 0.2, 0.4 ... and never reset the count after a live stream.
    retry = WatchRetry(jitter=lambda: 0.0)
    waits = [retry.ended(grpc.StatusCode.PERMISSION_DENIED, False) for _ in range(7)]
    assert [w for w, _ in waits] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert [lvl for _, lvl in waits] == [logging.WARNING] + [logging.DEBUG] * 6
    assert retry.ended(UNAVAILABLE, False) == (0.05, logging.DEBUG)  # away: retry soon
    assert retry.ended(grpc.StatusCode.PERMISSION_DENIED, False)[1] == logging.WARNING
    retry.ended(grpc.StatusCode.PERMISSION_DENIED, False)
    # A stream that was live, then refused: a new refusal, warned about again.
    assert retry.ended(grpc.StatusCode.PERMISSION_DENIED, True) == (0.2, logging.WARNING)


def test_a_resumed_watch_is_live_when_the_replica_serves() -> None:
    # Drift: AsyncClient took a connected channel as proof, Client a health check.
    assert serving(1, None) is True  # SERVING
    assert serving(2, None) is None  # NOT_SERVING: wait for the stream's first event
    assert serving(None, grpc.StatusCode.UNIMPLEMENTED) is True
    assert serving(None, UNAVAILABLE) is False
    assert serving(None, DEADLINE) is False
    assert serving(None, grpc.StatusCode.PERMISSION_DENIED) is None


def test_a_breaker_block_counts_errors_and_slow_calls_but_not_cancellations() -> None:
    p = policy(slow_call=1.0)
    p.leave("dep", None, 0.1, 0.0)
    p.leave("dep", None, 2.0, 0.0)  # slow
    p.leave("dep", RuntimeError("boom"), 0.1, 0.0)
    # The caller gave up, or the process stops: nothing is known of the downstream.
    for stop in (asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(0)):
        p.leave("dep", stop, 0.1, 0.0)
    assert p.outcomes.pending == 3


def test_failed_reports_are_kept_only_when_undelivered() -> None:
    p = policy()
    p.record("dep", False, False, 0.0)
    remote = p.next_report(0.0, drain=False)
    assert remote is not None and p.outcomes.pending == 0
    with pytest.raises(UnavailableError):
        remote.failed(UnavailableError(UNAVAILABLE, "down"), 0.0)
    assert p.outcomes.pending == 1  # not delivered: kept
    remote = p.next_report(10.0, drain=True)
    assert remote is not None
    with pytest.raises(UnavailableError):
        remote.failed(UnavailableError(DEADLINE, "late"), 10.0)
    assert p.outcomes.pending == 0  # may have been applied: dropped
    assert p.next_report(20.0, drain=True) is None


def test_start_after_close_raises_and_a_second_start_does_nothing() -> None:
    # Drift: AsyncClient.start() twice started every task twice, and after close()
    # started them again; it now behaves like Client.start().
    async def scenario() -> None:
        client = AsyncClient("127.0.0.1:1", timeout=0.05)
        await client.start()
        tasks = list(client._tasks)
        await client.start()
        assert client._tasks == tasks
        await client.close()
        with pytest.raises(RuntimeError):
            await client.start()
        assert client.instances("svc") == []  # no watch starts once closed

    asyncio.run(scenario())
    client = Client("127.0.0.1:1", timeout=0.05)
    client.start()
    client.start()
    client.close()
    with pytest.raises(RuntimeError):
        client.start()
    assert client.instances("svc") == []


def test_every_core_module_is_io_free() -> None:
    import importlib
    from pathlib import Path

    for name in (
        "_states",
        "_caches",
        "_local_breaker",
        "_quota",
        "_outcomes",
        "_endpoints",
        "_policy",
        "_watching",
        "_guard",
    ):
        module = importlib.import_module(f"bulwark.{name}")
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        for forbidden in ("bulwark_server", "asyncio", "threading", "time"):
            assert f"import {forbidden}\n" not in source, (name, forbidden)
            assert f"from {forbidden} " not in source, (name, forbidden)


@pytest.mark.parametrize(
    "unit", [ratelimit_pb2.RATE_UNIT_SECOND, ratelimit_pb2.RATE_UNIT_UNSPECIFIED]
)
def test_a_lease_of_nothing_admits_nothing_until_it_expires(unit: int) -> None:
    """A limit of rate 0 grants 0 (a previous server version sent no unit with it)."""
    p = policy()
    remote = p.lease("edge", {"remote_address": "50.0.0.5"}, 10)
    response = ratelimit_pb2.LeaseQuotaResponse(granted=0, limit=ratelimit_pb2.Rate(unit=unit))
    response.expires_at.FromSeconds(1_010)
    assert remote.done(response, 100.0, 1_000.0) == 0
    assert not p.check_local("edge", {"remote_address": "50.0.0.5"}, 1, 100.0)
    assert not p.check_local("edge", {"remote_address": "50.0.0.5"}, 1, 105.0)
