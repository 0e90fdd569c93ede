"""``--fail-if`` thresholds: parsed once, checked against the finished run's numbers.

A threshold names the condition that fails the run: ``p99>50ms`` fails when the
99th percentile is above 50 ms, ``rps<100`` when fewer than 100 calls a second were
made, ``error_rate>1%`` when more than 1 % of the calls failed.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# metric -> its kind: latency (seconds), ratio (0-1), or a plain number.
METRICS: dict[str, str] = {
    "p50": "latency",
    "p90": "latency",
    "p95": "latency",
    "p99": "latency",
    "p999": "latency",
    "average": "latency",
    "fastest": "latency",
    "slowest": "latency",
    "rps": "number",
    "error_rate": "ratio",
    "errors": "number",
    "count": "number",
}
ALIASES = {"p99.9": "p999", "avg": "average", "mean": "average", "max": "slowest", "min": "fastest"}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)\s*(?P<unit>[A-Za-zµ%]*)\s*$"
)


class ThresholdError(ValueError):
    """A ``--fail-if`` that cannot be read; the message names the flag and says why."""


@dataclass(frozen=True)
class Threshold:
    """One ``--fail-if``: breached when ``metric op limit`` holds."""

    text: str
    metric: str
    op: str
    limit: float  # seconds for a latency, a fraction for error_rate

    @property
    def kind(self) -> str:
        return METRICS[self.metric]

    def check(self, value: float | None) -> bool:
        """True when breached. A metric the run has no value for (a percentile with no
        successful call) is breached too: nothing shows the condition was met."""
        if value is None or math.isnan(value):
            return True
        return OPERATORS[self.op](value, self.limit)


def parse_threshold(text: str) -> Threshold:
    """``p99>50ms`` and the like; ThresholdError names ``--fail-if`` and the fault."""
    match = _EXPRESSION.match(text)
    if match is None:
        raise ThresholdError(
            f"--fail-if {text!r}: expected METRIC OP VALUE, e.g. 'p99>50ms', "
            "'error_rate>1%' or 'rps<100' (OP one of >, >=, <, <=)"
        )
    name = match["metric"].lower()
    metric = ALIASES.get(name, name)
    if metric not in METRICS:
        raise ThresholdError(
            f"--fail-if {text!r}: unknown metric {match['metric']!r}; one of {', '.join(METRICS)}"
        )
    number = float(match["number"])
    unit = match["unit"]
    kind = METRICS[metric]
    if kind == "latency":
        factor = TIME_UNITS.get(unit) if unit else None
        if factor is None:
            raise ThresholdError(
                f"--fail-if {text!r}: {metric} needs a time unit "
                f"({', '.join(u for u in TIME_UNITS if u != 'µs')}), e.g. '{metric}>50ms'"
            )
        limit = number * factor
    elif kind == "ratio":
        if unit == "%":
            limit = number / 100
        elif not unit and number <= 1:
            limit = number
        else:
            raise ThresholdError(
                f"--fail-if {text!r}: error_rate is a percentage ('1%') or a fraction (0.01)"
            )
    else:
        if unit:
            raise ThresholdError(f"--fail-if {text!r}: {metric} takes a plain number, no unit")
        limit = number
    return Threshold(text=text.strip(), metric=metric, op=match["op"], limit=limit)


@dataclass(frozen=True)
class Verdict:
    """A threshold checked against the run: the value seen and whether it breached."""

    threshold: Threshold
    value: float | None
    breached: bool


def evaluate(
    thresholds: tuple[Threshold, ...], values: Mapping[str, float | None]
) -> list[Verdict]:
    """Each threshold against ``values`` (metric name -> value in the threshold's units)."""
    verdicts = []
    for threshold in thresholds:
        value = values.get(threshold.metric)
        verdicts.append(Verdict(threshold, value, threshold.check(value)))
    return verdicts


def format_value(kind: str, value: float | None) -> str:
    """A metric value as the summary prints it."""
    if value is None or math.isnan(value):
        return "none"
    if kind == "latency":
        return format_seconds(value)
    if kind == "ratio":
        return f"{value * 100:.3g}%"
    return f"{value:.2f}" if value != int(value) else f"{int(value)}"


def format_seconds(seconds: float) -> str:
    """A duration the way people read it: 812 µs, 3.20 ms, 1.50 s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
