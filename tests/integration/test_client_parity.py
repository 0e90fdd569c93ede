"""Client and AsyncClient behave alike: the same scenarios against one real replica
(and against an address where nothing listens) give the same answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from bulwark import AsyncClient, Client, Decision, ResourceExhaustedError
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, wait_for

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN


def set_up(address: str) -> None:
    """Breakers, a limit of 3 a minute per user and a bulkhead of one, as an operator would."""
    with grpc.insecure_channel(address) as channel:
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        for name in ("open-dep", "closed-dep"):
            config = breaker_pb2.BreakerConfig(sliding_window_size=4, minimum_number_of_calls=4)
            config.wait_duration_in_open_state.FromSeconds(30)
            breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=name, config=config), timeout=5)
        breakers.ForceState(
            breaker_pb2.ForceStateRequest(name="open-dep", state=FORCED_OPEN, actor="t"), timeout=5
        )
        ratelimit_pb2_grpc.RateLimitServiceStub(channel).PutLimit(
            ratelimit_pb2.PutLimitRequest(
                limit=ratelimit_pb2.Limit(
                    domain="api",
                    name="per-user",
                    descriptor=[ratelimit_pb2.DescriptorEntry(key="user")],
                    rate=ratelimit_pb2.Rate(
                        requests_per_unit=3, unit=ratelimit_pb2.RATE_UNIT_MINUTE
                    ),
                    burst=3,
                )
            ),
            timeout=5,
        )
        bulkhead_pb2_grpc.BulkheadServiceStub(channel).PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="pool", max_concurrent=1)
            ),
            timeout=5,
        )


def outcome(action: Callable[[], Any]) -> Any:
    """The answer, or the error's class and status: what a caller can observe."""
    try:
        return action()
    except Exception as exc:
        return (type(exc).__name__, getattr(exc, "code", None))


def sync_scenarios(client: Client, user: str) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    answers["open"] = client.allow("open-dep")
    answers["closed"] = client.allow("closed-dep")
    answers["refused-block"] = outcome(lambda: client.breaker("open-dep").__enter__())
    answers["limit"] = [client.check("api", {"user": user}) for _ in range(4)]
    answers["require"] = outcome(lambda: client.require("api", {"user": user}))
    with client.permit("pool", ttl=10):
        answers["permit-full"] = outcome(lambda: client.permit("pool", max_wait=0.0).__enter__())
    return answers


async def async_scenarios(client: AsyncClient, user: str) -> dict[str, Any]:
    async def attempt(action: Callable[[], Any]) -> Any:
        try:
            return await action()
        except Exception as exc:
            return (type(exc).__name__, getattr(exc, "code", None))

    answers: dict[str, Any] = {}
    answers["open"] = await client.allow("open-dep")
    answers["closed"] = await client.allow("closed-dep")
    answers["refused-block"] = await attempt(lambda: client.breaker("open-dep").__aenter__())
    answers["limit"] = [await client.check("api", {"user": user}) for _ in range(4)]
    answers["require"] = await attempt(lambda: client.require("api", {"user": user}))
    async with client.permit("pool", ttl=10):
        answers["permit-full"] = await attempt(
            lambda: client.permit("pool", max_wait=0.0).__aenter__()
        )
    return answers


def test_the_same_scenarios_give_the_same_answers(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("r0", [etcd.endpoint])
    wait_for(lambda: (view := get_leader(replica.address)) is not None and view.is_self, 10)
    set_up(replica.address)

    with Client(replica.address, client_id="parity-sync") as client:
        from_sync = sync_scenarios(client, "ann")

    async def run() -> dict[str, Any]:
        async with AsyncClient(replica.address, client_id="parity-async") as client:
            return await async_scenarios(client, "bob")

    from_async = asyncio.run(run())
    assert from_sync == from_async
    assert from_sync["open"] == Decision(False, FORCED_OPEN, "cache")
    assert from_sync["closed"] == Decision(True, CLOSED, "cache")
    assert from_sync["refused-block"] == ("BreakerOpenError", grpc.StatusCode.UNAVAILABLE)
    assert from_sync["limit"] == [True, True, True, False]
    assert from_sync["require"] == ("RateLimitedError", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert from_sync["permit-full"][0] == ResourceExhaustedError.__name__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_same_fallbacks_when_bulwark_is_unreachable() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens
    options: dict[str, Any] = {"timeout": 0.3, "fallback_rate": 2.0}

    def sync_run() -> list[Any]:
        with Client(address, **options) as client:
            answers: list[Any] = [client.allow("dep")]
            for _ in range(4):  # the local breaker's default window needs 100 calls
                client.record("dep", False)
            answers.append([client.check("api", {"user": "x"}) for _ in range(3)])
            answers.append(client.check_local("api", {"user": "x"}))
            answers.append(outcome(lambda: client.lease("api", {"user": "x"}, 5)))
            answers.append(client.staleness())
            return answers

    async def async_run() -> list[Any]:
        async with AsyncClient(address, **options) as client:
            answers: list[Any] = [await client.allow("dep")]
            for _ in range(4):
                client.record("dep", False)
            answers.append([await client.check("api", {"user": "x"}) for _ in range(3)])
            answers.append(client.check_local("api", {"user": "x"}))
            try:
                answers.append(await client.lease("api", {"user": "x"}, 5))
            except Exception as exc:
                answers.append((type(exc).__name__, getattr(exc, "code", None)))
            answers.append(client.staleness())
            return answers

    from_sync, from_async = sync_run(), asyncio.run(async_run())
    assert from_sync == from_async
    assert from_sync[0] == Decision(True, CLOSED, "local")
    assert from_sync[1] == [True, True, False]  # the fallback rate: 2/s, burst 2
    assert from_sync[2] is False
    assert from_sync[3] == ("UnavailableError", grpc.StatusCode.UNAVAILABLE)
    assert from_sync[4] == {
        "breakers": pytest.approx(float("inf")),
        "features": float("inf"),
        "primaries": float("inf"),
    }
