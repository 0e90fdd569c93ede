"""Kubernetes' HorizontalPodAutoscaler arithmetic: how many instances a service should run.

Pure: no I/O, no clock. The caller passes the load its instances report and ``now``
(seconds, any monotonic origin). The rules follow the Kubernetes documentation,
https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ ("Algorithm
details" and "Stabilization window"), minus what needs pods' readiness data:

- Per metric, ``desired = ceil(current_replicas * current_value / target_value)``. An
  ``AverageValue`` metric is the mean over the instances that reported; a ``Value``
  metric is one total for the whole service. A target must be > 0.
- No change while the ratio is within the tolerance: ``|1 - ratio| <= tolerance``
  (default 0.1, so 0.9 <= ratio <= 1.1).
- Instances that did not report an ``AverageValue`` metric count as using exactly the
  target on a scale-down and nothing on a scale-up; if that reverses the direction or
  lands within the tolerance, nothing changes.
- With several metrics the largest recommendation wins. If a metric is unavailable and
  the others suggest scaling down, nothing changes (scaling up still happens).
- Zero current replicas means autoscaling is off (Kubernetes' implicit maintenance mode).
  A current count outside [min_replicas, max_replicas] is first brought to that bound,
  without consulting the metrics.
- Stabilization (``Autoscaler``): every recommendation is remembered with its time. A
  scale-down goes no lower than the HIGHEST recommendation within the scale-down window
  (default 300 s); a scale-up goes no higher than the LOWEST within the scale-up window
  (default 0 s: at once). The result is then clamped to [min_replicas, max_replicas].

Not modelled: scaling policies (rate limits per period), unready pods, scale to zero.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_WINDOW_SECONDS = 3600.0  # Kubernetes' bound on stabilizationWindowSeconds


class TargetType(StrEnum):
    AVERAGE_VALUE = "AverageValue"
    VALUE = "Value"


def _number(value: float, field: str, *, positive: bool = False, where: str = "") -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{field} must be a finite number {'> 0' if positive else '>= 0'}{where}")


def _integer(value: int, field: str, minimum: int, where: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}{where}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaSettings:
    max_replicas: int
    # Kubernetes lets min_replicas be 0 only behind an alpha feature gate.
    min_replicas: int = 1
    tolerance: float = 0.1
    scale_down_window_seconds: float = 300.0
    scale_up_window_seconds: float = 0.0

    def __post_init__(self) -> None:
        _integer(self.min_replicas, "min_replicas", 1)
        _integer(self.max_replicas, "max_replicas", 1)
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        _number(self.tolerance, "tolerance")
        for field in ("scale_down_window_seconds", "scale_up_window_seconds"):
            _number(getattr(self, field), field)
            if getattr(self, field) > MAX_WINDOW_SECONDS:
                raise ValueError(f"{field} must be <= {MAX_WINDOW_SECONDS:g}")


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric's reading against its target; ``current`` None means unavailable."""

    name: str
    type: TargetType
    target: float
    current: float | None
    # AverageValue only: how many instances the mean covers (None: all current replicas).
    reporting: int | None = None

    def __post_init__(self) -> None:
        where = f" (metric {self.name!r})"
        if not isinstance(self.type, TargetType):
            raise ValueError(f"type must be a TargetType{where}")
        _number(self.target, "target", positive=True, where=where)
        if self.current is not None:
            _number(self.current, "current", where=where)
        if self.reporting is not None:
            if self.type is not TargetType.AVERAGE_VALUE:
                raise ValueError(f"reporting applies to AverageValue only{where}")
            _integer(self.reporting, "reporting", 1, where)

    @classmethod
    def average_of(cls, name: str, readings: Sequence[float], target: float) -> Metric:
        """An AverageValue metric from one reading per reporting instance."""
        if not readings:
            return cls(name, TargetType.AVERAGE_VALUE, target, None)
        mean = math.fsum(readings) / len(readings)
        return cls(name, TargetType.AVERAGE_VALUE, target, mean, len(readings))


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    reason: str
    # What the metrics alone asked for, before stabilization and clamping (None: not asked).
    desired: int | None = None
    metric: str | None = None  # the metric whose recommendation won


def _ceil(value: float) -> int:
    # Readings are decimals stored in binary: 3 * 1.3 / 1.0 is 3.9000000000000004, and a
    # product meant to be 7 may come out 7.000000000000001; ceil must not add a replica.
    return math.ceil(round(value, 9))


def _within(ratio: float, tolerance: float) -> bool:
    # Rounded for the same reason: 110 / 100 must count as the 1.1 it is meant to be.
    return round(abs(1.0 - ratio), 9) <= tolerance


def replicas_for_metric(current_replicas: int, metric: Metric, tolerance: float = 0.1) -> int:
    """The replica count one available metric asks for, before stabilization and clamping."""
    _integer(current_replicas, "current_replicas", 1)
    if metric.current is None:
        raise ValueError(f"metric {metric.name!r} is unavailable")
    ratio = metric.current / metric.target
    if metric.type is TargetType.VALUE:
        if _within(ratio, tolerance):
            return current_replicas
        return _ceil(current_replicas * metric.current / metric.target)
    reporting = metric.reporting or current_replicas
    missing = max(0, current_replicas - reporting)
    if missing == 0:
        if _within(ratio, tolerance):
            return current_replicas
        return _ceil(reporting * metric.current / metric.target)
    # As Kubernetes does for pods without metrics: silent instances are taken to use the target
    # on a scale-down and nothing on a scale-up, so a gap in the reports damps a change.
    scale_up = ratio > 1.0
    total = metric.current * reporting + (0.0 if scale_up else missing * metric.target)
    pods = reporting + missing
    ratio = total / (metric.target * pods)
    if _within(ratio, tolerance) or (scale_up and ratio < 1.0):
        return current_replicas
    desired = _ceil(total / metric.target)
    if (ratio < 1.0 and desired > current_replicas) or (ratio > 1.0 and desired < current_replicas):
        return current_replicas
    return desired


def _from_metrics(
    current: int, metrics: Sequence[Metric], tolerance: float
) -> tuple[int | None, str, str | None]:
    readings = [(m, m.current) for m in metrics if m.current is not None]
    if not readings:
        return None, "no metrics available", None
    best, name = max(
        ((replicas_for_metric(current, m, tolerance), m.name) for m, _ in readings),
        key=lambda pair: pair[0],
    )
    if best < current and len(readings) < len(metrics):
        # A missing metric might be the one asking for more: only scale-ups are safe.
        return None, "scale down skipped: a metric is unavailable", name
    if all(_within(value / m.target, tolerance) for m, value in readings):
        return best, "within tolerance", name
    if best == current:
        return best, "no change", name
    return best, "scale up" if best > current else "scale down", name


def _recommend(
    current: int,
    metrics: Sequence[Metric],
    settings: HpaSettings,
    stabilize: Callable[[int, int], int] | None,
) -> Recommendation:
    _integer(current, "current_replicas", 0)
    if current == 0:
        return Recommendation(0, "scaling disabled: current replicas is 0")
    if current > settings.max_replicas:
        return Recommendation(settings.max_replicas, "current replicas above max_replicas")
    if current < settings.min_replicas:
        return Recommendation(settings.min_replicas, "current replicas below min_replicas")
    desired, reason, metric = _from_metrics(current, metrics, settings.tolerance)
    if desired is None:
        return Recommendation(current, reason, None, metric)
    replicas = desired if stabilize is None else stabilize(current, desired)
    if replicas != desired:
        direction = "scale-down" if replicas > desired else "scale-up"
        reason = f"held by the {direction} stabilization window"
    if replicas > settings.max_replicas:
        replicas, reason = settings.max_replicas, "clamped to max_replicas"
    elif replicas < settings.min_replicas:
        replicas, reason = settings.min_replicas, "clamped to min_replicas"
    return Recommendation(replicas, reason, desired, metric)


def desired_replicas(
    current_replicas: int, metrics: Sequence[Metric], settings: HpaSettings
) -> Recommendation:
    """One reconciliation without stabilization: the metrics' answer, clamped."""
    return _recommend(current_replicas, metrics, settings, None)


class Autoscaler:
    """One service's recommendations over time, stabilized by their recent history."""

    def __init__(self, settings: HpaSettings) -> None:
        self.settings = settings
        self._history: deque[tuple[float, int]] = deque()
        self._last_now: float | None = None
        self._seeded = False

    @property
    def history(self) -> tuple[tuple[float, int], ...]:
        """(time, unstabilized recommendation), oldest first."""
        return tuple(self._history)

    def recommend(
        self, current_replicas: int, metrics: Sequence[Metric], now: float
    ) -> Recommendation:
        """Stabilized recommendation at ``now``; ``now`` must not go backwards."""
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError("now must be a finite number")
        if self._last_now is not None and now < self._last_now:
            raise ValueError("now must not go backwards")
        self._last_now = now
        return _recommend(
            current_replicas,
            metrics,
            self.settings,
            lambda cur, des: self._stabilize(cur, des, now),
        )

    def _stabilize(self, current: int, desired: int, now: float) -> int:
        if not self._seeded:
            self._seeded = True
            if self.settings.scale_down_window_seconds > 0:
                # Kubernetes seeds the window with the current count, so that a controller
                # that has just (re)started, a new leader here, does not scale down at once.
                self._history.append((now, current))
        down_cutoff = now - self.settings.scale_down_window_seconds
        up_cutoff = now - self.settings.scale_up_window_seconds
        while self._history and self._history[0][0] <= min(down_cutoff, up_cutoff):
            self._history.popleft()
        # Strictly after the cutoff, as Kubernetes does: a window of 0 sees only `desired`.
        up = min([r for t, r in self._history if t > up_cutoff], default=desired)
        down = max([r for t, r in self._history if t > down_cutoff], default=desired)
        self._history.append((now, desired))
        return min(max(current, min(up, desired)), max(down, desired))
