"""Decisions counted by limit and outcome, as envoyproxy/ratelimit counts them.

Each descriptor a replica decides counts once, under its limit (domain and name;
a descriptor's own limit has the name "") and one outcome:

* ``within_limit``: admitted with more than a fifth of the limit left;
* ``near_limit``: admitted, with at most a fifth left (envoyproxy/ratelimit's
  ``near_limit``: past 80 % of the limit);
* ``over_limit``: refused;
* ``shadow_mode``: over a limit in shadow mode, so admitted anyway.
  (envoyproxy/ratelimit counts these as ``over_limit`` too; here each decision
  counts once, so the outcomes of a limit add up to its decisions.)

A decision adds one to a list item (``answers.Answers.response``); the metrics
endpoint reads the counts when it is scraped. Callers choose domains, and a
descriptor's own limit is counted under its domain: past ``MAX_LIMITS`` limits,
new ones are not counted and ``dropped`` says how many decisions went uncounted.

A limit with ``detailed_metric`` (envoyproxy/ratelimit's option) is also counted
per descriptor value, up to ``MAX_DETAILED`` values in all; past that, a value's
decisions count under its limit only (``detailed_dropped``). A detailed value's
decisions are kept in its own tally only, and added to its limit's when read, so
a decision is counted once on its hot path either way. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bulwark.v1 import ratelimit_pb2

OUTCOMES = ("within_limit", "near_limit", "over_limit", "shadow_mode")
WITHIN, NEAR, OVER, SHADOW = range(4)
NEAR_LIMIT_RATIO = 0.8
MAX_LIMITS = 10_000
MAX_DETAILED = 10_000  # descriptor values counted apart, over every detailed limit


class Tally:
    """One limit's counts by outcome (indexed as ``OUTCOMES``). ``near_below``: an
    admitted decision leaving fewer than this many requests is near the limit."""

    __slots__ = ("counts", "near_below")

    def __init__(self, near_below: int = 0) -> None:
        self.counts = [0, 0, 0, 0]
        self.near_below = near_below


def near_below(requests_per_unit: int) -> int:
    """What must be left for a decision not to be near ``requests_per_unit``:
    envoyproxy/ratelimit's threshold is ``floor(limit * 0.8)`` used."""
    return requests_per_unit - int(requests_per_unit * NEAR_LIMIT_RATIO)


class Tallies:
    """The tallies of every limit decided on this replica."""

    def __init__(self, max_limits: int = MAX_LIMITS, max_detailed: int = MAX_DETAILED) -> None:
        self._by_limit: dict[tuple[str, str], Tally] = {}
        self._max = max_limits
        self._spare = Tally()  # counts of limits past the cap, never read
        # (domain, limit, descriptor) -> its tally, for limits with detailed_metric
        self._detailed: dict[tuple[str, str, str], Tally] = {}
        self._max_detailed = max_detailed
        self.detailed_dropped = 0

    def of(self, domain: str, name: str, requests_per_unit: int) -> Tally:
        """The tally of limit ``name`` of ``domain``, at its current rate."""
        tally = self._by_limit.get((domain, name))
        if tally is None:
            if len(self._by_limit) >= self._max:
                return self._spare
            tally = self._by_limit[(domain, name)] = Tally()
        tally.near_below = near_below(requests_per_unit)
        return tally

    def detail(
        self,
        domain: str,
        name: str,
        entries: Sequence[ratelimit_pb2.DescriptorEntry],
        limit: Tally,
    ) -> Tally:
        """The tally of one descriptor value of a detailed limit (``limit`` its limit's
        tally, as ``of`` gave it); ``limit`` itself once ``MAX_DETAILED`` values are
        counted."""
        key = (domain, name, ",".join(f"{e.key}={e.value}" for e in entries))
        tally = self._detailed.get(key)
        if tally is None:
            if len(self._detailed) >= self._max_detailed or limit is self._spare:
                self.detailed_dropped += 1
                return limit
            tally = self._detailed[key] = Tally()
        tally.near_below = limit.near_below
        return tally

    @property
    def dropped(self) -> int:
        """Decisions not counted under their limit, for want of room."""
        return sum(self._spare.counts)

    def counts(self) -> Iterator[tuple[str, str, str, int]]:
        """(domain, limit, outcome, decisions) of every limit counted."""
        totals = {key: list(tally.counts) for key, tally in self._by_limit.items()}
        for (domain, name, _), tally in self._detailed.items():
            total = totals.get((domain, name))
            if total is not None:
                for i, count in enumerate(tally.counts):
                    total[i] += count
        for (domain, name), total in totals.items():
            for outcome, count in zip(OUTCOMES, total, strict=True):
                yield domain, name, outcome, count

    def detailed_counts(self) -> Iterator[tuple[str, str, str, str, int]]:
        """(domain, limit, descriptor, outcome, decisions) of every value counted apart."""
        for (domain, name, descriptor), tally in list(self._detailed.items()):
            for outcome, count in zip(OUTCOMES, tally.counts, strict=True):
                yield domain, name, descriptor, outcome, count
