"""LimitCatalog: the index follows the cache's limit changes, a burst a chunk at a time.

The store is a real, unstarted ``EtcdStore``: its cache is fed directly, as its
watch would feed it.
"""

from __future__ import annotations

import asyncio

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.catalog import CHUNK, LimitCatalog
from bulwark_server.store import EtcdStore
from bulwark_server.store.cache import Cache, Entry, Event, EventType
from bulwark_server.store.keys import LIMIT_KIND, key_for

DOMAIN = "d"


def limit_event(n: int, revision: int) -> Event:
    limit = ratelimit_pb2.Limit(
        domain=DOMAIN,
        name=f"l{n}",
        descriptor=[ratelimit_pb2.DescriptorEntry(key="user", value=f"u{n}")],
        rate=ratelimit_pb2.Rate(requests_per_unit=10, unit=ratelimit_pb2.RATE_UNIT_SECOND),
    )
    key = key_for(LIMIT_KIND, f"{DOMAIN}/l{n}")
    return Event(EventType.PUT, Entry(key, limit.SerializeToString(), revision, revision), revision)


def found(catalog: LimitCatalog, n: int) -> bool:
    entries = [ratelimit_pb2.DescriptorEntry(key="user", value=f"u{n}")]
    return catalog.current().lookup(DOMAIN, entries) is not None


def store() -> EtcdStore:
    return EtcdStore(["127.0.0.1:1"])  # never started: only its cache is used


async def test_a_decision_sees_a_change_the_cache_just_applied() -> None:
    s = store()
    s.cache.load([limit_event(0, 1).entry], revision=1)
    catalog = LimitCatalog(s)
    catalog.start()
    assert found(catalog, 0) and not found(catalog, 1)
    s.cache.apply([limit_event(1, 2)], revision=2)
    assert found(catalog, 1)  # no await between: the decision applied it itself
    await catalog.close()


async def test_a_burst_is_applied_a_chunk_at_a_time_with_the_loop_free_between() -> None:
    s = store()
    catalog = LimitCatalog(s)
    catalog.start()
    burst = 4 * CHUNK + 7
    s.cache.apply([limit_event(n, 10 + n) for n in range(burst)], revision=10 + burst)
    assert len(catalog.current()) == 0  # too many for a decision to apply: it answers as is
    seen = []
    for _ in range(10):
        await asyncio.sleep(0)
        seen.append(len(catalog.current()))
    assert seen[0] == CHUNK  # one chunk, then the loop ran this coroutine again
    assert seen[-1] == burst and all(found(catalog, n) for n in (0, burst - 1))
    assert seen == sorted(seen)
    await catalog.close()


async def test_a_queue_the_cache_dropped_is_replaced_by_a_rebuild() -> None:
    s = store()
    s.cache = Cache(max_queue=2)
    catalog = LimitCatalog(s)
    catalog.start()
    # No await from here on: the follower never runs, so the queue overflows unread.
    for n in range(5):
        s.cache.apply([limit_event(n, n + 1)], revision=n + 1)
    assert all(found(catalog, n) for n in range(5))
    s.cache.apply([limit_event(9, 20)], revision=20)
    assert found(catalog, 9)  # following the new queue


async def test_closing_stops_the_follower_and_a_later_decision_follows_again() -> None:
    s = store()
    catalog = LimitCatalog(s)
    catalog.start()
    await catalog.close()
    s.cache.apply([limit_event(3, 3)], revision=3)
    assert found(catalog, 3)  # rebuilt from the cache, and following again
    s.cache.apply([limit_event(4, 4)], revision=4)
    assert found(catalog, 4)
    await catalog.close()


def test_without_a_running_loop_a_decision_applies_every_change() -> None:
    s = store()
    catalog = LimitCatalog(s)
    catalog.start()
    s.cache.apply([limit_event(n, n + 1) for n in range(3 * CHUNK)], revision=3 * CHUNK)
    assert len(catalog.current()) == 3 * CHUNK


async def test_the_follower_finishes_a_burst_however_often_decisions_look_at_it() -> None:
    s = store()
    catalog = LimitCatalog(s)
    catalog.start()
    burst = 3 * CHUNK
    s.cache.apply([limit_event(n, 10 + n) for n in range(burst)], revision=10 + burst)
    for _ in range(3):  # each decision takes what is queued, its nudge included
        catalog.current()
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(catalog.current()) == burst
    await catalog.close()
