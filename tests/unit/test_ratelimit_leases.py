"""Quota leases: fair shares, the capacity bound at every step, expiry."""

from __future__ import annotations

import random

import pytest

from bulwark_server.ratelimits.leases import LeasePool, fair_shares


@pytest.mark.parametrize(
    ("capacity", "wanted", "expected"),
    [
        (100, {"a": 10, "b": 20}, {"a": 10, "b": 20}),  # everything fits
        (100, {"a": 10, "b": 50, "c": 100}, {"a": 10, "b": 45, "c": 45}),
        (90, {"a": 100, "b": 100, "c": 100}, {"a": 30, "b": 30, "c": 30}),
        (100, {"a": 0, "b": 500}, {"a": 0, "b": 100}),
        (2, {"a": 5, "b": 5, "c": 5}, {"a": 1, "b": 1, "c": 0}),
    ],
)
def test_fair_shares(capacity: int, wanted: dict[str, int], expected: dict[str, int]):
    assert fair_shares(capacity, wanted) == expected


def test_fair_shares_never_exceed_capacity_or_demand():
    rng = random.Random(7)
    for _ in range(500):
        capacity = rng.randint(0, 1000)
        wanted = {f"c{i}": rng.randint(0, 400) for i in range(rng.randint(1, 8))}
        shares = fair_shares(capacity, wanted)
        assert sum(shares.values()) <= capacity
        assert all(0 <= shares[c] <= wanted[c] for c in wanted)
        # Nothing is left over while someone still wants more.
        if sum(shares.values()) < capacity:
            assert shares == wanted


def test_shares_follow_demand_and_never_sum_above_capacity():
    pool = LeasePool()
    now = 0.0
    demands = {"small": 10, "medium": 50, "large": 100}
    for _ in range(4):  # a few renewal rounds
        for client, wanted in demands.items():
            pool.request(client, wanted, capacity=100, now=now, term=10)
            assert pool.granted_total() <= 100
        now += 1
    granted = {c: lease.granted for c, lease in pool.leases.items()}
    assert granted == {"small": 10, "medium": 45, "large": 45}

    demands["small"] = 80  # demand moves: shares follow within two rounds
    for _ in range(3):
        for client, wanted in demands.items():
            pool.request(client, wanted, capacity=100, now=now, term=10)
            assert pool.granted_total() <= 100
        now += 1
    granted = {c: lease.granted for c, lease in pool.leases.items()}
    assert sorted(granted.values()) == [33, 33, 34]  # an even split; the odd unit goes to one


def test_an_expired_lease_returns_its_share_to_the_pool():
    pool = LeasePool()
    pool.request("a", 100, capacity=100, now=0, term=5)
    assert pool.request("b", 100, capacity=100, now=1, term=5).granted == 0  # all leased out
    assert pool.request("b", 100, capacity=100, now=5.5, term=5).granted == 100  # a expired
    pool.expire(5.5)
    assert set(pool.leases) == {"b"}
