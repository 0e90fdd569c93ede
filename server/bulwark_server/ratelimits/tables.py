"""The counters of one limit, held together: one table per limit, one entry per value.

A per-IP limit keeps one counter per address. At a million addresses, a Python
object per counter (about 0.75 KB with its key) and a sweep that visits every
counter every second cost far more than the counts. A table keeps once what the
counters of a limit share:

* ``WindowTable`` (fixed windows): windows are epoch-aligned, so every value of
  a limit is in the same window. The table holds that window's start and a dict
  of value -> count; a new window drops the dict at once.
* ``BucketTable`` (token buckets): a dict of value -> ``TokenBucket``, swept of
  full buckets at most once per refill period.

A value is its descriptor's values: the string itself when there is one (the
common case, and no tuple to pay for), else the tuple of them.

Checkpoints of any size (``saved``). A checkpoint must fit in one etcd request,
however many values a limit has seen. So a table lists at most a budget's worth
of its counters: the ones a failover would hurt most to lose (the highest
counts, the emptiest buckets), and one **rest** level for every value it leaves
out: at least the count of any fixed-window value not listed, at most the tokens
of any bucket not listed. A table restored from such a checkpoint charges every
unlisted value as if it stood at the rest level (``restore``). So no value is
restored below what it had counted (the failover bound holds for all values),
and the price of a bounded checkpoint falls on the many lightly used values, which
may be refused a little early in the window of a failover.

To pick the highest counts without visiting every value at each checkpoint, a
``WindowTable`` keeps ``heavy``: every value whose count reached ``threshold``.
The values outside it counted less than ``threshold`` (or sit at the rest level
they were restored at). When ``heavy`` outgrows the budget, the threshold rises
and ``heavy`` keeps only the values that reach it, so a checkpoint costs what it
lists, not what the limit has seen. Pure: every call gets ``now``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bulwark_server.ratelimits.counters import Outcome, TokenBucket, check_window, window_start

Value = str | tuple[str, ...]
Saved = tuple[Value, float, float]
"""(value, level, time): a window's count and start, or a bucket's tokens and refill time."""

MEMBER_HASHES = 3
"""Bit positions per value in a ``Members`` filter: the fewest false positives from about
4 to 13 bits a value, what a checkpoint's filter has for 250,000 to 1,000,000 values."""

FILTER_GRAIN = 1024
"""A filter's size is a multiple of this many bytes, so it can be halved ten times."""


def filter_room(max_bytes: int) -> int:
    """The part of a checkpoint's budget a ``Members`` filter may take: three quarters."""
    return max_bytes * 3 // 4


@dataclass(frozen=True)
class Rest:
    """The level of every counter a checkpoint does not list (see the module).

    ``members``, when set, is a ``Members`` filter of the values the rest level is
    for: a value it does not hold was never counted and starts at 0.
    """

    level: float
    time: float
    members: bytes = b""
    hashes: int = 0


class Members:
    """A Bloom filter of descriptor values: a value added is always found (no false
    negatives); a value never added is found with a small probability.

    Positions are taken modulo its size in bits, so ``fold`` can halve an even-sized
    filter and still find every value added; ``sized`` makes it a multiple of
    ``FILTER_GRAIN`` bytes to allow that. Positions come from BLAKE2b, the same in
    every process.
    """

    __slots__ = ("bits", "hashes", "size")

    def __init__(self, bits: bytearray, hashes: int = MEMBER_HASHES) -> None:
        if not bits:
            raise ValueError("a filter needs at least one byte")
        self.bits = bits
        self.hashes = max(1, hashes)
        self.size = len(bits) * 8

    @classmethod
    def sized(cls, max_bytes: int) -> Members:
        """An empty filter of the most bytes within ``max_bytes`` that halve ten times
        (a multiple of ``FILTER_GRAIN``; below it, a power of two)."""
        if max_bytes >= FILTER_GRAIN:
            return cls(bytearray(max_bytes - max_bytes % FILTER_GRAIN))
        return cls(bytearray(1 << max(0, max_bytes.bit_length() - 1)))

    def _positions(self, value: Value) -> list[int]:
        # Joined with a separator no descriptor value is likely to hold; a clash only
        # makes a false positive, which the filter allows anyway.
        digest = hashlib.blake2b("\x1f".join(values_of(value)).encode(), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        return [(first + i * step) % self.size for i in range(self.hashes)]

    def add(self, value: Value) -> None:
        for p in self._positions(value):
            self.bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, value: object) -> bool:
        return all(self.bits[p >> 3] >> (p & 7) & 1 for p in self._positions(value))  # type: ignore[arg-type]

    def fold(self, max_bytes: int) -> bool:
        """Halve the filter until it fits ``max_bytes``; False if an odd size stops it
        first. (OR of the halves: a position modulo the size is, modulo half of it,
        in either half, so every value added is still found.)"""
        while len(self.bits) > max(1, max_bytes) and len(self.bits) % 2 == 0:
            half = len(self.bits) // 2
            folded = int.from_bytes(self.bits[:half], "little") | int.from_bytes(
                self.bits[half:], "little"
            )
            self.bits = bytearray(folded.to_bytes(half, "little"))
            self.size = half * 8
        return len(self.bits) <= max(1, max_bytes)


def value_of(values: Sequence[str]) -> Value:
    """The table key of a descriptor's values."""
    return values[0] if len(values) == 1 else tuple(values)


def values_of(value: Value) -> list[str]:
    """The descriptor values a table key stands for (``value_of`` reversed)."""
    return [value] if isinstance(value, str) else list(value)


def saved_size(value: Value) -> int:
    """An upper bound of one listed counter's bytes in a checkpoint record.

    Each value a tag, a length (2 bytes: values are at most 256 characters) and
    its UTF-8; two doubles (9 bytes each); the counter's own tag and length (up to
    4 bytes for 16 values).
    """
    return sum(3 + len(v.encode()) for v in values_of(value)) + 22


class WindowTable:
    """Fixed-window counts of one limit: every value's count in the current window.

    Behaves, value by value, as a ``FixedWindow`` of ``limit`` per ``unit_seconds``
    would: hits are counted even over the limit, a new window starts at 0.
    """

    __slots__ = (
        "counts",
        "heavy",
        "heavy_cap",
        "limit",
        "max_bytes",
        "members",
        "rest",
        "start",
        "threshold",
        "unit_seconds",
    )

    def __init__(self, limit: int, unit_seconds: float, max_bytes: int = 1 << 20) -> None:
        """``max_bytes``: the checkpoint budget ``saved`` will be given (it sets it anew)."""
        check_window(limit, unit_seconds)
        self.limit = limit
        self.unit_seconds = unit_seconds
        self.start = 0.0
        self.counts: dict[Value, int] = {}
        # After a restore: the count of the values not in ``counts`` that ``members``
        # holds (of every such value without a filter).
        self.rest = 0
        self.threshold = 1
        self.heavy: set[Value] = set()
        # ``heavy`` is trimmed when it grows past this many values, so a burst of new
        # values between two checkpoints costs neither a long pause nor memory.
        self.heavy_cap = 4 * (max_bytes // saved_size(""))
        self.max_bytes = max_bytes
        # The values counted, once a checkpoint cannot list them all (``saved``).
        self.members: Members | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def window_start(self, now: float) -> float:
        return window_start(now, self.unit_seconds)

    def take(self, value: Value, hits: int, now: float) -> Outcome:
        """Add ``hits`` to ``value``'s count; allowed iff it stays within the limit.

        ``hits`` 0 only looks (and stores nothing for a value not yet counted).
        """
        if hits < 0:
            raise ValueError(f"hits must be at least 0, got {hits}")
        start = self.window_start(now)
        # A clock stepping back into an earlier window keeps counting in this one.
        if start > self.start:
            self._new_window(start)
        count = self._charge(value, hits)
        allowed = count <= self.limit
        reset_after = max(0.0, self.start + self.unit_seconds - now)
        return Outcome(
            allowed=allowed,
            remaining=max(0, self.limit - count),
            reset_after=reset_after,
            retry_after=0.0 if allowed else reset_after,
        )

    def take_up_to(self, value: Value, wanted: int, now: float) -> int:
        """Count as many of ``wanted`` hits as the window has room for; how many."""
        start = self.window_start(now)
        if start > self.start:
            self._new_window(start)
        counted = self.counts.get(value)
        if counted is None:
            counted = self._restored_level(value)
        taken = max(0, min(wanted, self.limit - counted))
        self._charge(value, taken)
        return taken

    def debit(self, value: Value, hits: int, at: float, now: float) -> None:
        """Count ``hits`` admitted elsewhere at ``at``, if that is this window."""
        start = self.window_start(now)
        if start > self.start:
            self._new_window(start)
        if self.window_start(at) == self.start:
            self._charge(value, hits)

    def _charge(self, value: Value, hits: int) -> int:
        """Add ``hits`` to ``value``'s count in the current window; the new count."""
        counted = self.counts.get(value)
        new = counted is None
        if counted is None:
            counted = self._restored_level(value)
        count = counted + hits
        if hits:
            self.counts[value] = count
            if new and self.members is not None:
                self.members.add(value)
            if count >= self.threshold:
                self.heavy.add(value)
                if len(self.heavy) > self.heavy_cap:
                    self._raise_threshold(self.heavy_cap // 4)
        return count

    def idle(self, now: float) -> bool:
        """True once the window has ended: a new table would start the same way."""
        return self.start < self.window_start(now)

    def saved(self, max_bytes: int, now: float) -> tuple[list[Saved], Rest | None]:
        """The counters to checkpoint within ``max_bytes``, highest counts first, and
        the rest level of all others (None when every counter is listed).

        When the values cannot all be listed, up to three quarters of the budget
        go to a ``Members`` filter of the values counted, so the rest level applies
        to them and not to every value a new leader meets.
        """
        if self.idle(now):
            return [], None
        self.max_bytes = max_bytes
        room = max_bytes
        fitted = None
        if self.members is not None or len(self.counts) > max_bytes // saved_size(""):
            fitted = self._members(filter_room(max_bytes))
            room = max_bytes - (len(fitted.bits) if fitted is not None else 0)
        budget = max(1, room // saved_size(""))
        self.heavy_cap = 4 * budget
        if len(self.heavy) > budget:
            self._raise_threshold(budget)
        listed: list[Saved] = []
        rest = max(self.rest, self.threshold - 1)
        ordered = sorted(self.heavy, key=self.counts.__getitem__, reverse=True)
        used = 0
        for value in ordered:
            size = saved_size(value)
            if used + size > room:
                # Values past the budget join the rest: the highest of them sets it.
                rest = max(rest, self.counts[value])
                break
            used += size
            listed.append((value, float(self.counts[value]), self.start))
        if rest == 0 and len(listed) == len(self.counts):
            return listed, None
        if fitted is None:
            # A few long values past the budget (no room was kept for a filter), or a
            # filter that cannot shrink to fit: the rest level is for every value.
            return listed, Rest(float(rest), self.start)
        return listed, Rest(float(rest), self.start, bytes(fitted.bits), fitted.hashes)

    def restore(self, listed: Sequence[Saved], rest: Rest | None, now: float) -> None:
        """Go on from a checkpoint (of this version or an earlier one) in the current window."""
        current = self.window_start(now)
        if rest is not None and rest.time == current:
            self.start = current
            self.rest = max(0, int(rest.level))
            self.threshold = self.rest + 1
            if rest.members:
                self.members = Members(bytearray(rest.members), rest.hashes)
        for value, level, start in listed:
            if start == current:
                self.start = current
                self.counts[value] = max(0, int(level))
                self.heavy.add(value)

    def _restored_level(self, value: Value) -> int:
        """The count a value not in ``counts`` stands at: the rest level a checkpoint
        left it at (for every value, or the values its filter holds), else 0."""
        if not self.rest:
            return 0
        if self.members is None or value in self.members:
            return self.rest
        return 0

    def _members(self, max_bytes: int) -> Members | None:
        """The filter of the values counted, within ``max_bytes`` (None if it cannot be)."""
        if self.members is None:
            self.members = Members.sized(max_bytes)
            for value in self.counts:
                self.members.add(value)
        return self.members if self.members.fold(max_bytes) else None

    def _new_window(self, start: float) -> None:
        self.start = start
        self.members = None
        self.counts = {}
        self.heavy = set()
        self.rest = 0
        self.threshold = 1

    def _raise_threshold(self, budget: int) -> None:
        # The budget-th highest count: at most ``budget`` values are at or above
        # one more than the next one down.
        # Values leave the list for the rest level: the filter must hold them from now.
        self._members(filter_room(self.max_bytes))
        counts = heapq.nlargest(budget + 1, (self.counts[v] for v in self.heavy))
        self.threshold = max(self.threshold, counts[-1] + 1)
        self.heavy = {v for v in self.heavy if self.counts[v] >= self.threshold}


class BucketTable:
    """Token buckets of one limit: one ``TokenBucket`` per value, full ones forgotten."""

    __slots__ = ("buckets", "capacity", "per_second", "rest", "swept_at")

    def __init__(self, capacity: int, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.buckets: dict[Value, TokenBucket] = {}
        # (tokens, time) every value not in ``buckets`` stood at, after a restore. No
        # filter narrows it: a bucket refills, so the price passes within a refill.
        self.rest: tuple[float, float] | None = None
        self.swept_at = -math.inf

    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def refill_seconds(self) -> float:
        return self.capacity / self.per_second

    def take(self, value: Value, hits: int, now: float) -> Outcome:
        """Charge ``value``'s bucket (``hits`` 0 only looks, and stores nothing)."""
        bucket = self.buckets.get(value)
        if bucket is None:
            bucket = self._fresh(now)
            if hits == 0:
                return bucket.take(0, now)
            self.buckets[value] = bucket
        return bucket.take(hits, now)

    def take_up_to(self, value: Value, wanted: int, now: float) -> int:
        """Take up to ``wanted`` whole tokens of ``value``'s bucket; how many."""
        bucket = self.buckets.get(value)
        if bucket is None:
            bucket = self.buckets[value] = self._fresh(now)
        return bucket.take_up_to(wanted, now)

    def debit(self, value: Value, hits: int, at: float, now: float) -> None:
        """Charge ``hits`` admitted elsewhere to ``value``'s bucket."""
        bucket = self.buckets.get(value)
        if bucket is None:
            bucket = self.buckets[value] = self._fresh(now)
        bucket.debit(hits, now)

    def give_back(self, value: Value, tokens: int, now: float) -> None:
        """Return unspent tokens to ``value``'s bucket (none kept for a forgotten one)."""
        bucket = self.buckets.get(value)
        if bucket is not None:
            bucket.give_back(tokens, now)

    def reconfigure(self, capacity: int, per_second: float, now: float) -> None:
        """A new rate for every bucket, each keeping its fill fraction."""
        if (capacity, per_second) == (self.capacity, self.per_second):
            return
        for bucket in self.buckets.values():
            bucket.reconfigure(capacity, per_second, now)
        if self.rest is not None:
            tokens, at = self.rest
            self.rest = (tokens * capacity / self.capacity, at)
        self.capacity, self.per_second = capacity, per_second

    def sweep(self, now: float) -> None:
        """Forget full buckets, at most once per refill period (a visit costs every bucket)."""
        if now - self.swept_at < max(1.0, self.refill_seconds):
            return
        self.swept_at = now
        full = [v for v, b in self.buckets.items() if b.take(0, now).remaining >= self.capacity]
        for value in full:
            del self.buckets[value]
        if self.rest is not None and self._refilled(self.rest, now) >= self.capacity:
            self.rest = None

    def idle(self, now: float) -> bool:
        self.sweep(now)
        return not self.buckets and self.rest is None

    def saved(self, max_bytes: int, now: float) -> tuple[list[Saved], Rest | None]:
        """The emptiest buckets within ``max_bytes``, and the rest level of all others.

        Unlike a window this visits every bucket: token counts move with time, so
        no threshold stays true between checkpoints.
        """
        budget = max(1, max_bytes // saved_size(""))
        emptiest = heapq.nsmallest(
            budget + 1, self.buckets.items(), key=lambda item: self._refilled(item[1].state(), now)
        )
        listed: list[Saved] = []
        used = 0
        rest = self._refilled(self.rest, now) if self.rest is not None else math.inf
        for i, (value, bucket) in enumerate(emptiest):
            size = saved_size(value)
            if i == budget or used + size > max_bytes:
                rest = min(rest, self._refilled(bucket.state(), now))
                break
            used += size
            tokens, at = bucket.state()
            listed.append((value, tokens, at))
        if not math.isfinite(rest):
            return listed, None
        return listed, Rest(rest, now)

    def restore(self, listed: Sequence[Saved], rest: Rest | None, now: float) -> None:
        """Go on from a checkpoint (of this version or an earlier one); refills run from
        the saved times, so ``now`` changes nothing here."""
        if rest is not None:
            self.rest = (min(float(self.capacity), max(0.0, rest.level)), rest.time)
        for value, tokens, at in listed:
            self.buckets[value] = TokenBucket.from_state(
                self.capacity, self.per_second, (tokens, at)
            )

    def _fresh(self, now: float) -> TokenBucket:
        if self.rest is None:
            return TokenBucket(self.capacity, self.per_second, now)
        return TokenBucket.from_state(self.capacity, self.per_second, self.rest)

    def _refilled(self, state: tuple[float, float], now: float) -> float:
        tokens, at = state
        return min(float(self.capacity), tokens + max(0.0, now - at) * self.per_second)
