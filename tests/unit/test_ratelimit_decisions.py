"""Every replica decides: three replicas' decisions in one process, on an injected clock.

Each replica is the real ``Decisions`` over its own unstarted ``EtcdStore`` (its cache
fed with the limits, the replica records and the leader, as its watch would feed
it). Their ``CounterService/Take`` calls go straight to the owner's ``serve``, so
the shares, the owners' counters and the fair split run as in a cluster, without a
network and on simulated time.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence

from bulwark.v1 import cluster_pb2, counter_pb2, ratelimit_pb2
from bulwark_server.cluster.election import Election
from bulwark_server.cluster.peers import Peers
from bulwark_server.errors import NotLeader
from bulwark_server.ratelimits.catalog import LimitCatalog
from bulwark_server.ratelimits.decisions import Decisions
from bulwark_server.ratelimits.owned import CounterTables
from bulwark_server.ratelimits.sharding import assign, slot_of
from bulwark_server.ratelimits.shares import (
    PART_OF_LIMIT,
    REFRESH_S,
    SHARE_TERM_S,
    part_divisor,
)
from bulwark_server.store import EtcdStore
from bulwark_server.store.cache import Entry
from bulwark_server.store.keys import ELECTION_KIND, LEADER_NAME, LIMIT_KIND, REPLICA_KIND, key_for

OK = ratelimit_pb2.CHECK_CODE_OK
IDS = ("r0", "r1", "r2")


def bucket(name: str, per_second: int, value: str = "") -> ratelimit_pb2.Limit:
    return ratelimit_pb2.Limit(
        domain="d",
        name=name,
        descriptor=[ratelimit_pb2.DescriptorEntry(key="k", value=value)],
        rate=ratelimit_pb2.Rate(requests_per_unit=per_second, unit=ratelimit_pb2.RATE_UNIT_SECOND),
        burst=per_second,
    )


def window(name: str, per_minute: int) -> ratelimit_pb2.Limit:
    return ratelimit_pb2.Limit(
        domain="d",
        name=name,
        descriptor=[ratelimit_pb2.DescriptorEntry(key="k", value=name)],
        rate=ratelimit_pb2.Rate(requests_per_unit=per_minute, unit=ratelimit_pb2.RATE_UNIT_MINUTE),
        algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # on a minute boundary

    def __call__(self) -> float:
        return self.now


class Fleet:
    """Three replicas; ``down`` ones do not answer ``Take``."""

    def __init__(self, limits: Sequence[ratelimit_pb2.Limit]) -> None:
        self.clock = Clock()
        self.down: set[str] = set()
        self.calls = Counter[str]()
        entries = [
            Entry(key_for(LIMIT_KIND, f"d/{limit.name}"), limit.SerializeToString(), 2 + i, 2 + i)
            for i, limit in enumerate(limits)
        ]
        for rid in IDS:
            record = cluster_pb2.Replica(id=rid, address=rid, counter_owner=True)
            entries.append(Entry(key_for(REPLICA_KIND, rid), record.SerializeToString(), 1, 1))
        leader = cluster_pb2.Leader(replica_id="r0", address="r0")
        entries.append(Entry(key_for(ELECTION_KIND, LEADER_NAME), leader.SerializeToString(), 1, 1))
        self.replicas: dict[str, Decisions] = {}
        for rid in IDS:
            store = EtcdStore(["127.0.0.1:1"])  # never started: only its cache is used
            store.cache.load(entries, revision=100)
            election = Election(store, cluster_pb2.Replica(id=rid, address=rid))
            peers = Peers(store, election, assign)
            catalog = LimitCatalog(store)
            catalog.start()
            owned = CounterTables(None)
            local = CounterTables(share=lambda: len(IDS))
            parts = CounterTables(share=lambda: part_divisor(len(IDS)))
            self.replicas[rid] = Decisions(
                catalog, peers, owned, local, parts, _Sender(self, rid), self.clock
            )

    async def check(self, rid: str, value: str, hits: int = 1) -> ratelimit_pb2.CheckResponse:
        entries = [ratelimit_pb2.DescriptorEntry(key="k", value=value)]
        return await self.replicas[rid].decide("d", [entries], [hits])

    async def lease(self, rid: str, value: str, client: str, wanted: int) -> int:
        decisions = self.replicas[rid]
        entries = [ratelimit_pb2.DescriptorEntry(key="k", value=value)]
        found = decisions._catalog.current().lookup("d", entries)
        assert found is not None
        return await decisions.lease("d", found, entries, client, wanted)

    async def refresh(self) -> None:
        for rid, decisions in self.replicas.items():
            if rid not in self.down:
                await decisions.refresh()


class _Sender:
    def __init__(self, fleet: Fleet, holder: str) -> None:
        self._fleet = fleet
        self._holder = holder

    async def take(
        self, address: str, charges: Sequence[counter_pb2.CounterCharge], deadline_s: float
    ) -> Sequence[counter_pb2.CounterOutcome]:
        if address in self._fleet.down:
            raise NotLeader(f"{address} does not answer")
        self._fleet.calls[address] += 1
        return self._fleet.replicas[address].serve(self._holder, charges)

    def retain(self, addresses: set[str]) -> None:
        pass


def owner_of(name: str, value: str) -> str:
    return assign(IDS)[slot_of("d", name, [value])]


async def run_load(
    fleet: Fleet, rates: dict[str, float], seconds: float, value: str, step: float = 0.002
) -> Counter[str]:
    """Offer ``rates[rid]`` hits per second to each replica; allowed per replica."""
    allowed = Counter[str]()
    owed = dict.fromkeys(rates, 0.0)
    start = fleet.clock.now
    next_refresh = start + REFRESH_S
    for tick in range(round(seconds / step)):
        fleet.clock.now = start + tick * step  # no drift: windows end where they should
        for rid, rate in rates.items():
            owed[rid] += rate * step
            while owed[rid] >= 1:
                owed[rid] -= 1
                if (await fleet.check(rid, value)).overall_code == OK:
                    allowed[rid] += 1
        if fleet.clock.now >= next_refresh:
            next_refresh += REFRESH_S
            await fleet.refresh()
    fleet.clock.now = start + seconds
    return allowed


def test_skewed_load_through_three_replicas_admits_what_the_limit_permits():
    async def main() -> None:
        fleet = Fleet([bucket("busy", 1000, "hot")])
        # 70/20/10 of 2,000 hits per second, twice the limit, for 10 s.
        allowed = await run_load(fleet, {"r0": 1400, "r1": 400, "r2": 200}, 10.0, "hot")
        permits = 1000 * 10 + 1000  # rate x time + burst
        total = sum(allowed.values())
        assert permits * 0.95 <= total <= permits, (total, allowed)
        # The owner answers shares, not every decision: few calls for 20,000 hits.
        assert sum(fleet.calls.values()) < 2000

    asyncio.run(main())


def test_a_five_per_minute_window_admits_exactly_five_in_each_window():
    async def main() -> None:
        fleet = Fleet([window("login", 5)])
        per_window = []
        for _ in range(3):
            allowed = await run_load(fleet, {"r0": 3, "r1": 2, "r2": 1}, 60.0, "login", step=0.05)
            per_window.append(sum(allowed.values()))
        assert per_window == [5, 5, 5]

    asyncio.run(main())


def test_shares_rebalance_within_a_refresh_period_and_a_silent_holders_share_returns():
    async def main() -> None:
        fleet = Fleet([bucket("busy", 1000, "hot")])
        owner = owner_of("busy", "hot")
        a, b = (rid for rid in IDS if rid != owner)
        await run_load(fleet, {a: 1500, b: 1500}, 2.0, "hot")
        both = await run_load(fleet, {a: 1500, b: 1500}, 2.0, "hot")
        # Two holders wanting more than the limit split it evenly.
        assert abs(both[a] - both[b]) <= 0.1 * 2000, both
        assert 0.95 * 2000 <= both[a] + both[b] <= 2000 + 1000, both
        # b goes silent (killed): a keeps its share, and b's comes back to a once
        # b's last grant has lapsed.
        fleet.down.add(b)
        await run_load(fleet, {a: 1500}, SHARE_TERM_S + 2 * REFRESH_S, "hot")
        alone = await run_load(fleet, {a: 1500}, 2.0, "hot")
        assert alone[a] >= 0.95 * 2000, alone

    asyncio.run(main())


def test_an_owner_that_does_not_answer_leaves_its_holders_their_shares_then_their_own_part():
    async def main() -> None:
        fleet = Fleet([bucket("busy", 300, "hot")])
        owner = owner_of("busy", "hot")
        holder = next(rid for rid in IDS if rid != owner)
        await run_load(fleet, {holder: 200}, 2.0, "hot")
        assert fleet.replicas[holder].book.shares, "a busy counter's holder holds a share"
        fleet.down.add(owner)
        answers = []
        for _ in range(20):  # within the share's term: decided from the share, not local
            answers.append(await fleet.check(holder, "hot"))
            fleet.clock.now += 0.001
        assert not any(a.local_fallback for a in answers)
        fleet.clock.now += SHARE_TERM_S
        late = [await fleet.check(holder, "hot") for _ in range(150)]
        # First its part (admitted without asking, reported later), then its own
        # share of 300/s among three replicas: 100 (burst included).
        part = math.ceil(300 / part_divisor(len(IDS)))
        assert [a.local_fallback for a in late[: part + 1]] == [False] * part + [True]
        assert all(a.overall_code == OK for a in late[:part])
        assert all(a.local_fallback for a in late[part:])
        assert sum(a.overall_code == OK for a in late[part:]) == 100

    asyncio.run(main())


def test_hits_admitted_alone_are_charged_to_the_owner_once_it_answers_again():
    async def main() -> None:
        fleet = Fleet([window("checkout", 600)])
        owner = owner_of("checkout", "checkout")
        holder = next(rid for rid in IDS if rid != owner)
        assert all([(await fleet.check(holder, "checkout")).overall_code == OK for _ in range(20)])
        fleet.down.add(owner)
        alone = [await fleet.check(holder, "checkout") for _ in range(30)]
        assert all(a.local_fallback and a.overall_code == OK for a in alone)
        fleet.down.discard(owner)
        fleet.clock.now += REFRESH_S
        await fleet.refresh()
        peek = await fleet.check(owner, "checkout", hits=0)
        assert peek.results[0].remaining == 600 - 20 - 30
        assert not fleet.replicas[holder].debts

    asyncio.run(main())


def test_leases_shares_and_checks_draw_on_one_budget():
    async def main() -> None:
        fleet = Fleet([bucket("busy", 1000, "hot")])
        owner = owner_of("busy", "hot")
        other = next(rid for rid in IDS if rid != owner)
        # Leased through a replica that does not own the counter: the owner grants it.
        granted = await fleet.lease(other, "hot", "client-a", 400)
        assert granted == 400
        allowed = await run_load(fleet, {"r0": 1400, "r1": 400, "r2": 200}, 9.0, "hot")
        # The client may admit its burst and its rate for the 9 s: the leases' bound.
        leased = granted + granted * 9
        permits = 1000 * 9 + 1000
        total = sum(allowed.values()) + leased
        assert total <= permits + granted, (allowed, leased)
        assert total >= 0.95 * permits, (allowed, leased)

    asyncio.run(main())


def test_a_window_keeps_the_leased_rate_back_from_its_checks():
    async def main() -> None:
        fleet = Fleet([window("export", 100)])
        owner = owner_of("export", "export")
        assert await fleet.lease(owner, "export", "client-a", 40) == 40
        per_window = []
        for _ in range(2):
            allowed: Counter[str] = Counter()
            for _ in range(6):  # the client renews every 10 s, as its lease ends
                allowed += await run_load(fleet, {"r0": 3, "r1": 2, "r2": 1}, 10.0, "export")
                await fleet.lease(owner, "export", "client-a", 40)
            per_window.append(sum(allowed.values()))
        assert per_window == [60, 60]
        # Once the client stops renewing, the window after its lease's gives it all back.
        await run_load(fleet, {"r0": 3, "r1": 2, "r2": 1}, 70.0, "export", step=0.05)
        last = await run_load(fleet, {"r0": 3, "r1": 2, "r2": 1}, 60.0, "export", step=0.05)
        assert sum(last.values()) == 100

    asyncio.run(main())


def test_a_lease_leaves_the_counters_other_users_their_fair_part():
    async def main() -> None:
        fleet = Fleet([bucket("busy", 1000, "hot")])
        owner = owner_of("busy", "hot")
        # Alone, a client may lease the whole limit ...
        assert await fleet.lease(owner, "hot", "client-a", 1000) == 1000
        # ... and Checks are refused meanwhile, but they count as demand: at the
        # renewal the counter keeps what they drew (300/s, with headroom: 450) back.
        await run_load(fleet, {"r0": 100, "r1": 100, "r2": 100}, 2.0, "hot")
        assert 1000 - 500 <= await fleet.lease(owner, "hot", "client-a", 1000) <= 1000 - 450
        # A lease that ends gives its rate back at the next sweep.
        fleet.clock.now += 11
        fleet.replicas[owner].owned.sweep(fleet.clock.now)
        assert not fleet.replicas[owner].owned.leases

    asyncio.run(main())


def per_address(per_minute: int) -> ratelimit_pb2.Limit:
    limit = window("per-ip", per_minute)
    limit.descriptor[0].value = ""  # any address
    return limit


def test_a_per_address_limit_costs_no_message_per_decision():
    async def main() -> None:
        fleet = Fleet([per_address(120)])
        addresses = [f"10.0.{i // 250}.{i % 250}" for i in range(3000)]
        for i, address in enumerate(addresses):
            assert (await fleet.check(IDS[i % 3], address)).overall_code == OK
            fleet.clock.now += 0.0001
        assert sum(fleet.calls.values()) == 0  # each replica admitted within its parts
        await fleet.refresh()
        # One report per replica to each other owner carried them all ...
        assert sum(fleet.calls.values()) <= len(IDS) * (len(IDS) - 1)
        # ... and each owner counts them: one hit per address in this window.
        for i in (0, 1, 2, 1000, 2999):
            owner = owner_of("per-ip", addresses[i])
            peek = await fleet.check(owner, addresses[i], hits=0)
            assert peek.results[0].remaining == 120 - 1, addresses[i]

    asyncio.run(main())


def test_parts_admit_at_most_their_documented_bound_beyond_the_limit():
    async def main() -> None:
        fleet = Fleet([per_address(400)])
        # One address hammered through every replica: each spends its part, then
        # asks the owner, which counts the parts reported at each refresh: exact.
        allowed = await run_load(fleet, {"r0": 10, "r1": 10, "r2": 10}, 60.0, "10.1.1.1")
        assert sum(allowed.values()) == 400, allowed
        # The whole window's worth at once, before any refresh: the parts spent on the
        # replicas that do not own the counter come on top, within the bound.
        burst = [await fleet.check(IDS[i % 3], "10.2.2.2") for i in range(600)]
        total = sum(a.overall_code == OK for a in burst)
        assert 400 < total <= 400 * (1 + 2 * PART_OF_LIMIT), total

    asyncio.run(main())


def test_a_windows_grant_late_in_it_is_what_can_be_spent_before_it_ends():
    per_second = ratelimit_pb2.Limit(
        domain="d",
        name="w",
        descriptor=[ratelimit_pb2.DescriptorEntry(key="k")],
        rate=ratelimit_pb2.Rate(requests_per_unit=1000, unit=ratelimit_pb2.RATE_UNIT_SECOND),
        algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
    )
    start = 1_800_000_000.0  # a window's start
    owned = CounterTables(None)
    key = ("d", "w", 0)
    # Mid-window a holder gets all it asks for (a period and a half of its demand).
    assert owned.grant(key, per_second, 2, "v", "r1", 300, start + 0.5) == 300
    # 50 ms before the end it gets what a quarter of a period needs; the rest stays
    # in the window for exact charges instead of lapsing with it.
    assert owned.grant(key, per_second, 2, "v", "r1", 300, start + 0.95) == 75
    assert owned.take(key, per_second, 2, "v", 0, start + 0.95).remaining == 1000 - 300 - 75
