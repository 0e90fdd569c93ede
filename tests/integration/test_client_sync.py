"""The synchronous Client against a real etcd and real replica processes.

Decisions come from the watch-fed caches, outcomes go out in batches, calls and
watches fail over between endpoints, and while no endpoint answers the local
fallbacks (last known state, local breaker, fallback rate) keep deciding until
the caches resync.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from bulwark._settings import ClientOptions
from bulwark.errors import BreakerOpenError, RateLimitedError
from bulwark.sync import Client
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, wait_for

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE


class Admin:
    """Plain gRPC stubs on one replica, to set things up and look behind the client."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(self.channel)
        self.features = feature_pb2_grpc.FeatureServiceStub(self.channel)
        self.bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(self.channel)
        self.limits = ratelimit_pb2_grpc.RateLimitServiceStub(self.channel)
        self.registry = registry_pb2_grpc.RegistryServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def put_breaker(self, name: str, wait: float = 30.0) -> breaker_pb2.CircuitBreaker:
        config = breaker_pb2.BreakerConfig(
            failure_rate_threshold=50,
            sliding_window_type=breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED,
            sliding_window_size=10,
            minimum_number_of_calls=10,
            permitted_number_of_calls_in_half_open_state=1,
        )
        config.wait_duration_in_open_state.FromNanoseconds(int(wait * 1e9))
        return self.breakers.PutBreaker(
            breaker_pb2.PutBreakerRequest(name=name, config=config), timeout=5
        ).breaker

    def breaker(self, name: str) -> breaker_pb2.CircuitBreaker:
        return self.breakers.GetBreaker(breaker_pb2.GetBreakerRequest(name=name), timeout=5).breaker

    def force(self, name: str, state: int) -> None:
        self.breakers.ForceState(
            breaker_pb2.ForceStateRequest(name=name, state=state, actor="ops", reason="test"),
            timeout=5,
        )

    def trip(self, name: str) -> None:
        self.breakers.ReportOutcomes(
            breaker_pb2.ReportOutcomesRequest(
                reporter="admin",
                outcomes=[
                    breaker_pb2.BreakerOutcomes(
                        name=name, counts=breaker_pb2.OutcomeCounts(failures=10)
                    )
                ],
            ),
            timeout=5,
        )

    def in_use(self, bulkhead: str) -> int:
        return self.bulkheads.GetBulkhead(
            bulkhead_pb2.GetBulkheadRequest(name=bulkhead), timeout=5
        ).bulkhead.in_use


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cache_cannot_decide(client: Client, name: str) -> bool:
    return client.breakers.decide(name, time.monotonic()).source == "remote-needed"


def wait_leader(replicas: list[ReplicaProcess]) -> None:
    wait_for(
        lambda: any((view := get_leader(r.address)) is not None and view.is_self for r in replicas),
        10,
    )


@contextlib.contextmanager
def running(client: Client) -> Iterator[Client]:
    try:
        client.start()
        yield client
    finally:
        client.close()


def timed(predicate: Callable[[], object], timeout: float) -> float:
    """Seconds until ``predicate()`` holds (fails the test after ``timeout``)."""
    started = time.monotonic()
    wait_for(predicate, timeout, interval=0.01)
    return time.monotonic() - started


def state(client: Client, name: str) -> int | None:
    view = client.breakers.get(name)
    return None if view is None else view.state


def successes(reports: list[breaker_pb2.ReportOutcomesRequest], name: str) -> int:
    return sum(o.counts.successes for r in reports for o in r.outcomes if o.name == name)


def test_decisions_from_the_cache_batched_reports_forced_states_and_features(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("r0", [etcd.endpoint])
    wait_leader([replica])
    admin = Admin(replica.address)
    client = Client(replica.address, client_id="sync-test")
    try:
        admin.put_breaker("payments")
        admin.put_breaker("inventory")
        admin.features.PutFeature(
            feature_pb2.PutFeatureRequest(
                feature=feature_pb2.Feature(
                    name="checkout",
                    fallback="cached-prices",
                    depends_on=[
                        feature_pb2.Dependency(
                            kind=feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER, name="inventory"
                        )
                    ],
                )
            ),
            timeout=5,
        )
        with running(client):
            assert client.staleness() == {"breakers": 0.0, "features": 0.0, "primaries": 0.0}
            assert state(client, "payments") == CLOSED
            before = admin.breaker("payments")

            # allow() is answered in-process: far more decisions than any RPC could give.
            decisions, started = 0, time.perf_counter()
            while time.perf_counter() - started < 0.5:
                decision = client.allow("payments")
                assert decision.allowed and decision.source == "cache"
                decisions += 1
            rate = decisions / (time.perf_counter() - started)
            assert rate > 20_000, rate
            after = admin.breaker("payments")
            assert after.revision == before.revision
            assert after.status == before.status
            assert after.window.calls == 0

            # Outcomes go out in batches, not one RPC per call.
            reported: list[breaker_pb2.ReportOutcomesRequest] = []
            methods: list[str] = []
            call = client._call

            def counting(stub: Any, method: str, request: Any, **kw: Any) -> Any:
                methods.append(method)
                response = call(stub, method, request, **kw)
                if method == "ReportOutcomes":
                    reported.append(request)
                return response

            client._call = counting  # type: ignore[method-assign]
            for _ in range(990):
                with client.breaker("payments"):
                    pass
            timed(lambda: successes(reported, "payments") == 990, 1.0)
            assert 1 <= len(reported) <= 10, len(reported)
            assert "Allow" not in methods
            assert admin.breaker("payments").window.calls == 10  # the count window is full

            # Ten failures fill the window (10 calls, 100% failures): the fleet's breaker
            # trips and the watch brings OPEN into the cache within a second.
            for _ in range(10):
                with pytest.raises(ZeroDivisionError), client.breaker("payments"):
                    1 / 0  # noqa: B018
            took = timed(lambda: state(client, "payments") == OPEN, 1.0)
            assert took < 1.0
            with pytest.raises(BreakerOpenError) as refused:
                with client.breaker("payments"):
                    pytest.fail("a refused call ran")
            assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 30
            assert admin.breaker("payments").status.state == OPEN
            assert "Allow" not in methods  # refused from the cache too

            # An operator's ForceState reaches the cache within a second; the feature
            # depending on the breaker follows it.
            feature = client.feature("checkout")
            assert feature.available and feature.status == AVAILABLE
            assert feature.fallback == "cached-prices"
            admin.force("inventory", FORCED_OPEN)
            timed(lambda: state(client, "inventory") == FORCED_OPEN, 1.0)
            decision = client.allow("inventory")
            assert not decision.allowed and decision.source == "cache"
            timed(lambda: not client.feature("checkout").available, 1.0)
            assert client.feature("checkout").status == DISABLED
            admin.force("inventory", CLOSED)
            timed(lambda: client.feature("checkout").available, 1.0)
            assert client.allow("inventory").allowed
            assert client.feature("unknown-feature").available  # unknown is not degraded
    finally:
        admin.close()


def test_permits_rate_limits_guard_and_primary_changes(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("r0", [etcd.endpoint])
    wait_leader([replica])
    admin = Admin(replica.address)
    client = Client([replica.address])
    try:
        admin.bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="db", max_concurrent=2)
            ),
            timeout=5,
        )
        admin.limits.PutLimit(
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
        admin.put_breaker("search")
        for instance_id, priority in (("a", 100), ("b", 50)):
            instance = registry_pb2.Instance(
                service="orders",
                id=instance_id,
                address=f"10.0.0.{priority}:7000",
                priority=priority,
            )
            instance.ttl.FromSeconds(30)
            admin.registry.RegisterInstance(
                registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
            )
        with running(client):
            # A permit is held inside the block and released on the way out, even on error.
            with client.permit("db", ttl=10) as permit:
                assert permit.id and permit.bulkhead == "db"
                assert admin.in_use("db") == 1
            assert admin.in_use("db") == 0
            with pytest.raises(KeyError), client.permit("db"):
                assert admin.in_use("db") == 1
                raise KeyError("boom")
            assert admin.in_use("db") == 0

            # Rate limits: three per minute for one user, then refused.
            assert [client.check("api", {"user": "ann"}) for _ in range(4)] == [
                True,
                True,
                True,
                False,
            ]
            with pytest.raises(RateLimitedError):
                client.require("api", {"user": "ann"})
            client.require("api", [("user", "bob")])
            assert client.lease("api", {"user": "cid"}, 2) >= 1
            assert client.check_local("api", {"user": "cid"})

            # guard: limit, breaker and bulkhead around a plain function.
            seen: list[int] = []

            @client.guard(breaker="search", bulkhead="db", limit=("api", {"user": "dan"}))
            def search(query: str) -> str:
                seen.append(admin.in_use("db"))
                return query.upper()

            assert search("x") == "X"
            assert seen == [1] and admin.in_use("db") == 0

            # Primaries: known from the cache, and a failover calls back.
            wait_for(lambda: client.primary("orders") is not None, 2)
            first = client.primary("orders")
            assert first is not None
            changes: list[tuple[str, registry_pb2.Primary | None]] = []
            fired = threading.Event()

            def on_change(service: str, primary: registry_pb2.Primary | None) -> None:
                changes.append((service, primary))
                fired.set()

            client.on_primary_change("orders", on_change)
            admin.registry.DeregisterInstance(
                registry_pb2.DeregisterInstanceRequest(
                    service="orders", instance_id=first.instance_id
                ),
                timeout=5,
            )
            assert fired.wait(2), "no primary change callback"
            service, promoted = changes[-1]
            assert service == "orders" and promoted is not None
            assert promoted.instance_id != first.instance_id
            assert promoted.epoch > first.epoch
            assert client.primary("orders") == promoted
    finally:
        admin.close()


def test_calls_and_watches_fail_over_to_the_second_endpoint(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    first = replica_factory("r0", [etcd.endpoint])
    second = replica_factory("r1", [etcd.endpoint])
    wait_leader([first, second])
    admin = Admin(second.address)
    client = Client([first.address, second.address], timeout=2.0)
    try:
        admin.put_breaker("payments", wait=1.0)
        with running(client):
            assert state(client, "payments") == CLOSED
            admin.trip("payments")
            timed(lambda: state(client, "payments") == OPEN, 2.0)
            first.stop()

            # The watches move to the second replica and resume: a change made there
            # reaches the cache, which is live again.
            admin.put_breaker("late")
            timed(lambda: state(client, "late") == CLOSED, 10.0)
            wait_for(lambda: max(client.staleness().values()) == 0.0, 2)
            wait_leader([second])  # outcomes are aggregated by the leader

            # Once the wait is over the cache cannot decide (a HALF_OPEN trial is the
            # fleet's): Allow goes to the second replica.
            wait_for(lambda: cache_cannot_decide(client, "payments"), 3)
            trial = client.allow("payments")
            assert trial.source == "remote", trial
            assert trial.allowed and trial.state == HALF_OPEN
            timed(lambda: state(client, "payments") == HALF_OPEN, 2.0)
            refused = client.allow("payments")  # the one trial permit is taken
            assert refused.source == "remote" and not refused.allowed
            client.record("payments", True)
            timed(lambda: state(client, "payments") == CLOSED, 3.0)
            assert client.allow("payments").source == "cache"

            # A breaker the cache does not know yet is asked of the second replica too.
            admin.put_breaker("brand-new")
            answer = client.allow("brand-new")
            assert answer.allowed and answer.source in ("remote", "cache")
    finally:
        admin.close()


def test_unreachable_bulwark_local_fallbacks_then_resync(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    port = free_port()
    replica = replica_factory("r0", [etcd.endpoint], f"--listen=127.0.0.1:{port}")
    assert replica.address == f"127.0.0.1:{port}"
    wait_leader([replica])
    admin = Admin(replica.address)
    client = Client(replica.address, options=ClientOptions(fallback_rate=5.0, timeout=1.0))
    try:
        admin.put_breaker("payments")
        with running(client):
            assert state(client, "payments") == CLOSED
            replica.stop()
            wait_for(lambda: client.staleness()["breakers"] > 0, 5)

            # The last known state keeps answering, its staleness growing.
            decision = client.allow("payments")
            assert decision.allowed and decision.state == CLOSED
            wait_for(lambda: all(s > 0 for s in client.staleness().values()), 5)
            stale = client.staleness()
            assert all(s < math.inf for s in stale.values()), stale
            time.sleep(0.3)
            later = client.staleness()
            assert all(later[k] >= stale[k] + 0.25 for k in stale), (stale, later)

            # Failures recorded while away trip the local breaker (its config comes
            # from the cache: 10 calls, 50%).
            for i in range(10):
                assert client.allow("payments").allowed, i
                client.record("payments", False)
            refused = client.allow("payments")
            assert not refused.allowed and refused.source == "local"
            assert refused.state == OPEN and refused.retry_after is not None
            with pytest.raises(BreakerOpenError):
                with client.breaker("payments"):
                    pytest.fail("a refused call ran")

            # Rate limits fall back to the local bucket: 5 per second, burst 5.
            started = time.monotonic()
            answers = [client.check("api", {"user": "ann"}) for _ in range(8)]
            elapsed = time.monotonic() - started
            assert answers[:5] == [True] * 5 and False in answers, answers
            assert sum(answers) <= 5 + math.ceil(5 * elapsed), (answers, elapsed)
            assert not client.check_local("api", {"user": "ann"}, hits=5)

            # Bulwark is back on the same address: the caches resync, the outcomes
            # recorded while away reach the fleet (whose breaker trips on them), and
            # the fleet's breaker decides again instead of the local one.
            replica.start()
            replica.wait_serving()
            took = timed(lambda: max(client.staleness().values()) == 0.0, 15)
            wait_for(lambda: admin.breaker("payments").status.state == OPEN, 10)
            timed(lambda: state(client, "payments") == OPEN, 1.0)
            decision = client.allow("payments")
            assert decision.source == "cache" and not decision.allowed, (decision, took)
            admin.force("payments", CLOSED)  # an operator resets the breaker
            timed(lambda: state(client, "payments") == CLOSED, 1.0)
            decision = client.allow("payments")
            assert decision.allowed and decision.source == "cache", decision
            with client.breaker("payments"):
                pass
    finally:
        admin.close()


def test_threads_share_one_client_and_close_stops_everything_and_flushes(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("r0", [etcd.endpoint])
    wait_leader([replica])
    admin = Admin(replica.address)
    try:
        admin.put_breaker("payments")
        admin.put_breaker("search")
        with Client(replica.address, report_interval=60.0) as client:
            reported: list[breaker_pb2.ReportOutcomesRequest] = []
            call = client._call

            def spy(stub: Any, method: str, request: Any, **kw: Any) -> Any:
                response = call(stub, method, request, **kw)
                if method == "ReportOutcomes":
                    reported.append(request)
                return response

            client._call = spy  # type: ignore[method-assign]
            client.record("payments", True)  # the first report goes out at once
            timed(lambda: successes(reported, "payments") == 1, 1.0)

            # Eight threads decide and record at once while an operator changes a
            # breaker the watch thread applies: nothing is lost, nothing raises.
            errors: list[BaseException] = []

            def work() -> None:
                try:
                    for i in range(500):
                        with client.breaker("payments"):
                            pass
                        client.allow("search")
                        client.check_local("api", {"user": str(i % 3)})
                        client.staleness()
                except BaseException as exc:
                    errors.append(exc)

            workers = [threading.Thread(target=work) for _ in range(8)]
            for worker in workers:
                worker.start()
            admin.force("search", FORCED_OPEN)
            for worker in workers:
                worker.join(30)
            assert not errors, errors
            timed(lambda: state(client, "search") == FORCED_OPEN, 1.0)

            # Full batches (500 outcomes) went out without waiting for the interval.
            time.sleep(0.2)
            sent = successes(reported, "payments")
            assert 1 + 8 * 500 - 500 < sent <= 1 + 8 * 500, sent
            sizes = [sum(o.counts.successes for o in r.outcomes) for r in reported[1:]]
            assert sizes and all(size >= 500 for size in sizes), sizes  # full batches only

            # With a 60 s interval a few outcomes wait for the next report: close() sends them.
            for _ in range(3):
                client.record("payments", True)
            time.sleep(0.2)
            assert successes(reported, "payments") == sent
            threads = {t.name: t for t in threading.enumerate() if t.name.startswith("bulwark-")}
            assert set(threads) == {
                "bulwark-breakers",
                "bulwark-features",
                "bulwark-primaries",
                "bulwark-reporter",
            }
        assert successes(reported, "payments") == 1 + 8 * 500 + 3  # flushed by close()
        for thread in threads.values():
            assert not thread.is_alive(), thread.name
        client.close()  # idempotent
        with pytest.raises(RuntimeError):
            client.start()
    finally:
        admin.close()


def test_no_endpoints_and_an_endpoint_that_never_answers() -> None:
    with pytest.raises(ValueError):
        Client([])
    client = Client("127.0.0.1:1", options=ClientOptions(timeout=0.2))
    try:
        # Nothing listens: unknown breakers are decided by a default local breaker.
        decision = client.allow("nothing")
        assert decision.allowed and decision.source == "local"
        assert client.check("api", {"user": "x"})  # no fallback rate: fail open
    finally:
        client.close()
