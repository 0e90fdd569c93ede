"""Unit tests for bulwark_server.store.cache: the in-memory mirror of the key prefix."""

from __future__ import annotations

import asyncio

import pytest

from bulwark_server.store.cache import Cache, Entry, Event, EventType


def entry(key: bytes, value: bytes = b"v", mod: int = 1, create: int | None = None) -> Entry:
    return Entry(key=key, value=value, create_revision=create or mod, mod_revision=mod)


def put(key: bytes, value: bytes = b"v", mod: int = 1) -> Event:
    return Event(EventType.PUT, entry(key, value, mod), mod)


def delete(key: bytes, revision: int) -> Event:
    # A watch DELETE carries only the key; the cache fills in the last known value.
    return Event(EventType.DELETE, Entry(key, b"", 0, revision), revision)


def keys(entries: list[Entry]) -> list[bytes]:
    return [e.key for e in entries]


def view(cache: Cache) -> dict[bytes, Entry]:
    return {e.key: e for e in cache.scan(b"")}


# --- load / get / revision ---------------------------------------------------


def test_new_cache_is_empty_at_revision_zero() -> None:
    cache = Cache()
    assert len(cache) == 0
    assert cache.revision == 0
    assert cache.get(b"/a") is None
    assert cache.scan(b"") == []


def test_load_fills_the_view_and_sets_revision() -> None:
    cache = Cache()
    a, b = entry(b"/b", b"2", mod=4), entry(b"/a", b"1", mod=3)
    events = cache.load([a, b], revision=10)
    assert len(cache) == 2
    assert cache.revision == 10
    assert cache.get(b"/a") == b
    assert cache.get(b"/b") == a
    assert keys(cache.scan(b"")) == [b"/a", b"/b"]
    # Loading into an empty cache is a series of puts, in revision order.
    assert [(ev.type, ev.entry, ev.revision) for ev in events] == [
        (EventType.PUT, b, 3),
        (EventType.PUT, a, 4),
    ]


def test_load_never_moves_revision_backwards() -> None:
    cache = Cache()
    cache.load([], revision=20)
    cache.load([], revision=5)
    assert cache.revision == 20


def test_advance_only_moves_forward() -> None:
    cache = Cache()
    cache.advance(7)
    assert cache.revision == 7
    cache.advance(3)
    assert cache.revision == 7
    cache.advance(9)
    assert cache.revision == 9
    assert len(cache) == 0


def test_advance_publishes_nothing() -> None:
    cache = Cache()
    queue = cache.subscribe()
    cache.advance(4)
    assert queue.empty()


# --- apply -------------------------------------------------------------------


def test_apply_put_adds_and_replaces() -> None:
    cache = Cache()
    applied = cache.apply([put(b"/k", b"1", mod=2)], revision=2)
    assert [ev.type for ev in applied] == [EventType.PUT]
    assert cache.get(b"/k") == entry(b"/k", b"1", mod=2)
    assert cache.revision == 2

    cache.apply([put(b"/k", b"2", mod=5)], revision=5)
    assert len(cache) == 1
    assert cache.get(b"/k").value == b"2"
    assert keys(cache.scan(b"")) == [b"/k"]
    assert cache.revision == 5


def test_apply_keeps_keys_sorted() -> None:
    cache = Cache()
    cache.apply([put(b"/m", mod=1), put(b"/c", mod=2), put(b"/x", mod=3)], revision=3)
    cache.apply([put(b"/a", mod=4), put(b"/n", mod=5)], revision=5)
    assert keys(cache.scan(b"")) == [b"/a", b"/c", b"/m", b"/n", b"/x"]


def test_apply_delete_removes_and_reports_last_value() -> None:
    cache = Cache()
    cache.apply([put(b"/a", b"old", mod=1), put(b"/b", mod=2)], revision=2)
    applied = cache.apply([delete(b"/a", revision=6)], revision=6)
    assert cache.get(b"/a") is None
    assert keys(cache.scan(b"")) == [b"/b"]
    assert len(applied) == 1
    (ev,) = applied
    assert ev.type is EventType.DELETE
    assert ev.revision == 6
    assert ev.entry == entry(b"/a", b"old", mod=1)
    assert cache.revision == 6


def test_delete_of_unknown_key_is_ignored_but_revision_advances() -> None:
    cache = Cache()
    cache.apply([put(b"/a", mod=1)], revision=1)
    queue = cache.subscribe()
    applied = cache.apply([delete(b"/ghost", revision=3)], revision=3)
    assert applied == []
    assert len(cache) == 1
    assert keys(cache.scan(b"")) == [b"/a"]
    assert cache.revision == 3
    assert queue.empty()


def test_apply_put_then_delete_in_one_batch() -> None:
    cache = Cache()
    applied = cache.apply([put(b"/t", mod=3), delete(b"/t", revision=4)], revision=4)
    assert [ev.type for ev in applied] == [EventType.PUT, EventType.DELETE]
    assert cache.get(b"/t") is None
    assert cache.scan(b"") == []
    assert len(cache) == 0


def test_apply_never_moves_revision_backwards() -> None:
    cache = Cache()
    cache.advance(10)
    cache.apply([put(b"/a", mod=4)], revision=4)
    assert cache.revision == 10


# --- scan --------------------------------------------------------------------


@pytest.fixture
def populated() -> Cache:
    cache = Cache()
    cache.load(
        [
            entry(b"/bulwark/v1/breaker/a"),
            entry(b"/bulwark/v1/breaker/b"),
            entry(b"/bulwark/v1/breaker/c"),
            entry(b"/bulwark/v1/bulkhead/a"),
            entry(b"/bulwark/v1/bulkhead/z"),
            entry(b"/bulwark/v1/limit/q"),
            entry(b"/other/x"),
        ],
        revision=1,
    )
    return cache


def test_scan_with_prefix(populated: Cache) -> None:
    assert keys(populated.scan(b"/bulwark/v1/bulkhead/")) == [
        b"/bulwark/v1/bulkhead/a",
        b"/bulwark/v1/bulkhead/z",
    ]
    assert keys(populated.scan(b"/bulwark/v1/b")) == [
        b"/bulwark/v1/breaker/a",
        b"/bulwark/v1/breaker/b",
        b"/bulwark/v1/breaker/c",
        b"/bulwark/v1/bulkhead/a",
        b"/bulwark/v1/bulkhead/z",
    ]
    assert populated.scan(b"/bulwark/v1/nothing/") == []
    assert len(populated.scan(b"")) == 7


def test_scan_start_after_is_exclusive(populated: Cache) -> None:
    prefix = b"/bulwark/v1/breaker/"
    assert keys(populated.scan(prefix, start_after=prefix + b"a")) == [
        prefix + b"b",
        prefix + b"c",
    ]
    # A start_after that is not itself a key starts at the next key.
    assert keys(populated.scan(prefix, start_after=prefix + b"aa")) == [
        prefix + b"b",
        prefix + b"c",
    ]
    assert populated.scan(prefix, start_after=prefix + b"c") == []


def test_scan_start_after_before_prefix_starts_at_prefix(populated: Cache) -> None:
    prefix = b"/bulwark/v1/bulkhead/"
    assert keys(populated.scan(prefix, start_after=b"/a")) == [prefix + b"a", prefix + b"z"]


def test_scan_start_after_past_prefix_range_is_empty(populated: Cache) -> None:
    assert populated.scan(b"/bulwark/v1/breaker/", start_after=b"/bulwark/v1/zzz") == []


def test_scan_limit(populated: Cache) -> None:
    prefix = b"/bulwark/v1/breaker/"
    assert keys(populated.scan(prefix, limit=2)) == [prefix + b"a", prefix + b"b"]
    assert keys(populated.scan(prefix, limit=1)) == [prefix + b"a"]
    assert len(populated.scan(prefix, limit=100)) == 3
    assert len(populated.scan(prefix, limit=0)) == 3


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 7, 50])
def test_paging_returns_every_entry_once_in_key_order(page_size: int) -> None:
    cache = Cache()
    names = [f"{i:03d}".encode() for i in (17, 3, 42, 8, 99, 1, 56, 23, 64, 11, 5)]
    prefix = b"/bulwark/v1/limit/"
    neighbours = [entry(b"/bulwark/v1/lease/x", mod=30), entry(b"/bulwark/v1/limiz", mod=31)]
    cache.load([entry(prefix + n, mod=i + 1) for i, n in enumerate(names)] + neighbours, 31)

    seen: list[bytes] = []
    cursor = b""
    pages = 0
    while True:
        page = cache.scan(prefix, start_after=cursor, limit=page_size)
        assert len(page) <= page_size
        if not page:
            break
        seen.extend(keys(page))
        cursor = page[-1].key
        pages += 1
        assert pages <= len(names) + 1, "paging does not terminate"

    assert seen == sorted(prefix + n for n in names)
    assert len(seen) == len(set(seen)) == len(names)


# --- load as a resync ---------------------------------------------------------


def apply_events(before: dict[bytes, Entry], events: list[Event]) -> dict[bytes, Entry]:
    out = dict(before)
    for ev in events:
        if ev.type is EventType.PUT:
            out[ev.entry.key] = ev.entry
        else:
            del out[ev.entry.key]
    return out


def test_load_after_changes_emits_exactly_the_difference() -> None:
    cache = Cache()
    unchanged = entry(b"/same", b"s", mod=2)
    changed_old = entry(b"/changed", b"old", mod=3)
    gone = entry(b"/gone", b"g", mod=4)
    cache.load([unchanged, changed_old, gone], revision=5)
    before = view(cache)

    changed_new = entry(b"/changed", b"new", mod=8, create=3)
    added = entry(b"/added", b"a", mod=7)
    events = cache.load([unchanged, changed_new, added], revision=9)

    by_key = {ev.entry.key: ev for ev in events}
    assert set(by_key) == {b"/changed", b"/added", b"/gone"}
    assert len(events) == 3
    assert by_key[b"/changed"].type is EventType.PUT
    assert by_key[b"/changed"].entry == changed_new
    assert by_key[b"/changed"].revision == 8
    assert by_key[b"/added"].type is EventType.PUT
    assert by_key[b"/added"].revision == 7
    assert by_key[b"/gone"].type is EventType.DELETE
    assert by_key[b"/gone"].entry == gone
    assert by_key[b"/gone"].revision == 9
    # Events come in revision order.
    assert [ev.revision for ev in events] == [7, 8, 9]
    # Replaying the events on the old view gives the new view.
    assert apply_events(before, events) == view(cache)
    assert view(cache) == {e.key: e for e in (unchanged, changed_new, added)}
    assert cache.revision == 9


def test_identical_load_emits_nothing() -> None:
    cache = Cache()
    entries = [entry(b"/a", mod=1), entry(b"/b", mod=2)]
    cache.load(entries, revision=3)
    queue = cache.subscribe()
    assert cache.load(list(entries), revision=4) == []
    assert queue.empty()
    assert cache.revision == 4


def test_load_of_nothing_deletes_everything() -> None:
    cache = Cache()
    cache.apply([put(b"/a", mod=1), put(b"/b", mod=2)], revision=2)
    events = cache.load([], revision=6)
    assert [(ev.type, ev.entry.key, ev.revision) for ev in events] == [
        (EventType.DELETE, b"/a", 6),
        (EventType.DELETE, b"/b", 6),
    ]
    assert len(cache) == 0
    assert cache.scan(b"") == []


def test_scan_after_load_reflects_new_key_set() -> None:
    cache = Cache()
    cache.load([entry(b"/a"), entry(b"/c")], revision=1)
    cache.load([entry(b"/b", mod=2), entry(b"/c")], revision=2)
    assert keys(cache.scan(b"")) == [b"/b", b"/c"]
    assert cache.get(b"/a") is None


# --- subscribers --------------------------------------------------------------


async def test_subscribers_receive_batches_in_order() -> None:
    cache = Cache()
    first, second = cache.subscribe(), cache.subscribe()
    b1 = cache.apply([put(b"/a", mod=1)], revision=1)
    b2 = cache.apply([put(b"/b", mod=2), put(b"/c", mod=2)], revision=2)
    b3 = cache.apply([delete(b"/a", revision=3)], revision=3)
    b4 = cache.load([entry(b"/b", mod=2), entry(b"/d", mod=4)], revision=5)

    for queue in (first, second):
        got = [await asyncio.wait_for(queue.get(), 1) for _ in range(4)]
        assert got == [b1, b2, b3, b4]
        assert [[ev.entry.key for ev in batch] for batch in got] == [
            [b"/a"],
            [b"/b", b"/c"],
            [b"/a"],
            [b"/d", b"/c"],  # put at revision 4, then the resync delete at 5
        ]
        assert queue.empty()


async def test_subscriber_only_sees_later_batches() -> None:
    cache = Cache()
    cache.apply([put(b"/early", mod=1)], revision=1)
    queue = cache.subscribe()
    assert queue.empty()
    later = cache.apply([put(b"/late", mod=2)], revision=2)
    assert await asyncio.wait_for(queue.get(), 1) == later


async def test_prefix_subscriber_sees_only_its_keys() -> None:
    cache = Cache()
    queue = cache.subscribe(b"/l/")
    cache.apply([put(b"/h/1", mod=1)], revision=1)  # nothing under the prefix: no batch
    assert queue.empty()
    cache.apply([put(b"/h/2", mod=2), put(b"/l/a", mod=2)], revision=2)
    cache.apply([delete(b"/l/a", revision=3)], revision=3)
    got = [await asyncio.wait_for(queue.get(), 1) for _ in range(2)]
    assert [[(ev.type, ev.entry.key) for ev in batch] for batch in got] == [
        [(EventType.PUT, b"/l/a")],
        [(EventType.DELETE, b"/l/a")],
    ]
    assert queue.empty()


async def test_unsubscribed_queue_receives_nothing() -> None:
    cache = Cache()
    queue = cache.subscribe()
    cache.unsubscribe(queue)
    cache.apply([put(b"/a", mod=1)], revision=1)
    assert queue.empty()
    cache.unsubscribe(queue)  # a second unsubscribe is harmless


async def test_slow_subscriber_is_dropped_with_empty_batch_last() -> None:
    cache = Cache(max_queue=3)
    slow = cache.subscribe()
    fast = cache.subscribe()
    fast_got: list[list[Event]] = []

    batches = []
    for rev in range(1, 6):
        batches.append(cache.apply([put(f"/k{rev}".encode(), mod=rev)], revision=rev))
        fast_got.append(fast.get_nowait())

    # The fast subscriber kept up and got everything.
    assert fast_got == batches

    # The slow one overflowed on the 4th batch: its last item is the empty batch.
    drained = []
    while not slow.empty():
        drained.append(slow.get_nowait())
    assert drained[-1] == []
    assert len(drained) == 3
    assert all(batch for batch in drained[:-1])
    # The oldest batch made room for the marker; the rest arrived in order.
    assert drained[:-1] == batches[1:3]

    # Once dropped, it gets nothing more, while others still do.
    more = cache.apply([put(b"/after", mod=9)], revision=9)
    assert slow.empty()
    assert await asyncio.wait_for(fast.get(), 1) == more


async def test_dropping_one_subscriber_keeps_the_others() -> None:
    cache = Cache(max_queue=1)
    slow = cache.subscribe()
    steady = cache.subscribe()
    cache.apply([put(b"/a", mod=1)], revision=1)
    assert steady.get_nowait()[0].entry.key == b"/a"
    cache.apply([put(b"/b", mod=2)], revision=2)
    assert slow.get_nowait() == []
    assert steady.get_nowait()[0].entry.key == b"/b"
    cache.apply([put(b"/c", mod=3)], revision=3)
    assert slow.empty()
    assert steady.get_nowait()[0].entry.key == b"/c"


@pytest.mark.parametrize("prefix", [b"", b"/a/", b"/a/\xff", b"/b", b"/c/", b"/z"])
def test_count_is_the_number_a_scan_returns(prefix: bytes) -> None:
    cache = Cache()
    names = [b"/a", b"/a/", b"/a/1", b"/a/2", b"/a/\xff", b"/a/\xff\xff", b"/a0", b"/b", b"/c/x"]
    cache.load([entry(k) for k in names], revision=5)
    assert cache.count(prefix) == len(cache.scan(prefix))
