"""The client's fault rules where threads meet (the watch changes the cache while calls
decide) and where a header-controlled abort reads its code (gRFC A33, Envoy)."""

from __future__ import annotations

import random

import grpc
from google.protobuf import timestamp_pb2

from bulwark._faults import FaultInjector, FaultRuleCache
from bulwark.v1 import chaos_pb2 as C
from bulwark.v1 import watch_pb2

NOW = 1_800_000_000.0
SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
DELETE = watch_pb2.WATCH_EVENT_TYPE_DELETE


def rule(name: str, **fields: object) -> C.FaultRule:
    expires = timestamp_pb2.Timestamp()
    expires.FromNanoseconds(int((NOW + 60) * 1e9))
    return C.FaultRule(name=name, expires_at=expires, **fields)  # type: ignore[arg-type]


def cache_of(*rules: C.FaultRule) -> FaultRuleCache:
    cache = FaultRuleCache()
    for r in rules:
        cache.apply(C.WatchFaultRulesResponse(type=SNAPSHOT, rule=r, revision=1), 0.0)
    cache.apply(C.WatchFaultRulesResponse(type=SYNCED, revision=1), 0.0)
    return cache


class DeletedMidRead(dict):  # type: ignore[type-arg]
    """The cache's live map, with the watch thread's DELETE of ``victim`` landing just
    after the first rule is read (between two bytecodes of a reader)."""

    def __init__(self, items: dict[str, C.FaultRule], cache: FaultRuleCache, victim: str) -> None:
        super().__init__(items)
        self.cache = cache
        self.victim = victim

    def __getitem__(self, name: str) -> C.FaultRule:
        value = super().__getitem__(name)
        if self.victim in self:
            self.cache.apply(
                C.WatchFaultRulesResponse(type=DELETE, rule=C.FaultRule(name=self.victim)), 0.0
            )
        return value


def test_a_rule_deleted_while_a_call_reads_the_rules_raises_nothing() -> None:
    abort = C.FaultAbort(code=14, percentage=100)
    cache = cache_of(rule("a", abort=abort), rule("b", abort=abort))
    cache._items = DeletedMidRead(dict(cache._items), cache, victim="b")
    faults = FaultInjector(cache, "checkout", "checkout-1", wall=lambda: NOW)
    fault = faults.decide("payments", "/a.B/C")  # once raised KeyError: 'b'
    assert fault is not None and fault.rule == "a"
    fault.release()
    assert faults.counts()["a"] == {"delayed": 0, "aborted": 1, "active": 0}


def test_a_header_abort_code_is_an_integer_or_ignored() -> None:
    faults = FaultInjector(
        cache_of(rule("h", abort=C.FaultAbort(header_controlled=True, percentage=100))),
        "checkout",
        "checkout-1",
        wall=lambda: NOW,
        rng=random.Random(1),
    )

    def code(value: str) -> grpc.StatusCode | None:
        fault = faults.decide("payments", "/a.B/C", [("x-envoy-fault-abort-grpc-request", value)])
        if fault is None:
            return None
        fault.release()
        return fault.code

    assert code("14") is grpc.StatusCode.UNAVAILABLE
    assert code(" 8 ") is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Not a code: no abort (these once read as UNAVAILABLE, ABORTED and UNAVAILABLE).
    for value in ("14.9", "1e1", "0x0e", "+14", "", "nan"):
        assert code(value) is None, value
    assert code("0") is None and code("17") is None  # OK and no code at all
