"""Who calls through each breaker: the reporters of its recent outcome reports.

An alert about a breaker says how many depend on it; the feature graph names the
features, and this names the callers. Reports reach the leader (followers forward
them), so the leader's set is the fleet's. It lives in memory only: a new leader
knows a caller again at its next report, one reporting interval later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

RECENT_S = 300.0  # a reporter silent this long no longer counts as a caller
MAX_PER_BREAKER = 1000  # beyond this, the oldest reporter is forgotten first


class RecentCallers:
    """The reporters seen per breaker within ``RECENT_S``, with an injected clock."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        recent: float = RECENT_S,
        cap: int = MAX_PER_BREAKER,
    ) -> None:
        self._clock = clock
        self._recent = recent
        self._cap = cap
        # breaker -> reporter -> last seen; dicts keep insertion order, and a reporter
        # seen again moves to the end, so the first item is the stalest.
        self._seen: dict[str, dict[str, float]] = {}

    def note(self, reporter: str, breakers: Iterable[str]) -> None:
        """``reporter`` reported outcomes for ``breakers`` now."""
        if not reporter:
            return
        now = self._clock()
        for name in breakers:
            seen = self._seen.setdefault(name, {})
            seen.pop(reporter, None)
            seen[reporter] = now
            if len(seen) > self._cap:
                del seen[next(iter(seen))]

    def of(self, breaker: str) -> list[str]:
        """The breaker's recent callers, in name order (the stale ones are dropped)."""
        seen = self._seen.get(breaker)
        if not seen:
            return []
        horizon = self._clock() - self._recent
        while seen and next(iter(seen.values())) < horizon:
            del seen[next(iter(seen))]
        if not seen:
            del self._seen[breaker]
        return sorted(seen)
