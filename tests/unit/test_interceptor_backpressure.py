"""Unit tests for the interceptors' adaptive concurrency and throttling, with fakes only.

No network: the continuation is a fake that answers a chosen status, the clock a number
the test moves, the throttle's draw a fixed value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest

from bulwark._adaptive import AdaptiveThrottle, Gradient2Limiter
from bulwark._backpressure import Backpressure
from bulwark.interceptors import (
    REJECTED_BY_KEY,
    AsyncBulwarkInterceptor,
    BulwarkInterceptor,
    Gradient2Settings,
    Guard,
    RejectedCall,
    ThrottleSettings,
)

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CANCELLED = grpc.StatusCode.CANCELLED

METHOD = "/demo.Downstream/Call"
# Two calls at most; a floor of 1 so that drops can show.
TWO = Gradient2Settings(initial_limit=2, min_limit=1, max_limit=2)


class Draw:
    """The throttle's random draw, set by the test: 1.0 never rejects, 0.0 rejects at p > 0."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Details:
    method: str = METHOD
    timeout: float | None = None
    metadata: Any = None
    credentials: Any = None
    wait_for_ready: Any = None


@dataclass
class Decision:
    allowed: bool
    retry_after: float | None = None
    source: str = "cache"


@dataclass
class FakeClient:
    """The parts of a Bulwark client the interceptors use; logs every call in order."""

    clock: Clock
    allow_answer: bool = True
    allow_takes: float = 0.0
    log: list[str] = field(default_factory=list)
    outcomes: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, domain: str, descriptor: Any) -> bool:
        self.log.append("check")
        return True

    def allow(self, name: str) -> Decision:
        self.log.append("allow")
        self.clock.now += self.allow_takes
        return Decision(self.allow_answer)

    def record(self, name: str, success: bool, slow: bool = False) -> None:
        self.outcomes.append((name, success))

    @contextlib.contextmanager
    def permit(self, name: str) -> Iterator[None]:
        self.log.append("permit")
        try:
            yield
        finally:
            self.log.append("permit-released")

    def record_call(self, service: str, *, failed: bool, latency: float) -> None:
        self.log.append("record_call")


class AsyncFakeClient(FakeClient):
    async def check(self, domain: str, descriptor: Any) -> bool:  # type: ignore[override]
        return FakeClient.check(self, domain, descriptor)

    async def allow(self, name: str) -> Decision:  # type: ignore[override]
        return FakeClient.allow(self, name)

    @contextlib.asynccontextmanager
    async def permit(self, name: str) -> AsyncIterator[None]:  # type: ignore[override]
        with FakeClient.permit(self, name):
            yield


class AioCall:
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    async def code(self) -> grpc.StatusCode:
        return self._code


class AioDownstream:
    """A continuation: each call takes ``latency`` on the fake clock and answers ``code``.

    With ``gate`` set, calls wait for it before answering (so several are in flight).
    """

    def __init__(self, clock: Clock, code: grpc.StatusCode = OK, latency: float = 0.010) -> None:
        self.clock = clock
        self.code = code
        self.latency = latency
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None

    async def __call__(self, details: Any, request: Any) -> AioCall:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.gate is not None:
            await self.gate.wait()
        self.clock.now += self.latency
        return AioCall(self.code)


def aio_interceptor(
    rules: dict[str, Guard], clock: Clock, client: Any = None, draw: Draw | None = None
) -> AsyncBulwarkInterceptor:
    return AsyncBulwarkInterceptor(client, rules, clock=clock, random=draw or Draw())


async def aio_call(
    interceptor: AsyncBulwarkInterceptor, downstream: AioDownstream, method: str = METHOD
) -> grpc.StatusCode:
    call = await interceptor.intercept_unary_unary(downstream, Details(method), b"x")
    return await call.code()


def rejected_by(error: Any) -> str | None:
    return dict(error.trailing_metadata() or ()).get(REJECTED_BY_KEY)


def state(interceptor: Any, key: str = "/demo.Downstream/") -> Any:
    return interceptor.backpressure()[key]


def limiter_of(interceptor: Any) -> Gradient2Limiter:
    limiter = interceptor._backpressure.downstream("/demo.Downstream/").limiter
    assert limiter is not None
    return limiter


def throttle_of(interceptor: Any) -> AdaptiveThrottle:
    throttle = interceptor._backpressure.downstream("/demo.Downstream/").throttle
    assert throttle is not None
    return throttle


# --- the Guard and the interceptor's construction ----------------------------------------


def test_guard_fields_are_checked_where_the_rules_are_written() -> None:
    assert Guard(adaptive=True, throttle=ThrottleSettings(k=1.5)).throttle == ThrottleSettings(
        k=1.5
    )
    with pytest.raises(TypeError, match="adaptive"):
        Guard(adaptive=20)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="throttle"):
        Guard(throttle=2.0)  # type: ignore[arg-type]


def test_backpressure_alone_needs_no_client_but_other_steps_do() -> None:
    AsyncBulwarkInterceptor(None, {"/a.A/": Guard(adaptive=True, throttle=True)})
    BulwarkInterceptor(None, {"/a.A/": Guard(adaptive=True)})
    for guard in (Guard("b"), Guard(bulkhead="p"), Guard(limit=("d", {})), Guard(service="s")):
        with pytest.raises(ValueError, match="need a Bulwark client"):
            AsyncBulwarkInterceptor(None, {"/a.A/": guard})
        with pytest.raises(ValueError, match="need a Bulwark client"):
            BulwarkInterceptor(None, {"/a.A/": guard})


def test_state_is_per_downstream_service_else_per_rule() -> None:
    rules = {
        "/a.A/": Guard(adaptive=True),
        "/a.A/Get": Guard(adaptive=True),  # its own rule: its own limiter
        "/b.B/": Guard(service="b", adaptive=TWO, throttle=True),
        "/b.B/Put": Guard(service="b", adaptive=TWO, throttle=True, breaker="b"),
        "/c.C/": Guard(breaker="c"),  # no backpressure: no state
    }
    backpressure = Backpressure(rules)
    assert backpressure.downstream("b") is backpressure.for_rule("/b.B/")
    assert backpressure.for_rule("/b.B/Put") is backpressure.for_rule("/b.B/")
    assert backpressure.for_rule("/a.A/") is not backpressure.for_rule("/a.A/Get")
    assert backpressure.for_rule("/c.C/") is None
    assert set(backpressure.states(0.0)) == {"/a.A/", "/a.A/Get", "b"}
    # A part set in one rule of a service holds for all of them...
    merged = Backpressure(
        {"/b.B/": Guard(service="b", adaptive=True), "/b.B/X": Guard(service="b", throttle=True)}
    ).downstream("b")
    assert merged is not None and merged.limiter is not None and merged.throttle is not None
    # ...and two rules setting it differently are refused.
    with pytest.raises(ValueError, match="must agree"):
        Backpressure(
            {
                "/b.B/": Guard(service="b", adaptive=True),
                "/b.B/X": Guard(service="b", adaptive=False),
            }
        )


def test_adaptive_true_is_gradient2s_defaults_and_throttle_true_the_books() -> None:
    backpressure = Backpressure({"/a.A/": Guard(adaptive=True, throttle=True)})
    downstream = backpressure.for_rule("/a.A/")
    assert downstream is not None and downstream.limiter is not None
    assert downstream.throttle is not None
    assert downstream.limiter.settings == Gradient2Settings()
    assert downstream.limiter.limit == 20
    assert downstream.throttle.settings == ThrottleSettings(k=2.0, window_seconds=120)


# --- adaptive concurrency (asyncio) ------------------------------------------------------


async def test_at_the_limit_calls_fail_fast_and_typed() -> None:
    clock = Clock()
    interceptor = aio_interceptor({"/demo.Downstream/": Guard(adaptive=TWO)}, clock)
    downstream = AioDownstream(clock)
    downstream.gate = asyncio.Event()
    pending = [asyncio.ensure_future(aio_call(interceptor, downstream)) for _ in range(2)]
    await asyncio.sleep(0)
    assert state(interceptor).in_flight == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert err.value.code() == EXHAUSTED
    assert rejected_by(err.value) == "concurrency"
    assert "adaptive concurrency limit of '/demo.Downstream/' reached: 2" in (
        err.value.details() or ""
    )
    assert downstream.calls == 2  # the refused call never reached the downstream
    downstream.gate.set()
    assert await asyncio.gather(*pending) == [OK, OK]
    assert state(interceptor).in_flight == 0
    assert await aio_call(interceptor, downstream) == OK


@pytest.mark.parametrize(
    ("code", "sampled", "dropped"),
    [
        (OK, True, False),
        (DEADLINE, False, True),
        (UNAVAILABLE, False, True),
        (EXHAUSTED, False, True),
        (INVALID, False, False),
        (CANCELLED, False, False),
    ],
)
async def test_the_permit_is_released_whatever_the_answer(
    code: grpc.StatusCode, sampled: bool, dropped: bool
) -> None:
    clock = Clock()
    interceptor = aio_interceptor({"/demo.Downstream/": Guard(adaptive=TWO)}, clock)
    limiter = limiter_of(interceptor)
    before = limiter.estimate
    assert await aio_call(interceptor, AioDownstream(clock, code)) == code
    assert limiter.in_flight == 0
    # OK feeds the RTT to the long average; drops cut the limit; the rest leave both alone.
    assert (limiter.long_rtt is not None) == sampled
    assert (limiter.estimate < before) == dropped


async def test_the_permit_is_released_when_the_call_raises_or_is_cancelled() -> None:
    clock = Clock()
    interceptor = aio_interceptor({"/demo.Downstream/": Guard(adaptive=TWO)}, clock)
    limiter = limiter_of(interceptor)

    # An inner interceptor's AioRpcError is an answer: a drop here.
    downstream = AioDownstream(clock)
    downstream.error = grpc.aio.AioRpcError(
        DEADLINE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="late"
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await aio_call(interceptor, downstream)
    assert limiter.in_flight == 0 and limiter.estimate < 2

    # Any other exception is no answer: the slot is freed without a sample.
    downstream.error = RuntimeError("serializer failed")
    with pytest.raises(RuntimeError):
        await aio_call(interceptor, downstream)
    assert limiter.in_flight == 0 and limiter.long_rtt is None

    # The caller cancelling while the call is in flight.
    downstream.error = None
    downstream.gate = asyncio.Event()
    task = asyncio.ensure_future(aio_call(interceptor, downstream))
    await asyncio.sleep(0)
    assert limiter.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.in_flight == 0 and limiter.long_rtt is None


async def test_the_rtt_is_the_calls_own_not_the_steps_before_it() -> None:
    clock = Clock()
    client = AsyncFakeClient(clock, allow_takes=0.5)  # a slow breaker decision
    rules = {"/demo.Downstream/": Guard("b", adaptive=TWO)}
    interceptor = aio_interceptor(rules, clock, client)
    limiter = limiter_of(interceptor)
    assert await aio_call(interceptor, AioDownstream(clock, latency=0.010)) == OK
    assert limiter.long_rtt == pytest.approx(0.010)
    assert client.outcomes == [("b", True)]


async def test_limit_refusal_comes_before_the_breaker_and_a_breaker_refusal_frees_the_slot() -> (
    None
):
    clock = Clock()
    client = AsyncFakeClient(clock)
    rules = {"/demo.Downstream/": Guard("b", adaptive=TWO, limit=("out", {"dep": "d"}))}
    interceptor = aio_interceptor(rules, clock, client)
    limiter = limiter_of(interceptor)
    downstream = AioDownstream(clock)
    downstream.gate = asyncio.Event()
    pending = [asyncio.ensure_future(aio_call(interceptor, downstream)) for _ in range(2)]
    await asyncio.sleep(0)
    client.log.clear()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert rejected_by(err.value) == "concurrency"
    # The rate limit was asked, the breaker was not: a HALF_OPEN trial call the limit
    # refused would never report.
    assert client.log == ["check"]
    downstream.gate.set()
    await asyncio.gather(*pending)

    client.allow_answer = False
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert rejected_by(err.value) == "breaker"
    assert limiter.in_flight == 0


# --- the throttle (asyncio) ----------------------------------------------------------------


async def test_throttle_counts_answers_and_rejects_locally_when_refused() -> None:
    clock = Clock()
    rules = {"/demo.Downstream/": Guard(throttle=True)}
    draw = Draw()
    interceptor = aio_interceptor(rules, clock, draw=draw)
    throttle = throttle_of(interceptor)
    downstream = AioDownstream(clock)

    # Accepted answers: everything but a refusal, a timeout included. Cancelled: not counted.
    for code in (OK, INVALID, DEADLINE, CANCELLED):
        downstream.code = code
        assert await aio_call(interceptor, downstream) == code
    assert throttle.counts(clock()) == (3, 3)

    # Refusals: requests grow, accepts do not; once requests > 2 * accepts, p > 0.
    downstream.code = UNAVAILABLE
    for _ in range(3):
        assert await aio_call(interceptor, downstream) == UNAVAILABLE
    downstream.code = EXHAUSTED
    for _ in range(3):
        assert await aio_call(interceptor, downstream) == EXHAUSTED
    assert throttle.counts(clock()) == (9, 3)
    assert state(interceptor).reject_probability == pytest.approx((9 - 2 * 3) / 10)

    calls = downstream.calls
    draw.value = 0.0  # rejects whenever p > 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert err.value.code() == EXHAUSTED
    assert rejected_by(err.value) == "throttle"
    assert "adaptive throttle of '/demo.Downstream/'" in (err.value.details() or "")
    assert downstream.calls == calls  # rejected locally
    assert throttle.counts(clock()) == (10, 3)  # a local rejection counts as a request

    # Two minutes later the window has forgotten it all.
    clock.now += 121
    downstream.code = OK
    assert await aio_call(interceptor, downstream) == OK
    assert throttle.counts(clock()) == (1, 1)


async def test_throttle_runs_first_and_spends_no_quota_or_permit() -> None:
    clock = Clock()
    client = AsyncFakeClient(clock)
    rules = {"/demo.Downstream/": Guard("b", throttle=True, limit=("out", {"dep": "d"}))}
    draw = Draw()
    interceptor = aio_interceptor(rules, clock, client, draw=draw)
    downstream = AioDownstream(clock, UNAVAILABLE)
    for _ in range(2):
        await aio_call(interceptor, downstream)  # 2 requests, 0 accepts: p = 2/3
    client.log.clear()
    draw.value = 0.0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert rejected_by(err.value) == "throttle"
    assert client.log == []  # neither the rate limit nor the breaker was asked
    # The breaker saw only what reached the downstream.
    assert client.outcomes == [("b", False), ("b", False)]


async def test_unguarded_methods_and_guards_without_backpressure_are_untouched() -> None:
    clock = Clock()
    client = AsyncFakeClient(clock)
    rules = {"/demo.Downstream/": Guard(adaptive=TWO), "/demo.Other/": Guard("b")}
    interceptor = aio_interceptor(rules, clock, client)
    downstream = AioDownstream(clock)
    assert await aio_call(interceptor, downstream, "/demo.Unruled/X") == OK
    assert await aio_call(interceptor, downstream, "/demo.Other/X") == OK
    assert state(interceptor).in_flight == 0 and state(interceptor).limit == 2
    assert state(interceptor).reject_probability is None
    assert client.outcomes == [("b", True)]


# --- the synchronous interceptor -------------------------------------------------------------


class SyncOutcome:
    """A blocking call's outcome or a ``.future()``: done at once unless ``pending``."""

    def __init__(self, code: grpc.StatusCode, pending: bool = False) -> None:
        self._code = code
        self._done = not pending
        self._callbacks: list[Callable[[Any], None]] = []

    def code(self) -> grpc.StatusCode:
        return self._code

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def complete(self) -> None:
        self._done = True
        for callback in self._callbacks:
            callback(self)


class SyncDownstream:
    def __init__(self, clock: Clock, code: grpc.StatusCode = OK, latency: float = 0.010) -> None:
        self.clock = clock
        self.code = code
        self.latency = latency
        self.pending = False
        self.calls = 0
        self.error: BaseException | None = None

    def __call__(self, details: Any, request: Any) -> SyncOutcome:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.clock.now += self.latency
        return SyncOutcome(self.code, self.pending)


def sync_interceptor(
    rules: dict[str, Guard], clock: Clock, client: Any = None, draw: Draw | None = None
) -> BulwarkInterceptor:
    return BulwarkInterceptor(client, rules, clock=clock, random=draw or Draw())


def test_sync_refusals_are_rejected_calls_with_metadata() -> None:
    clock = Clock()
    rules = {"/demo.Downstream/": Guard(adaptive=TWO, throttle=True)}
    draw = Draw()
    interceptor = sync_interceptor(rules, clock, draw=draw)
    downstream = SyncDownstream(clock)
    downstream.pending = True
    futures = [interceptor.intercept_unary_unary(downstream, Details(), b"x") for _ in range(2)]
    with pytest.raises(RejectedCall) as err:
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert err.value.code() == EXHAUSTED
    assert err.value.rejected_by == "concurrency"
    assert rejected_by(err.value) == "concurrency"
    assert downstream.calls == 2

    # The futures hold their slots until they are done, then sample their RTT.
    assert state(interceptor).in_flight == 2
    for future in futures:
        future.complete()
    assert state(interceptor).in_flight == 0

    downstream.pending = False
    downstream.code = UNAVAILABLE
    for _ in range(3):  # with the 2 accepts above: p = (5 - 2 * 2) / 6
        assert interceptor.intercept_unary_unary(downstream, Details(), b"x").code() == UNAVAILABLE
    draw.value = 0.0
    with pytest.raises(RejectedCall) as err:
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert err.value.code() == EXHAUSTED
    assert err.value.rejected_by == "throttle"
    assert isinstance(err.value, grpc.RpcError) and isinstance(err.value, grpc.Call)


def test_sync_permit_released_on_answers_exceptions_and_breaker_refusals() -> None:
    clock = Clock()
    client = FakeClient(clock, allow_takes=0.5)
    interceptor = sync_interceptor({"/demo.Downstream/": Guard("b", adaptive=TWO)}, clock, client)
    limiter = limiter_of(interceptor)
    downstream = SyncDownstream(clock, OK, latency=0.010)
    interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert limiter.in_flight == 0
    assert limiter.long_rtt == pytest.approx(0.010)  # not the breaker's 0.5 s

    downstream.error = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert limiter.in_flight == 0

    downstream.error = None
    client.allow_answer = False
    with pytest.raises(RejectedCall) as err:
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert err.value.rejected_by == "breaker"
    assert limiter.in_flight == 0

    client.allow_answer = True
    downstream.code = DEADLINE
    interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert limiter.in_flight == 0 and limiter.estimate < 2
    assert client.outcomes == [("b", True), ("b", False)]


def test_sync_a_finished_flight_ignores_a_second_end() -> None:
    backpressure = Backpressure({"/a.A/": Guard(adaptive=TWO, throttle=True)})
    downstream = backpressure.for_rule("/a.A/")
    assert downstream is not None and downstream.limiter is not None
    flight = downstream.admit(10.0)
    flight.finish(OK, 10.01)
    flight.finish(OK, 10.02)
    flight.abandon()
    assert downstream.limiter.in_flight == 0
    assert downstream.throttle is not None and downstream.throttle.counts(10.02) == (1, 1)


async def test_with_a_bulkhead_the_limit_is_asked_inside_the_permit() -> None:
    clock = Clock()
    client = AsyncFakeClient(clock)
    rules = {"/demo.Downstream/": Guard("b", bulkhead="p", adaptive=TWO)}
    interceptor = aio_interceptor(rules, clock, client)
    downstream = AioDownstream(clock)
    assert await aio_call(interceptor, downstream) == OK
    assert client.log == ["permit", "allow", "permit-released"]
    assert state(interceptor).in_flight == 0

    downstream.gate = asyncio.Event()
    pending = [asyncio.ensure_future(aio_call(interceptor, downstream)) for _ in range(2)]
    await asyncio.sleep(0)
    client.log.clear()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await aio_call(interceptor, downstream)
    assert rejected_by(err.value) == "concurrency"
    assert client.log == ["permit", "permit-released"]  # the permit is given back at once
    downstream.gate.set()
    assert await asyncio.gather(*pending) == [OK, OK]
    assert state(interceptor).in_flight == 0


def test_sync_with_a_bulkhead_the_limit_is_asked_inside_the_permit() -> None:
    clock = Clock()
    client = FakeClient(clock)
    rules = {"/demo.Downstream/": Guard("b", bulkhead="p", adaptive=TWO)}
    interceptor = sync_interceptor(rules, clock, client)
    limiter = limiter_of(interceptor)
    downstream = SyncDownstream(clock, OK, latency=0.010)
    assert interceptor.intercept_unary_unary(downstream, Details(), b"x").code() == OK
    assert client.log == ["permit", "allow", "permit-released"]
    assert limiter.in_flight == 0 and limiter.long_rtt == pytest.approx(0.010)

    # At the limit (two slots taken elsewhere): refused inside the permit, which is freed.
    held = [limiter.try_acquire(clock()) for _ in range(2)]
    client.log.clear()
    with pytest.raises(RejectedCall) as err:
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert err.value.rejected_by == "concurrency"
    assert client.log == ["permit", "permit-released"]
    for permit in held:
        assert permit is not None
        limiter.forget(permit)

    downstream.error = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        interceptor.intercept_unary_unary(downstream, Details(), b"x")
    assert limiter.in_flight == 0
