"""Rate-limit counter checkpoints against a real etcd: any number of values, failover, upgrade.

etcd here refuses requests above 64 KiB (``--max-request-bytes``), so a per-IP
limit of a few thousand addresses crosses the limit the way a million do with
etcd's default 1.5 MiB.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server import timestamps
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.ratelimits.sharding import SLOTS
from bulwark_server.store import EtcdStore
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, LIMIT_KIND
from tests.integration.conftest import get_leader, wait_for

OVER = ratelimit_pb2.CHECK_CODE_OVER_LIMIT
ETCD_LIMIT = 64 * 1024
BUDGET = 32 * 1024


@pytest.fixture
def small_etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    member = EtcdMember(
        "small",
        tmp_path / "etcd",
        unsafe_no_fsync=True,
        extra_args=(f"--max-request-bytes={ETCD_LIMIT}",),
    )
    try:
        member.start_healthy()
        yield member
    finally:
        member.stop()


def _per_ip_limit(
    name: str, per_day: int, key: str = "remote_address"
) -> ratelimit_pb2.PutLimitRequest:
    return ratelimit_pb2.PutLimitRequest(
        limit=ratelimit_pb2.Limit(
            domain="edge",
            name=name,
            descriptor=[ratelimit_pb2.DescriptorEntry(key=key)],
            rate=ratelimit_pb2.Rate(requests_per_unit=per_day, unit=ratelimit_pb2.RATE_UNIT_DAY),
            algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
        )
    )


def _check(
    addresses: Sequence[str], hits: int, keys: Sequence[str] = ()
) -> ratelimit_pb2.CheckRequest:
    keys = keys or ["remote_address"] * len(addresses)
    return ratelimit_pb2.CheckRequest(
        domain="edge",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key=k, value=a)]
            )
            for k, a in zip(keys, addresses, strict=True)
        ],
        hits=hits,
    )


def _charge(stub: ratelimit_pb2_grpc.RateLimitServiceStub, addresses: list[str], hits: int):  # type: ignore[no-untyped-def]
    for i in range(0, len(addresses), 100):
        stub.Check(_check(addresses[i : i + 100], hits), timeout=10)


def _not_near_midnight() -> None:
    # The limits count per day (UTC): a window ending mid-test would reset them.
    left = 86_400 - time.time() % 86_400
    if left < 60:
        time.sleep(left + 1)


async def _read(endpoint: str, kind: str, name: str):  # type: ignore[no-untyped-def]
    store = EtcdStore([endpoint], timeout=2.0)
    await store.start(wait=10)
    try:
        return await store.read(kind, name)
    finally:
        await store.close()


async def _scan(endpoint: str, prefix: str):  # type: ignore[no-untyped-def]
    store = EtcdStore([endpoint], timeout=2.0)
    await store.start(wait=10)
    try:
        return [e for e in store.scan(LIMIT_COUNTER_KIND) if prefix in e.key.decode()]
    finally:
        await store.close()


def _records(endpoint: str, name: str) -> list[tuple[ratelimit_pb2.LimitCounters, int, int]]:
    """The slot records of limit ``name``: (record, size, mod revision) each."""
    entries = asyncio.run(_scan(endpoint, f"/limit-counters/edge/{name}/"))
    return [
        (ratelimit_pb2.LimitCounters.FromString(e.value), len(e.value), e.mod_revision)
        for e in entries
    ]


def _leader(replicas: list[ReplicaProcess]) -> ReplicaProcess:
    found: list[ReplicaProcess] = []

    def leading() -> bool:
        found[:] = [r for r in replicas if r.running and (v := get_leader(r.address)) and v.is_self]
        return bool(found)

    wait_for(leading, 15, interval=0.2)
    return found[0]


def _checkpoint_warnings(replica: ReplicaProcess) -> list[str]:
    return [
        str(e.get("msg"))
        for e in replica.events()
        if "checkpoint" in str(e.get("msg")) and e.get("level") in ("WARNING", "ERROR")
    ]


def test_many_values_persist_within_etcds_request_limit_and_no_count_is_lost_on_failover(
    small_etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    _not_near_midnight()
    replicas = [
        replica_factory(f"r{i}", [small_etcd.endpoint], f"--etcd-max-request-bytes={BUDGET}")
        for i in range(2)
    ]
    leader = _leader(replicas)
    follower = next(r for r in replicas if r is not leader)
    tail = [f"10.{i // 250}.{i % 250}.1" for i in range(6000)]
    hot = [f"192.168.0.{i}" for i in range(30)]
    with grpc.insecure_channel(follower.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        stub.PutLimit(_per_ip_limit("per-ip", 3), timeout=5)
        _charge(stub, tail, 1)
        _charge(stub, hot, 3)

        def saved_after_the_charges() -> bool:
            records = _records(small_etcd.endpoint, "per-ip")
            listed = {c.values[0]: c.level for r, _, _ in records for c in r.counters}
            return (
                len(records) == SLOTS
                and all(r.HasField("rest") for r, _, _ in records)
                and all(listed.get(a) == 3.0 for a in hot)
            )

        wait_for(saved_after_the_charges, 10, interval=0.3)
        records = _records(small_etcd.endpoint, "per-ip")
        # Every counter together is about 190 KB, three times what etcd takes; each
        # replica writes at most its budget for the limit, its slots' records together.
        assert sum(size for _, size, _ in records) <= 2 * BUDGET
        listed = {c.values[0]: c.level for r, _, _ in records for c in r.counters}
        assert {a: listed.get(a) for a in hot} == dict.fromkeys(hot, 3.0)
        assert {r.rest.level for r, _, _ in records} == {1.0}
        assert _checkpoint_warnings(leader) == []

        # The replica that did not receive the Checks owned about half the slots.
        leader.signal(signal.SIGKILL)
        assert _leader(replicas) is follower
        # The hot addresses are still at their limit: a failover re-admits none of them.
        over = stub.Check(_check(hot, 1), timeout=10)
        assert [r.code for r in over.results] == [OVER] * len(hot)
        # Each address of the tail goes on from at least its one hit: two more pass,
        # a third is refused.
        sample = tail[::60]
        assert stub.Check(_check(sample, 2), timeout=10).overall_code != OVER
        again = stub.Check(_check(sample, 1), timeout=10)
        assert [r.code for r in again.results] == [OVER] * len(sample)
        # Addresses never seen start from 0, bar the filter's rare false positives.
        fresh = stub.Check(_check([f"172.20.0.{i}" for i in range(100)], 3), timeout=10)
        assert sum(r.code != OVER for r in fresh.results) >= 90


def test_a_checkpoint_too_large_for_etcd_shrinks_until_it_fits(
    small_etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    """The setting left at its default (512 KiB) above what this etcd takes."""
    _not_near_midnight()
    replica = replica_factory("solo", [small_etcd.endpoint])
    _leader([replica])
    with grpc.insecure_channel(replica.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        stub.PutLimit(_per_ip_limit("wide", 5), timeout=5)
        _charge(stub, [f"172.16.{i // 250}.{i % 250}" for i in range(4000)], 1)
        wait_for(lambda: len(_records(small_etcd.endpoint, "wide")) == SLOTS, 15, interval=0.3)
    assert max(size for _, size, _ in _records(small_etcd.endpoint, "wide")) < ETCD_LIMIT
    warnings = _checkpoint_warnings(replica)
    assert warnings and all("BULWARK_ETCD_MAX_REQUEST_BYTES" in w for w in warnings)


async def _write_old_counters(endpoint: str, name: str, counts: dict[str, int]) -> None:
    """Counters as the previous version checkpointed them: every counter, no rest level."""
    store = EtcdStore([endpoint], timeout=2.0)
    await store.start(wait=10)
    try:
        own = await store.read(LIMIT_KIND, f"edge/{name}")
        assert own is not None
        start = time.time() // 86_400 * 86_400
        record = ratelimit_pb2.LimitCounters(
            domain="edge",
            name=name,
            limit_create_revision=own.create_revision,
            checkpointed_at=timestamps.at(time.time()),
        )
        for address, count in counts.items():
            record.counters.add(values=[address], level=count, time=start)
        await store.put(LIMIT_COUNTER_KIND, f"edge/{name}", record.SerializeToString())
    finally:
        await store.close()


def test_a_new_leader_goes_on_from_counters_the_previous_version_saved(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    _not_near_midnight()
    first = replica_factory("first", [etcd.endpoint])
    others = ("other-a", "other-b", "other-c")
    with grpc.insecure_channel(first.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        stub.PutLimit(_per_ip_limit("legacy", 3), timeout=5)
        for name in others:
            stub.PutLimit(_per_ip_limit(name, 3, key=name), timeout=5)
    first.stop()
    asyncio.run(_write_old_counters(etcd.endpoint, "legacy", {"10.0.0.1": 3, "10.0.0.2": 1}))
    second = replica_factory("second", [etcd.endpoint])
    _leader([second])
    with grpc.insecure_channel(second.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.Check(_check(["10.0.0.1", "10.0.0.2", "10.0.0.3"], 1), timeout=5)
        assert [r.remaining for r in answer.results] == [0, 1, 2]
        assert answer.results[0].code == OVER
        # Four limits charged by one request are saved in one etcd transaction.
        keys = ["remote_address", *others]
        stub.Check(_check(["10.0.0.9", "x", "x", "x"], 1, keys), timeout=5)

    def saved(name: str) -> set[int]:
        return {revision for _, _, revision in _records(etcd.endpoint, name)}

    wait_for(lambda: all(saved(n) for n in others), 10, interval=0.3)
    time.sleep(1.5)  # past the next round, which has nothing left to write
    # The slot records the two requests charged, of four limits, in one transaction.
    assert len(set().union(*(saved(n) for n in ("legacy", *others)))) == 1
