"""The two counters a limit can use: a token bucket and an epoch-aligned fixed window.

Pure: the caller passes ``now`` (Unix seconds) to every call, so tests drive
them with an injected clock and a checkpoint restores them exactly. Neither
counter ever reports a negative ``remaining``.

Time is a float. Unix seconds today resolve to about 0.24 µs, so a caller that
waits exactly ``retry_after`` may land a fraction of a microsecond early; the
token bucket therefore treats token counts within ``TIME_EPSILON`` worth of
refill of a whole number as that whole number, and such a retry passes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Times closer than this are the same instant for the token bucket (see above).
TIME_EPSILON = 1e-6


class Outcome(NamedTuple):
    """The result of charging ``hits`` to a counter.

    ``remaining``: whole requests still admissible now (never negative).
    ``reset_after``: seconds until the bucket is full again, or the window resets.
    ``retry_after``: seconds to wait before retrying the same hits; 0 when allowed.

    A named tuple: one is made per decision, and a frozen dataclass costs several
    times as much to make.
    """

    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float


class TokenBucket:
    """A bucket of ``capacity`` tokens refilled continuously at ``per_second``; starts full.

    A request of ``hits`` passes iff the bucket holds at least ``hits`` tokens, and
    then takes them; a refused request takes nothing, so a client that retries
    after ``retry_after`` is admitted (unless others took the tokens first).
    """

    # A per-value limit may hold a million of these (tables.BucketTable).
    __slots__ = ("_at", "_tokens", "capacity", "per_second")

    def __init__(self, capacity: int, per_second: float, now: float) -> None:
        _check(capacity, per_second)
        self.capacity = capacity
        self.per_second = per_second
        self._tokens = float(capacity)
        self._at = now

    def take(self, hits: int, now: float) -> Outcome:
        """Charge ``hits`` tokens at ``now`` if they are there; ``hits`` 0 only looks."""
        if hits < 0:
            raise ValueError(f"hits must be at least 0, got {hits}")
        tokens = self._tokens
        if now > self._at:
            # ``_refill`` and ``_snap`` written out: this runs per decision, and the
            # calls cost as much as the arithmetic.
            full, per_second = float(self.capacity), self.per_second
            refilled = tokens + (now - self._at) * per_second
            self._at = now
            tokens = full if refilled > full else refilled
            nearest = round(tokens)
            tolerance = TIME_EPSILON * per_second
            tolerance = 1e-9 if tolerance < 1e-9 else 0.5 if tolerance > 0.5 else tolerance
            if abs(tokens - nearest) <= tolerance:
                tokens = float(nearest)
            self._tokens = tokens
        allowed = tokens >= hits
        if allowed:
            tokens = self._tokens = tokens - hits
            retry_after = 0.0
        elif hits > self.capacity:
            # Can never pass; a full refill is the most honest wait to suggest.
            retry_after = self.capacity / self.per_second
        else:
            retry_after = (hits - tokens) / self.per_second
        remaining = math.floor(tokens)
        return Outcome(
            allowed,
            remaining if remaining > 0 else 0,
            (self.capacity - tokens) / self.per_second,
            retry_after,
        )

    def take_up_to(self, wanted: int, now: float) -> int:
        """Take as many whole tokens as are there, up to ``wanted``; how many were taken."""
        self._refill(now)
        taken = max(0, min(wanted, math.floor(self._tokens)))
        self._tokens -= taken
        return taken

    def debit(self, hits: int, now: float) -> None:
        """Charge ``hits`` admitted elsewhere: the bucket may go below empty, and refuses
        until it has refilled past them."""
        self._refill(now)
        self._tokens -= max(0, hits)

    def give_back(self, tokens: int, now: float) -> None:
        """Return ``tokens`` taken earlier and not spent (the bucket stays within capacity)."""
        self._refill(now)
        self._tokens = min(float(self.capacity), self._tokens + max(0, tokens))

    def reconfigure(self, capacity: int, per_second: float, now: float) -> None:
        """Change capacity and rate at ``now``, keeping the current fill fraction.

        The bucket is first refilled at the old rate up to ``now``, so time already
        passed is credited as it was configured.
        """
        _check(capacity, per_second)
        self._refill(now)
        fraction = self._tokens / self.capacity
        self.capacity = capacity
        self.per_second = per_second
        self._tokens = self._snap(min(float(capacity), fraction * capacity))

    def state(self) -> tuple[float, float]:
        """(tokens, time of the last refill), for a checkpoint ``from_state`` restores."""
        return (self._tokens, self._at)

    @classmethod
    def from_state(
        cls, capacity: int, per_second: float, state: tuple[float, float]
    ) -> TokenBucket:
        """A bucket restored from ``state()``; tokens are clamped to the (new) capacity."""
        tokens, at = state
        bucket = cls(capacity, per_second, at)
        bucket._tokens = min(float(capacity), max(0.0, float(tokens)))
        return bucket

    def _refill(self, now: float) -> None:
        # A clock that steps back (another replica, NTP) refills nothing and does not
        # move the reference back, so the same interval is never credited twice.
        elapsed = now - self._at
        if elapsed <= 0:
            return
        self._at = now
        refilled = self._tokens + elapsed * self.per_second
        self._tokens = self._snap(min(float(self.capacity), refilled))

    def _snap(self, tokens: float) -> float:
        nearest = round(tokens)
        # At most half a token, so snapping never moves past a neighbouring whole number.
        tolerance = min(0.5, max(1e-9, TIME_EPSILON * self.per_second))
        if abs(tokens - nearest) <= tolerance:
            return float(nearest)
        return tokens


class FixedWindow:
    """A counter of up to ``limit`` hits per window of ``unit_seconds``, as envoyproxy/ratelimit.

    Windows start at multiples of ``unit_seconds`` since the Unix epoch, so every
    replica agrees on the boundaries. Hits are counted even when over the limit
    (Envoy's behaviour): a client that keeps hammering stays refused until the
    window ends, when the count starts again from zero.
    """

    def __init__(self, limit: int, unit_seconds: float) -> None:
        check_window(limit, unit_seconds)
        self.limit = limit
        self.unit_seconds = unit_seconds
        # Any start at or before the first window will do while the count is 0; 0.0
        # (unlike -inf) survives a JSON checkpoint.
        self._start = 0.0
        self._count = 0

    def take(self, hits: int, now: float) -> Outcome:
        """Add ``hits`` to the window holding ``now``; allowed iff the count stays within limit.

        ``hits`` 0 only looks: it is allowed unless earlier hits went past the limit.
        """
        if hits < 0:
            raise ValueError(f"hits must be at least 0, got {hits}")
        start = self.window_start(now)
        # A clock that steps back into an earlier window keeps counting in the
        # current one rather than resurrecting a finished window.
        if start > self._start:
            self._start = start
            self._count = 0
        self._count += hits
        allowed = self._count <= self.limit
        reset_after = max(0.0, self._start + self.unit_seconds - now)
        return Outcome(
            allowed=allowed,
            remaining=max(0, self.limit - self._count),
            reset_after=reset_after,
            retry_after=0.0 if allowed else reset_after,
        )

    def window_start(self, now: float) -> float:
        """The start of the window holding ``now``: a multiple of ``unit_seconds``."""
        return window_start(now, self.unit_seconds)

    def reconfigure(self, limit: int) -> None:
        """Change the limit; hits already counted in this window still count."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit

    def state(self) -> tuple[float, int]:
        """(window start, count), for a checkpoint ``from_state`` restores."""
        return (self._start, self._count)

    @classmethod
    def from_state(cls, limit: int, unit_seconds: float, state: tuple[float, int]) -> FixedWindow:
        """A window restored from ``state()``; a later ``take`` in a new window starts at 0."""
        start, count = state
        window = cls(limit, unit_seconds)
        window._start = float(start)
        window._count = max(0, int(count))
        return window


def blocked(unit_seconds: float, now: float) -> Outcome:
    """The outcome of a limit of 0 requests per unit: refused, whatever the hits (0 too).

    No counter is kept. ``reset_after`` is the time to the end of the epoch-aligned
    unit (what envoyproxy/ratelimit reports); waiting never helps, so
    ``retry_after`` is infinite.
    """
    reset_after = unit_seconds - (now % unit_seconds)
    return Outcome(allowed=False, remaining=0, reset_after=reset_after, retry_after=math.inf)


def window_start(now: float, unit_seconds: float) -> float:
    """The start of the epoch-aligned window of ``unit_seconds`` holding ``now``."""
    # Float floor division is computed from the exact remainder, so a ``now`` on a
    # boundary starts the new window rather than rounding into the old one.
    return (now // unit_seconds) * unit_seconds


def check_window(limit: int, unit_seconds: float) -> None:
    """Raise ValueError unless ``limit`` per ``unit_seconds`` is a valid window."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not math.isfinite(unit_seconds) or unit_seconds <= 0:
        raise ValueError(f"unit_seconds must be positive, got {unit_seconds}")


def _check(capacity: int, per_second: float) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    if not math.isfinite(per_second) or per_second <= 0:
        raise ValueError(f"per_second must be positive, got {per_second}")
