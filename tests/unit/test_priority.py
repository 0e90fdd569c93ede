"""The load shedder's order: the RPC's class, then the caller's priority (capped by its
identity's maximum), then fairness between callers. A fake context, no server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from bulwark_server.security.identity import CALLER, Identity
from bulwark_server.security.priority import Priority, claimed
from bulwark_server.security.roles import Role
from bulwark_server.transport.shedding import LoadShedder


class Refused(Exception):
    pass


class Context:
    def __init__(self, priority: str | None = None, peer: str = "ipv4:10.0.0.1:5000") -> None:
        self._metadata = (("bulwark-priority", priority),) if priority else ()
        self._peer = peer
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refused(code, details)


def who(name: str, most: Priority = Priority.DEFAULT) -> Identity:
    return Identity(name, Role.DATAPLANE, "token", max_priority=most)


class Held:
    """Calls that stay in flight until released."""

    def __init__(self, shedder: LoadShedder, last: bool = True) -> None:
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

        async def behavior(request: Any, context: Any) -> str:
            await self.release.wait()
            return "ok"

        self.call = shedder._unary("/bulwark.v1.X/Y", last, behavior)

    async def start(self, caller: Identity | None, priority: str | None = None) -> None:
        token = CALLER.set(caller)
        try:
            self.tasks.append(asyncio.ensure_future(self.call(None, Context(priority))))
        finally:
            CALLER.reset(token)
        await asyncio.sleep(0)

    async def refused(self, caller: Identity | None, priority: str | None = None) -> str:
        token = CALLER.set(caller)
        try:
            with pytest.raises(Refused) as caught:
                await self.call(None, Context(priority))
        finally:
            CALLER.reset(token)
        code, details = caught.value.args
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        return str(details)

    async def admitted(self, caller: Identity | None, priority: str | None = None) -> None:
        await self.start(caller, priority)
        assert not self.tasks[-1].done() or self.tasks[-1].exception() is None


def test_a_claim_is_capped_by_the_identity_s_maximum() -> None:
    assert claimed("critical", Priority.DEFAULT) is Priority.DEFAULT
    assert claimed("critical", Priority.CRITICAL) is Priority.CRITICAL
    assert claimed("sheddable", Priority.CRITICAL) is Priority.SHEDDABLE
    assert claimed(None, Priority.CRITICAL) is Priority.DEFAULT
    assert claimed("urgent!!", Priority.CRITICAL) is Priority.DEFAULT
    assert claimed(" Critical ", Priority.CRITICAL) is Priority.CRITICAL


async def test_sheddable_calls_go_first_then_default_then_critical() -> None:
    shedder = LoadShedder(max_in_flight=10)
    held = Held(shedder)
    many = [who(f"c{i}", Priority.CRITICAL) for i in range(10)]  # fairness out of the way
    for caller in many[:5]:
        await held.admitted(caller, "sheddable")
    assert "sheddable" in await held.refused(many[5], "sheddable")  # half the bound
    for caller in many[5:9]:
        await held.admitted(caller)
    assert "default" in await held.refused(many[9])  # 90 % of the bound
    await held.admitted(many[9], "critical")
    assert "critical" in await held.refused(who("late", Priority.CRITICAL), "critical")
    held.release.set()
    assert await asyncio.gather(*held.tasks) == ["ok"] * 10
    assert shedder.in_flight == 0 and not shedder.by_caller


async def test_a_caller_cannot_promote_itself() -> None:
    shedder = LoadShedder(max_in_flight=10)
    held = Held(shedder)
    for i in range(9):
        await held.admitted(who(f"c{i}", Priority.CRITICAL))
    # Claims critical, may claim default at most: refused past 90 %.
    assert "default" in await held.refused(who("pushy"), "critical")
    held.release.set()
    await asyncio.gather(*held.tasks)


async def test_one_caller_s_flood_leaves_room_for_the_others() -> None:
    shedder = LoadShedder(max_in_flight=10)
    held = Held(shedder)
    flooder, other = who("flooder", Priority.CRITICAL), who("other", Priority.CRITICAL)
    for _ in range(7):
        await held.admitted(flooder, "critical")  # alone: its share is the whole bound
    await held.admitted(other, "critical")
    # Contended (half the bound in flight), two callers: a share is 5, it holds 7.
    assert "fair share" in await held.refused(flooder, "critical")
    await held.admitted(other, "critical")
    held.release.set()
    await asyncio.gather(*held.tasks)


async def test_without_authentication_callers_are_told_apart_by_address() -> None:
    shedder = LoadShedder(max_in_flight=4)
    release = asyncio.Event()

    async def behavior(request: Any, context: Any) -> str:
        await release.wait()
        return "ok"

    call = shedder._unary("/bulwark.v1.X/Y", True, behavior)
    anonymous = Identity("anonymous", Role.ADMIN, "none", max_priority=Priority.CRITICAL)
    token = CALLER.set(anonymous)
    try:
        tasks = [asyncio.ensure_future(call(None, Context(peer="ipv4:10.0.0.1:1")))]
        tasks.append(asyncio.ensure_future(call(None, Context(peer="ipv4:10.0.0.1:2"))))
        tasks.append(asyncio.ensure_future(call(None, Context(peer="ipv4:10.0.0.2:1"))))
        await asyncio.sleep(0)
        assert shedder.by_caller == {"ipv4:10.0.0.1": 2, "ipv4:10.0.0.2": 1}
    finally:
        CALLER.reset(token)
    release.set()
    await asyncio.gather(*tasks)


def test_the_client_sends_its_priority_with_every_call_and_refuses_an_unknown_one() -> None:
    from bulwark._settings import ClientOptions

    assert ("bulwark-priority", "sheddable") in ClientOptions(priority="sheddable").metadata()
    assert not any(k == "bulwark-priority" for k, _ in ClientOptions().metadata())
    with pytest.raises(ValueError, match="priority"):
        ClientOptions(priority="urgent")


def test_the_interceptors_shed_sheddable_calls_first_and_never_throttle_critical_ones() -> None:
    import contextlib

    from bulwark._adaptive import (
        AdaptiveThrottle,
        Gradient2Limiter,
        Gradient2Settings,
    )
    from bulwark._backpressure import Downstream, priority_of
    from bulwark._guard import Refusal

    limiter = Gradient2Limiter(Gradient2Settings(initial_limit=4, min_limit=1, max_limit=4))
    throttle = AdaptiveThrottle(random=lambda: 0.0)  # rejects whenever p > 0
    downstream = Downstream("payments", limiter, throttle, contextlib.nullcontext())
    flights = [downstream.admit(0.0, "sheddable"), downstream.admit(0.0, "sheddable")]
    with pytest.raises(Refusal) as shed:
        downstream.admit(0.0, "sheddable")  # half the limit of 4 is in flight
    assert shed.value.rejected_by == "concurrency" and "sheddable" in shed.value.details
    flights += [downstream.admit(0.0), downstream.admit(0.0, "critical")]
    with pytest.raises(Refusal):
        downstream.admit(0.0, "critical")  # the limit itself
    for flight in flights:
        flight.abandon()

    for _ in range(5):
        throttle.record(1.0, accepted=False)  # the downstream refuses everything
    with pytest.raises(Refusal) as throttled:
        downstream.check_throttle(1.0)
    assert throttled.value.rejected_by == "throttle"
    downstream.check_throttle(1.0, "critical")  # never throttled locally

    assert priority_of((("bulwark-priority", "sheddable"),)) == "sheddable"
    assert priority_of((("bulwark-priority", "urgent"),)) == "default"
    assert priority_of(None) == "default"
