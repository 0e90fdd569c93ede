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
Pure.
"""

from __future__ import annotations

from collections.abc import Iterator

OUTCOMES = ("within_limit", "near_limit", "over_limit", "shadow_mode")
WITHIN, NEAR, OVER, SHADOW = range(4)
NEAR_LIMIT_RATIO = 0.8
MAX_LIMITS = 10_000


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

    def __init__(self, max_limits: int = MAX_LIMITS) -> None:
        self._by_limit: dict[tuple[str, str], Tally] = {}
        self._max = max_limits
        self._spare = Tally()  # counts of limits past the cap, never read

    def of(self, domain: str, name: str, requests_per_unit: int) -> Tally:
        """The tally of limit ``name`` of ``domain``, at its current rate."""
        tally = self._by_limit.get((domain, name))
        if tally is None:
            if len(self._by_limit) >= self._max:
                return self._spare
            tally = self._by_limit[(domain, name)] = Tally()
        tally.near_below = near_below(requests_per_unit)
        return tally

    @property
    def dropped(self) -> int:
        """Decisions not counted under their limit, for want of room."""
        return sum(self._spare.counts)

    def counts(self) -> Iterator[tuple[str, str, str, int]]:
        """(domain, limit, outcome, decisions) of every limit counted."""
        for (domain, name), tally in list(self._by_limit.items()):
            for outcome, count in zip(OUTCOMES, tally.counts, strict=True):
                yield domain, name, outcome, count
