"""Unit tests for bulwark_server.ratelimits.tables: a limit's counters held together.

A table must decide, value by value, exactly as one counter per value would
(``counters.FixedWindow``, ``counters.TokenBucket``), and its bounded checkpoint
must never restore a value below what it counted, however many values it holds.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_server.ratelimits.counters import FixedWindow, TokenBucket
from bulwark_server.ratelimits.tables import (
    BucketTable,
    Members,
    Rest,
    WindowTable,
    saved_size,
    value_of,
    values_of,
)

T0 = 1_700_002_800.0  # a multiple of 60

VALUES = [f"10.0.0.{i}" for i in range(12)]
steps = st.lists(
    st.tuples(
        st.sampled_from(VALUES),
        st.integers(min_value=0, max_value=4),
        st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


def _window_count(table: WindowTable, value: str, now: float) -> int:
    """What the table has counted for ``value`` at ``now`` (a peek; counts below the limit)."""
    return table.limit - table.take(value, 0, now).remaining


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_window_table_decides_as_one_fixed_window_per_value(run) -> None:
    table = WindowTable(5, 60.0)
    windows: dict[str, FixedWindow] = {}
    now = T0
    for value, hits, dt in run:
        now += dt
        expected = windows.setdefault(value, FixedWindow(5, 60.0)).take(hits, now)
        assert table.take(value, hits, now) == expected


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_bucket_table_decides_as_one_token_bucket_per_value(run) -> None:
    table = BucketTable(4, 0.5)
    buckets: dict[str, TokenBucket] = {}
    now = T0
    for value, hits, dt in run:
        now += dt
        expected = buckets.setdefault(value, TokenBucket(4, 0.5, now)).take(hits, now)
        assert table.take(value, hits, now) == expected
        table.sweep(now)  # forgetting full buckets changes no decision


def test_values_round_trip_and_one_value_is_the_string_itself() -> None:
    assert value_of(["10.0.0.1"]) == "10.0.0.1"
    assert value_of(["a", "b"]) == ("a", "b")
    assert values_of(value_of(["a", "b"])) == ["a", "b"]
    assert values_of(value_of(["x"])) == ["x"]


def test_a_window_table_drops_every_count_when_its_window_ends() -> None:
    table = WindowTable(3, 60.0)
    for value in VALUES:
        table.take(value, 2, T0 + 1)
    assert len(table) == len(VALUES)
    assert not table.idle(T0 + 59)
    assert table.idle(T0 + 60)
    assert table.take(VALUES[0], 1, T0 + 61).remaining == 2
    assert len(table) == 1


def test_a_peek_stores_nothing() -> None:
    window, buckets = WindowTable(3, 60.0), BucketTable(3, 1.0)
    assert window.take("a", 0, T0).allowed and buckets.take("a", 0, T0).allowed
    assert len(window) == 0 and len(buckets) == 0


def test_a_bucket_table_forgets_full_buckets_once_per_refill_period() -> None:
    table = BucketTable(10, 1.0)  # refills in 10 s
    table.take("a", 5, T0 + 4)
    table.take("b", 1, T0 + 8)
    table.sweep(T0 + 8)
    assert len(table) == 2  # neither full yet
    table.sweep(T0 + 12)  # "a" is full, but the last sweep was 4 s ago
    assert len(table) == 2
    table.sweep(T0 + 18.5)  # a period later: "a" full, "b" full since T0 + 9
    assert len(table) == 0
    assert table.idle(T0 + 19)


# --- checkpoints that fit, and restore no value below its count ------------------------


@settings(max_examples=100, deadline=None)
@given(
    counts=st.dictionaries(
        st.text(alphabet="0123456789.", min_size=1, max_size=15),
        st.integers(min_value=1, max_value=50),
        min_size=1,
        max_size=300,
    ),
    max_bytes=st.integers(min_value=30, max_value=4000),
)
def test_a_window_checkpoint_fits_its_budget_and_restores_every_value_at_or_above_its_count(
    counts: dict[str, int], max_bytes: int
) -> None:
    table = WindowTable(1000, 60.0)
    for value, count in counts.items():
        table.take(value, count, T0 + 1)
    listed, rest = table.saved(max_bytes, T0 + 2)
    assert sum(saved_size(v) for v, _, _ in listed) <= max_bytes
    assert all(level == counts[v] for v, level, _ in listed)  # listed values are exact
    restored = WindowTable(1000, 60.0)
    restored.restore(listed, rest, T0 + 3)
    for value, count in counts.items():
        got = _window_count(restored, value, T0 + 3)
        assert got >= count
        if rest is None:
            assert got == count
    # A value never seen is charged at the rest level: the price of a bounded record.
    # A value never seen starts at 0 unless the filter takes it for one seen (then at
    # the rest level, a false positive's price).
    never = _window_count(restored, "never-seen", T0 + 3)
    assert never in ({0, int(rest.level)} if rest else {0})


def test_a_window_checkpoint_lists_the_highest_counts_first() -> None:
    table = WindowTable(100, 60.0)
    for i in range(1000):
        table.take(f"v{i}", 1 + (i % 7 == 0) * 20 + (i == 500) * 200, T0)
    listed, rest = table.saved(40 * saved_size("v999"), T0)
    assert listed[0][:2] == ("v500", 201.0)
    # The 143 values at 21 cannot all be listed: they all join the rest, which is
    # what the highest value left out sets it to anyway.
    assert [v for v, _, _ in listed] == ["v500"]
    assert rest is not None and rest.level == 21.0
    # The candidates stay near the budget instead of every value seen.
    assert len(table.heavy) <= 40 * saved_size("v999") // saved_size("")


def test_a_window_checkpoint_of_everything_has_no_rest() -> None:
    table = WindowTable(5, 60.0)
    table.take("a", 3, T0)
    table.take(("b", "c"), 1, T0)
    listed, rest = table.saved(10_000, T0)
    assert rest is None
    assert sorted(listed, key=str) == sorted([("a", 3.0, T0), (("b", "c"), 1.0, T0)], key=str)


def test_a_window_checkpoint_from_an_earlier_window_restores_nothing() -> None:
    table = WindowTable(5, 60.0)
    table.restore([("a", 5.0, T0)], Rest(2.0, T0), T0 + 61)
    assert table.take("a", 1, T0 + 61).remaining == 4
    assert table.take("b", 1, T0 + 61).remaining == 4


def test_an_earlier_versions_record_restores_exactly() -> None:
    """The previous version listed every counter and had no rest level."""
    table = WindowTable(5, 60.0)
    table.restore([("a", 5.0, T0), ("b", 1.0, T0)], None, T0 + 10)
    assert not table.take("a", 1, T0 + 10).allowed
    assert table.take("b", 1, T0 + 10).remaining == 3
    assert table.take("c", 1, T0 + 10).remaining == 4


@settings(max_examples=100, deadline=None)
@given(
    spent=st.dictionaries(
        st.text(alphabet="abcdef", min_size=1, max_size=8),
        st.integers(min_value=1, max_value=10),
        min_size=1,
        max_size=200,
    ),
    max_bytes=st.integers(min_value=30, max_value=3000),
)
def test_a_bucket_checkpoint_never_restores_more_tokens_than_a_bucket_had(
    spent: dict[str, int], max_bytes: int
) -> None:
    table = BucketTable(10, 0.1)
    for i, (value, hits) in enumerate(spent.items()):
        table.take(value, hits, T0 + i * 0.01)
    now = T0 + 5
    listed, rest = table.saved(max_bytes, now)
    assert sum(saved_size(v) for v, _, _ in listed) <= max_bytes
    restored = BucketTable(10, 0.1)
    restored.restore(listed, rest, now)
    for value in spent:
        before = table.take(value, 0, now).remaining
        assert restored.take(value, 0, now).remaining <= before
        if rest is None:
            assert restored.take(value, 0, now).remaining == before


def test_a_bucket_tables_rest_level_refills_and_then_is_forgotten() -> None:
    table = BucketTable(10, 1.0)
    table.restore([], Rest(2.0, T0), T0)
    assert table.take("new", 0, T0 + 3).remaining == 5  # 2 + 3 s of refill
    table.sweep(T0 + 20)
    assert table.rest is None and table.idle(T0 + 20)
    assert table.take("new", 0, T0 + 20).remaining == 10


def test_reconfiguring_a_bucket_table_keeps_each_fill_fraction() -> None:
    table = BucketTable(10, 1.0)
    table.take("a", 5, T0)
    table.reconfigure(20, 2.0, T0)
    assert table.take("a", 0, T0).remaining == 10
    assert math.isclose(table.refill_seconds, 10.0)


def test_bad_window_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowTable(0, 60.0)
    with pytest.raises(ValueError):
        WindowTable(1, 0.0)
    with pytest.raises(ValueError):
        WindowTable(1, 60.0).take("a", -1, T0)


def test_the_candidates_stay_bounded_between_checkpoints() -> None:
    table = WindowTable(100, 60.0, max_bytes=100 * saved_size(""))
    for i in range(5000):
        table.take(f"v{i}", 1 + (i % 10 == 0), T0)
    assert len(table.heavy) <= 400  # four budgets at most, not 5,000
    listed, rest = table.saved(100 * saved_size(""), T0)
    assert rest is not None and rest.level >= 1.0
    assert all(level == 2.0 for _, level, _ in listed)


def test_a_filter_finds_every_value_added_also_once_folded() -> None:
    members = Members.sized(4096)
    added = [f"10.0.{i // 256}.{i % 256}" for i in range(3000)] + [("a", "b")]
    for value in added:
        members.add(value)
    assert all(v in members for v in added)
    others = [f"172.16.{i // 256}.{i % 256}" for i in range(3000)]
    assert sum(v in members for v in others) < 100  # about 1.4 % at 11 bits a value, 3 hashes
    assert members.fold(1024)
    assert len(members.bits) == 1024
    assert all(v in members for v in added)  # no false negatives, only more positives


def test_a_filter_takes_its_whole_room_in_sizes_that_halve() -> None:
    assert len(Members.sized(400_000).bits) == 399_360  # 390 x 1,024, not 262,144
    assert len(Members.sized(700).bits) == 512
    members = Members.sized(3 * 1024)
    added = [f"v{i}" for i in range(500)]
    for value in added:
        members.add(value)
    assert members.fold(1000) and len(members.bits) == 768
    assert all(v in members for v in added)
    odd = Members(bytearray(3))
    assert not odd.fold(2) and len(odd.bits) == 3
    with pytest.raises(ValueError):
        Members(bytearray())


def test_a_restored_filter_that_cannot_shrink_to_the_budget_is_left_out() -> None:
    """The rest level then stands for every value: never below a count, only more refused."""
    table = WindowTable(1, 3600.0, max_bytes=4096)
    table.restore([], Rest(1.0, T0, b"\xff" * 3001, 3), T0)
    table.take("new", 1, T0)
    listed, rest = table.saved(2048, T0)
    assert rest is not None and rest.level == 1.0 and rest.members == b""
    assert listed == [("new", 2.0, T0)]  # "new" is in the full filter: it stood at 1


def test_values_a_checkpoint_leaves_out_restore_at_the_rest_level_new_ones_at_zero() -> None:
    """A per-IP flood at the limit: a new leader must refuse those addresses, and
    still admit addresses it never saw (bar the filter's false positives)."""
    budget = 8192
    table = WindowTable(1, 3600.0, max_bytes=budget)
    flood = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(5000)]
    for address in flood:
        table.take(address, 1, T0)
    listed, rest = table.saved(budget, T0 + 1)
    assert rest is not None and rest.level == 1.0 and rest.members
    assert len(rest.members) + sum(saved_size(v) for v, _, _ in listed) <= budget
    restored = WindowTable(1, 3600.0, max_bytes=budget)
    restored.restore(listed, rest, T0 + 2)
    assert not any(restored.take(a, 1, T0 + 2).allowed for a in flood[::10])
    fresh = [f"192.168.{i // 256}.{i % 256}" for i in range(1000)]
    admitted = sum(restored.take(a, 1, T0 + 2).allowed for a in fresh)
    assert admitted > 500  # 6 KiB of filter for 5,000 values: most new ones pass
    # The new leader's own checkpoint still covers the values it only restored.
    listed2, rest2 = restored.saved(budget, T0 + 3)
    again = WindowTable(1, 3600.0, max_bytes=budget)
    again.restore(listed2, rest2, T0 + 4)
    assert not any(again.take(a, 1, T0 + 4).allowed for a in flood[1::10])
