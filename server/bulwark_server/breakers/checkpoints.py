"""The leader's window checkpoints: which windows changed, writing them, restoring them.

One record per breaker under ``/bulwark/v1/breaker-windows/<name>`` (a
``BreakerWindow``), as every earlier version wrote it, so a new leader restores
what the previous version checkpointed. A round writes the windows that
``deferral.must_write`` picks in fenced transactions of up to ``MAX_TXN_OPS``
records and ``MAX_REQUEST_BYTES`` each (``store.batches``: one etcd proposal per
transaction, not one per window); the others stay changed and are looked at
again next round. A transaction that fails leaves its windows changed, so they
are retried next round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bulwark.v1 import breaker_pb2
from bulwark_server import timestamps
from bulwark_server.breakers import deferral
from bulwark_server.breakers.window import SlidingWindow
from bulwark_server.store import EtcdStore, Fence, batches
from bulwark_server.store.keys import BREAKER_KIND, BREAKER_WINDOW_KIND

Shape = tuple[int, int]
Held = tuple[Shape, int, SlidingWindow]
"""(window shape, the breaker's create revision, window), as the manager holds it."""


def shape_of(breaker: breaker_pb2.CircuitBreaker) -> Shape:
    return breaker.config.sliding_window_type, breaker.config.sliding_window_size


class Checkpoints:
    """The changed windows since their last written checkpoint, and the rounds that write them."""

    def __init__(self, store: EtcdStore, clock: Callable[[], float], max_deferral: float) -> None:
        self._store = store
        self._clock = clock
        self._max_deferral = max_deferral
        self._changed: set[str] = set()
        self._adverse: set[str] = set()  # reset, or gained failures or slow calls
        self._saved: dict[str, deferral.Saved] = {}

    @property
    def changed(self) -> frozenset[str]:
        return frozenset(self._changed)

    def note(self, name: str, failures: int, slow: int) -> None:
        """The window of ``name`` counted a report."""
        self._changed.add(name)
        if failures or slow:
            self._adverse.add(name)

    def note_reset(self, name: str) -> None:
        """The window of ``name`` was emptied (the breaker re-entered CLOSED)."""
        self._changed.add(name)
        self._adverse.add(name)

    def forget(self, name: str) -> None:
        self._changed.discard(name)
        self._adverse.discard(name)
        self._saved.pop(name, None)

    async def write(self, windows: Mapping[str, Held], fence: Fence) -> int:
        """One round: write the windows that must be written; how many were written."""
        now = self._clock()
        due: list[tuple[str, breaker_pb2.BreakerWindow]] = []
        for name in sorted(self._changed):
            held = windows.get(name)
            entry = self._store.get(BREAKER_KIND, name)
            if held is None or entry is None:
                self.forget(name)
                continue
            config = breaker_pb2.CircuitBreaker.FromString(entry.value).config
            saved, adverse = self._saved.get(name), name in self._adverse
            if not deferral.must_write(saved, adverse, config, now, self._max_deferral):
                continue
            record = breaker_pb2.BreakerWindow(
                name=name,
                stats=held[2].stats(now, config.minimum_number_of_calls),
                checkpointed_at=timestamps.at(now),
                breaker_create_revision=entry.create_revision,
            )
            for start, calls, failures, slow in held[2].to_buckets():
                record.buckets.add(start=start, calls=calls, failures=failures, slow_calls=slow)
            due.append((name, record))
        written = 0
        records = dict(due)
        for batch in batches([(name, record.SerializeToString()) for name, record in due]):
            await self._store.put_many(BREAKER_WINDOW_KIND, batch, fence=fence)
            # Only once written: a failed batch is retried next round.
            for name, _ in batch:
                self._saved[name] = _saved(records[name], now)
                self._changed.discard(name)
                self._adverse.discard(name)
            written += len(batch)
        return written

    def restore(self) -> dict[str, Held]:
        """The windows checkpointed in etcd (by this version or an earlier one), for a new term."""
        self._changed.clear()
        self._adverse.clear()
        self._saved.clear()
        windows: dict[str, Held] = {}
        for entry in self._store.scan(BREAKER_WINDOW_KIND):
            record = breaker_pb2.BreakerWindow.FromString(entry.value)
            own = self._store.get(BREAKER_KIND, record.name)
            if own is None or own.create_revision != record.breaker_create_revision:
                continue  # the breaker is gone, or is a new one under the same name
            shape = shape_of(breaker_pb2.CircuitBreaker.FromString(own.value))
            buckets = [(b.start, b.calls, b.failures, b.slow_calls) for b in record.buckets]
            window = SlidingWindow.from_buckets(*shape, buckets)
            windows[record.name] = (shape, own.create_revision, window)
            self._saved[record.name] = _saved(record, timestamps.unix(record.checkpointed_at))
        return windows


def _saved(record: breaker_pb2.BreakerWindow, at: float) -> deferral.Saved:
    s = record.stats
    return deferral.Saved(calls=s.calls, failures=s.failures, slow=s.slow_calls, at=at)
