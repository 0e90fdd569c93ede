"""BulkheadService against real etcd and real `bulwark serve` processes.

The bound is checked two ways: from the clients (the intervals between an
Acquire answer and the Release request never overlap more than
``max_concurrent`` deep) and from etcd (a separate store follows every permit
key and counts them at each revision).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import bulkhead_pb2, bulkhead_pb2_grpc
from bulwark_server.bulkheads import (
    AcquireSpec,
    BulkheadManager,
    BulkheadSpec,
    parse_permit_ref,
)
from bulwark_server.errors import AlreadyExists
from bulwark_server.loopback.deployment import LocalCluster, ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import EtcdStore, EventType, key_for
from bulwark_server.store.keys import BULKHEAD_KIND, PERMIT_KIND
from tests.integration.conftest import get_leader, start_replicas, wait_for

Code = grpc.StatusCode
Stub = bulkhead_pb2_grpc.BulkheadServiceStub


def dur(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


@contextlib.asynccontextmanager
async def client(address: str) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield Stub(channel)


async def put(stub: Stub, name: str, max_concurrent: int, max_wait: float = 0.0) -> int:
    resp = await stub.PutBulkhead(
        bulkhead_pb2.PutBulkheadRequest(
            bulkhead=bulkhead_pb2.Bulkhead(
                name=name, max_concurrent=max_concurrent, max_wait=dur(max_wait)
            )
        ),
        timeout=5,
    )
    return resp.bulkhead.revision


async def acquire(
    stub: Stub, name: str, holder: str, *, ttl: float = 10.0, max_wait: float | None = None
) -> bulkhead_pb2.Permit:
    request = bulkhead_pb2.AcquireRequest(bulkhead=name, holder=holder, ttl=dur(ttl))
    if max_wait is not None:
        request.max_wait.CopyFrom(dur(max_wait))
    resp = await stub.Acquire(request, timeout=60)
    return resp.permit


async def release(stub: Stub, name: str, permit_id: str) -> None:
    await stub.Release(bulkhead_pb2.ReleaseRequest(bulkhead=name, permit_id=permit_id), timeout=5)


async def in_use(stub: Stub, name: str) -> int:
    resp = await stub.GetBulkhead(bulkhead_pb2.GetBulkheadRequest(name=name), timeout=5)
    return resp.bulkhead.in_use


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    """Await a call expected to fail and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Deepest overlap of closed intervals (a release at t counts before an acquire at t)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    depth = deepest = 0
    for _, step in points:
        depth += step
        deepest = max(deepest, depth)
    return deepest


@dataclass
class PermitObserver:
    """Counts one bulkhead's permit keys at every etcd revision, through a store of its own."""

    endpoints: list[str]
    bulkhead: str
    held: set[bytes] = field(default_factory=set)
    peak: int = 0
    revisions: int = 0
    dropped: bool = False

    async def __aenter__(self) -> PermitObserver:
        self._prefix = key_for("permits", f"{self.bulkhead}/x")[:-1]
        self._store = EtcdStore(self.endpoints, timeout=2.0)
        await self._store.start(wait=10)
        self._queue = self._store.subscribe()
        self.held = {e.key for e in self._store.cache.scan(self._prefix)}
        self.peak = len(self.held)
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._store.unsubscribe(self._queue)
        await self._store.close()

    async def settle(self) -> None:
        """Let the observer take in everything written so far."""
        await asyncio.sleep(0.3)

    async def _follow(self) -> None:
        while True:
            batch = await self._queue.get()
            if not batch:
                self.dropped = True
                continue
            revision = batch[0].revision
            for event in batch:
                if event.revision != revision:
                    self._count()
                    revision = event.revision
                if not event.entry.key.startswith(self._prefix):
                    continue
                if event.type is EventType.PUT:
                    self.held.add(event.entry.key)
                else:
                    self.held.discard(event.entry.key)
            self._count()

    def _count(self) -> None:
        self.revisions += 1
        self.peak = max(self.peak, len(self.held))


@dataclass
class History:
    """Client-side record: (acquired, released) per permit, failures, acquisitions by replica."""

    intervals: list[tuple[float, float]] = field(default_factory=list)
    acquired_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    by_replica: dict[str, int] = field(default_factory=dict)

    async def use_once(self, stub: Stub, name: str, holder: str, replica: str) -> None:
        try:
            permit = await acquire(stub, name, holder, max_wait=30)
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"acquire: {exc.code().name}: {exc.details()}")
            return
        got = time.monotonic()
        self.acquired_at.append(got)
        self.by_replica[replica] = self.by_replica.get(replica, 0) + 1
        await asyncio.sleep(random.uniform(0.005, 0.02))
        done = time.monotonic()
        try:
            await release(stub, name, permit.id)
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"release: {exc.code().name}: {exc.details()}")
        self.intervals.append((got, done))


# -- CRUD and validation ---------------------------------------------------------------


async def test_crud_paging_and_validation(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    async with client(replica.address) as stub:
        created = await stub.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="db", max_concurrent=3, revision=99, in_use=7)
            ),
            timeout=5,
        )
        assert created.created
        stored = created.bulkhead
        assert (stored.name, stored.max_concurrent, stored.in_use) == ("db", 3, 0)
        assert stored.revision > 0
        assert stored.default_permit_ttl.seconds == 30 and stored.max_wait.ToNanoseconds() == 0

        changed = await stub.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="db", max_concurrent=4, max_wait=dur(1.5)),
                expected_revision=stored.revision,
            ),
            timeout=5,
        )
        assert not changed.created and changed.bulkhead.revision > stored.revision
        assert changed.bulkhead.max_wait.ToNanoseconds() == 1_500_000_000

        stale = await rpc_error(
            stub.PutBulkhead(
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="db", max_concurrent=9),
                    expected_revision=stored.revision,
                ),
                timeout=5,
            )
        )
        assert stale.code() == Code.ABORTED
        missing = await rpc_error(
            stub.PutBulkhead(
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="nope", max_concurrent=1),
                    expected_revision=5,
                ),
                timeout=5,
            )
        )
        assert missing.code() == Code.NOT_FOUND

        got = await stub.GetBulkhead(bulkhead_pb2.GetBulkheadRequest(name="db"), timeout=5)
        assert got.bulkhead == changed.bulkhead and list(got.permits) == []

        for name in ("alpha", "beta", "gamma"):
            await put(stub, name, 1)
        first = await stub.ListBulkheads(bulkhead_pb2.ListBulkheadsRequest(page_size=3), timeout=5)
        assert [b.name for b in first.bulkheads] == ["alpha", "beta", "db"]
        assert first.next_page_token
        second = await stub.ListBulkheads(
            bulkhead_pb2.ListBulkheadsRequest(page_size=3, page_token=first.next_page_token),
            timeout=5,
        )
        assert [b.name for b in second.bulkheads] == ["gamma"]
        assert second.next_page_token == ""

        # Every bad input is INVALID_ARGUMENT naming its field; nothing is stored.
        bad_calls = [
            (stub.PutBulkhead, bulkhead_pb2.PutBulkheadRequest(), "bulkhead.name"),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="x/y", max_concurrent=1)
                ),
                "bulkhead.name",
            ),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(bulkhead=bulkhead_pb2.Bulkhead(name="x")),
                "bulkhead.max_concurrent",
            ),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="x", max_concurrent=10_001)
                ),
                "bulkhead.max_concurrent",
            ),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="x", max_concurrent=1, max_wait=dur(301))
                ),
                "bulkhead.max_wait",
            ),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(
                        name="x", max_concurrent=1, default_permit_ttl=dur(0.5)
                    )
                ),
                "bulkhead.default_permit_ttl",
            ),
            (
                stub.PutBulkhead,
                bulkhead_pb2.PutBulkheadRequest(
                    bulkhead=bulkhead_pb2.Bulkhead(name="x", max_concurrent=1),
                    expected_revision=-1,
                ),
                "expected_revision",
            ),
            (stub.GetBulkhead, bulkhead_pb2.GetBulkheadRequest(), "name"),
            (stub.DeleteBulkhead, bulkhead_pb2.DeleteBulkheadRequest(name="a b"), "name"),
            (stub.ListBulkheads, bulkhead_pb2.ListBulkheadsRequest(page_size=-1), "page_size"),
            (stub.ListBulkheads, bulkhead_pb2.ListBulkheadsRequest(page_token="%%"), "page_token"),
            (stub.Acquire, bulkhead_pb2.AcquireRequest(holder="w"), "bulkhead"),
            (stub.Acquire, bulkhead_pb2.AcquireRequest(bulkhead="db"), "holder"),
            (stub.Acquire, bulkhead_pb2.AcquireRequest(bulkhead="db", holder="x" * 300), "holder"),
            (
                stub.Acquire,
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(0.5)),
                "ttl",
            ),
            (
                stub.Acquire,
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(3601)),
                "ttl",
            ),
            (
                stub.Acquire,
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", max_wait=dur(-1)),
                "max_wait",
            ),
            (stub.Release, bulkhead_pb2.ReleaseRequest(permit_id="0-" + "a" * 32), "bulkhead"),
            (stub.Release, bulkhead_pb2.ReleaseRequest(bulkhead="db"), "permit_id"),
            (stub.Release, bulkhead_pb2.ReleaseRequest(bulkhead="db", permit_id="x"), "permit_id"),
            (
                stub.ExtendPermit,
                bulkhead_pb2.ExtendPermitRequest(bulkhead="db", permit_id="1-zz"),
                "permit_id",
            ),
        ]
        for method, request, field_name in bad_calls:
            err = await rpc_error(method(request, timeout=5))
            assert err.code() == Code.INVALID_ARGUMENT, (field_name, err)
            assert (err.details() or "").startswith(f"{field_name}: "), err.details()

        listed = await stub.ListBulkheads(bulkhead_pb2.ListBulkheadsRequest(), timeout=5)
        assert [b.name for b in listed.bulkheads] == ["alpha", "beta", "db", "gamma"]
        assert await in_use(stub, "db") == 0

        # Unknown things are NOT_FOUND.
        for call in (
            stub.GetBulkhead(bulkhead_pb2.GetBulkheadRequest(name="nope"), timeout=5),
            stub.Acquire(bulkhead_pb2.AcquireRequest(bulkhead="nope", holder="w"), timeout=5),
            stub.ExtendPermit(
                bulkhead_pb2.ExtendPermitRequest(bulkhead="db", permit_id="0-" + "a" * 32),
                timeout=5,
            ),
        ):
            assert (await rpc_error(call)).code() == Code.NOT_FOUND

        # Deleting releases held permits.
        await acquire(stub, "db", "w1")
        await acquire(stub, "db", "w2")
        deleted = await stub.DeleteBulkhead(
            bulkhead_pb2.DeleteBulkheadRequest(name="db"), timeout=5
        )
        assert deleted.released_permits == 2
        gone = await rpc_error(
            stub.DeleteBulkhead(bulkhead_pb2.DeleteBulkheadRequest(name="db"), timeout=5)
        )
        assert gone.code() == Code.NOT_FOUND
        await put(stub, "db", 2)
        assert await in_use(stub, "db") == 0


# -- a full bulkhead ----------------------------------------------------------------------


async def test_full_bulkhead_waiting_and_double_release(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("r1", [etcd.endpoint])
    async with client(replica.address) as stub:
        await put(stub, "db", 2, max_wait=5)
        first = await acquire(stub, "db", "w1")
        second = await acquire(stub, "db", "w2")
        assert first.id != second.id and first.holder == "w1"
        assert first.ttl.seconds == 10 and first.bulkhead == "db"

        full = await rpc_error(
            stub.Acquire(
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w3", max_wait=dur(0)),
                timeout=5,
            )
        )
        assert full.code() == Code.RESOURCE_EXHAUSTED
        metadata = dict(full.trailing_metadata() or ())
        assert 0 < int(metadata["retry-after-ms"]) <= 1000, metadata

        began = time.monotonic()
        short = await rpc_error(
            stub.Acquire(
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w3", max_wait=dur(0.3)),
                timeout=5,
            )
        )
        assert short.code() == Code.RESOURCE_EXHAUSTED
        assert 0.3 <= time.monotonic() - began < 1.5

        # A waiter gets the slot as soon as it is released.
        waiter = asyncio.create_task(acquire(stub, "db", "w3", max_wait=5))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        released_at = time.monotonic()
        await release(stub, "db", first.id)
        third = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - released_at < 0.5
        assert third.holder == "w3"

        # Releasing twice: NOT_FOUND, and the other holders keep their permits.
        again = await rpc_error(
            stub.Release(bulkhead_pb2.ReleaseRequest(bulkhead="db", permit_id=first.id), timeout=5)
        )
        assert again.code() == Code.NOT_FOUND
        assert f"permit {first.id} is not held" in (again.details() or "")
        got = await stub.GetBulkhead(bulkhead_pb2.GetBulkheadRequest(name="db"), timeout=5)
        assert sorted(p.id for p in got.permits) == sorted([second.id, third.id])
        extended = await stub.ExtendPermit(
            bulkhead_pb2.ExtendPermitRequest(bulkhead="db", permit_id=second.id), timeout=5
        )
        assert extended.permit.id == second.id and 0 < extended.remaining.seconds <= 10
        expired = await rpc_error(
            stub.ExtendPermit(
                bulkhead_pb2.ExtendPermitRequest(bulkhead="db", permit_id=first.id), timeout=5
            )
        )
        assert expired.code() == Code.NOT_FOUND

        # Lowering the limit: held permits live on, no new one until below the new limit.
        await put(stub, "db", 1)
        assert await in_use(stub, "db") == 2
        await release(stub, "db", second.id)
        full = await rpc_error(
            stub.Acquire(
                bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w4", max_wait=dur(0)),
                timeout=5,
            )
        )
        assert full.code() == Code.RESOURCE_EXHAUSTED
        await release(stub, "db", third.id)
        fourth = await acquire(stub, "db", "w4", max_wait=0)
        assert fourth.id.startswith("0-")
        assert await in_use(stub, "db") == 1


# -- the bound under load ----------------------------------------------------------------


async def test_200_tasks_on_two_replicas_never_exceed_max_concurrent(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    limit = 5
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint])
    history = History()
    sampled: list[int] = []
    async with (
        client(replicas[0].address) as a,
        client(replicas[1].address) as b,
        PermitObserver([etcd.endpoint], "shared") as observer,
    ):
        stubs = [a, b]
        await put(a, "shared", limit, max_wait=30)

        async def sample() -> None:
            while True:
                for stub in stubs:
                    sampled.append(await in_use(stub, "shared"))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        began = time.monotonic()
        await asyncio.gather(
            *(
                history.use_once(stubs[i % 2], "shared", f"task-{i}", replicas[i % 2].replica_id)
                for i in range(200)
            )
        )
        took = time.monotonic() - began
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await observer.settle()

    print(
        f"\n200 tasks in {took:.2f}s; peak held: clients {max_overlap(history.intervals)}, "
        f"etcd {observer.peak} over {observer.revisions} revisions, "
        f"sampled in_use {max(sampled)}; bound {limit}; by replica {history.by_replica}"
    )
    assert history.errors == []
    assert len(history.intervals) == 200
    assert set(history.by_replica) == {"r0", "r1"}
    assert not observer.dropped
    assert observer.peak <= limit
    assert max_overlap(history.intervals) <= limit
    assert max(sampled) <= limit
    # The load really pushed against the bound (otherwise the checks above prove nothing).
    assert observer.peak == limit
    assert not observer.held  # every permit released


class CountingStore(EtcdStore):
    """An EtcdStore that counts lease grants and permit creates (and the ones refused)."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(endpoints, timeout=2.0)
        self.grants = self.creates = self.refused = 0

    async def grant_lease(self, ttl: int) -> int:
        self.grants += 1
        return await super().grant_lease(ttl)

    async def create(self, kind: str, name: str, value: bytes, **kwargs: Any) -> int:
        if kind != PERMIT_KIND:
            return await super().create(kind, name, value, **kwargs)
        self.creates += 1
        try:
            return await super().create(kind, name, value, **kwargs)
        except AlreadyExists:
            self.refused += 1
            raise


async def test_a_release_wakes_about_one_waiter_per_replica(etcd: EtcdMember):
    """No thundering herd: 200 waiters on 5 slots cost about two creates per permit."""
    stores = [CountingStore([etcd.endpoint]) for _ in range(2)]
    for store in stores:
        await store.start(wait=10)
    managers = [BulkheadManager(store) for store in stores]
    try:
        revision = await stores[0].create(
            BULKHEAD_KIND,
            "herd",
            BulkheadSpec("herd", 5, 30.0, 30.0).to_proto().SerializeToString(),
        )
        assert await stores[1].wait_for_revision(revision, timeout=5)

        async def use(i: int) -> None:
            manager = managers[i % 2]
            permit = await manager.acquire(AcquireSpec("herd", f"t{i}", 10.0, None))
            await asyncio.sleep(random.uniform(0.005, 0.02))
            await manager.release(parse_permit_ref("herd", permit.id))

        began = time.monotonic()
        await asyncio.gather(*(use(i) for i in range(200)))
        took = time.monotonic() - began
    finally:
        for manager in managers:
            await manager.close()
        for store in stores:
            await store.close()
    grants = sum(s.grants for s in stores)
    creates = sum(s.creates for s in stores)
    refused = sum(s.refused for s in stores)
    print(f"\n200 permits in {took:.2f}s: {grants} leases, {creates} creates ({refused} refused)")
    assert creates - refused == 200
    # Waking every waiter on each release would cost thousands of creates.
    assert creates < 3 * 200
    # A lease is granted only for a slot about to be tried.
    assert grants <= creates


# -- a holder that dies -------------------------------------------------------------------

HOLDER = """
import sys, time, grpc
from google.protobuf import duration_pb2
from bulwark.v1 import bulkhead_pb2, bulkhead_pb2_grpc
stub = bulkhead_pb2_grpc.BulkheadServiceStub(grpc.insecure_channel(sys.argv[1]))
ttl = duration_pb2.Duration(seconds=int(sys.argv[3]))
request = bulkhead_pb2.AcquireRequest(bulkhead=sys.argv[2], holder="doomed", ttl=ttl)
print(stub.Acquire(request, timeout=10).permit.id, flush=True)
time.sleep(60)
"""


async def test_sigkilled_holder_frees_its_permit_after_the_ttl(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    ttl = 2
    replica = replica_factory("r1", [etcd.endpoint])
    async with client(replica.address) as stub:
        await put(stub, "solo", 1)
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER,
            replica.address,
            "solo",
            str(ttl),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            permit_id = (await asyncio.wait_for(holder.stdout.readline(), 20)).decode().strip()
            assert permit_id, "the holder process did not get a permit"
            full = await rpc_error(
                stub.Acquire(
                    bulkhead_pb2.AcquireRequest(bulkhead="solo", holder="me", max_wait=dur(0)),
                    timeout=5,
                )
            )
            assert full.code() == Code.RESOURCE_EXHAUSTED
            holder.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            if holder.returncode is None:
                holder.kill()
            await holder.wait()

        while await in_use(stub, "solo") != 0:
            assert time.monotonic() - killed_at <= ttl + 2, "permit outlived its TTL"
            await asyncio.sleep(0.05)
        freed_after = time.monotonic() - killed_at
        print(f"\nkilled holder's permit freed {freed_after:.2f}s after SIGKILL (TTL {ttl}s)")

        mine = await acquire(stub, "solo", "me", max_wait=0)
        assert mine.id != permit_id
        late = await rpc_error(
            stub.Release(
                bulkhead_pb2.ReleaseRequest(bulkhead="solo", permit_id=permit_id), timeout=5
            )
        )
        assert late.code() == Code.NOT_FOUND


# -- leader failover --------------------------------------------------------------------


def find_leader(cluster: LocalCluster) -> ReplicaProcess:
    def agreed() -> str | None:
        views = [get_leader(r.address) for r in cluster.replicas]
        ids = {v.leader.replica_id for v in views if v is not None and v.HasField("leader")}
        return ids.pop() if len(ids) == 1 and all(views) else None

    leader_id = wait_for(agreed, timeout=10)
    return next(r for r in cluster.replicas if r.replica_id == leader_id)


async def test_sigkill_of_the_leader_keeps_the_bound_and_acquisitions_go_on(
    local_cluster: LocalCluster,
):
    limit = 6
    leader = find_leader(local_cluster)
    followers = [r for r in local_cluster.replicas if r is not leader]
    history = History()
    async with (
        client(leader.address) as via_leader,
        client(followers[0].address) as a,
        client(followers[1].address) as b,
        PermitObserver(local_cluster.etcd.endpoints, "fleet") as observer,
    ):
        await put(a, "fleet", limit, max_wait=30)
        # Two permits taken through the leader outlive it: they are etcd's, not the replica's.
        kept = [await acquire(via_leader, "fleet", f"kept-{i}") for i in range(2)]
        kept_from = time.monotonic()
        stop_at = time.monotonic() + 4.5

        async def worker(stub: Stub, replica: str, n: int) -> None:
            while time.monotonic() < stop_at:
                await history.use_once(stub, "fleet", f"{replica}-{n}", replica)

        workers = [
            asyncio.create_task(worker(stub, r.replica_id, n))
            for stub, r in ((a, followers[0]), (b, followers[1]))
            for n in range(6)
        ]
        await asyncio.sleep(1.0)
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.gather(*workers)
        for permit in kept:
            await release(b, "fleet", permit.id)
        history.intervals.extend((kept_from, time.monotonic()) for _ in kept)
        await observer.settle()

    # Some survivor must have become leader meanwhile (the failure really happened).
    def new_leader() -> bool:
        view = get_leader(followers[0].address)
        return bool(
            view and view.HasField("leader") and view.leader.replica_id != leader.replica_id
        )

    wait_for(new_leader, timeout=5)
    after = sorted(t for t in history.acquired_at if t > killed_at)
    gaps = [b - a for a, b in itertools.pairwise(sorted(history.acquired_at))]
    print(
        f"\nleader {leader.replica_id} killed; {len(history.acquired_at)} acquisitions "
        f"({len(after)} after the kill), longest gap {max(gaps) * 1000:.0f} ms; peak held: "
        f"clients {max_overlap(history.intervals)}, etcd {observer.peak}; bound {limit}"
    )
    assert history.errors == []
    assert observer.peak <= limit
    assert max_overlap(history.intervals) <= limit
    assert after and after[-1] - killed_at > 3.0
    assert max(gaps) < 0.5
    assert not observer.held
