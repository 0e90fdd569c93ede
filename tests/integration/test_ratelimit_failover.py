"""A counter's owner killed mid-load: the other replicas keep deciding, within the bound.

(The leader is no longer on the path of a decision: killing it is killing one
owner among others, which this covers.)

The bound (README, "How decisions scale out"): in steady state the fleet admits at
most what the limit permits (the tokens each replica spends were taken from the
owner's counter); when the owner fails, what it had not yet checkpointed (at most
one refresh period's shares, as shared counters are checkpointed every refresh) may
be admitted again, and the hits the others admit on their own share meanwhile are
charged to the next owner once it answers.
"""

from __future__ import annotations

import multiprocessing
import signal
import time

import grpc

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.loopback.deployment import LocalCluster
from bulwark_server.ratelimits.sharding import assign, slot_of
from bulwark_server.ratelimits.shares import HEADROOM, REFRESH_S
from tests.integration.test_ratelimits import _hammer_key, entry, limit

RATE = 100


def test_killing_a_busy_counters_owner_keeps_the_fleet_within_the_bound(
    local_cluster: LocalCluster,
):
    replicas = local_cluster.replicas
    owner_id = assign([r.replica_id for r in replicas])[slot_of("edge", "search", ["search"])]
    owner = next(r for r in replicas if r.replica_id == owner_id)
    others = [r for r in replicas if r is not owner]
    with grpc.insecure_channel(others[0].address) as channel:
        ratelimit_pb2_grpc.RateLimitServiceStub(channel).PutLimit(
            ratelimit_pb2.PutLimitRequest(limit=limit("search", RATE, entry("api", "search"))),
            timeout=5,
        )
    time.sleep(0.5)  # every replica's cache has the limit
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    seconds, warmup = 6.0, 1.5  # the warm-up drains the initial burst
    ready = ctx.Barrier(len(replicas) + 1)  # the hammers and this test start together
    procs = [
        ctx.Process(target=_hammer_key, args=(r.address, "search", seconds, warmup, out, ready))
        for r in replicas
    ]
    for p in procs:
        p.start()
    ready.wait(60)
    time.sleep(warmup + seconds / 2)
    owner.signal(signal.SIGKILL)
    results = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(10)
    allowed = sum(a for a, _, _ in results)
    total = sum(t for _, t, _ in results)
    alone = sum(f for _, _, f in results)
    print(f"failover: allowed {allowed} in {seconds:.0f} s of {total} offered, {alone} alone")
    assert total > allowed * 2, "the clients must offer well over the limit"
    # One refresh period's shares: each of the two other replicas held at most that.
    shares = 2 * HEADROOM * RATE * REFRESH_S
    assert allowed <= RATE * seconds * 1.05 + shares, (allowed, alone)
    # And they went on deciding: the outage cost at most half of what was permitted.
    assert allowed >= RATE * seconds * 0.5, allowed
