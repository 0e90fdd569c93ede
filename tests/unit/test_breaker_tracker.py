"""Unit tests for BreakerTracker: the leader's view follows change events, not every breaker."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers import force, initial_status, normalize_config
from bulwark_server.breakers.tracker import BreakerTracker
from bulwark_server.store import Cache, Entry, Event, EventType
from bulwark_server.store.keys import BREAKER_KIND, key_for, kind_prefix

OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
T0 = 1_700_000_000.0
AUTO = normalize_config(
    breaker_pb2.BreakerConfig(
        automatic_transition_from_open_to_half_open_enabled=True,
        wait_duration_in_open_state=Duration(seconds=30),
    )
)


class FakeStore:
    """The store's cached reads and subscriptions over a real Cache; counts decodes' sources."""

    def __init__(self) -> None:
        self.cache = Cache(max_queue=3)
        self.revision = 0
        self.gets = 0

    def scan(self, kind: str) -> list[Entry]:
        return self.cache.scan(kind_prefix(kind))

    def get(self, kind: str, name: str) -> Entry | None:
        self.gets += 1
        return self.cache.get(key_for(kind, name))

    def subscribe(self, kind: str = "") -> asyncio.Queue[list[Event]]:
        return self.cache.subscribe(kind_prefix(kind) if kind else b"")

    def unsubscribe(self, queue: asyncio.Queue[list[Event]]) -> None:
        self.cache.unsubscribe(queue)

    def put(self, name: str, status: breaker_pb2.BreakerStatus, config: Any = AUTO) -> int:
        self.revision += 1
        key = key_for(BREAKER_KIND, name)
        old = self.cache.get(key)
        value = breaker_pb2.CircuitBreaker(name=name, config=config, status=status)
        entry = Entry(
            key,
            value.SerializeToString(),
            old.create_revision if old else self.revision,
            self.revision,
        )
        self.cache.apply([Event(EventType.PUT, entry, self.revision)], self.revision)
        return self.revision

    def delete(self, name: str) -> None:
        self.revision += 1
        old = self.cache.get(key_for(BREAKER_KIND, name))
        assert old is not None
        self.cache.apply([Event(EventType.DELETE, old, self.revision)], self.revision)


def opened(now: float) -> breaker_pb2.BreakerStatus:
    status = initial_status(now)
    status.state = OPEN
    status.transitions = 1
    status.state_since.FromNanoseconds(int(now * 1e9))
    status.open_until.FromNanoseconds(int((now + 30) * 1e9))
    return status


def make() -> tuple[FakeStore, BreakerTracker, list[str], list[str]]:
    store = FakeStore()
    closed: list[str] = []
    gone: list[str] = []
    tracker = BreakerTracker(store, on_closed=closed.append, on_gone=gone.append)  # type: ignore[arg-type]
    return store, tracker, closed, gone


def test_a_full_pass_arms_only_the_breakers_with_a_deadline() -> None:
    store, tracker, _, _ = make()
    for i in range(100):
        store.put(f"c{i}", initial_status(T0))
    store.put("o", opened(T0))
    tracker.observe_all()
    assert len(tracker.timers) == 1
    assert tracker.pop_due(T0 + 29.9) == []
    assert tracker.pop_due(T0 + 30) == ["o"]


def test_follow_reads_only_what_changed() -> None:
    store, tracker, _, _ = make()
    for i in range(100):
        store.put(f"c{i}", initial_status(T0))
    changes = store.subscribe()
    tracker.observe_all()
    store.gets = 0
    changes = tracker.follow(changes)
    assert store.gets == 0  # nothing changed: nothing read
    store.put("c7", opened(T0))  # e.g. written by another replica
    changes = tracker.follow(changes)
    assert store.gets == 1
    assert tracker.timers.due("c7") is not None


def test_a_new_entry_into_closed_is_reported_once() -> None:
    store, tracker, closed, _ = make()
    store.put("b", opened(T0))
    changes = store.subscribe()
    tracker.observe_all()
    reset = force(AUTO, opened(T0), CLOSED, "op", "", T0 + 1)
    store.put("b", reset)
    changes = tracker.follow(changes)
    assert closed == ["b"]
    assert "b" not in tracker.timers
    changes = tracker.follow(changes)
    assert closed == ["b"]


def test_an_older_record_never_undoes_a_newer_one() -> None:
    store, tracker, closed, _ = make()
    store.put("b", opened(T0))
    changes = store.subscribe()
    tracker.observe_all()
    reset = force(AUTO, opened(T0), CLOSED, "op", "", T0 + 1)
    revision = store.put("b", reset)
    newer = breaker_pb2.CircuitBreaker(name="b", config=AUTO, status=reset)
    tracker.observe(newer, revision)  # the leader's own write, seen before its event
    assert closed == ["b"]
    old = breaker_pb2.CircuitBreaker(name="b", config=AUTO, status=opened(T0))
    tracker.observe(old, revision - 1)
    assert "b" not in tracker.timers
    tracker.follow(changes)
    assert closed == ["b"]


def test_deleted_breakers_are_forgotten() -> None:
    store, tracker, _, gone = make()
    store.put("b", opened(T0))
    changes = store.subscribe()
    tracker.observe_all()
    store.delete("b")
    tracker.follow(changes)
    assert gone == ["b"] and "b" not in tracker.timers


def test_dropped_events_bring_a_full_pass() -> None:
    store, tracker, _, gone = make()
    store.put("x", initial_status(T0))
    changes = store.subscribe()
    tracker.observe_all()
    for i in range(5):  # more batches than the queue holds
        store.put(f"o{i}", opened(T0 + i))
    store.delete("x")
    changes = tracker.follow(changes)
    assert len(tracker.timers) == 5
    assert gone == ["x"]
    store.put("late", opened(T0))
    tracker.follow(changes)  # the new subscription is followed
    assert tracker.timers.due("late") is not None


def test_wait_returns_on_a_change_and_follow_still_sees_it() -> None:
    async def run() -> tuple[float, float]:
        store, tracker, _, _ = make()
        changes = store.subscribe(BREAKER_KIND)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await tracker.wait(changes, 0.05)  # nothing changes: the whole wait
        quiet = loop.time() - started
        loop.call_later(0.01, store.put, "b", opened(T0))
        started = loop.time()
        await tracker.wait(changes, 30.0)  # returns on the change, not after 30 s
        woken = loop.time() - started
        tracker.follow(changes)
        assert tracker.timers.due("b") is not None  # the batch wait took was followed
        return quiet, woken

    quiet, woken = asyncio.run(run())
    assert quiet >= 0.04
    assert woken < 5.0
