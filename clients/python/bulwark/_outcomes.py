"""The outcome buffer: counts waiting to be reported, aggregated per breaker.

I/O-free and not thread-safe. Bounded memory: one entry per breaker however
many calls are recorded, and counts saturate instead of growing without limit.

When a report is due. Outcomes are reported in batches: a report is due once
``interval`` (100 ms by default) has passed since the previous one, or at once
for a full batch (``max_batch`` calls) or a backlog (more breakers than fit one
report). The drivers look every ``report_pause`` (50 ms). That is the steady
state, and a trickle of successes never changes it.

Failures travel fast. A failure is *urgent*, meaning the driver wakes its
reporter at once instead of waiting for its timer, in two cases:

* a quiet period: no report for ``interval``. The report is due anyway, so
  sending it now costs no extra report, only the wait for the timer;
* a burst: the breaker's recent failures exceed its failure-rate threshold
  by ``burst`` failures (``URGENT_FAILURES``, capped at the breaker's
  ``minimum_number_of_calls``). Then the report is due ``urgent_gap`` (5 ms)
  after the previous one instead of ``interval`` after it.

The burst rule is a CUSUM change detector. Each breaker has a score that
rises by 1 per failure and falls by ``threshold / (100 - threshold)`` per
success (1 at the default 50 %). It never goes below 0 and never above
``burst``. The score stays above 0 only while, since it last stood at 0,
failures make up more than the breaker's threshold share of its calls: the
share that trips the fleet's breaker once its window is full. So:

* a background failure share ``p`` well below the threshold seldom reaches
  ``burst``, whatever the call rate. The chance per failure is about
  ``(p / (1 - p)) ** (burst - 1)`` at the default threshold: 8e-6 at 5 %
  failures, 4e-3 at 20 %. (A count of failures pending would fire more
  often as the call rate grew.) Close to the threshold it fires often, and
  should: the fleet's breaker is then close to tripping;
* when a dependency goes down, ``burst`` failures in a row are enough,
  however many successes came before (the score starts from 0, not from the
  history);
* ``burst`` is 5 because a breaker evaluates its rate only once its window
  holds ``minimum_number_of_calls`` calls (100 by default; 10 in the client
  benchmark). 5 failures say more than one unlucky call, and this client's
  failures may be the ones that fill a window other clients have nearly
  filled. A breaker that needs fewer calls gets a smaller ``burst``.

The minimum gap bounds a sustained storm: at most one report per
``urgent_gap`` (200 reports/s). The storm usually ends sooner. Once the trip
reaches this client's cache, ``breaker()`` refuses and nothing more is
recorded. Failures of a breaker the cache shows OPEN, FORCED_OPEN, DISABLED
or METRICS_ONLY are never urgent, because they cannot trip it. Nor is any
failure while Bulwark is unreachable: such a report would only fail. Outside
bursts (and full batches), reports stay at most one per ``interval``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from itertools import islice

import grpc

from bulwark._caches import BreakerView
from bulwark._states import CLOSED, DEFAULT_FAILURE_RATE_THRESHOLD, HALF_OPEN
from bulwark.errors import BulwarkError
from bulwark.v1 import breaker_pb2

__all__ = [
    "COUNT_CAP",
    "DEFAULT_RULE",
    "MAX_REPORT_ENTRIES",
    "NO_HURRY",
    "URGENT_FAILURES",
    "URGENT_GAP",
    "OutcomeBuffer",
    "Rule",
    "failure_rule",
]

log = logging.getLogger("bulwark")

#: Per-breaker outcome counts saturate here, so counts kept while Bulwark is
#: unreachable stay bounded (and well inside int64) however long the outage.
COUNT_CAP = 10**9

#: ReportOutcomesRequest accepts at most this many entries.
MAX_REPORT_ENTRIES = 1000

#: Failures beyond a breaker's threshold share that make a burst (see the module docstring).
URGENT_FAILURES = 5

#: The shortest time between a report and the next one sent early for a burst.
URGENT_GAP = 0.005

# The states whose breaker failures can still trip (or re-open).
_TRIPPABLE = frozenset({CLOSED, HALF_OPEN})

#: A breaker's (failure-rate threshold in percent, burst) for the burst rule.
Rule = tuple[float, int]
#: The burst rule of a breaker the cache does not know: resilience4j's default threshold.
DEFAULT_RULE: Rule = (DEFAULT_FAILURE_RATE_THRESHOLD, URGENT_FAILURES)
#: Never urgent (Bulwark unreachable).
NO_HURRY: Rule = (DEFAULT_FAILURE_RATE_THRESHOLD, 0)


def failure_rule(view: BreakerView | None) -> Rule:
    """The failure-rate threshold and ``burst`` that the burst rule uses for a breaker.

    ``view`` is the breaker's cached view, or None when the cache does not know it; then the
    defaults apply. ``burst`` is 0 when its failures cannot trip it.
    """
    if view is None:
        return DEFAULT_RULE
    if view.state not in _TRIPPABLE:
        return view.failure_rate_threshold, 0
    return view.failure_rate_threshold, max(1, min(URGENT_FAILURES, view.minimum_number_of_calls))


class OutcomeBuffer:
    """Outcome counts waiting to be reported, aggregated per breaker.

    Memory is one small entry per breaker name, never per call.
    """

    def __init__(
        self, max_batch: int = 500, interval: float = 0.1, urgent_gap: float = URGENT_GAP
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if interval < 0:
            raise ValueError("interval must not be negative")
        if urgent_gap < 0:
            raise ValueError("urgent_gap must not be negative")
        self.max_batch = max_batch
        self.interval = interval
        self.urgent_gap = min(urgent_gap, interval)
        # name -> [successes, failures, slow_calls]
        self._counts: dict[str, list[int]] = {}
        self._pending = 0
        # -inf: the first outcomes are reported without waiting a whole interval.
        self.last_flush = -math.inf
        # The last take left breakers behind (more than fit one report).
        self._backlog = False
        # name -> [score, drop per success] of the burst rule. Only breakers whose
        # score is above 0 are kept, so this holds at most one entry per breaker.
        self._bursts: dict[str, list[float]] = {}
        # A failure pending since the last take wants to go out now.
        self._urgent = False

    def __len__(self) -> int:
        """Breakers with pending counts."""
        return len(self._counts)

    @property
    def pending(self) -> int:
        """Calls counted and not yet taken."""
        return self._pending

    @property
    def urgent(self) -> bool:
        """A failure pending since the last report wants to go out now (the module's rule)."""
        return self._urgent

    def add(
        self,
        name: str,
        success: bool,
        slow: bool = False,
        *,
        now: float | None = None,
        rule: Rule = DEFAULT_RULE,
    ) -> bool:
        """Count one outcome; True when it makes the report urgent: wake the reporter.

        Only a failure can: one after a quiet period (that needs ``now``), or one of a
        burst. ``rule`` is the breaker's (threshold percent, burst), from ``failure_rule``;
        a burst of 0 (``NO_HURRY``) means never urgent.
        """
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = [0, 0, 0]
        index = 0 if success else 1
        if counts[index] < COUNT_CAP:
            counts[index] += 1
            self._pending += 1
        if slow and counts[2] < COUNT_CAP:
            counts[2] += 1
        if success:
            # The hot path: usually no breaker has a score to lower, one truth test.
            if self._bursts:
                self._lower(name)
            return False
        return self._failed(name, now, rule)

    def _lower(self, name: str) -> None:
        """A success of ``name``: lower its burst score, forgotten at 0."""
        score = self._bursts.get(name)
        if score is not None:
            score[0] -= score[1]
            if score[0] <= 0:
                del self._bursts[name]

    def _failed(self, name: str, now: float | None, rule: Rule) -> bool:
        """A failure of ``name``: raise its burst score; whether the report is now urgent."""
        threshold, burst = rule
        if burst <= 0:
            return False
        score = self._bursts.get(name)
        if score is None:
            score = self._bursts[name] = [0.0, 0.0]
        # Capped at burst: after a storm, the first successes end the urgency.
        score[0] = min(float(burst), score[0] + 1.0)
        score[1] = _drop(threshold)
        if score[0] >= burst or (now is not None and now - self.last_flush >= self.interval):
            self._urgent = True
        return self._urgent

    def due(self, now: float) -> bool:
        """True when a report should be sent now."""
        if not self._counts:
            return False
        since = now - self.last_flush
        return (
            self._backlog
            or self._pending >= self.max_batch
            or since >= self.interval
            or (self._urgent and since >= self.urgent_gap)
        )

    def wait(self, now: float, pause: float) -> float:
        """How long a reporter may sleep: ``pause``, or less when an urgent report is due sooner."""
        if not self._urgent or not self._pending:
            return pause
        return min(pause, max(0.0, self.last_flush + self.urgent_gap - now))

    def take(
        self, now: float, limit: int = MAX_REPORT_ENTRIES
    ) -> list[breaker_pb2.BreakerOutcomes]:
        """Remove and return up to ``limit`` breakers' counts, oldest first.

        When more breakers are pending than fit one report, ``due`` stays true so
        the rest goes out in the next report right away.
        """
        out: list[breaker_pb2.BreakerOutcomes] = []
        for name in list(islice(self._counts, max(1, limit))):
            successes, failures, slow = self._counts.pop(name)
            self._pending -= successes + failures
            out.append(
                breaker_pb2.BreakerOutcomes(
                    name=name,
                    counts=breaker_pb2.OutcomeCounts(
                        successes=successes, failures=failures, slow_calls=slow
                    ),
                )
            )
        self.last_flush = now
        self._backlog = bool(self._counts)
        # The urgent failures went out (any left behind go with the backlog, at once).
        self._urgent = False
        return out

    def report_failed(
        self, batch: list[breaker_pb2.BreakerOutcomes]
    ) -> Callable[[BulwarkError, float], None]:
        """What a failed report of ``batch`` does: put it back when no replica got it.

        One that may have been applied (a deadline) is dropped: sending it again could
        count the same failures twice and trip the fleet's breaker.
        """

        def failed(error: BulwarkError, now: float) -> None:
            if error.code == grpc.StatusCode.UNAVAILABLE:
                self.restore(batch)
            else:
                log.warning("dropped a report of %d breakers: %s", len(batch), error)
            raise error

        return failed

    def restore(self, items: Iterable[breaker_pb2.BreakerOutcomes]) -> None:
        """Put back a batch whose report failed, merged with counts added since.

        Not urgent again: retrying every few ms would not bring back a replica.
        """
        for item in items:
            counts = self._counts.get(item.name)
            if counts is None:
                counts = self._counts[item.name] = [0, 0, 0]
            before = counts[0] + counts[1]
            counts[0] = min(COUNT_CAP, counts[0] + max(0, item.counts.successes))
            counts[1] = min(COUNT_CAP, counts[1] + max(0, item.counts.failures))
            counts[2] = min(COUNT_CAP, counts[2] + max(0, item.counts.slow_calls))
            self._pending += counts[0] + counts[1] - before


def _drop(threshold: float) -> float:
    """The score a success takes off: failures above ``threshold`` percent keep it rising."""
    if threshold >= 100.0:
        return math.inf  # Only an unbroken run of failures can trip such a breaker.
    return max(0.0, threshold) / (100.0 - threshold)
