"""Open-loop rate schedules: when each call of a rate-driven load test is due.

A schedule is a rate over time (calls per second), ghz's three kinds:

* ``const``: ``start`` calls a second throughout;
* ``step``: ``start``, then ``step`` more (or fewer) every ``step_duration``;
* ``line``: ``start``, then ``step`` more (or fewer) per second, continuously.

A changing rate stops changing once it reaches ``end`` (when set) or once
``max_duration`` has passed (when set), and holds from then on. Call ``n`` (from 0)
is due when the integral of the rate from 0 reaches ``n``: call 0 at once, then
evenly by the rate in force. The due times are computed by inverting that integral
piece by piece (constant pieces for ``const`` and ``step``, one linear piece and a
constant one for ``line``), so a schedule costs a few float operations a call and
never drifts however long it runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("const", "step", "line")
# A step schedule without end or limit has no last segment; this many are enough
# for any run (at 1 ms a step, over 11 days).
_MAX_STEPS = 1_000_000_000


class ScheduleError(ValueError):
    """A schedule whose settings do not hold together; the message names the flag."""


@dataclass(frozen=True)
class Segment:
    """The rate from ``begin`` (seconds) until ``until``: ``rate + slope * (t - begin)``."""

    begin: float
    until: float  # math.inf for the last one
    rate: float
    slope: float = 0.0

    def calls(self) -> float:
        """How many calls fall due within the segment (its integral; inf for the last)."""
        if math.isinf(self.until):
            return math.inf
        span = self.until - self.begin
        return self.rate * span + self.slope * span * span / 2

    def offset(self, k: float) -> float:
        """Seconds from ``begin`` until ``k`` calls of this segment are due."""
        if self.slope == 0:
            return k / self.rate
        # Solves rate*x + slope*x²/2 = k; this form stays exact for a small slope
        # and for a falling rate (no difference of near-equal numbers).
        root = math.sqrt(max(0.0, self.rate * self.rate + 2 * self.slope * k))
        return 2 * k / (self.rate + root)


@dataclass(frozen=True)
class Schedule:
    """A rate schedule (see the module docstring); check it with :meth:`validate`."""

    kind: str = "const"
    start: float = 0.0
    step: float = 0.0
    end: float = 0.0  # 0: none
    step_duration: float = 0.0
    max_duration: float = 0.0  # 0: none

    def validate(self) -> Schedule:
        """The schedule itself, or ScheduleError naming the flag at fault."""
        flag = "--rps" if self.kind == "const" else "--load-start"
        if self.kind not in KINDS:
            raise ScheduleError(f"--load-schedule: {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ScheduleError(f"{flag} must be a positive number of calls a second")
        if self.kind == "const":
            return self
        if self.step == 0:
            raise ScheduleError(f"--load-step must not be 0 for a {self.kind} schedule")
        if self.kind == "step" and not self.step_duration > 0:
            raise ScheduleError("--load-step-duration must be positive for a step schedule")
        if self.end < 0 or self.max_duration < 0:
            raise ScheduleError("--load-end and --load-max-duration must not be negative")
        if self.end and (self.end - self.start) * self.step <= 0:
            way = "above" if self.step > 0 else "below"
            raise ScheduleError(f"--load-end must be {way} --load-start for this --load-step")
        if self.step < 0 and not self.end and not self.max_duration:
            raise ScheduleError(
                "a falling schedule needs --load-end (the rate it stops at) "
                "or --load-max-duration (when it stops falling)"
            )
        if self._hold_rate() <= 0:
            raise ScheduleError("the schedule falls to 0 calls a second: raise --load-end")
        return self

    def _hold_at(self) -> float:
        """When the rate stops changing (inf: never)."""
        hold = math.inf
        if self.end:
            if self.kind == "line":
                hold = (self.end - self.start) / self.step
            else:
                steps = math.ceil((self.end - self.start) / self.step)
                hold = steps * self.step_duration
        if self.max_duration:
            hold = min(hold, self.max_duration)
        return hold

    def _hold_rate(self) -> float:
        hold = self._hold_at()
        if math.isinf(hold):
            return math.inf
        return self.rate_at(hold)

    def rate_at(self, t: float) -> float:
        """The rate in force ``t`` seconds into the run."""
        if self.kind == "const":
            return self.start
        hold = self._hold_at()
        at = min(t, hold)
        if self.kind == "line":
            rate = self.start + self.step * at
        else:
            rate = self.start + self.step * math.floor(at / self.step_duration + 1e-9)
        if self.end:
            rate = min(rate, self.end) if self.step > 0 else max(rate, self.end)
        return rate

    def segments(self) -> Iterator[Segment]:
        """The schedule as pieces of constant or linear rate, in order, the last unbounded."""
        if self.kind == "const":
            yield Segment(0.0, math.inf, self.start)
            return
        hold = self._hold_at()
        if self.kind == "line":
            if math.isinf(hold):
                yield Segment(0.0, math.inf, self.start, self.step)
                return
            yield Segment(0.0, hold, self.start, self.step)
            yield Segment(hold, math.inf, self.rate_at(hold))
            return
        begin = 0.0
        for k in range(_MAX_STEPS):
            until = (k + 1) * self.step_duration
            if until >= hold:
                if hold > begin:
                    yield Segment(begin, hold, self.rate_at(begin))
                yield Segment(max(begin, hold), math.inf, self.rate_at(hold))
                return
            yield Segment(begin, until, self.rate_at(begin))
            begin = until

    def due_times(self) -> Iterator[float]:
        """Seconds from the start at which call 0, 1, 2, … is due; endless."""
        n = 0
        done = 0.0  # calls due before the current segment (a fraction in general)
        for segment in self.segments():
            available = segment.calls()
            while n - done < available:
                yield segment.begin + segment.offset(n - done)
                n += 1
            done += available

    def calls_before(self, t: float) -> int:
        """How many calls fall due before ``t`` seconds."""
        total = 0.0
        for segment in self.segments():
            if t <= segment.begin:
                break
            span = min(t, segment.until) - segment.begin
            total += segment.rate * span + segment.slope * span * span / 2
            if t <= segment.until:
                break
        return math.ceil(total - 1e-9)

    def describe(self) -> str:
        """One line for the report: ``200/s``, ``step 100/s +100 every 5s to 500/s`` …"""
        if self.kind == "const":
            return f"{self.start:g}/s"
        every = f" every {self.step_duration:g}s" if self.kind == "step" else "/s per second"
        text = f"{self.kind} from {self.start:g}/s, {self.step:+g}{every}"
        if self.end:
            text += f", to {self.end:g}/s"
        if self.max_duration:
            text += f", changing for {self.max_duration:g}s at most"
        return text
