"""The AsyncClient and the client interceptors against a real etcd, real replicas and processes.

* Two client processes share one breaker: one reports failures, the other only
  asks and sees the trip within a second.
* With its only replica SIGKILLed, a client keeps deciding from its cache and
  local fallbacks, then resyncs (and sees what changed meanwhile) once a
  replica is back on the same address.
* Endpoint failover: decisions and watches move to the other replica.
* The interceptors on a real downstream gRPC service that fails on demand.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from bulwark import AsyncClient, NotFoundError
from bulwark.interceptors import (
    REJECTED_BY_KEY,
    AsyncBulwarkInterceptor,
    BulwarkInterceptor,
    Guard,
    RejectedCall,
)
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import wait_for

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN

WORKER = Path(__file__).with_name("client_worker.py")
REPO = Path(__file__).parents[2]


# -- helpers -------------------------------------------------------------------------


@dataclass
class Admin:
    """Blocking stubs to one replica, for setting things up as an operator would."""

    channel: grpc.Channel
    breakers: breaker_pb2_grpc.CircuitBreakerServiceStub
    features: feature_pb2_grpc.FeatureServiceStub
    limits: ratelimit_pb2_grpc.RateLimitServiceStub
    bulkheads: bulkhead_pb2_grpc.BulkheadServiceStub

    def put_breaker(self, name: str, *, calls: int = 4, wait: float = 30.0) -> None:
        config = breaker_pb2.BreakerConfig(
            failure_rate_threshold=50,
            sliding_window_size=calls,
            minimum_number_of_calls=calls,
            permitted_number_of_calls_in_half_open_state=10,
        )
        config.wait_duration_in_open_state.FromNanoseconds(int(wait * 1e9))
        self.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=name, config=config), timeout=5)

    def breaker(self, name: str) -> breaker_pb2.CircuitBreaker:
        request = breaker_pb2.GetBreakerRequest(name=name)
        return self.breakers.GetBreaker(request, timeout=5).breaker

    def put_feature(self, name: str, status: int, fallback: str = "") -> None:
        feature = feature_pb2.Feature(name=name, status=status, fallback=fallback)
        self.features.PutFeature(feature_pb2.PutFeatureRequest(feature=feature), timeout=5)

    def put_limit(
        self, domain: str, name: str, entries: dict[str, str], per_unit: int, unit: int
    ) -> None:
        limit = ratelimit_pb2.Limit(
            domain=domain,
            name=name,
            descriptor=[ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries.items()],
            rate=ratelimit_pb2.Rate(requests_per_unit=per_unit, unit=unit),
        )
        self.limits.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5)

    def put_bulkhead(self, name: str, max_concurrent: int) -> None:
        bulkhead = bulkhead_pb2.Bulkhead(name=name, max_concurrent=max_concurrent)
        self.bulkheads.PutBulkhead(bulkhead_pb2.PutBulkheadRequest(bulkhead=bulkhead), timeout=5)

    def in_use(self, name: str) -> int:
        request = bulkhead_pb2.GetBulkheadRequest(name=name)
        return self.bulkheads.GetBulkhead(request, timeout=5).bulkhead.in_use


@contextmanager
def admin(address: str) -> Iterator[Admin]:
    channel = grpc.insecure_channel(address)
    try:
        yield Admin(
            channel,
            breaker_pb2_grpc.CircuitBreakerServiceStub(channel),
            feature_pb2_grpc.FeatureServiceStub(channel),
            ratelimit_pb2_grpc.RateLimitServiceStub(channel),
            bulkhead_pb2_grpc.BulkheadServiceStub(channel),
        )
    finally:
        channel.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def retrying(action: Callable[[], object], timeout: float = 10.0) -> Any:
    """Run ``action`` until it stops failing with a gRPC error (e.g. while a leader is elected)."""

    def attempt() -> object:
        try:
            return action() or True
        except grpc.RpcError:
            return None

    return wait_for(attempt, timeout=timeout, interval=0.1)


async def eventually(predicate: Callable[[], object], within: float, what: str) -> float:
    """Poll ``predicate`` on the event loop; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            pytest.fail(f"{what}: not within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@dataclass
class Worker:
    """A ``client_worker.py`` process whose JSON lines are collected by a thread."""

    args: list[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    stderr: str = ""
    reader: threading.Thread | None = None

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((line for line in self.lines if line["event"] == name), None)

        deadline = time.monotonic() + timeout
        while (line := found()) is None:
            assert self.process is not None
            if time.monotonic() > deadline or self.process.poll() is not None:
                time.sleep(0.1)  # let the reader thread catch up with a finished process
                if (line := found()) is not None:
                    return line
                self.stop()
                pytest.fail(f"worker {self.args[0]}: no {name!r} event: {self.lines} {self.stderr}")
            time.sleep(0.005)
        return line

    def stop(self, grace: float = 0.0) -> int | None:
        """Wait up to ``grace`` seconds for the worker to exit, then kill it; its exit code."""
        if self.process is None:
            return None
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.reader is not None:
            self.reader.join(10)  # it ends at the end of the output
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                if stream is self.process.stderr:
                    self.stderr = stream.read()
                stream.close()
        return self.process.returncode


class Downstream:
    """A tiny gRPC service of raw-bytes unary methods that fails on demand; counts its calls."""

    SERVICE = "demo.Downstream"

    def __init__(self) -> None:
        self.mode = "ok"  # ok | unavailable | invalid
        self.calls: dict[str, int] = {}

    def _answer(self, method: str) -> grpc.StatusCode | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.mode == "unavailable":
            return grpc.StatusCode.UNAVAILABLE
        if self.mode == "invalid":
            return grpc.StatusCode.INVALID_ARGUMENT
        return None

    def aio_handler(self) -> grpc.GenericRpcHandler:
        def method(name: str, delay: float = 0.0) -> grpc.RpcMethodHandler:
            async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                code = self._answer(name)
                if delay:
                    await asyncio.sleep(delay)
                if code is not None:
                    await context.abort(code, f"{name} answers {code.name}")
                return b"ok:" + request

            return grpc.unary_unary_rpc_method_handler(handle)

        return grpc.method_handlers_generic_handler(
            self.SERVICE,
            {
                "Call": method("Call"),
                "Other": method("Other"),
                "Limited": method("Limited"),
                "Slow": method("Slow", delay=0.5),
            },
        )

    def sync_handler(self) -> grpc.GenericRpcHandler:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            code = self._answer("Call")
            if code is not None:
                context.abort(code, f"Call answers {code.name}")
            return b"ok:" + request

        return grpc.method_handlers_generic_handler(
            self.SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )


def rejected_by(error: grpc.RpcError) -> str | None:
    metadata = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    return dict(metadata).get(REJECTED_BY_KEY)


# -- two processes, one breaker --------------------------------------------------------


def test_two_client_processes_share_one_breaker_trip(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r0", [etcd.endpoint])
    with admin(replica.address) as api:
        api.put_breaker("shared", calls=10, wait=30)

        common = ["--endpoint", replica.address, "--breaker", "shared"]
        watcher = Worker(["watch", *common, "--client-id", "worker-b"]).start()
        reporter: Worker | None = None
        try:
            assert watcher.event("ready", timeout=15)["staleness"] == 0
            reporter = Worker(["report", *common, "--client-id", "worker-a"]).start()
            tripped = reporter.event("tripped", timeout=15)
            seen = watcher.event("open", timeout=5)
            assert reporter.stop(grace=10) == 0, reporter.stderr
            assert watcher.stop(grace=10) == 0, watcher.stderr
        finally:
            watcher.stop()
            if reporter is not None:
                reporter.stop()

        breaker = api.breaker("shared")
    status = breaker.status
    assert status.state == OPEN
    tripped_at = status.state_since.seconds + status.state_since.nanos / 1e9
    assert tripped["records"] >= 10  # A's failures tripped it (window of 10 at 50 %)
    # B learnt it from its watch (its own cache), within a second of the trip ...
    assert seen["state"] == "BREAKER_STATE_OPEN" and seen["source"] == "cache", seen
    assert seen["t"] - tripped_at < 1.0, (seen["t"], tripped_at)
    # ... and never reported anything itself.
    assert seen["records"] == 0 and seen["pending"] == 0, seen


# -- Bulwark away: cache, local breaker, fallback rate, resync ----------------------------


async def test_client_decides_while_bulwark_is_away_and_resyncs_when_it_is_back(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    port = free_port()
    main = replica_factory("main", [etcd.endpoint], f"--listen=127.0.0.1:{port}")
    # Another way in, which the client does not know: changes made while it is cut off.
    side = replica_factory("side", [etcd.endpoint])
    with admin(main.address) as api:
        api.put_breaker("db", calls=4, wait=30)
        api.put_feature("recs", feature_pb2.FEATURE_STATUS_AVAILABLE)
        api.put_limit("api", "per-user", {"user": ""}, 1000, ratelimit_pb2.RATE_UNIT_SECOND)

    client = AsyncClient(main.address, client_id="away", timeout=0.5, fallback_rate=5.0)
    await client.start()
    try:
        assert client.staleness() == {"breakers": 0.0, "features": 0.0, "primaries": 0.0}
        decision = await client.allow("db")
        assert (decision.allowed, decision.source) == (True, "cache")
        assert client.feature("recs").available
        # Reachable: Bulwark's limit (1000/s) decides; 20 at once all pass.
        assert all([await client.check("api", {"user": "alice"}) for _ in range(20)])

        main.signal(signal.SIGKILL)
        await asyncio.to_thread(main.wait, 10)
        await eventually(lambda: client.staleness()["breakers"] > 0, 5, "watch noticed")

        # The cache keeps answering, and says how old it is.
        decision = await client.allow("db")
        assert decision.allowed, decision
        assert client.feature("recs").available
        before = client.staleness()
        await asyncio.sleep(0.3)
        after = client.staleness()
        for cache in ("breakers", "features", "primaries"):
            assert after[cache] >= before[cache] + 0.25, (before, after)

        # Failures recorded while away trip the local breaker by the breaker's own config.
        for _ in range(4):
            client.record("db", success=False)
        decision = await client.allow("db")
        assert (decision.allowed, decision.state, decision.source) == (False, OPEN, "local")
        assert decision.retry_after is not None and 25 < decision.retry_after <= 30

        # Rate limits fall back to the configured safe rate (5/s, burst 5).
        started = time.monotonic()
        allowed = sum([await client.check("api", {"user": "alice"}) for _ in range(20)])
        took = time.monotonic() - started
        assert 5 <= allowed <= 5 + int(5 * took) + 1, (allowed, took)

        # Meanwhile an operator changes things through the replica the client does not know.
        with admin(side.address) as api:
            forced = breaker_pb2.ForceStateRequest(
                name="db", state=FORCED_OPEN, reason="maintenance", actor="test"
            )
            await asyncio.to_thread(retrying, lambda: api.breakers.ForceState(forced, timeout=2))
            await asyncio.to_thread(
                retrying,
                lambda: api.put_feature("late", feature_pb2.FEATURE_STATUS_DEGRADED, "cached"),
            )
        assert client.feature("late").status == feature_pb2.FEATURE_STATUS_AVAILABLE  # unknown

        def restart() -> None:
            main.start()
            main.wait_serving()

        await asyncio.to_thread(restart)
        assert main.port == port
        took = await eventually(
            lambda: max(client.staleness().values()) == 0, 20, "resync after restart"
        )
        print(f"resynced {took:.2f}s after the replica was serving again")

        # What changed while it was away is seen after the resync ...
        await eventually(lambda: "late" in client.features, 5, "new feature seen")
        # Each stream's snapshot comes in its own time: the health check called the
        # resumed streams live before the replica, whose history starts after their
        # revision, sent them.
        await eventually(
            lambda: (v := client.breakers.get("db")) is not None and v.state == FORCED_OPEN,
            5,
            "forced state seen",
        )
        late = client.feature("late")
        assert not late.available and late.fallback == "cached"
        decision = await client.allow("db")
        assert (decision.allowed, decision.state, decision.source) == (False, FORCED_OPEN, "cache")
        # ... and Bulwark's limits decide again.
        assert all([await client.check("api", {"user": "bob"}) for _ in range(20)])
    finally:
        await client.close()


# -- endpoint failover -------------------------------------------------------------------


async def trip_and_wait(client: AsyncClient, name: str, wait: float) -> None:
    """Trip breaker ``name`` (window of 4) through ``client`` and let its wait in OPEN pass."""
    for _ in range(4):
        client.record(name, success=False)
    await eventually(
        lambda: (view := client.breakers.get(name)) is not None and view.state == OPEN,
        5,
        f"{name} tripped",
    )
    await asyncio.sleep(wait + 0.2)  # past the wait in OPEN: only Bulwark hands out trials now


async def test_client_fails_over_to_the_other_replica(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    first = replica_factory("first", [etcd.endpoint])
    second = replica_factory("second", [etcd.endpoint])
    with admin(first.address) as api:
        api.put_breaker("flaky", calls=4, wait=1.0)
        api.put_breaker("steady", calls=4, wait=30)

    client = AsyncClient([first.address, second.address], client_id="failover", timeout=1.0)
    await client.start()
    try:
        assert client._endpoints.current() == first.address
        await trip_and_wait(client, "flaky", wait=1.0)

        first.signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)

        # An unknown breaker is a question only Bulwark can answer: the other replica does
        # (a local fallback would have let the call through).
        with pytest.raises(NotFoundError):
            await client.allow("no-such-breaker")

        # The watches moved over: changes made now reach the caches.
        with admin(second.address) as api:
            forced = breaker_pb2.ForceStateRequest(name="steady", state=FORCED_OPEN, actor="t")
            await asyncio.to_thread(retrying, lambda: api.breakers.ForceState(forced, timeout=2))
            await asyncio.to_thread(
                retrying, lambda: api.put_feature("moved", feature_pb2.FEATURE_STATUS_DISABLED)
            )
        await eventually(
            lambda: (
                (view := client.breakers.get("steady")) is not None and view.state == FORCED_OPEN
            ),
            10,
            "forced state seen through the other replica",
        )
        await eventually(lambda: "moved" in client.features, 5, "new feature seen")
        assert not client.feature("moved").available
        staleness = client.staleness()
        assert staleness["breakers"] == 0 and staleness["features"] == 0, staleness
        decision = await client.allow("steady")
        assert (decision.allowed, decision.state, decision.source) == (False, FORCED_OPEN, "cache")

        # A HALF_OPEN trial permit can only come from a replica: the other one hands it out.
        decision = await client.allow("flaky")
        assert (decision.allowed, decision.state, decision.source) == (True, HALF_OPEN, "remote")
        assert client._endpoints.current() == second.address
    finally:
        await client.close()


async def test_quiet_watches_are_live_again_after_failover(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    first = replica_factory("first", [etcd.endpoint])
    second = replica_factory("second", [etcd.endpoint])
    with admin(first.address) as api:
        api.put_breaker("flaky", calls=4, wait=1.0)

    client = AsyncClient([first.address, second.address], client_id="quiet", timeout=1.0)
    await client.start()
    try:
        await trip_and_wait(client, "flaky", wait=1.0)
        first.signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        # Nothing changes after the failover: the resumed streams stay silent.
        await eventually(
            lambda: max(client.staleness().values()) == 0, 5, "caches live on the other replica"
        )
        decision = await client.allow("flaky")
        assert (decision.allowed, decision.state, decision.source) == (True, HALF_OPEN, "remote")
    finally:
        await client.close()


# -- the interceptors on a real downstream service --------------------------------------------


async def test_async_interceptor_guards_calls_to_a_real_downstream(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r0", [etcd.endpoint])
    with admin(replica.address) as api:
        api.put_breaker("downstream", calls=4, wait=30)
        api.put_limit("outbound", "to-downstream", {"dep": ""}, 3, ratelimit_pb2.RATE_UNIT_MINUTE)
        api.put_bulkhead("downstream-pool", max_concurrent=1)

    downstream = Downstream()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((downstream.aio_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = AsyncClient(replica.address, client_id="interceptor")
    await client.start()
    rules = {
        "/demo.Downstream/Call": Guard(breaker="downstream"),
        "/demo.Downstream/Limited": Guard(limit=("outbound", {"dep": "downstream"})),
        "/demo.Downstream/Slow": Guard(bulkhead="downstream-pool"),
    }
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=[AsyncBulwarkInterceptor(client, rules)]
    )
    call = channel.unary_unary("/demo.Downstream/Call")
    other = channel.unary_unary("/demo.Downstream/Other")
    try:
        assert await call(b"hi", timeout=5) == b"ok:hi"

        # The caller's mistakes say nothing about the dependency: no trip.
        downstream.mode = "invalid"
        for _ in range(8):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert rejected_by(err.value) is None
        await eventually(lambda: client._outcomes.pending == 0, 5, "outcomes reported")
        with admin(replica.address) as api:
            await eventually(
                lambda: api.breaker("downstream").window.calls >= 4, 5, "window filled"
            )
            breaker = api.breaker("downstream")
        assert breaker.status.state == CLOSED and breaker.window.failures == 0, breaker

        # The dependency failing trips the breaker; then calls fail fast, never reaching it.
        downstream.mode = "unavailable"
        reached = 0
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the breaker never tripped"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            if rejected_by(err.value) == "breaker":
                break
            reached += 1
            await asyncio.sleep(0.02)
        assert reached >= 2  # a window of 4 at 50 %: two failures after two successes
        calls_before = downstream.calls["Call"]
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert rejected_by(err.value) == "breaker"
            assert "circuit breaker 'downstream' is open" in (err.value.details() or "")
        assert downstream.calls["Call"] == calls_before
        # A method without a rule is not guarded.
        downstream.mode = "ok"
        assert await other(b"o", timeout=5) == b"ok:o"

        # Rate limit: 3 a minute; the fourth never leaves the process.
        for _ in range(3):
            assert await channel.unary_unary("/demo.Downstream/Limited")(b"l", timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/demo.Downstream/Limited")(b"l", timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rejected_by(err.value) == "rate-limit"
        assert downstream.calls["Limited"] == 3

        # Bulkhead of one: the permit is held for the whole call; a second at once is refused.
        slow = channel.unary_unary("/demo.Downstream/Slow")
        first = asyncio.ensure_future(slow(b"s", timeout=5))
        with admin(replica.address) as api:
            await eventually(lambda: downstream.calls.get("Slow") == 1, 5, "slow call started")
            assert api.in_use("downstream-pool") == 1
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await slow(b"s", timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rejected_by(err.value) == "bulkhead"
            assert await first == b"ok:s"
            assert downstream.calls["Slow"] == 1
            assert api.in_use("downstream-pool") == 0
    finally:
        await channel.close()
        await client.close()
        await server.stop(None)


def test_sync_interceptor_guards_calls_to_a_real_downstream(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    from bulwark.sync import Client

    replica = replica_factory("r0", [etcd.endpoint])
    with admin(replica.address) as api:
        api.put_breaker("downstream", calls=4, wait=30)

    downstream = Downstream()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((downstream.sync_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            admin(replica.address) as api,
            Client(replica.address, client_id="sync-interceptor") as client,
        ):
            interceptor = BulwarkInterceptor(client, {"/demo.Downstream/": Guard("downstream")})
            with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
                channel = grpc.intercept_channel(raw, interceptor)
                call = channel.unary_unary("/demo.Downstream/Call")
                assert call(b"hi", timeout=5) == b"ok:hi"

                downstream.mode = "invalid"
                for _ in range(6):
                    with pytest.raises(grpc.RpcError) as err:
                        call(b"x", timeout=5)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
                wait_for(lambda: api.breaker("downstream").window.calls >= 4, 5)
                breaker = api.breaker("downstream")
                assert breaker.status.state == CLOSED and breaker.window.failures == 0, breaker

                downstream.mode = "unavailable"
                reached = 0
                deadline = time.monotonic() + 10
                while True:
                    assert time.monotonic() < deadline, "the breaker never tripped"
                    with pytest.raises(grpc.RpcError) as err:
                        call(b"x", timeout=5)
                    if isinstance(err.value, RejectedCall):
                        break
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                    reached += 1
                    time.sleep(0.02)
                assert reached >= 2
                rejected = err.value
                assert isinstance(rejected, grpc.Call)
                assert rejected.code() == grpc.StatusCode.UNAVAILABLE
                assert rejected_by(rejected) == "breaker"
                calls_before = downstream.calls["Call"]
                future = call.future(b"x", timeout=5)
                with pytest.raises(RejectedCall):
                    future.result()
                for _ in range(3):
                    with pytest.raises(RejectedCall):
                        call(b"x", timeout=5)
                assert downstream.calls["Call"] == calls_before
    finally:
        server.stop(None)


async def test_client_over_mutual_tls_with_a_token(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
) -> None:
    """The client reaches a replica that requires client certificates, and its token
    (not its certificate) decides who it is."""
    from bulwark.v1 import auth_pb2, auth_pb2_grpc
    from bulwark_server.security.certs import write_bundle

    pki = write_bundle(
        tmp_path / "pki",
        ["localhost", "127.0.0.1"],
        [("root", "admin"), ("svc", "dataplane")],
    )
    replica = replica_factory(
        "mtls",
        [etcd.endpoint],
        f"--tls-cert={pki['server']}",
        f"--tls-key={pki['server-key']}",
        f"--tls-client-ca={pki['ca']}",
        "--auth=on",
    )
    admin_creds = grpc.ssl_channel_credentials(
        pki["ca"].read_bytes(), pki["root-key"].read_bytes(), pki["root"].read_bytes()
    )
    with grpc.secure_channel(replica.address, admin_creds) as channel:
        token = (
            auth_pb2_grpc.AuthServiceStub(channel)
            .CreateToken(
                auth_pb2.CreateTokenRequest(name="checkout", role=auth_pb2.ACCESS_ROLE_DATAPLANE),
                timeout=5,
            )
            .token
        )
        breaker_pb2_grpc.CircuitBreakerServiceStub(channel).PutBreaker(
            breaker_pb2.PutBreakerRequest(name="tls-dep"), timeout=5
        )
    client = AsyncClient(
        [replica.address],
        ca=str(pki["ca"]),
        cert=str(pki["svc"]),
        key=str(pki["svc-key"]),
        token=token,
    )
    await client.start()
    try:
        assert client.staleness()["breakers"] == 0.0
        decision = await client.allow("tls-dep")
        assert decision.allowed and decision.source == "cache"
        async with client.breaker("tls-dep"):
            pass
    finally:
        await client.close()
    # Without the client certificate the handshake is refused: nothing is decided remotely.
    bare = AsyncClient([replica.address], ca=str(pki["ca"]), token=token, timeout=1.0)
    await bare.start()
    try:
        assert bare.breakers.synced_at is None
    finally:
        await bare.close()
