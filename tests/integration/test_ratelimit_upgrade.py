"""A rolling upgrade from the previous version, whose leader keeps every counter.

The previous version is the real one: its commit is taken from this repository's
history (``git archive``) and run with its own code on ``PYTHONPATH``. Two replicas
of it are replaced one at a time by replicas of this version, while one per-day
limit is charged through whichever replicas are up. At every step the count goes on
where it was: no replica counts apart (no over-admission), and this version's first
leader goes on from the previous version's checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import EtcdStore
from bulwark_server.store.keys import LIMIT_COUNTER_KIND
from tests.integration.conftest import get_leader, wait_for

PREVIOUS = "da912aa"
"""The last commit before counters were split among the replicas."""

ROOT = Path(__file__).resolve().parents[2]
OVER = ratelimit_pb2.CHECK_CODE_OVER_LIMIT
PER_DAY = 50


@pytest.fixture
def previous_version(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that runs the previous version's server from its own tree."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("the previous version comes from git history, which this tree lacks")
    found = subprocess.run(
        [git, "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], check=False
    )
    if found.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone's history")
    tree = tmp_path / "previous"
    tree.mkdir()
    archive = tmp_path / "previous.tar"
    with archive.open("wb") as out:
        subprocess.run(
            [git, "-C", str(ROOT), "archive", PREVIOUS, "server", "clients/python"],
            stdout=out,
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    path = f"{tree / 'server'}{os.pathsep}{tree / 'clients' / 'python'}"
    yield {"PYTHONPATH": path}


def _per_day_limit() -> ratelimit_pb2.PutLimitRequest:
    return ratelimit_pb2.PutLimitRequest(
        limit=ratelimit_pb2.Limit(
            domain="edge",
            name="per-user",
            descriptor=[ratelimit_pb2.DescriptorEntry(key="user")],
            rate=ratelimit_pb2.Rate(requests_per_unit=PER_DAY, unit=ratelimit_pb2.RATE_UNIT_DAY),
            algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
        )
    )


def _charge(
    replica: ReplicaProcess, calls: int, hits: int = 1
) -> list[ratelimit_pb2.CheckResponse]:
    request = ratelimit_pb2.CheckRequest(
        domain="edge",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key="user", value="alice")]
            )
        ],
        hits=hits,
    )
    with grpc.insecure_channel(replica.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        return [stub.Check(request, timeout=5) for _ in range(calls)]


def _saved(endpoint: str) -> float:
    """Alice's count in the limit's checkpoint records, as etcd holds them (0: none)."""

    async def scan() -> list[bytes]:
        store = EtcdStore([endpoint], timeout=2.0)
        await store.start(wait=10)
        try:
            prefix = "/limit-counters/edge/per-user"
            return [e.value for e in store.scan(LIMIT_COUNTER_KIND) if prefix in e.key.decode()]
        finally:
            await store.close()

    levels = [
        state.level
        for value in asyncio.run(scan())
        for state in ratelimit_pb2.LimitCounters.FromString(value).counters
        if list(state.values) == ["alice"]
    ]
    return max(levels, default=0.0)


def _leading(replicas: list[ReplicaProcess]) -> ReplicaProcess:
    found: list[ReplicaProcess] = []

    def one() -> bool:
        found[:] = [r for r in replicas if r.running and (v := get_leader(r.address)) and v.is_self]
        return bool(found)

    wait_for(one, 20, interval=0.2)
    return found[0]


def test_a_rolling_upgrade_keeps_one_count_and_goes_on_from_the_old_checkpoint(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    previous_version: dict[str, str],
):
    # The limit counts per day (UTC): a window ending mid-test would reset it.
    left = 86_400 - time.time() % 86_400
    if left < 120:
        time.sleep(left + 1)
    old_a = replica_factory("old-a", [etcd.endpoint], env=previous_version)
    old_b = replica_factory("old-b", [etcd.endpoint], env=previous_version)
    leader = _leading([old_a, old_b])
    other = old_b if leader is old_a else old_a
    with grpc.insecure_channel(leader.address) as channel:
        ratelimit_pb2_grpc.RateLimitServiceStub(channel).PutLimit(_per_day_limit(), timeout=5)
    assert [r.results[0].remaining for r in _charge(leader, 20)][-1] == 30

    # 1. The old follower is replaced by a new replica: it forwards to the old leader,
    #    so there is still one count.
    other.signal(signal.SIGTERM)
    other.process.wait(10)  # type: ignore[union-attr]
    new_a = replica_factory("new-a", [etcd.endpoint])
    answers = _charge(new_a, 10)
    assert not any(a.local_fallback for a in answers)
    assert [a.results[0].remaining for a in answers][-1] == 20
    assert _charge(leader, 1)[0].results[0].remaining == 19

    # 2. The old leader goes (after its checkpoint round): the new replica leads, owns
    #    every counter, and goes on from the previous version's checkpoint.
    wait_for(lambda: _saved(etcd.endpoint) == 31, 10, interval=0.2)
    leader.signal(signal.SIGTERM)
    leader.process.wait(10)  # type: ignore[union-attr]
    assert _leading([new_a]) is new_a
    first = _charge(new_a, 1)[0]
    assert not first.local_fallback
    assert first.results[0].remaining == 18

    # 3. A second new replica joins: the counters are split between the two; the count
    #    goes on whichever owns it.
    # new-a's checkpoint round, which the new owner restores from (a slot that moves
    # goes on from its last checkpoint: the README's bound at a move).
    wait_for(lambda: _saved(etcd.endpoint) == 32, 10, interval=0.2)
    new_b = replica_factory("new-b", [etcd.endpoint])
    time.sleep(1.0)  # both see each other
    both = _charge(new_b, 4) + _charge(new_a, 4)
    assert not any(a.local_fallback or a.overall_code == OVER for a in both)
    # The owner counted them all (a replica's part, admitted without asking, once
    # reported at its next refresh); a look (hits 0) asks the owner from either.
    time.sleep(0.5)
    for replica in (new_a, new_b):
        assert _charge(replica, 1, hits=0)[0].results[0].remaining == 10

    # 4. Whatever the path, the day admits exactly its 50.
    rest = _charge(new_a, 8) + _charge(new_b, 8)
    assert sum(a.overall_code != OVER for a in rest) == 10
