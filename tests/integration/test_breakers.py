"""Circuit breakers shared by a fleet, against real replica processes and a real etcd."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, watch_pb2
from bulwark_server import timestamps
from bulwark_server.loopback.deployment import LocalCluster, ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import EtcdStore
from bulwark_server.store.keys import BREAKER_KIND, BREAKER_WINDOW_KIND
from tests.integration.conftest import get_leader, start_replicas, wait_for

OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN


def stub(address: str) -> tuple[grpc.Channel, breaker_pb2_grpc.CircuitBreakerServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, breaker_pb2_grpc.CircuitBreakerServiceStub(channel)


def small_config(**overrides: object) -> breaker_pb2.BreakerConfig:
    config = breaker_pb2.BreakerConfig(
        failure_rate_threshold=50,
        sliding_window_size=10,
        minimum_number_of_calls=10,
        permitted_number_of_calls_in_half_open_state=10,
        wait_duration_in_open_state=duration_pb2.Duration(seconds=1),
    )
    for key, value in overrides.items():
        if isinstance(value, duration_pb2.Duration):
            getattr(config, key).CopyFrom(value)
        else:
            setattr(config, key, value)
    return config


def report(
    s: breaker_pb2_grpc.CircuitBreakerServiceStub, name: str, ok: int, failed: int, who: str
) -> breaker_pb2.ReportOutcomesResponse:
    return s.ReportOutcomes(
        breaker_pb2.ReportOutcomesRequest(
            reporter=who,
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name=name, counts=breaker_pb2.OutcomeCounts(successes=ok, failures=failed)
                )
            ],
        ),
        timeout=5,
    )


@pytest.fixture
def two_replicas(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> list[ReplicaProcess]:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint])
    wait_for(lambda: any((get_leader(r.address) or _no()).is_self for r in replicas), 10)
    return replicas


def _no():  # type: ignore[no-untyped-def]
    from bulwark.v1 import cluster_pb2

    return cluster_pb2.GetLeaderResponse()


def test_put_get_list_delete_and_validation(two_replicas: list[ReplicaProcess]):
    channel, s = stub(two_replicas[0].address)
    with channel:
        created = s.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        assert created.created
        config = created.breaker.config
        # resilience4j's defaults filled in
        assert config.failure_rate_threshold == 50
        assert config.slow_call_rate_threshold == 100
        assert config.sliding_window_size == 100
        assert config.minimum_number_of_calls == 100
        assert config.permitted_number_of_calls_in_half_open_state == 10
        assert config.wait_duration_in_open_state.seconds == 60
        assert created.breaker.status.state == CLOSED

        for i in range(5):
            s.PutBreaker(breaker_pb2.PutBreakerRequest(name=f"dep-{i}"), timeout=5)
        names, token = [], ""
        while True:
            page = s.ListBreakers(
                breaker_pb2.ListBreakersRequest(page_size=2, page_token=token), timeout=5
            )
            names += [b.name for b in page.breakers]
            token = page.next_page_token
            if not token:
                break
        assert names == [f"dep-{i}" for i in range(5)] + ["payments"]

        bad_cases = [
            (
                breaker_pb2.PutBreakerRequest(
                    name="x", config=small_config(failure_rate_threshold=0)
                ),
                "config.failure_rate_threshold",
            ),
            (
                breaker_pb2.PutBreakerRequest(name="x", config=small_config(sliding_window_size=0)),
                "config.sliding_window_size",
            ),
            (breaker_pb2.PutBreakerRequest(name="bad name!"), "name"),
            (breaker_pb2.PutBreakerRequest(name="x", expected_revision=-1), "expected_revision"),
        ]
        for request, field in bad_cases:
            with pytest.raises(grpc.RpcError) as err:
                s.PutBreaker(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            s.GetBreaker(breaker_pb2.GetBreakerRequest(name="x"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was stored

        stale_revision = created.breaker.revision
        s.PutBreaker(
            breaker_pb2.PutBreakerRequest(name="payments", config=small_config()), timeout=5
        )
        with pytest.raises(grpc.RpcError) as err:
            s.PutBreaker(
                breaker_pb2.PutBreakerRequest(name="payments", expected_revision=stale_revision),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.ABORTED

        s.DeleteBreaker(breaker_pb2.DeleteBreakerRequest(name="payments"), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            s.Allow(breaker_pb2.AllowRequest(name="payments"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reports_on_two_replicas_trip_once_and_the_other_replica_sees_it_fast(
    two_replicas: list[ReplicaProcess],
):
    a, b = two_replicas
    ch_a, sa = stub(a.address)
    ch_b, sb = stub(b.address)
    with ch_a, ch_b:
        sa.PutBreaker(breaker_pb2.PutBreakerRequest(name="db", config=small_config()), timeout=5)
        wait_for(lambda: _exists(sb, "db"), 5)
        watch = sb.WatchBreakers(breaker_pb2.WatchBreakersRequest(names=["db"]), timeout=30)
        first = next(watch)
        assert first.type == watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
        assert next(watch).type == watch_pb2.WATCH_EVENT_TYPE_SYNCED

        # 10 calls, 6 failures, reported half to each replica: only the total trips it.
        report(sa, "db", ok=2, failed=3, who="svc-1")
        assert (
            sb.GetBreaker(breaker_pb2.GetBreakerRequest(name="db"), timeout=5).breaker.status.state
            == CLOSED
        )
        report(sb, "db", ok=2, failed=3, who="svc-2")

        for event in watch:
            if event.breaker.status.state == OPEN:
                seen_at = time.time()
                break
        watch.cancel()
        tripped = event.breaker.status.last_transition
        lag_ms = (seen_at - tripped.at.ToNanoseconds() / 1e9) * 1000
        assert lag_ms < 100, f"watcher saw OPEN {lag_ms:.0f} ms after the trip"
        assert tripped.from_state == CLOSED and tripped.to_state == OPEN
        assert tripped.calls == 10 and tripped.failure_rate == pytest.approx(60.0)

        # More failures while OPEN do not trip it again.
        report(sa, "db", ok=0, failed=10, who="svc-1")
        final = sa.GetBreaker(breaker_pb2.GetBreakerRequest(name="db"), timeout=5).breaker
        assert final.status.transitions == 1
        assert not sa.Allow(breaker_pb2.AllowRequest(name="db"), timeout=5).allowed


def _exists(s: breaker_pb2_grpc.CircuitBreakerServiceStub, name: str) -> bool:
    try:
        s.GetBreaker(breaker_pb2.GetBreakerRequest(name=name), timeout=2)
        return True
    except grpc.RpcError:
        return False


async def _allow_many(
    addresses: list[str], name: str, count: int
) -> list[breaker_pb2.AllowResponse]:
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [breaker_pb2_grpc.CircuitBreakerServiceStub(c) for c in channels]
    try:
        return await asyncio.gather(
            *(
                stubs[i % len(stubs)].Allow(
                    breaker_pb2.AllowRequest(name=name, caller=f"c{i}"), timeout=20
                )
                for i in range(count)
            )
        )
    finally:
        for channel in channels:
            await channel.close()


def test_half_open_admits_exactly_n_trials_across_replicas(two_replicas: list[ReplicaProcess]):
    a, b = two_replicas
    ch, s = stub(a.address)
    with ch:
        s.PutBreaker(
            breaker_pb2.PutBreakerRequest(
                name="search", config=small_config(permitted_number_of_calls_in_half_open_state=7)
            ),
            timeout=5,
        )
        report(s, "search", ok=0, failed=10, who="svc")
        wait_for(
            lambda: (
                s.GetBreaker(
                    breaker_pb2.GetBreakerRequest(name="search"), timeout=2
                ).breaker.status.state
                == OPEN
            ),
            5,
        )
        time.sleep(1.1)  # the wait in OPEN
        answers = asyncio.run(_allow_many([a.address, b.address], "search", 200))
        granted = [r for r in answers if r.allowed]
        assert len(granted) == 7
        assert all(r.trial for r in granted)
        assert all(r.retry_after.ToNanoseconds() > 0 for r in answers if not r.allowed)

        # Seven successful trials close it again.
        report(s, "search", ok=7, failed=0, who="svc")
        wait_for(
            lambda: (
                s.GetBreaker(
                    breaker_pb2.GetBreakerRequest(name="search"), timeout=2
                ).breaker.status.state
                == CLOSED
            ),
            5,
        )


def test_watch_resumes_from_a_revision_without_a_snapshot(two_replicas: list[ReplicaProcess]):
    ch, s = stub(two_replicas[1].address)
    with ch:
        put = s.PutBreaker(breaker_pb2.PutBreakerRequest(name="cache"), timeout=5)
        seen = put.breaker.revision
        s.ForceState(
            breaker_pb2.ForceStateRequest(
                name="cache",
                state=breaker_pb2.BREAKER_STATE_FORCED_OPEN,
                actor="ops",
                reason="drill",
            ),
            timeout=5,
        )
        s.DeleteBreaker(breaker_pb2.DeleteBreakerRequest(name="cache"), timeout=5)
        watch = s.WatchBreakers(breaker_pb2.WatchBreakersRequest(start_revision=seen), timeout=10)
        forced, deleted = next(watch), next(watch)
        watch.cancel()
        assert forced.type == watch_pb2.WATCH_EVENT_TYPE_PUT
        assert forced.breaker.status.state == breaker_pb2.BREAKER_STATE_FORCED_OPEN
        assert forced.breaker.status.last_transition.actor == "ops"
        assert deleted.type == watch_pb2.WATCH_EVENT_TYPE_DELETE
        assert deleted.breaker.name == "cache"
        assert forced.revision > seen and deleted.revision > forced.revision


def test_open_to_half_open_timer_survives_leader_failover(local_cluster: LocalCluster):
    replicas = local_cluster.replicas
    views = {r.replica_id: get_leader(r.address) for r in replicas}
    leader_id = next(v.leader.replica_id for v in views.values() if v is not None and v.is_self)
    leader = next(r for r in replicas if r.replica_id == leader_id)
    other = next(r for r in replicas if r is not leader)
    ch, s = stub(other.address)
    with ch:
        s.PutBreaker(
            breaker_pb2.PutBreakerRequest(
                name="inventory",
                config=small_config(
                    wait_duration_in_open_state=duration_pb2.Duration(seconds=3),
                    automatic_transition_from_open_to_half_open_enabled=True,
                ),
            ),
            timeout=5,
        )
        report(s, "inventory", ok=0, failed=10, who="svc")
        opened = wait_for(
            lambda: (
                (
                    b := s.GetBreaker(
                        breaker_pb2.GetBreakerRequest(name="inventory"), timeout=2
                    ).breaker
                ).status.state
                == OPEN
                and b
            ),
            5,
        )
        leader.signal(signal.SIGKILL)
        half = wait_for(
            lambda: (
                (
                    b := s.GetBreaker(
                        breaker_pb2.GetBreakerRequest(name="inventory"), timeout=2
                    ).breaker
                ).status.state
                == HALF_OPEN
                and b
            ),
            10,
        )
        opened_at = opened.status.state_since.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
        moved_at = half.status.state_since.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
        # Moved by the new leader's timer, no Allow involved: after the wait, and
        # late by no more than the lease TTL plus a second of election.
        assert 3.0 <= moved_at - opened_at <= 3.0 + 2 + 1.5
        assert half.status.last_transition.actor == ""  # type: ignore[attr-defined]


BAD_REQUESTS = [
    ("Allow", breaker_pb2.AllowRequest(name=""), "name"),
    ("Allow", breaker_pb2.AllowRequest(name="ok", caller="x" * 300), "caller"),
    ("GetBreaker", breaker_pb2.GetBreakerRequest(name="a/b"), "name"),
    (
        "DeleteBreaker",
        breaker_pb2.DeleteBreakerRequest(name="ok", expected_revision=-5),
        "expected_revision",
    ),
    ("ListBreakers", breaker_pb2.ListBreakersRequest(page_size=5000), "page_size"),
    ("ListBreakers", breaker_pb2.ListBreakersRequest(page_token="%%%"), "page_token"),
    ("ReportOutcomes", breaker_pb2.ReportOutcomesRequest(reporter=""), "reporter"),
    (
        "ReportOutcomes",
        breaker_pb2.ReportOutcomesRequest(
            reporter="r",
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name="ok", counts=breaker_pb2.OutcomeCounts(failures=-1)
                )
            ],
        ),
        "outcomes[0].counts.failures",
    ),
    (
        "ReportOutcomes",
        breaker_pb2.ReportOutcomesRequest(
            reporter="r",
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name="ok", counts=breaker_pb2.OutcomeCounts(successes=1, slow_calls=2)
                )
            ],
        ),
        "outcomes[0].counts.slow_calls",
    ),
    (
        "ForceState",
        breaker_pb2.ForceStateRequest(name="ok", state=breaker_pb2.BREAKER_STATE_HALF_OPEN),
        "state",
    ),
    ("ForceState", breaker_pb2.ForceStateRequest(name="ok", state=99), "state"),
]


def test_bad_input_is_invalid_argument_naming_the_field(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("solo", [etcd.endpoint])
    ch, s = stub(replica.address)
    with ch:
        s.PutBreaker(breaker_pb2.PutBreakerRequest(name="ok"), timeout=5)
        before = s.GetBreaker(breaker_pb2.GetBreakerRequest(name="ok"), timeout=5).breaker
        for method, request, field in BAD_REQUESTS:
            with pytest.raises(grpc.RpcError) as err:
                getattr(s, method)(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, field)
            assert field in (err.value.details() or ""), (method, err.value.details())
        watch = s.WatchBreakers(breaker_pb2.WatchBreakersRequest(names=["no/slash"]), timeout=5)
        with pytest.raises(grpc.RpcError) as err:
            next(watch)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "names[0]" in (err.value.details() or "")
        after = s.GetBreaker(breaker_pb2.GetBreakerRequest(name="ok"), timeout=5).breaker
        assert after.revision == before.revision  # nothing stored by rejected requests


def test_new_leader_goes_on_from_the_checkpointed_window(local_cluster: LocalCluster):
    replicas = local_cluster.replicas
    leader_id = next(
        v.leader.replica_id
        for v in (get_leader(r.address) for r in replicas)
        if v is not None and v.is_self
    )
    leader = next(r for r in replicas if r.replica_id == leader_id)
    survivors = [r for r in replicas if r is not leader]
    ch, s = stub(survivors[0].address)
    with ch:
        s.PutBreaker(breaker_pb2.PutBreakerRequest(name="ledger", config=small_config()), timeout=5)
        # Half the window, all failures: below the minimum number of calls, not evaluated.
        report(s, "ledger", ok=0, failed=5, who="svc")
        wait_for(
            lambda: (
                s.GetBreaker(
                    breaker_pb2.GetBreakerRequest(name="ledger"), timeout=2
                ).breaker.window.calls
                == 5
            ),
            5,
        )  # the checkpoint (every second) reached this replica
        leader.signal(signal.SIGKILL)

        def reported() -> bool:
            try:
                report(s, "ledger", ok=5, failed=0, who="svc")
                return True
            except grpc.RpcError:
                return False  # no leader yet

        wait_for(reported, 10, interval=0.2)
        # 10 calls, 5 failed: only the restored window reaches the 50% threshold.
        breaker = wait_for(
            lambda: (
                (
                    b := s.GetBreaker(
                        breaker_pb2.GetBreakerRequest(name="ledger"), timeout=2
                    ).breaker
                ).status.state
                == OPEN
                and b
            ),
            5,
        )
        assert breaker.status.last_transition.calls == 10  # type: ignore[attr-defined]


def test_a_recreated_breaker_starts_with_an_empty_window(two_replicas: list[ReplicaProcess]):
    leader_view = [get_leader(r.address) for r in two_replicas]
    follower = next(
        r for r, v in zip(two_replicas, leader_view, strict=True) if v is not None and not v.is_self
    )
    ch, s = stub(follower.address)
    with ch:
        s.PutBreaker(breaker_pb2.PutBreakerRequest(name="c", config=small_config()), timeout=5)
        report(s, "c", ok=5, failed=4, who="svc")  # 9 calls: one short of the minimum
        s.DeleteBreaker(breaker_pb2.DeleteBreakerRequest(name="c"), timeout=5)
        s.PutBreaker(breaker_pb2.PutBreakerRequest(name="c", config=small_config()), timeout=5)
        report(s, "c", ok=0, failed=1, who="svc")
        breaker = s.GetBreaker(breaker_pb2.GetBreakerRequest(name="c"), timeout=5).breaker
        assert breaker.status.state == CLOSED  # 1 call, not 10: nothing carried over


def test_many_concurrent_trials_answer_without_errors(two_replicas: list[ReplicaProcess]):
    a, b = two_replicas
    ch, s = stub(a.address)
    with ch:
        s.PutBreaker(
            breaker_pb2.PutBreakerRequest(
                name="wide", config=small_config(permitted_number_of_calls_in_half_open_state=150)
            ),
            timeout=5,
        )
        report(s, "wide", ok=0, failed=10, who="svc")
        wait_for(
            lambda: (
                s.GetBreaker(
                    breaker_pb2.GetBreakerRequest(name="wide"), timeout=2
                ).breaker.status.state
                == OPEN
            ),
            5,
        )
        time.sleep(1.1)
        answers = asyncio.run(_allow_many([a.address, b.address], "wide", 200))
        granted = sum(r.allowed for r in answers)
        assert 0 < granted <= 150
        final = s.GetBreaker(breaker_pb2.GetBreakerRequest(name="wide"), timeout=5).breaker
        assert final.status.half_open_permits_granted == granted


async def _write_old_checkpoint(endpoint: str, name: str, failures: int) -> None:
    """A window record as the previous version's checkpoint wrote it: one put per breaker."""
    store = EtcdStore([endpoint], timeout=2.0)
    await store.start(wait=10)
    try:
        own = await store.read(BREAKER_KIND, name)
        assert own is not None
        record = breaker_pb2.BreakerWindow(
            name=name,
            stats=breaker_pb2.WindowStats(
                calls=failures, failures=failures, failure_rate=-1, slow_call_rate=-1
            ),
            checkpointed_at=timestamps.at(time.time()),
            breaker_create_revision=own.create_revision,
        )
        record.buckets.add(start=time.time(), calls=failures, failures=failures, slow_calls=0)
        await store.put(BREAKER_WINDOW_KIND, name, record.SerializeToString())
    finally:
        await store.close()


def test_a_new_leader_restores_a_window_the_previous_version_checkpointed(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    first = replica_factory("first", [etcd.endpoint])
    ch, s = stub(first.address)
    with ch:
        s.PutBreaker(breaker_pb2.PutBreakerRequest(name="legacy", config=small_config()), timeout=5)
    first.stop()
    asyncio.run(_write_old_checkpoint(etcd.endpoint, "legacy", failures=5))
    second = replica_factory("second", [etcd.endpoint])
    ch, s = stub(second.address)
    with ch:
        assert (
            s.GetBreaker(
                breaker_pb2.GetBreakerRequest(name="legacy"), timeout=5
            ).breaker.window.calls
            == 5
        )  # read from the old record

        def reported() -> bool:
            try:
                report(s, "legacy", ok=5, failed=0, who="svc")
                return True
            except grpc.RpcError:
                return False  # not leading yet

        wait_for(reported, 15, interval=0.2)
        # 10 calls, 5 failed: only the restored window reaches the 50% threshold.
        breaker = s.GetBreaker(breaker_pb2.GetBreakerRequest(name="legacy"), timeout=5).breaker
        assert breaker.status.state == OPEN
        assert breaker.status.last_transition.calls == 10
