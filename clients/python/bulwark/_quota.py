"""Rate limits decided in-process: a leased share of a global limit, or a safe fallback rate.

I/O-free and not thread-safe; at most ``MAX_QUOTA_BUCKETS`` buckets are kept.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_QUOTA_BUCKETS", "QuotaBucket", "quota_for"]


class QuotaBucket:
    """A local token bucket spending a leased share of a global rate limit.

    While a lease is valid, calls are taken from the lease's rate and burst.
    Without one (never granted, or expired because Bulwark is unreachable),
    ``fallback_rate`` decides: None lets every call through (fail open), a
    number enforces that many requests per second locally (``fallback_burst``
    of them at once; default ``max(1, fallback_rate)``).
    """

    def __init__(
        self, fallback_rate: float | None = None, fallback_burst: float | None = None
    ) -> None:
        if fallback_rate is not None and fallback_rate < 0:
            raise ValueError("fallback_rate must not be negative")
        self.fallback_rate = fallback_rate
        self.fallback_burst = (
            None
            if fallback_rate is None
            else (fallback_burst if fallback_burst is not None else max(1.0, fallback_rate))
        )
        self.rate = 0.0
        self.burst = 0.0
        self.expires_at: float | None = None
        # Fallback mode starts full, like a fresh lease.
        self._tokens = self.fallback_burst or 0.0
        self._updated: float | None = None

    def valid(self, now: float) -> bool:
        """Whether a lease is in force at ``now``."""
        return self.expires_at is not None and now < self.expires_at

    def grant(self, per_second: float, burst: float, expires_at_mono: float, now: float) -> None:
        """Install a lease (a LeaseQuota answer, converted by the caller)."""
        if per_second < 0 or burst < 0:
            raise ValueError("rate and burst must not be negative")
        fresh = not self.valid(now)
        self._advance(now)
        self.rate = per_second
        self.burst = burst
        self.expires_at = expires_at_mono
        # A renewal keeps what is left (capped at the new burst), so renewing
        # often cannot mint extra calls; a first lease starts full.
        self._tokens = burst if fresh else min(self._tokens, burst)
        self._updated = now

    def tokens(self, now: float) -> float:
        """Calls available now (``math.inf`` when nothing is enforced)."""
        self._advance(now)
        if not self.valid(now) and self.fallback_rate is None:
            return math.inf
        return self._tokens

    def try_acquire(self, n: float, now: float) -> bool:
        """Take ``n`` calls' worth of tokens if available."""
        if n <= 0:
            return True
        self._advance(now)
        if not self.valid(now) and self.fallback_rate is None:
            return True
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def _advance(self, now: float) -> None:
        """Refill up to ``now``: at the lease rate until it expires, then the fallback's."""
        last = self._updated
        if last is not None and now <= last:
            return  # Never refill twice for the same time, nor backwards.
        self._updated = now
        if last is None:
            return
        expires = self.expires_at
        if expires is not None and last < expires:
            end = min(now, expires)
            self._tokens = min(self.burst, self._tokens + (end - last) * self.rate)
            if now < expires:
                return
            last = end
        if self.fallback_rate is None:
            return
        # Past the lease (or without one): what is left carries over, but never
        # above the fallback burst.
        capacity = self.fallback_burst or 0.0
        self._tokens = min(capacity, self._tokens + (now - last) * self.fallback_rate)


MAX_QUOTA_BUCKETS = 10_000


def quota_for(
    buckets: dict[Any, QuotaBucket], key: Any, fallback_rate: float | None
) -> QuotaBucket:
    """The bucket of one descriptor, kept in ``buckets``, which never grows past
    ``MAX_QUOTA_BUCKETS`` however many descriptors (users, addresses) come by."""
    bucket = buckets.get(key)
    if bucket is None:
        bucket = QuotaBucket(fallback_rate=fallback_rate)
        if len(buckets) >= MAX_QUOTA_BUCKETS:
            # Dicts keep insertion order: the oldest descriptor goes first.
            del buckets[next(iter(buckets))]
        buckets[key] = bucket
    return bucket
