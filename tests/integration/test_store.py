"""EtcdStore against a real etcd: compare-and-swap, fencing, the watch-fed cache, outages."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from google.protobuf import wrappers_pb2

from bulwark_server.errors import AlreadyExists, Conflict, NotFound, NotLeader, StoreUnavailable
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import EtcdStore, EventType, Fence, key_for
from bulwark_server.store import _etcd_client as ec


async def started(member: EtcdMember, **kwargs: float) -> EtcdStore:
    store = EtcdStore([member.endpoint], timeout=kwargs.pop("timeout", 1.0), **kwargs)
    await store.start(wait=10)
    return store


async def increment(store: EtcdStore, times: int) -> int:
    """Read-modify-write a counter with CAS; return how many conflicts were retried."""
    conflicts = 0
    for _ in range(times):
        while True:
            entry = await store.read("counters", "shared")
            assert entry is not None
            value = wrappers_pb2.Int64Value.FromString(entry.value)
            value.value += 1
            try:
                await store.update(
                    "counters",
                    "shared",
                    value.SerializeToString(),
                    expected_mod_revision=entry.mod_revision,
                )
                break
            except Conflict:
                conflicts += 1
    return conflicts


async def test_two_replicas_writing_one_key_lose_no_update(etcd: EtcdMember):
    a, b = await started(etcd), await started(etcd)
    try:
        await a.create("counters", "shared", wrappers_pb2.Int64Value(value=0).SerializeToString())
        conflicts = await asyncio.gather(increment(a, 60), increment(b, 60))
        final = await a.read("counters", "shared")
        assert final is not None
        assert wrappers_pb2.Int64Value.FromString(final.value).value == 120
        # Both writers really raced: the CAS turned some writes away.
        assert sum(conflicts) > 0
    finally:
        await a.close()
        await b.close()


async def test_create_update_delete_errors(etcd: EtcdMember):
    store = await started(etcd)
    try:
        rev = await store.create("things", "a", b"1")
        with pytest.raises(AlreadyExists, match="things/a"):
            await store.create("things", "a", b"2")
        with pytest.raises(Conflict, match="things/a"):
            await store.update("things", "a", b"3", expected_mod_revision=rev - 1)
        with pytest.raises(NotFound):
            await store.update("things", "missing", b"3", expected_mod_revision=rev)
        with pytest.raises(NotFound):
            await store.delete("things", "missing")
        await store.delete("things", "a", expected_mod_revision=rev)
        assert await store.read("things", "a") is None
        assert store.get("things", "a") is None
    finally:
        await store.close()


async def test_writes_are_visible_in_every_replicas_cache(etcd: EtcdMember):
    writer, reader = await started(etcd), await started(etcd)
    changes = reader.subscribe()
    try:
        rev = await writer.create("things", "x", b"hello")
        # The writer's own cache has it when the write returns (read-your-writes).
        assert writer.get("things", "x") is not None
        assert await reader.wait_for_revision(rev, timeout=2)
        entry = reader.get("things", "x")
        assert entry is not None and entry.value == b"hello" and entry.mod_revision == rev
        batch = await asyncio.wait_for(changes.get(), 2)
        assert batch[0].type is EventType.PUT and batch[0].entry.key == key_for("things", "x")
        assert [e.value for e in reader.scan("things")] == [b"hello"]
    finally:
        await writer.close()
        await reader.close()


async def test_fenced_write_is_refused_without_the_term(etcd: EtcdMember):
    store = await started(etcd)
    try:
        term = await store.create("election", "leader", b"me")
        fence = Fence(key_for("election", "leader"), term)
        await store.put("things", "ok", b"1", fence=fence)
        with pytest.raises(NotLeader):
            await store.put("things", "stale", b"1", fence=Fence(fence.key, term - 1))
        await store.delete("election", "leader")
        with pytest.raises(NotLeader):
            await store.create("things", "late", b"1", fence=fence)
        assert await store.read("things", "stale") is None
        assert await store.read("things", "late") is None
        assert await store.read("things", "ok") is not None
    finally:
        await store.close()


async def test_a_lease_in_its_last_second_is_alive_and_an_ended_one_is_minus_one(
    etcd: EtcdMember,
):
    store = await started(etcd)
    try:
        lease = await store.grant_lease(2)
        seen = {await store.lease_remaining(lease)}
        deadline = time.monotonic() + 5
        while -1 not in seen:
            assert time.monotonic() < deadline, seen
            seen.add(await store.lease_remaining(lease))
            await asyncio.sleep(0.05)
        # Whole seconds, rounded down: 0 is "under a second left", not "ended", so an
        # instance silent for most of its TTL is still found (remediation's silence).
        assert 0 in seen and seen <= {-1, 0, 1, 2}, seen
        revoked = await store.grant_lease(5)
        await store.revoke_lease(revoked)
        assert await store.lease_remaining(revoked) == -1
        assert await store.lease_remaining(123456789) == -1  # never granted
    finally:
        await store.close()


async def test_etcd_outage_is_stale_reads_fast_failing_writes_and_recovery(etcd: EtcdMember):
    store = await started(etcd, probe_interval=0.2)
    other = None
    try:
        await store.create("things", "kept", b"v1")
        resyncs_before = store.status().resyncs
        etcd.stop()
        deadline = time.monotonic() + 5
        while not store.status().stale and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert store.status().stale

        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put("things", "lost", b"x")
        assert time.monotonic() - began < 0.2, "writes must fail fast while etcd is down"
        entry = store.get("things", "kept")
        assert entry is not None and entry.value == b"v1"  # reads keep working, from the cache

        etcd.start()
        etcd.wait_healthy()
        other = await started(etcd)
        rev = await other.create("things", "written-elsewhere", b"y")
        assert await store.wait_for_revision(rev, timeout=10)
        # The cache has caught up; the watch and the health probe confirm it a moment later.
        deadline = time.monotonic() + 2
        while store.status().stale and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not store.status().stale
        assert store.status().resyncs > resyncs_before
        assert store.get("things", "written-elsewhere") is not None
        assert store.get("things", "lost") is None
        await store.put("things", "after", b"z")
    finally:
        await store.close()
        if other is not None:
            await other.close()


async def test_watch_falls_behind_a_compaction_and_resyncs(etcd: EtcdMember):
    store = await started(etcd)
    writer = await started(etcd)
    try:
        await writer.create("things", "gone", b"1")
        old = store.cache.revision
        assert await store.wait_for_revision(old)
        await writer.delete("things", "gone")
        last = await writer.create("things", "new", b"2")
        client = ec.Etcd3Client([etcd.endpoint])
        await client.connect()
        await client.kv.compact(last)
        await client.close()
        # A watch resuming from before the compaction must report that it needs a resync.
        await asyncio.wait_for(store._feed.watch_from(old), 5)
        await store._feed.resync()
        assert store.get("things", "gone") is None
        assert store.get("things", "new") is not None
    finally:
        await store.close()
        await writer.close()


def test_an_etcd_whose_port_was_taken_meanwhile_starts_on_new_ports(tmp_path: Path) -> None:
    """Free-port checks race other processes: a taken port means new ports, not a failure."""
    member = EtcdMember("racy", tmp_path / "etcd", unsafe_no_fsync=True)
    member.choose_ports()
    taken = member.client_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            member.start_healthy(timeout=20)
            assert member.client_port != taken
            assert member.healthy()
        finally:
            member.stop()
