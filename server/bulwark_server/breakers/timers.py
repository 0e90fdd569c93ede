"""When each breaker next falls due: a heap of due times, for the leader's timer loop.

Pure data, no I/O and no clock of its own: the caller says what ``now`` is. The
leader arms a breaker with ``machine.next_due`` whenever it sees the breaker's
record change, and each tick takes only the breakers whose time has come, so an
idle fleet costs nothing per tick however many breakers it holds.

Re-arming or disarming leaves the old heap entry in place and marks it stale
(lazy invalidation); stale entries are skipped when they surface, and the heap is
rebuilt when they come to outnumber the live ones, so its size stays within a
small multiple of the breakers armed.
"""

from __future__ import annotations

import heapq
import itertools

# Rebuild the heap once it holds more than this many entries per armed name (plus slack).
_STALE_FACTOR = 2
_SLACK = 64


class Timers:
    """Due times by name; ``pop_due`` hands out each name once its time has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._armed: dict[str, tuple[float, int]] = {}  # name -> (due, stamp of its entry)
        self._stamps = itertools.count()

    def __len__(self) -> int:
        """How many names are armed."""
        return len(self._armed)

    def __contains__(self, name: object) -> bool:
        return name in self._armed

    def due(self, name: str) -> float | None:
        """When ``name`` falls due, or None when it is not armed."""
        armed = self._armed.get(name)
        return armed[0] if armed is not None else None

    def set(self, name: str, due: float | None) -> None:
        """Arm ``name`` to fall due at ``due`` (replacing any earlier time); None disarms it."""
        if due is None:
            self.discard(name)
            return
        armed = self._armed.get(name)
        if armed is not None and armed[0] == due:
            return  # already armed for that time
        stamp = next(self._stamps)
        self._armed[name] = (due, stamp)
        heapq.heappush(self._heap, (due, stamp, name))
        self._bound()

    def discard(self, name: str) -> None:
        """Disarm ``name`` (nothing happens when it is not armed)."""
        if self._armed.pop(name, None) is not None:
            self._bound()

    def clear(self) -> None:
        self._heap.clear()
        self._armed.clear()

    def next_due(self) -> float | None:
        """The earliest due time armed, or None when nothing is."""
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """Disarm and return every name due at or before ``now``, earliest first."""
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            due, stamp, name = heapq.heappop(self._heap)
            if self._armed.get(name) == (due, stamp):
                del self._armed[name]
                out.append(name)
        return out

    def _drop_stale_head(self) -> None:
        while self._heap:
            due, stamp, name = self._heap[0]
            if self._armed.get(name) == (due, stamp):
                return
            heapq.heappop(self._heap)

    def _bound(self) -> None:
        """Rebuild the heap from the armed names once stale entries outnumber them."""
        if len(self._heap) > _STALE_FACTOR * len(self._armed) + _SLACK:
            self._heap = [(due, stamp, name) for name, (due, stamp) in self._armed.items()]
            heapq.heapify(self._heap)
