"""What callers reported of their calls, summed in memory by (caller, service). Pure.

Reports arrive as counts since the reporter's last report (``ReportSignals``): calls,
errors and a latency histogram in OpenTelemetry's exponential buckets at scale 2,
in milliseconds (bucket ``i`` holds latencies in ``(2^(i/4), 2^((i+1)/4)]``). The
table adds each report to the time slot of its arrival (``SLOT_S`` wide) of its
(caller, service) pair, and keeps ``RETENTION_S`` of slots: a window's sums are
those of the slots that began within it, so a window is exact to a slot.

Memory is bounded however many callers and services report: at most ``MAX_PAIRS``
pairs (the one reported on longest ago goes first, and ``dropped`` counts the
reports that could not be kept), each with at most ``RETENTION_S / SLOT_S`` slots of
at most ``BUCKETS`` histogram buckets. Nothing is written to etcd: a leader that
takes over knows what was reported since (``since``).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

SLOT_S = 5.0
RETENTION_S = 300.0
MAX_PAIRS = 5_000
MIN_INDEX = -40  # 2^(-40/4) ms: about 1 µs
MAX_INDEX = 99  # 2^(100/4) ms: about 9.3 h
BUCKETS = MAX_INDEX - MIN_INDEX + 1
SCALE = 4  # buckets per doubling


@dataclass
class Sums:
    """Calls, errors and their latency histogram (bucket index -> calls)."""

    calls: int = 0
    errors: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, calls: int, errors: int, buckets: Iterable[tuple[int, int]]) -> None:
        self.calls += calls
        self.errors += errors
        for index, count in buckets:
            if count:
                self.buckets[index] = self.buckets.get(index, 0) + count

    def merge(self, other: Sums) -> None:
        self.add(other.calls, other.errors, other.buckets.items())

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the latency in milliseconds; None without calls.

        Interpolated within its bucket on a log scale (the buckets are), so it is
        within a bucket's width (about 19 %) of the truth.
        """
        total = sum(self.buckets.values())
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index in sorted(self.buckets):
            count = self.buckets[index]
            if seen + count >= rank:
                within = (rank - seen) / count
                return 2 ** ((index + within) / SCALE)
            seen += count
        return 2 ** ((max(self.buckets) + 1) / SCALE)


def histogram_pairs(offset: int, counts: Iterable[int]) -> list[tuple[int, int]]:
    """(bucket index, calls) of a reported histogram, indexes clamped to the table's
    range (what lies beyond counts in the end bucket)."""
    return [
        (min(MAX_INDEX, max(MIN_INDEX, offset + i)), count)
        for i, count in enumerate(counts)
        if count
    ]


class SignalTable:
    """Sums per (caller, service) pair and time slot; see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        slot_s: float = SLOT_S,
        retention_s: float = RETENTION_S,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        self._clock = clock
        self._slot_s = slot_s
        self._retention_s = retention_s
        self._max_pairs = max_pairs
        # (caller, service) -> deque of (slot start, sums), oldest first; the pair
        # reported on longest ago first.
        self._pairs: OrderedDict[tuple[str, str], deque[tuple[float, Sums]]] = OrderedDict()
        self._callers: dict[str, set[str]] = {}  # service -> its callers
        self._called: dict[str, set[str]] = {}  # caller -> the services it called
        self.since = clock()
        self.dropped = 0

    def add(
        self,
        caller: str,
        service: str,
        calls: int,
        errors: int,
        buckets: Iterable[tuple[int, int]],
    ) -> bool:
        """Add one report; False when it could not be kept (and is counted as dropped)."""
        key = (caller, service)
        slots = self._pairs.get(key)
        if slots is None:
            if len(self._pairs) >= self._max_pairs and not self._evict():
                self.dropped += 1
                return False
            slots = self._pairs[key] = deque()
            self._callers.setdefault(service, set()).add(caller)
            self._called.setdefault(caller, set()).add(service)
        else:
            self._pairs.move_to_end(key)
        now = self._clock()
        start = now - now % self._slot_s
        if not slots or slots[-1][0] != start:
            slots.append((start, Sums()))
        slots[-1][1].add(calls, errors, buckets)
        self._expire(slots, now)
        return True

    def inbound(self, service: str, window_s: float) -> dict[str, Sums]:
        """Calls to ``service`` in the last ``window_s``, by caller."""
        return {
            caller: self._sum((caller, service), window_s)
            for caller in sorted(self._callers.get(service, ()))
        }

    def downstream(self, service: str, window_s: float) -> dict[str, Sums]:
        """Calls ``service`` made in the last ``window_s``, by the service called."""
        return {
            called: self._sum((service, called), window_s)
            for called in sorted(self._called.get(service, ()))
        }

    def covered(self, window_s: float) -> float:
        """The part of a ``window_s`` window this table has seen (at least one slot)."""
        return max(self._slot_s, min(window_s, self._clock() - self.since))

    def services(self) -> list[str]:
        """Every service reported on (called, or calling), in name order."""
        return sorted(self._callers.keys() | self._called.keys())

    def __len__(self) -> int:
        return len(self._pairs)

    def _sum(self, key: tuple[str, str], window_s: float) -> Sums:
        out = Sums()
        slots = self._pairs.get(key)
        if not slots:
            return out
        now = self._clock()
        self._expire(slots, now)
        # A slot counts when it began within the window: exact to a slot.
        earliest = now - window_s
        for start, sums in reversed(slots):
            if start + self._slot_s <= earliest:
                break
            out.merge(sums)
        return out

    def _expire(self, slots: deque[tuple[float, Sums]], now: float) -> None:
        while slots and slots[0][0] + self._slot_s <= now - self._retention_s:
            slots.popleft()

    def _evict(self) -> bool:
        """Make room by forgetting the pair reported on longest ago."""
        if not self._pairs:
            return False
        (caller, service), _ = self._pairs.popitem(last=False)
        self._forget_link(self._callers, service, caller)
        self._forget_link(self._called, caller, service)
        return True

    @staticmethod
    def _forget_link(links: dict[str, set[str]], key: str, value: str) -> None:
        values = links.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del links[key]


def total(parts: Mapping[str, Sums]) -> Sums:
    """The sums of ``parts`` together."""
    out = Sums()
    for sums in parts.values():
        out.merge(sums)
    return out


def per_second(calls: int, seconds: float) -> float:
    return calls / seconds if seconds > 0 and math.isfinite(seconds) else 0.0
