"""The interceptors' adaptive concurrency and throttling against a real gRPC downstream.

The downstream is an in-process ``grpc.aio`` server on 127.0.0.1 (a free port) whose
handler sleeps a latency the test sets, or refuses work on demand, and counts the calls
inside it. Adaptive concurrency and throttling never ask Bulwark, so the interceptors run
with ``client=None``: no etcd or replica is needed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent import futures

import grpc
import grpc.aio
import pytest

from bulwark.interceptors import (
    REJECTED_BY_KEY,
    AsyncBulwarkInterceptor,
    BulwarkInterceptor,
    Gradient2Settings,
    Guard,
    RejectedCall,
    ThrottleSettings,
)

SERVICE = "demo.Downstream"
CALL = f"/{SERVICE}/Call"


class Downstream:
    """Raw-bytes unary ``Call``: sleeps ``latency`` s, or refuses with ``refuse``.

    ``in_flight`` counts the handlers running now; ``peak`` the most since ``reset``.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.refuse: grpc.StatusCode | None = None
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()  # the sync server's handlers run on threads

    def reset(self) -> None:
        with self._lock:
            self.peak = self.in_flight

    def _enter(self) -> None:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def aio_handler(self) -> grpc.GenericRpcHandler:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self._enter()
            try:
                if self.refuse is not None:
                    await context.abort(self.refuse, "busy")
                await asyncio.sleep(self.latency)
                return request
            finally:
                self._leave()

        return grpc.method_handlers_generic_handler(
            SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )

    def sync_handler(self) -> grpc.GenericRpcHandler:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._enter()
            try:
                time.sleep(self.latency)
                return request
            finally:
                self._leave()

        return grpc.method_handlers_generic_handler(
            SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )


@pytest.fixture
async def downstream() -> AsyncIterator[tuple[Downstream, str]]:
    service = Downstream()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.aio_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def rejected_by(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(REJECTED_BY_KEY)  # type: ignore[attr-defined]


async def test_a_slowing_downstream_gets_fewer_calls_and_refusals_are_fast(
    downstream: tuple[Downstream, str],
) -> None:
    service, address = downstream
    service.latency = 0.010
    # Gradient2's defaults but a floor of 2 and a long window of many samples: with its
    # 600, at the hundreds of calls a second made here, the long RTT would catch up with
    # the slowdown within seconds and let the limit grow back (see the benchmark).
    settings = Gradient2Settings(min_limit=2, long_window=60_000)
    interceptor = AsyncBulwarkInterceptor(None, {f"/{SERVICE}/": Guard(adaptive=settings)})
    channel = grpc.aio.insecure_channel(address, interceptors=[interceptor])
    call = channel.unary_unary(CALL)
    refusals: list[tuple[float, str | None, grpc.StatusCode]] = []
    answered: list[float] = []
    stop = False
    callers, period = 30, 0.1  # 300 calls/s offered, whatever the answers

    async def caller(index: int) -> None:
        next_at = time.monotonic() + index * period / callers
        while not stop:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            try:
                await call(b"x", timeout=5)
                answered.append(time.monotonic())
            except grpc.aio.AioRpcError as error:
                refusals.append((time.monotonic() - started, rejected_by(error), error.code()))
            next_at += period
            while next_at < time.monotonic():  # still busy at its tick: take the next one
                next_at += period

    def goodput(seconds: float) -> float:
        since = time.monotonic() - seconds
        return sum(1 for at in answered if at >= since) / seconds

    tasks = [asyncio.ensure_future(caller(i)) for i in range(callers)]
    try:
        await asyncio.sleep(1.0)
        assert not refusals
        assert goodput(0.5) > 200
        assert service.peak < 20

        # Tenfold latency: 30 callers would all be inside; the limit keeps most of them out.
        service.latency = 0.100
        await asyncio.sleep(1.0)
        service.reset()
        refusals.clear()
        await asyncio.sleep(0.5)
        slow = interceptor.backpressure()[f"/{SERVICE}/"]
        assert slow.limit is not None and slow.limit <= 12, slow
        assert service.peak <= 14, service.peak
        assert refusals, "at the limit, calls are refused"
        assert {(by, code) for _, by, code in refusals} == {
            ("concurrency", grpc.StatusCode.RESOURCE_EXHAUSTED)
        }
        took = sorted(elapsed for elapsed, _, _ in refusals)
        # Refused in the process, not after a wait: far below the downstream's 100 ms.
        assert took[len(took) // 2] < 0.020, took[:5]

        # The latency returns: the calls succeed again at the rate offered.
        service.latency = 0.010
        await asyncio.sleep(1.0)
        assert goodput(0.5) > 200
    finally:
        stop = True
        await asyncio.gather(*tasks)
        await channel.close()
    assert interceptor.backpressure()[f"/{SERVICE}/"].in_flight == 0


async def test_throttle_rejects_locally_while_the_downstream_refuses_then_lets_calls_back(
    downstream: tuple[Downstream, str],
) -> None:
    service, address = downstream
    service.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
    # A one-second window, not the book's two minutes: local rejections count as
    # requests, so the refusals are forgotten only when they leave the window.
    throttle = ThrottleSettings(window_seconds=1)
    interceptor = AsyncBulwarkInterceptor(None, {CALL: Guard(throttle=throttle)})
    channel = grpc.aio.insecure_channel(address, interceptors=[interceptor])
    call = channel.unary_unary(CALL)
    try:
        by: dict[str | None, int] = {}
        for _ in range(100):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            by[rejected_by(err.value)] = by.get(rejected_by(err.value), 0) + 1
        # Refused by the downstream (no metadata) or rejected locally by the throttle:
        # with no accepts, p = n / (n + 1), so few of the 100 reach the downstream.
        assert set(by) == {None, "throttle"}
        assert service.calls == by[None] <= 25, by
        assert interceptor.backpressure()[CALL].reject_probability > 0.9  # type: ignore[operator]

        # The downstream takes work again: once the refusals leave the window, the
        # accepts bring the probability down to 0.
        service.refuse = None
        recovered = time.monotonic()
        deadline = recovered + 5
        while interceptor.backpressure()[CALL].reject_probability:
            assert time.monotonic() < deadline, "the throttle never let the calls back"
            try:
                await call(b"x", timeout=5)
            except grpc.aio.AioRpcError as error:
                assert rejected_by(error) == "throttle"
            await asyncio.sleep(0.005)
        for _ in range(20):
            assert await call(b"x", timeout=5) == b"x"
    finally:
        await channel.close()


def test_sync_interceptor_limits_futures_and_frees_their_slots() -> None:
    service = Downstream(latency=0.3)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((service.sync_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    settings = Gradient2Settings(initial_limit=2, min_limit=1, max_limit=2)
    interceptor = BulwarkInterceptor(None, {f"/{SERVICE}/": Guard(adaptive=settings)})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
            call = grpc.intercept_channel(raw, interceptor).unary_unary(CALL)
            pending = [call.future(b"x", timeout=5) for _ in range(2)]
            started = time.monotonic()
            with pytest.raises(RejectedCall) as err:
                call(b"x", timeout=5)
            assert time.monotonic() - started < 0.1
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rejected_by(err.value) == "concurrency"
            assert [future.result() for future in pending] == [b"x", b"x"]
            # The done-callbacks run on gRPC's threads, right after the results.
            deadline = time.monotonic() + 2
            while interceptor.backpressure()[f"/{SERVICE}/"].in_flight:
                assert time.monotonic() < deadline, "the futures kept their slots"
                time.sleep(0.01)
            service.latency = 0.0
            assert call(b"y", timeout=5) == b"y"
            assert service.calls == 3
    finally:
        server.stop(None)
