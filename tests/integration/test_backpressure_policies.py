"""BackpressureService on a real replica: policies stored, listed, watched and deleted;
bad ones name their field."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from bulwark.v1 import backpressure_pb2 as B
from bulwark.v1 import backpressure_pb2_grpc, watch_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember


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
