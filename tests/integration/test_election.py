"""Election edge cases in-process against a real etcd, with failures injected into one store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bulwark.v1 import cluster_pb2
from bulwark_server.cluster.election import REPLICA_KIND, Election, read_leader
from bulwark_server.errors import StoreUnavailable
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import EtcdStore


async def until(predicate: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def stores(etcd: EtcdMember) -> AsyncIterator[list[EtcdStore]]:
    made = [EtcdStore([etcd.endpoint], timeout=1.0) for _ in range(2)]
    for store in made:
        await store.start(wait=10)
    yield made
    for store in made:
        await store.close()


def failing(*_: Any, **__: Any) -> Any:
    raise StoreUnavailable("injected: etcd unreachable")


async def test_leader_cut_off_past_its_deadline_steps_down_and_someone_leads_again(
    stores: list[EtcdStore], monkeypatch: pytest.MonkeyPatch
):
    offset = [0.0]
    a = Election(
        stores[0], cluster_pb2.Replica(id="a"), ttl=2, clock=lambda: time.monotonic() + offset[0]
    )
    b = Election(stores[1], cluster_pb2.Replica(id="b"), ttl=2)
    try:
        await a.start()
        await until(lambda: a.is_leader, 5)
        await b.start()

        # a is cut off from etcd (no writes, no keep-alives, no revoke) and its
        # local lease deadline passes.
        monkeypatch.setattr(stores[0], "put", failing)
        monkeypatch.setattr(stores[0], "keep_alive", failing)
        monkeypatch.setattr(stores[0], "revoke_lease", failing)
        offset[0] = 60.0
        assert not a.is_leader  # no leader-only work from here on
        await until(lambda: a._term is None, 5)
        monkeypatch.undo()

        # The leader key must not outlive a's step-down: somebody leads again.
        await until(lambda: a.is_leader or b.is_leader, 8)
        assert not (a.is_leader and b.is_leader)
        leader = read_leader(stores[1])
        assert leader is not None
        assert leader.replica_id == ("a" if a.is_leader else "b")
    finally:
        await a.stop()
        await b.stop()


async def test_registration_that_fails_is_retried(
    stores: list[EtcdStore], monkeypatch: pytest.MonkeyPatch
):
    real_put = stores[0].put
    calls = {"n": 0}

    async def flaky_put(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("injected: first registration lost")
        return await real_put(*args, **kwargs)

    monkeypatch.setattr(stores[0], "put", flaky_put)
    a = Election(stores[0], cluster_pb2.Replica(id="a"), ttl=2)
    try:
        await a.start()  # does not raise: the lease is retried in the background
        await until(lambda: stores[1].get(REPLICA_KIND, "a") is not None, 5)
        await until(lambda: a.is_leader, 5)
    finally:
        await a.stop()
    assert calls["n"] >= 2


async def test_stop_resigns_and_revokes_the_lease(stores: list[EtcdStore]):
    a = Election(stores[0], cluster_pb2.Replica(id="a"), ttl=2)
    await a.start()
    await until(lambda: a.is_leader, 5)
    await a.stop(resign=True)
    await until(lambda: stores[1].get(REPLICA_KIND, "a") is None, 2)
    assert read_leader(stores[1]) is None
    assert not a.is_leader
