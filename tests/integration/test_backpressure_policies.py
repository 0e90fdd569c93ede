"""BackpressureService on a real replica: policies stored, listed, watched and deleted;
bad ones name their field; clients' interceptors apply them (a local setting wins); and
the replica's own shedding by priority."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from bulwark.aio import AsyncClient
from bulwark.interceptors import AsyncBulwarkInterceptor, BulwarkInterceptor, Guard, RejectedCall
from bulwark.sync import Client
from bulwark.v1 import backpressure_pb2 as B
from bulwark.v1 import (
    backpressure_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    watch_pb2,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import wait_for
from tests.integration.test_backpressure import CALL, SERVICE, Downstream, rejected_by


def test_policies_are_stored_watched_and_checked(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("b1", [etcd.endpoint])
    with grpc.insecure_channel(replica.address) as channel:
        stub = backpressure_pb2_grpc.BackpressureServiceStub(channel)
        watch = stub.WatchBackpressurePolicies(
            B.WatchBackpressurePoliciesRequest(names=["payments"]), timeout=10
        )
        assert next(watch).type == watch_pb2.WATCH_EVENT_TYPE_SYNCED
        policy = B.BackpressurePolicy(
            name="payments",
            concurrency=B.AdaptiveConcurrency(enabled=True, min_limit=2, max_limit=50),
            throttle=B.AdaptiveThrottle(enabled=True, k=1.5),
        )
        stored = stub.PutBackpressurePolicy(
            B.PutBackpressurePolicyRequest(policy=policy), timeout=5
        ).policy
        assert stored.revision > 0 and stored.concurrency.max_limit == 50
        stub.PutBackpressurePolicy(
            B.PutBackpressurePolicyRequest(policy=B.BackpressurePolicy(name="search")), timeout=5
        )
        put = next(watch)
        assert (put.type, put.policy.name, put.policy.throttle.k) == (
            watch_pb2.WATCH_EVENT_TYPE_PUT,
            "payments",
            1.5,
        )
        listed = stub.ListBackpressurePolicies(B.ListBackpressurePoliciesRequest(), timeout=5)
        assert [p.name for p in listed.policies] == ["payments", "search"]
        got = stub.GetBackpressurePolicy(B.GetBackpressurePolicyRequest(name="payments"), timeout=5)
        assert got.policy == stored
        with pytest.raises(grpc.RpcError) as stale:
            stub.PutBackpressurePolicy(
                B.PutBackpressurePolicyRequest(
                    policy=policy, expected_revision=stored.revision - 1
                ),
                timeout=5,
            )
        assert stale.value.code() is grpc.StatusCode.ABORTED  # changed since: re-read
        stub.DeleteBackpressurePolicy(B.DeleteBackpressurePolicyRequest(name="payments"), timeout=5)
        gone = next(watch)
        assert (gone.type, gone.policy.name) == (watch_pb2.WATCH_EVENT_TYPE_DELETE, "payments")
        watch.cancel()

        bad = [
            (
                B.BackpressurePolicy(
                    name="x", concurrency=B.AdaptiveConcurrency(min_limit=9, max_limit=3)
                ),
                "policy.concurrency.max_limit",
            ),
            (
                B.BackpressurePolicy(name="x", concurrency=B.AdaptiveConcurrency(smoothing=2)),
                "policy.concurrency.smoothing",
            ),
            (
                B.BackpressurePolicy(name="x", throttle=B.AdaptiveThrottle(k=0.5)),
                "policy.throttle.k",
            ),
            (B.BackpressurePolicy(name="bad name"), "policy.name"),
        ]
        for policy, field in bad:
            with pytest.raises(grpc.RpcError) as caught:
                stub.PutBackpressurePolicy(B.PutBackpressurePolicyRequest(policy=policy), timeout=5)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in (caught.value.details() or "")


def test_a_replica_under_load_sheds_by_priority(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    """Four calls at most: waiting Acquires hold slots; Allow then meets the bound of
    its priority (sheddable 2, default 3, critical 4). Authentication is off, so every
    caller may claim critical."""
    replica = replica_factory("p1", [etcd.endpoint], "--max-in-flight=4")
    with grpc.insecure_channel(replica.address) as channel:
        bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(channel)
        wait = duration_pb2.Duration(seconds=10)
        bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="db", max_concurrent=1, max_wait=wait)
            ),
            timeout=5,
        )
        bulkheads.Acquire(bulkhead_pb2.AcquireRequest(bulkhead="db", holder="h0"), timeout=5)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)

        def allow(priority: str) -> grpc.StatusCode:
            try:
                breakers.Allow(
                    breaker_pb2.AllowRequest(name="payments"),
                    metadata=(("bulwark-priority", priority),),
                    timeout=5,
                )
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        refused = grpc.StatusCode.RESOURCE_EXHAUSTED
        waiting = []
        for n in (1, 2, 3):
            waiting.append(
                bulkheads.Acquire.future(
                    bulkhead_pb2.AcquireRequest(bulkhead="db", holder=f"h{n}"), timeout=8
                )
            )
            # n calls wait in the replica once the priority whose bound is n is refused
            # (with one waiting, sheddable calls are admitted either way).
            bound_of_n = {2: "sheddable", 3: "default"}.get(n)
            if bound_of_n:
                wait_for(lambda p=bound_of_n: allow(p) is refused, 5)
            for priority, bound in (("sheddable", 2), ("default", 3), ("critical", 4)):
                code = allow(priority)
                assert code is (grpc.StatusCode.OK if n < bound else refused), (n, priority)
        for future in waiting:
            future.cancel()


def _put(stub: backpressure_pb2_grpc.BackpressureServiceStub, limit: int) -> None:
    concurrency = B.AdaptiveConcurrency(enabled=True, initial_limit=limit, max_limit=limit)
    stub.PutBackpressurePolicy(
        B.PutBackpressurePolicyRequest(
            policy=B.BackpressurePolicy(name="demo", concurrency=concurrency)
        ),
        timeout=5,
    )


def test_a_client_applies_the_central_policy_and_a_local_setting_wins(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("c1", [etcd.endpoint])
    service = Downstream()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((service.sync_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    rule = f"/{SERVICE}/"
    try:
        with (
            Client(replica.address, client_id="central") as client,
            grpc.insecure_channel(replica.address) as admin,
            grpc.insecure_channel(f"127.0.0.1:{port}") as raw,
        ):
            stub = backpressure_pb2_grpc.BackpressureServiceStub(admin)
            follows = BulwarkInterceptor(client, {rule: Guard(service="demo")})
            local = BulwarkInterceptor(client, {rule: Guard(service="demo", adaptive=False)})
            call = grpc.intercept_channel(raw, follows).unary_unary(CALL)
            free = grpc.intercept_channel(raw, local).unary_unary(CALL)
            assert call(b"w", timeout=5) == b"w"  # the first call starts the watch
            service.latency = 1.0  # long enough for all five calls below to overlap
            _put(stub, 2)
            wait_for(lambda: follows.backpressure()["demo"].limit == 2, 5)
            pending = [call.future(b"x", timeout=5) for _ in range(2)]
            with pytest.raises(RejectedCall) as err:  # how fast: test_backpressure.py
                call(b"x", timeout=5)
            assert rejected_by(err.value) == "concurrency"
            # The same client, its own setting: no limit from the policy.
            pending += [free.future(b"y", timeout=5) for _ in range(3)]
            wait_for(lambda: service.peak >= 5, 2)
            assert [f.result() for f in pending] == [b"x", b"x", b"y", b"y", b"y"]
            stub.DeleteBackpressurePolicy(B.DeleteBackpressurePolicyRequest(name="demo"), timeout=5)
            wait_for(lambda: follows.backpressure()["demo"].limit is None, 5)
            service.latency = 0.3
            more = [call.future(b"z", timeout=5) for _ in range(3)]
            assert [f.result() for f in more] == [b"z"] * 3
    finally:
        server.stop(None)


async def test_an_async_client_starts_following_policies_at_the_first_call(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("c2", [etcd.endpoint])
    service = Downstream(latency=0.5)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.aio_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with grpc.insecure_channel(replica.address) as admin:
        _put(backpressure_pb2_grpc.BackpressureServiceStub(admin), 1)
    try:
        async with AsyncClient(replica.address, client_id="central-aio") as client:
            interceptor = AsyncBulwarkInterceptor(client, {f"/{SERVICE}/": Guard(service="demo")})
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=[interceptor]
            ) as channel:
                call = channel.unary_unary(CALL)
                assert await call(b"a", timeout=5) == b"a"  # no policy known yet: goes
                deadline = time.monotonic() + 5
                while interceptor.backpressure()["demo"].limit != 1:
                    assert time.monotonic() < deadline, "the policy never arrived"
                    await asyncio.sleep(0.02)
                first = asyncio.ensure_future(call(b"b", timeout=5))
                while not interceptor.backpressure()["demo"].in_flight:  # admitted
                    assert time.monotonic() < deadline + 5, "the first call never went"
                    await asyncio.sleep(0.01)
                with pytest.raises(grpc.RpcError) as err:
                    await call(b"c", timeout=5)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert await first == b"b"
    finally:
        await server.stop(None)
