"""Unit tests for bulwark_server.bulkheads.rules: validation, permit ids, slots, hints."""

from __future__ import annotations

import random

import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import bulkhead_pb2
from bulwark_server.bulkheads.rules import (
    DEFAULT_PERMIT_TTL_S,
    BulkheadSpec,
    effective_wait,
    lease_seconds,
    new_permit_id,
    parse_acquire,
    parse_bulkhead,
    parse_expected_revision,
    parse_permit_ref,
    permit_name,
    pick_slots,
    retry_hint,
    slot_of,
)
from bulwark_server.errors import InvalidArgument

TOKEN = "0123456789abcdef0123456789abcdef"


def dur(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def test_parse_bulkhead_fills_defaults_and_round_trips() -> None:
    spec = parse_bulkhead(bulkhead_pb2.Bulkhead(name="db", max_concurrent=3, revision=9, in_use=2))
    assert spec == BulkheadSpec("db", 3, 0.0, DEFAULT_PERMIT_TTL_S)
    stored = spec.to_proto()
    assert stored.revision == 0 and stored.in_use == 0
    assert stored.HasField("max_wait") and stored.default_permit_ttl.seconds == 30
    assert BulkheadSpec.from_proto(stored) == spec


def test_parse_bulkhead_keeps_given_durations() -> None:
    message = bulkhead_pb2.Bulkhead(
        name="db", max_concurrent=10_000, max_wait=dur(2.5), default_permit_ttl=dur(3600)
    )
    assert parse_bulkhead(message) == BulkheadSpec("db", 10_000, 2.5, 3600.0)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (bulkhead_pb2.Bulkhead(max_concurrent=1), "bulkhead.name"),
        (bulkhead_pb2.Bulkhead(name="a/b", max_concurrent=1), "bulkhead.name"),
        (bulkhead_pb2.Bulkhead(name="-a", max_concurrent=1), "bulkhead.name"),
        (bulkhead_pb2.Bulkhead(name="a" * 129, max_concurrent=1), "bulkhead.name"),
        (bulkhead_pb2.Bulkhead(name="a"), "bulkhead.max_concurrent"),
        (bulkhead_pb2.Bulkhead(name="a", max_concurrent=-1), "bulkhead.max_concurrent"),
        (bulkhead_pb2.Bulkhead(name="a", max_concurrent=10_001), "bulkhead.max_concurrent"),
        (bulkhead_pb2.Bulkhead(name="a", max_concurrent=1, max_wait=dur(-1)), "bulkhead.max_wait"),
        (
            bulkhead_pb2.Bulkhead(name="a", max_concurrent=1, max_wait=dur(300.5)),
            "bulkhead.max_wait",
        ),
        (
            bulkhead_pb2.Bulkhead(name="a", max_concurrent=1, default_permit_ttl=dur(0.5)),
            "bulkhead.default_permit_ttl",
        ),
        (
            bulkhead_pb2.Bulkhead(name="a", max_concurrent=1, default_permit_ttl=dur(3601)),
            "bulkhead.default_permit_ttl",
        ),
        (
            bulkhead_pb2.Bulkhead(
                name="a",
                max_concurrent=1,
                default_permit_ttl=duration_pb2.Duration(seconds=5, nanos=-1),
            ),
            "bulkhead.default_permit_ttl",
        ),
    ],
)
def test_parse_bulkhead_names_the_bad_field(message: bulkhead_pb2.Bulkhead, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_bulkhead(message)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")


def test_expected_revision() -> None:
    assert parse_expected_revision(0) == 0
    assert parse_expected_revision(17) == 17
    with pytest.raises(InvalidArgument) as err:
        parse_expected_revision(-1)
    assert err.value.field == "expected_revision"


def test_parse_acquire_defaults_and_explicit_zero_wait() -> None:
    spec = parse_acquire(bulkhead_pb2.AcquireRequest(bulkhead="db", holder="worker-1"))
    assert (spec.ttl, spec.max_wait) == (None, None)
    # A zero ttl means "the bulkhead's default"; a zero max_wait means "do not wait".
    spec = parse_acquire(
        bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(0), max_wait=dur(0))
    )
    assert (spec.ttl, spec.max_wait) == (None, 0.0)
    spec = parse_acquire(
        bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(1.5), max_wait=dur(300))
    )
    assert (spec.ttl, spec.max_wait) == (1.5, 300.0)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (bulkhead_pb2.AcquireRequest(holder="w"), "bulkhead"),
        (bulkhead_pb2.AcquireRequest(bulkhead="a b", holder="w"), "bulkhead"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db"), "holder"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="x" * 257), "holder"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="a\nb"), "holder"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(0.5)), "ttl"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(-2)), "ttl"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", ttl=dur(3601)), "ttl"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", max_wait=dur(-1)), "max_wait"),
        (bulkhead_pb2.AcquireRequest(bulkhead="db", holder="w", max_wait=dur(301)), "max_wait"),
    ],
)
def test_parse_acquire_names_the_bad_field(
    request_: bulkhead_pb2.AcquireRequest, field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_acquire(request_)
    assert err.value.field == field


def test_permit_ids_round_trip_to_their_slot() -> None:
    for slot in (0, 7, 9999):
        ref = parse_permit_ref("db", new_permit_id(slot, TOKEN))
        assert (ref.bulkhead, ref.slot) == ("db", slot)
        assert slot_of(permit_name("db", slot)) == ("db", slot)
    assert slot_of("db") is None
    assert slot_of("db/x") is None


@pytest.mark.parametrize(
    ("bulkhead", "permit_id", "field"),
    [
        ("", f"0-{TOKEN}", "bulkhead"),
        ("db", "", "permit_id"),
        ("db", "nope", "permit_id"),
        ("db", TOKEN, "permit_id"),
        ("db", f"01-{TOKEN}", "permit_id"),
        ("db", f"10000-{TOKEN}", "permit_id"),
        ("db", f"1-{TOKEN.upper()}", "permit_id"),
        ("db", f"1-{TOKEN}0", "permit_id"),
    ],
)
def test_parse_permit_ref_names_the_bad_field(bulkhead: str, permit_id: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_permit_ref(bulkhead, permit_id)
    assert err.value.field == field


def test_effective_wait_never_exceeds_the_bulkheads() -> None:
    assert effective_wait(None, 5.0) == 5.0
    assert effective_wait(2.0, 5.0) == 2.0
    assert effective_wait(60.0, 5.0) == 5.0
    assert effective_wait(0.0, 5.0) == 0.0


def test_lease_seconds_rounds_up() -> None:
    assert [lease_seconds(t) for t in (1.0, 1.2, 2.0, 29.999, 3600.0)] == [1, 2, 2, 30, 3600]


def test_pick_slots_offers_only_free_slots_below_the_limit() -> None:
    rng = random.Random(1)
    for held in (set(), {0, 2}, {0, 1, 2, 3}, set(range(9))):
        slots = pick_slots(10, held, 8, rng)
        assert len(slots) == len(set(slots)) == min(8, 10 - len(held))
        assert all(0 <= s < 10 and s not in held for s in slots)
    assert pick_slots(10, set(range(10)), 8, rng) == []


def test_pick_slots_counts_leftovers_above_a_lowered_limit() -> None:
    rng = random.Random(2)
    # Limit lowered from 5 to 2 while slots 3 and 4 are held: nothing may be offered.
    assert pick_slots(2, {3, 4}, 8, rng) == []
    # One leftover: one more permit fits, in slot 0 or 1.
    assert pick_slots(2, {4}, 8, rng) in ([0], [1])


def test_pick_slots_spreads_choices() -> None:
    rng = random.Random(3)
    firsts = {pick_slots(100, {5}, 1, rng)[0] for _ in range(200)}
    assert len(firsts) > 50


def test_pick_slots_with_a_large_mostly_full_bulkhead() -> None:
    rng = random.Random(4)
    held = set(range(10_000)) - {17, 9_998}
    assert sorted(pick_slots(10_000, held, 8, rng)) == [17, 9_998]


def test_retry_hint() -> None:
    assert retry_hint([], now=100.0) == 1.0
    assert retry_hint([99.0], now=100.0) == 1.0  # already past (extended): unknown
    assert retry_hint([100.3, 130.0], now=100.0) == pytest.approx(0.3)
    assert retry_hint([100.001], now=100.0) == 0.05
    assert retry_hint([160.0], now=100.0) == 1.0
