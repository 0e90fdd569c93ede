"""Whether a service's signal is anomalous, judged against a baseline learned from the signal.

Each series (one service's error rate, p99 latency, in-flight requests, ...) reports one value
per window. A detector keeps an exponentially weighted moving mean and deviation of the series
and judges each new value ``x`` against them, as they stood before ``x``:

    deviation d  = max(EWMA deviation, deviation_floor, relative_floor * |mean|)
    score        = (x - mean) / d                    signed, in deviations
    out of band  = |x - mean| > threshold * d   and   |x - mean| >= min_change
    anomalous    = out of band, on the same side of the mean, for ``consecutive`` windows in a
                   row, on a watched side (``direction``: "up", "down" or "both"),
                   and never during the first ``warmup`` samples

How values teach the baseline:

* during warm-up every value counts, as a plain running average (no start-up bias);
* afterwards, in-band values update the mean and deviation with weight ``alpha``;
* out-of-band values do not: a spike must not teach the detector that spikes are normal, nor
  widen the band the next values are judged against;
* a sustained shift is re-learned after a fixed time: a *run* starts at an out-of-band value and
  lasts while values stay on that side of the mean. When a run reaches ``relearn_windows``
  windows, it becomes the new normal: the mean and deviation restart from the run's own mean and
  standard deviation. A step change is therefore reported for at most
  ``relearn_windows - consecutive`` windows, then no more. Under stationary noise a run continues
  with probability ~1/2 per window, so reaching 30 by chance is ~2**-29.

The deviation is an EWMA of |x - mean| (scaled by sqrt(pi/2) so that it estimates the standard
deviation of Gaussian noise, and ``threshold`` reads as "sigmas"), not an EWMA of the variance:
it is in the signal's own units, like the floors and ``min_change``; a large value that does
reach it (during warm-up, or an in-band value close to the edge) weighs linearly, not squared.

Defaults, for windows of ~10 s:

* ``half_life_windows=30`` (alpha ~0.023): a weight of one half after 5 minutes, ~87 effective
  samples: the mean's standard error is ~0.1 sigma, the deviation's ~8 %. A steady drift of r
  per window is followed with a lag of ~r/alpha (0.44 sigma for r = 0.01 sigma); the lag also
  widens the deviation, so a ramp that starts gently is absorbed rather than flagged.
* ``threshold=3.5`` and ``consecutive=2``: on Gaussian noise one window is out of band with
  probability ~5e-4 (both sides), two in a row ~1e-7; a 6-sigma spike lasting 3 windows is
  caught, 1 window after its onset, with ~99 % probability. One-window blips never alarm.
* ``warmup=30``: 5 minutes of samples before any verdict; the deviation's error is then ~14 %.
* ``relearn_windows=30``: a level shift alarms for at most 28 windows (~5 min), enough for a
  playbook to act, then is the new normal.
* ``relative_floor=0.01``: a change under 3.5 % of the level is never anomalous, whatever the
  unit; ``deviation_floor`` (absolute, in the signal's unit: set it per signal, e.g. 0.005 for
  an error rate) covers a series flat at or near zero.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["up", "down", "both"]
_GAUSS_MAD = math.sqrt(math.pi / 2)  # sigma / E|x - mean| for Gaussian noise


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """How one series is judged; see the module docstring for the rule and the defaults."""

    half_life_windows: float = 30.0
    threshold: float = 3.5
    consecutive: int = 2
    warmup: int = 30
    relearn_windows: int = 30
    direction: Direction = "both"
    deviation_floor: float = 1e-9
    relative_floor: float = 0.01
    min_change: float = 0.0

    def __post_init__(self) -> None:
        def positive(name: str, value: float) -> None:
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

        def at_least(name: str, value: int, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

        positive("half_life_windows", self.half_life_windows)
        positive("threshold", self.threshold)
        # Strictly positive, so the score's divisor is never zero.
        positive("deviation_floor", self.deviation_floor)
        for name in ("relative_floor", "min_change"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        at_least("consecutive", self.consecutive, 1)
        at_least("warmup", self.warmup, 2)  # one sample has no deviation
        # A run re-learned before `consecutive` windows could never be reported.
        at_least("relearn_windows", self.relearn_windows, self.consecutive + 1)
        if self.direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', got {self.direction!r}")

    @property
    def alpha(self) -> float:
        """The EWMA weight of one in-band window: 1 - 2 ** (-1 / half_life_windows)."""
        return 1.0 - 2.0 ** (-1.0 / self.half_life_windows)


@dataclass(frozen=True, slots=True)
class AnomalyVerdict:
    """The judgement of one value, against the baseline as it stood before that value."""

    anomalous: bool
    score: float  # (x - mean) / deviation, signed
    mean: float
    deviation: float  # as used: floors applied
    reason: str
    warming_up: bool = False


class AnomalyDetector:
    """The baseline of one series and its verdicts; feed it one value per window, in order."""

    __slots__ = (
        "_dev",
        "_mean",
        "_run_len",
        "_run_m2",
        "_run_mean",
        "_run_side",
        "_samples",
        "_streak",
        "settings",
    )

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()
        self._samples = 0
        self._mean = 0.0
        self._dev = 0.0  # sigma-equivalent, before the floors
        self._run_side = 0  # +1 above, -1 below the mean, 0 no run
        self._run_len = 0
        self._streak = 0  # consecutive out-of-band windows at the end of the run
        self._run_mean = 0.0  # Welford over the run's values, for re-learning
        self._run_m2 = 0.0

    @property
    def samples(self) -> int:
        return self._samples

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def deviation(self) -> float:
        """The deviation values are judged against (floors applied)."""
        s = self.settings
        return max(self._dev, s.deviation_floor, s.relative_floor * abs(self._mean))

    def observe(self, value: float) -> AnomalyVerdict:
        """Judge ``value`` (this window's) and learn from it as the module docstring says."""
        s = self.settings
        if not math.isfinite(value):
            # A window without data (latency of zero requests) says nothing either way.
            return self._verdict(False, 0.0, "ignored: value is not finite")
        if self._samples < s.warmup:
            self._samples += 1
            self._learn(value, max(s.alpha, 1.0 / self._samples))
            return self._verdict(
                False, 0.0, f"warming up: {self._samples} of {s.warmup} samples", warming_up=True
            )
        self._samples += 1
        mean, dev = self._mean, self.deviation
        change = value - mean
        score = change / dev
        side = (change > 0) - (change < 0)
        out = abs(change) > s.threshold * dev and abs(change) >= s.min_change
        if out and side == self._run_side:
            self._extend_run(value)
            self._streak += 1
        elif out:
            self._run_side, self._run_len, self._run_mean, self._run_m2 = side, 0, 0.0, 0.0
            self._extend_run(value)
            self._streak = 1
        else:
            if self._run_side and side == self._run_side:
                self._extend_run(value)  # in band, but still on the run's side
            else:
                self._run_side = self._run_len = 0
            self._streak = 0
            self._learn(value, s.alpha)

        def judged(anomalous: bool, reason: str) -> AnomalyVerdict:
            return AnomalyVerdict(anomalous, score, mean, dev, reason)

        if self._run_len >= s.relearn_windows:
            self._mean = self._run_mean
            self._dev = math.sqrt(self._run_m2 / (self._run_len - 1))
            self._run_side = self._run_len = self._streak = 0
            return judged(
                False,
                f"re-learned: {s.relearn_windows} windows on one side of the mean; "
                f"new mean {self._mean:.6g}, deviation {self._dev:.6g}",
            )
        if not out:
            why = "within baseline" if abs(score) <= s.threshold else "change below min_change"
            return judged(False, f"{why}: {score:+.2f} deviations")
        if s.direction != "both" and (side > 0) != (s.direction == "up"):
            return judged(False, f"{score:+.2f} deviations, on an unwatched side")
        if self._streak < s.consecutive:
            return judged(
                False, f"out of band: {score:+.2f} deviations, {self._streak} of {s.consecutive}"
            )
        return judged(
            True,
            f"anomalous: {score:+.2f} deviations from mean {mean:.6g} (deviation {dev:.6g}) "
            f"for {self._streak} windows",
        )

    def _learn(self, value: float, weight: float) -> None:
        change = value - self._mean
        if self._samples > 1:
            # The n-th sample is the (n-1)-th deviation seen: its own running-average weight.
            dev_weight = max(self.settings.alpha, 1.0 / (self._samples - 1))
            self._dev += dev_weight * (_GAUSS_MAD * abs(change) - self._dev)
        self._mean += weight * change

    def _extend_run(self, value: float) -> None:
        self._run_len += 1
        delta = value - self._run_mean
        self._run_mean += delta / self._run_len
        self._run_m2 += delta * (value - self._run_mean)

    def _verdict(self, anomalous: bool, score: float, reason: str, **kw: bool) -> AnomalyVerdict:
        return AnomalyVerdict(anomalous, score, self._mean, self.deviation, reason, **kw)


@dataclass(slots=True)
class _Slot:
    detector: AnomalyDetector
    seen: float


class AnomalyDetectors:
    """One detector per (service, signal), made on first sight, forgotten when idle.

    Services come and go: a key not updated for ``idle_after`` seconds (the caller's clock,
    passed as ``now``) is dropped, so a service that returns after a long absence starts a new
    baseline rather than being judged against a stale one. At most ``max_keys`` are kept; beyond
    that the least recently updated is dropped. Settings may differ by signal name (error rate
    and latency watch only increases).
    """

    def __init__(
        self,
        default: AnomalySettings | None = None,
        *,
        per_signal: Mapping[str, AnomalySettings] | None = None,
        max_keys: int = 10_000,
        idle_after: float = 600.0,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        if not math.isfinite(idle_after) or idle_after <= 0:
            raise ValueError(f"idle_after must be a positive finite number, got {idle_after!r}")
        self._default = default or AnomalySettings()
        self._per_signal = dict(per_signal or {})
        self.max_keys = max_keys
        self.idle_after = idle_after
        # Least recently updated first: eviction and the idle sweep only look at the front.
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()

    def observe(self, service: str, signal: str, value: float, now: float) -> AnomalyVerdict:
        """Judge this window's ``value`` of ``signal`` for ``service``, reported at ``now``."""
        self.forget_idle(now)
        key = (service, signal)
        slot = self._slots.get(key)
        if slot is None:
            settings = self._per_signal.get(signal, self._default)
            slot = self._slots[key] = _Slot(AnomalyDetector(settings), now)
            while len(self._slots) > self.max_keys:
                self._slots.popitem(last=False)
        else:
            slot.seen = now
            self._slots.move_to_end(key)
        return slot.detector.observe(value)

    def forget_idle(self, now: float) -> int:
        """Drop the keys not updated since ``now - idle_after``; how many were dropped."""
        # Only the front is checked: if a caller's clock steps back, a key may outstay
        # idle_after, but none is dropped early.
        cutoff = now - self.idle_after
        dropped = 0
        while self._slots:
            key, slot = next(iter(self._slots.items()))
            if slot.seen >= cutoff:
                break
            del self._slots[key]
            dropped += 1
        return dropped

    def get(self, service: str, signal: str) -> AnomalyDetector | None:
        slot = self._slots.get((service, signal))
        return slot.detector if slot else None

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots
