"""Fault rules on a real replica, applied by real clients to a real downstream.

A rule put through the API delays and fails its stated share of an opted-in
client's calls (2,000 calls, inside a binomial 99.9 % interval) and only the calls
it targets; a client that did not opt in is never touched; a deleted or expired
rule stops; ``breaker()`` blocks and the synchronous interceptor apply rules too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from bulwark import AsyncClient, ClientOptions
from bulwark.errors import FaultInjectedError
from bulwark.interceptors import AsyncBulwarkInterceptor, BulwarkInterceptor, Guard
from bulwark.sync import Client
from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, chaos_pb2_grpc
from bulwark.v1 import chaos_pb2 as C
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration import test_backpressure
from tests.integration.test_backpressure import CALL, SERVICE, Downstream, rejected_by

CALLS = 2000
downstream = test_backpressure.downstream  # the fixture: a real asyncio downstream
DELAY_S = 0.05


def binomial_interval(n: int, p: float, confidence: float = 0.999) -> tuple[int, int]:
    """The central interval holding a Binomial(n, p) count with ``confidence`` (exact)."""
    tail = (1 - confidence) / 2

    def pmf_at(k: int) -> float:
        log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        return math.exp(log + k * math.log(p) + (n - k) * math.log1p(-p))

    pmf = [pmf_at(k) for k in range(n + 1)]
    low, total = 0, 0.0
    while total + pmf[low] <= tail:
        total += pmf[low]
        low += 1
    high, total = n, 0.0
    while total + pmf[high] <= tail:
        total += pmf[high]
        high -= 1
    return low, high


def expires(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return ts


async def wait_until(predicate: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


async def run_calls(
    call: grpc.aio.UnaryUnaryMultiCallable, count: int, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[int, int, int]:
    """(answered, aborted by a fault rule, delayed past DELAY_S) of ``count`` calls, 20 at once."""
    answered = aborted = delayed = 0
    left = count

    async def one() -> None:
        nonlocal answered, aborted, delayed, left
        while left > 0:
            left -= 1
            started = time.monotonic()
            try:
                await call(b"x", timeout=10, metadata=metadata)
                answered += 1
            except grpc.aio.AioRpcError as error:
                assert (error.code(), rejected_by(error)) == (grpc.StatusCode.UNAVAILABLE, "fault")
                aborted += 1
            delayed += time.monotonic() - started >= DELAY_S

    await asyncio.gather(*(one() for _ in range(20)))
    return answered, aborted, delayed


async def test_a_rule_faults_its_share_of_targeted_calls_and_no_others(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    downstream: tuple[Downstream, str],
) -> None:
    replica = replica_factory("f1", [etcd.endpoint])
    service, address = downstream
    admin = grpc.aio.insecure_channel(replica.address)
    chaos = chaos_pb2_grpc.ChaosServiceStub(admin)
    await chaos.PutFaultRule(
        C.PutFaultRuleRequest(
            rule=C.FaultRule(
                name="payments-flaky",
                target=C.FaultTarget(
                    source_service="checkout", downstream="payments", method=f"/{SERVICE}/"
                ),
                delay=C.FaultDelay(
                    fixed=duration_pb2.Duration(nanos=int(DELAY_S * 1e9)), percentage=20
                ),
                abort=C.FaultAbort(code=grpc.StatusCode.UNAVAILABLE.value[0], percentage=25),
                expires_at=expires(600),
            )
        ),
        timeout=5,
    )
    await chaos.PutFaultRule(
        C.PutFaultRuleRequest(
            rule=C.FaultRule(
                name="test-traffic-only",
                target=C.FaultTarget(downstream="search", headers={"x-test-traffic": "1"}),
                abort=C.FaultAbort(code=grpc.StatusCode.UNAVAILABLE.value[0], percentage=100),
                expires_at=expires(600),
            )
        ),
        timeout=5,
    )
    opted = AsyncClient(replica.address, options=ClientOptions(service="checkout", chaos=True))
    refusing = AsyncClient(replica.address, options=ClientOptions(service="checkout"))
    try:
        guarded = {f"/{SERVICE}/": Guard(service="payments")}
        channels = {
            name: grpc.aio.insecure_channel(address, interceptors=[interceptor])
            for name, interceptor in (
                ("opted", AsyncBulwarkInterceptor(opted, guarded)),
                ("refusing", AsyncBulwarkInterceptor(refusing, guarded)),
                (
                    "search",
                    AsyncBulwarkInterceptor(opted, {f"/{SERVICE}/": Guard(service="search")}),
                ),
            )
        }
        faults = opted.faults()
        assert faults is not None and refusing.faults() is None
        await wait_until(lambda: len(faults.cache) == 2, 10)

        before = service.calls
        answered, aborted, delayed = await run_calls(channels["opted"].unary_unary(CALL), CALLS)
        low, high = binomial_interval(CALLS, 0.25)
        assert low <= aborted <= high, (aborted, (low, high))
        assert service.calls - before == answered == CALLS - aborted  # aborted never sent
        counts = faults.counts()["payments-flaky"]
        assert counts["aborted"] == aborted and counts["active"] == 0
        low, high = binomial_interval(CALLS, 0.20)
        assert low <= counts["delayed"] <= high, (counts["delayed"], (low, high))
        # Each delay was real: at least that many calls took the delay or longer (on a
        # busy machine an undelayed call can too, so only a lower bound holds).
        assert delayed >= counts["delayed"]

        # Not opted in: the same rules, the same calls, never a fault.
        before = service.calls
        assert (await run_calls(channels["refusing"].unary_unary(CALL), CALLS))[:2] == (CALLS, 0)
        assert service.calls - before == CALLS
        # Another downstream: only its calls marked as test traffic are hit.
        search = channels["search"].unary_unary(CALL)
        assert (await run_calls(search, 200))[:2] == (200, 0)
        assert (await run_calls(search, 200, (("x-test-traffic", "1"),)))[:2] == (0, 200)

        # Deleted: it stops within the watch's latency.
        await chaos.DeleteFaultRule(C.DeleteFaultRuleRequest(name="payments-flaky"), timeout=5)
        await wait_until(lambda: "payments-flaky" not in faults.cache, 5)
        assert (await run_calls(channels["opted"].unary_unary(CALL), 200))[:2] == (200, 0)
        for channel in channels.values():
            await channel.close()
    finally:
        await opted.close()
        await refusing.close()
        await admin.close()


async def test_an_expired_rule_stops_and_is_deleted(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    downstream: tuple[Downstream, str],
) -> None:
    replica = replica_factory("f2", [etcd.endpoint])
    _, address = downstream
    async with grpc.aio.insecure_channel(replica.address) as admin:
        chaos = chaos_pb2_grpc.ChaosServiceStub(admin)
        await chaos.PutFaultRule(
            C.PutFaultRuleRequest(
                rule=C.FaultRule(
                    name="short",
                    abort=C.FaultAbort(code=grpc.StatusCode.UNAVAILABLE.value[0], percentage=100),
                    expires_at=expires(2.0),
                )
            ),
            timeout=5,
        )
        client = AsyncClient(replica.address, options=ClientOptions(chaos=True))
        try:
            interceptor = AsyncBulwarkInterceptor(client, {f"/{SERVICE}/": Guard(service="x")})
            async with grpc.aio.insecure_channel(address, interceptors=[interceptor]) as channel:
                call = channel.unary_unary(CALL)
                faults = client.faults()
                assert faults is not None
                await wait_until(lambda: "short" in faults.cache, 10)
                assert (await run_calls(call, 50))[:2] == (0, 50)
                await asyncio.sleep(
                    max(0.0, faults.cache.rules()[0].expires_at.seconds + 1.1 - time.time())
                )
                assert (await run_calls(call, 50))[:2] == (50, 0)  # by the client's clock
                # ... and the leader deletes it soon after.
                await wait_until(lambda: "short" not in faults.cache, 10)
                listed = await chaos.ListFaultRules(C.ListFaultRulesRequest(), timeout=5)
                assert list(listed.rules) == []
        finally:
            await client.close()


def test_breaker_blocks_and_the_sync_interceptor_apply_rules(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("f3", [etcd.endpoint])
    provider = Downstream()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((provider.sync_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(replica.address) as admin:
            breaker_pb2_grpc.CircuitBreakerServiceStub(admin).PutBreaker(
                breaker_pb2.PutBreakerRequest(name="ledger"),
                timeout=5,
            )
            chaos_pb2_grpc.ChaosServiceStub(admin).PutFaultRule(
                C.PutFaultRuleRequest(
                    rule=C.FaultRule(
                        name="ledger-down",
                        target=C.FaultTarget(downstream="ledger"),
                        abort=C.FaultAbort(code=grpc.StatusCode.INTERNAL.value[0], percentage=100),
                        expires_at=expires(600),
                    )
                ),
                timeout=5,
            )
        with Client(replica.address, options=ClientOptions(chaos=True)) as client:
            faults = client.faults()
            assert faults is not None
            deadline = time.monotonic() + 10
            while "ledger-down" not in faults.cache and time.monotonic() < deadline:
                time.sleep(0.02)
            entered = 0
            with pytest.raises(FaultInjectedError) as raised:
                with client.breaker("ledger"):
                    entered += 1
            assert entered == 0 and raised.value.rule == "ledger-down"
            interceptor = BulwarkInterceptor(client, {f"/{SERVICE}/": Guard(breaker="ledger")})
            channel = grpc.intercept_channel(
                grpc.insecure_channel(f"127.0.0.1:{port}"), interceptor
            )
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(CALL)(b"x", timeout=5)
            assert refused.value.code() is grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
            assert rejected_by(refused.value) == "fault" and provider.calls == 0
            channel.close()
    finally:
        server.stop(None)
