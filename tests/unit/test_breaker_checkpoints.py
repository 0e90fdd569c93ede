"""Unit tests for Checkpoints: batched, fenced writes; deferral; retries; restoring old records."""

from __future__ import annotations

import asyncio

import pytest

from bulwark.v1 import breaker_pb2
from bulwark_server import timestamps
from bulwark_server.breakers import normalize_config
from bulwark_server.breakers.checkpoints import Checkpoints, Held, shape_of
from bulwark_server.breakers.window import SlidingWindow
from bulwark_server.errors import StoreUnavailable
from bulwark_server.store import MAX_TXN_OPS, Cache, Entry, Event, EventType, Fence
from bulwark_server.store.keys import BREAKER_KIND, BREAKER_WINDOW_KIND, key_for, kind_prefix

T0 = 1_700_000_000.0
FENCE = Fence(b"/leader", 7)
CONFIG = normalize_config(breaker_pb2.BreakerConfig(failure_rate_threshold=50))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Cached reads over a real Cache; ``put_many`` records each transaction."""

    def __init__(self) -> None:
        self.cache = Cache()
        self.revision = 0
        self.transactions: list[tuple[str, list[str], Fence | None]] = []
        self.fail = False

    def _apply(self, key: bytes, value: bytes) -> Entry:
        self.revision += 1
        old = self.cache.get(key)
        entry = Entry(key, value, old.create_revision if old else self.revision, self.revision)
        self.cache.apply([Event(EventType.PUT, entry, self.revision)], self.revision)
        return entry

    def get(self, kind: str, name: str) -> Entry | None:
        return self.cache.get(key_for(kind, name))

    def scan(self, kind: str) -> list[Entry]:
        return self.cache.scan(kind_prefix(kind))

    def put(self, kind: str, name: str, value: bytes) -> Entry:
        """A plain write, as the previous version's checkpoint made one per window."""
        return self._apply(key_for(kind, name), value)

    async def put_many(
        self, kind: str, items: list[tuple[str, bytes]], *, fence: Fence | None = None
    ) -> int:
        assert len(items) <= MAX_TXN_OPS
        if self.fail:
            raise StoreUnavailable("etcd is away")
        self.transactions.append((kind, [name for name, _ in items], fence))
        for name, value in items:
            self._apply(key_for(kind, name), value)
        return self.revision


def breaker(store: FakeStore, name: str) -> Held:
    b = breaker_pb2.CircuitBreaker(name=name, config=CONFIG)
    entry = store.put(BREAKER_KIND, name, b.SerializeToString())
    shape = shape_of(b)
    return shape, entry.create_revision, SlidingWindow(*shape)


def setup(n: int) -> tuple[FakeStore, Clock, Checkpoints, dict[str, Held]]:
    store, clock = FakeStore(), Clock()
    checkpoints = Checkpoints(store, clock, max_deferral=10.0)  # type: ignore[arg-type]
    windows = {f"b{i:04d}": breaker(store, f"b{i:04d}") for i in range(n)}
    return store, clock, checkpoints, windows


def report(
    checkpoints: Checkpoints, windows: dict[str, Held], name: str, ok: int, bad: int, now: float
) -> None:
    windows[name][2].add(ok + bad, bad, 0, now)
    checkpoints.note(name, bad, 0)


def test_a_round_writes_the_changed_windows_in_fenced_batches_of_max_txn_ops():
    store, clock, checkpoints, windows = setup(250)
    for name in windows:
        report(checkpoints, windows, name, 1, 0, clock.now)
    assert asyncio.run(checkpoints.write(windows, FENCE)) == 250
    assert [len(names) for _, names, _ in store.transactions] == [100, 100, 50]
    assert {fence for _, _, fence in store.transactions} == {FENCE}
    assert {kind for kind, _, _ in store.transactions} == {BREAKER_WINDOW_KIND}
    assert not checkpoints.changed


def test_successes_only_wait_until_the_max_deferral_and_failures_do_not():
    store, clock, checkpoints, windows = setup(3)
    for name in windows:
        report(checkpoints, windows, name, 10, 0, clock.now)
    asyncio.run(checkpoints.write(windows, FENCE))
    store.transactions.clear()
    clock.now += 1
    report(checkpoints, windows, "b0000", 5, 0, clock.now)
    report(checkpoints, windows, "b0001", 4, 1, clock.now)
    asyncio.run(checkpoints.write(windows, FENCE))
    assert [names for _, names, _ in store.transactions] == [["b0001"]]
    assert checkpoints.changed == {"b0000"}
    clock.now = T0 + 10
    asyncio.run(checkpoints.write(windows, FENCE))
    assert [names for _, names, _ in store.transactions] == [["b0001"], ["b0000"]]
    assert not checkpoints.changed


def test_a_reset_window_is_written_in_the_next_round():
    _store, clock, checkpoints, windows = setup(1)
    report(checkpoints, windows, "b0000", 10, 0, clock.now)
    asyncio.run(checkpoints.write(windows, FENCE))
    windows["b0000"][2].reset()
    checkpoints.note_reset("b0000")
    clock.now += 1
    assert asyncio.run(checkpoints.write(windows, FENCE)) == 1


def test_a_failed_transaction_leaves_its_windows_changed_for_the_next_round():
    store, clock, checkpoints, windows = setup(2)
    for name in windows:
        report(checkpoints, windows, name, 0, 1, clock.now)
    store.fail = True
    with pytest.raises(StoreUnavailable):
        asyncio.run(checkpoints.write(windows, FENCE))
    assert checkpoints.changed == {"b0000", "b0001"}
    store.fail = False
    assert asyncio.run(checkpoints.write(windows, FENCE)) == 2


def test_windows_of_deleted_breakers_are_forgotten():
    _store, clock, checkpoints, windows = setup(2)
    for name in windows:
        report(checkpoints, windows, name, 0, 1, clock.now)
    del windows["b0001"]
    assert asyncio.run(checkpoints.write(windows, FENCE)) == 1
    assert not checkpoints.changed


def test_restores_what_this_version_wrote():
    store, clock, checkpoints, windows = setup(1)
    report(checkpoints, windows, "b0000", 5, 5, clock.now)
    asyncio.run(checkpoints.write(windows, FENCE))
    fresh = Checkpoints(store, clock, max_deferral=10.0)  # type: ignore[arg-type]
    restored = fresh.restore()
    assert restored["b0000"][2].to_buckets() == [(T0, 10, 5, 0)]
    assert restored["b0000"][:2] == windows["b0000"][:2]


def test_restores_a_window_the_previous_version_wrote_and_defers_from_its_counts():
    """The upgrade: one ``BreakerWindow`` per key, written one put at a time, as before."""
    store, _clock, checkpoints, _windows = setup(2)
    created = store.get(BREAKER_KIND, "b0000").create_revision  # type: ignore[union-attr]
    old = breaker_pb2.BreakerWindow(
        name="b0000",
        stats=breaker_pb2.WindowStats(calls=5, failures=5, failure_rate=-1, slow_call_rate=-1),
        checkpointed_at=timestamps.at(T0 - 1),
        breaker_create_revision=created,
    )
    old.buckets.add(start=T0 - 2, calls=5, failures=5, slow_calls=0)
    store.put(BREAKER_WINDOW_KIND, "b0000", old.SerializeToString())
    stale = breaker_pb2.BreakerWindow(name="b0001", breaker_create_revision=created - 100)
    stale.buckets.add(start=T0 - 2, calls=9, failures=9, slow_calls=0)
    store.put(BREAKER_WINDOW_KIND, "b0001", stale.SerializeToString())

    restored = checkpoints.restore()
    assert set(restored) == {"b0000"}  # b0001's record belongs to an earlier breaker
    window = restored["b0000"][2]
    assert window.to_buckets() == [(T0 - 2, 5, 5, 0)]
    window.add(5, 0, 0, T0)
    assert window.stats(T0, 10).failure_rate == 50.0  # goes on from the old window
    # Its checkpoint is all failures: near the threshold, so successes are written at once.
    checkpoints.note("b0000", 0, 0)
    assert asyncio.run(checkpoints.write(restored, FENCE)) == 1
