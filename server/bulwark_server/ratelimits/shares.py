"""Shares of a busy counter: tokens its owner hands out, spent from memory elsewhere.

Pure: every call gets ``now``. Two halves, one per side of ``CounterService/Exchange``:

* ``ShareBook`` (the replica a Check reaches): counts the hits it sees per
  counter it does not own, refused ones included (its **demand**). A counter with
  at least ``HOT_HITS`` in a refresh period is **busy**: every ``REFRESH_S`` the
  replica asks its owner for the tokens it expects to need until the next refresh
  (demand x ``REFRESH_S`` x ``HEADROOM``, less what it still holds). A share is
  spent one decision at a time, from memory; when it runs out before the next
  refresh and the owner had granted less than asked (the budget is scarce), the
  replica refuses locally until then rather than ask for every request. Tokens
  lapse ``SHARE_TERM_S`` after their grant; a share no longer needed is given back.
* ``ShareLedger`` (the owner, per counter): the latest want of every holder.
  Tokens are **taken from the counter** when granted, so shares and exact
  decisions draw on one budget and the sum of what every replica admits never
  exceeds what the counter admits. When the holders want more than the counter
  holds, each gets at most its max-min fair part (``leases.fair_shares``). While
  other replicas hold shares of a counter, its owner spends from a share of its
  own too, so its own traffic gets its fair part and no more.

Bounds (the README states them): in steady state no replica admits a hit the
counter did not grant, so the fleet admits at most the limit. Tokens a holder
could not spend lapse unused: at most one refresh period's grants are lost to a
window (the counter refills); a fixed window's grant late in the window is sized
to the time left (``owned.CounterTables.grant``), as it lapses when the window
ends. When the owner fails, holders spend what they hold (at most one refresh
period's grants) while the next owner restores the counter from its last
checkpoint, written every refresh period while shares are out.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from bulwark_server.ratelimits.counters import Outcome
from bulwark_server.ratelimits.leases import fair_shares

REFRESH_S = 0.2
"""How often a replica tops up its shares, and the owner checkpoints shared counters."""

SHARE_TERM_S = 3 * REFRESH_S
"""How long granted tokens may be spent: a refresh may be late or lost twice."""

HOT_HITS = 8
"""Hits in one refresh period from which a counter is worth a share (40 per second)."""

HEADROOM = 1.5
"""A share covers this many times the demand of a period, so growth is not refused."""

MIN_SHARE_RATE = 50.0
"""A limit admitting fewer hits per second is never shared: each share would be a
token or two, and an exact decision at the owner costs little at that rate."""

IDLE_PERIODS = 3
"""A holder that saw no hit for this many refresh periods gives its share back."""

PART_OF_LIMIT = 0.025
"""What the replicas that do not own a counter may admit of it, all together, per
window (or per unit of a bucket's rate) without asking its owner: each replica's
**part**. Hits admitted from a part are reported to the owner at the next refresh
(and counted there), so a counter far from its limit, such as a per-address limit's
(any value, each at a low rate), costs no message per decision; one near its limit
is decided by the owner once the parts are spent. The fleet may admit up to twice
this fraction of the limit beyond it (parts are whole hits, rounded up)."""


def part_divisor(owners: int) -> int:
    """A counter's part, on each replica that does not own it, is its limit per unit
    divided by this, rounded up; a limit below it has no parts (decided exactly)."""
    return math.ceil(max(1, owners - 1) / PART_OF_LIMIT)


@dataclass(slots=True)
class Share:
    """Tokens of one counter this replica holds, and what it last heard of the counter."""

    tokens: int = 0
    valid_until: float = 0.0
    # The owner granted less than asked: the counter is scarce, so running out means
    # refusing until the next refresh rather than asking per request.
    scarce: bool = False
    # What the owner last said, for the answers decided from the share.
    remaining: int = 0
    reset_at: float = 0.0
    next_refresh: float = 0.0


@dataclass(slots=True)
class _Seen:
    hits: int = 0
    rate: float = 0.0
    idle: int = 0


@dataclass(frozen=True, slots=True)
class Refresh:
    """One top-up to ask the owner for (``returned``: tokens given back instead)."""

    key: Hashable
    wanted: int
    demand: float
    returned: int = 0


class ShareBook:
    """This replica's shares of counters other replicas own; see the module docstring."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, _Seen] = {}
        self.shares: dict[Hashable, Share] = {}
        self._period_start = -math.inf

    def spend(self, key: Hashable, hits: int, now: float) -> tuple[Share, bool] | None:
        """Count ``hits`` as demand for ``key`` and decide them from its share if it can.

        ``(share, True)``: taken from the share. ``(share, False)``: refused here, the
        share ran out while the counter is scarce. None: ask the owner.
        """
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen()
        seen.hits += hits
        share = self.shares.get(key)
        if share is None or now >= share.valid_until:
            return None
        if share.tokens >= hits:
            share.tokens -= hits
            return share, True
        return (share, False) if share.scarce else None

    def wanted(self, key: Hashable) -> int:
        """Tokens to ask for ``key`` now: a period's demand with headroom, less what is held."""
        seen = self._seen.get(key)
        if seen is None:
            return 0
        share = self.shares.get(key)
        held = share.tokens if share is not None else 0
        rate = max(seen.rate, seen.hits / REFRESH_S)
        return max(0, math.ceil(rate * REFRESH_S * HEADROOM) - held)

    def busy(self, key: Hashable) -> bool:
        """Whether ``key`` saw enough hits last period to be worth a share."""
        seen = self._seen.get(key)
        return seen is not None and max(seen.rate * REFRESH_S, seen.hits) >= HOT_HITS

    def due(self, now: float) -> list[Refresh]:
        """Close a refresh period: the top-ups (and returns) to ask for now."""
        elapsed = now - self._period_start
        if elapsed < REFRESH_S:
            return []
        span = REFRESH_S if not math.isfinite(elapsed) else elapsed
        self._period_start = now
        out: list[Refresh] = []
        for key in list(self._seen):
            seen = self._seen[key]
            seen.rate = seen.hits / span
            seen.idle = 0 if seen.hits else seen.idle + 1
            seen.hits = 0
            share = self.shares.get(key)
            held = share.tokens if share is not None and now < share.valid_until else 0
            if seen.idle >= IDLE_PERIODS:
                del self._seen[key]
                if share is not None:
                    del self.shares[key]
                    if held:
                        out.append(Refresh(key, 0, 0.0, returned=held))
                continue
            if seen.rate * REFRESH_S < HOT_HITS and share is None:
                continue
            wanted = max(0, math.ceil(seen.rate * REFRESH_S * HEADROOM) - held)
            out.append(Refresh(key, wanted, seen.rate))
        return out

    def granted(
        self,
        key: Hashable,
        wanted: int,
        granted: int,
        valid_s: float,
        remaining: int,
        reset_after: float,
        now: float,
    ) -> None:
        """Record the owner's answer to a top-up (or to a charge that asked for a share)."""
        share = self.shares.get(key)
        if share is None or now >= share.valid_until:
            share = self.shares[key] = Share()
        share.tokens += granted
        share.scarce = granted < wanted
        if granted:
            share.valid_until = now + valid_s
        elif share.scarce:
            # Nothing to spend until the next refresh: refuse here until then.
            share.valid_until = max(share.valid_until, now + min(valid_s, REFRESH_S))
        share.remaining = remaining
        share.reset_at = now + reset_after
        share.next_refresh = now + REFRESH_S

    def drop(self, key: Hashable) -> None:
        """Forget a share (its owner refused it: the limit is not shared)."""
        self.shares.pop(key, None)


@dataclass(slots=True)
class _Holder:
    wanted: int
    seen_at: float


class ShareLedger:
    """The owner's record of one counter's holders; see the module docstring."""

    __slots__ = ("_budget", "_budget_at", "_holders")

    def __init__(self) -> None:
        self._holders: dict[str, _Holder] = {}
        # What the holders asking in one round split: taken at the round's first ask.
        self._budget = 0
        self._budget_at = -math.inf

    def cap(self, holder: str, wanted: int, available: int, refill: int, now: float) -> int:
        """How many of the ``available`` tokens ``holder`` may take for its ``wanted``.

        ``refill``: what the counter gains in a refresh period. While the holders
        together want more than is there, each gets at most its max-min fair part of
        what was there at the first ask of this round (or of a period's refill, when
        less): holders asking one after the other split a round's tokens evenly.
        """
        for name in [h for h, rec in self._holders.items() if now - rec.seen_at > SHARE_TERM_S]:
            del self._holders[name]
        self._holders[holder] = _Holder(wanted, now)
        wants = {name: rec.wanted for name, rec in self._holders.items()}
        if now - self._budget_at >= REFRESH_S / 2:
            self._budget, self._budget_at = max(available, refill), now
        if sum(wants.values()) <= available:
            return min(wanted, available)
        return min(wanted, available, fair_shares(self._budget, wants)[holder])

    def contested(self, holder: str, now: float) -> bool:
        """Whether a holder other than ``holder`` may still spend tokens of this counter."""
        return any(
            name != holder and now - rec.seen_at <= SHARE_TERM_S
            for name, rec in self._holders.items()
        )

    def active(self, now: float) -> bool:
        """Whether any holder may still spend tokens of this counter."""
        return any(now - rec.seen_at <= SHARE_TERM_S for rec in self._holders.values())


def share_outcome(share: Share, allowed: bool, hits: int, now: float) -> Outcome:
    """What a charge of ``hits`` on a share answers (``ShareBook.spend``'s result)."""
    reset_after = max(0.0, share.reset_at - now)
    if allowed:
        return Outcome(True, max(0, share.remaining - hits), reset_after, 0.0)
    return Outcome(False, 0, reset_after, max(0.0, share.next_refresh - now))
