"""Unit tests for bulwark_server.remediation.anomaly: EWMA baselines judged on synthetic series.

Every series is seeded, so each run sees the same numbers; the bounds are the ones the
module docstring promises, with a margin. ``pytest -s`` prints one summary line per scenario.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest

from bulwark_server.remediation.anomaly import (
    AnomalyDetector,
    AnomalyDetectors,
    AnomalySettings,
    AnomalyVerdict,
    Direction,
)

MEAN, SIGMA = 100.0, 10.0
WINDOWS = 5_000
UP = AnomalySettings(direction="up")


@dataclass(frozen=True)
class Outcome:
    injected: int
    detected: int
    delays: list[int]  # windows from onset to the first anomalous verdict, per detected event
    false_positives: int  # anomalous verdicts outside every event
    windows: int

    @property
    def mean_delay(self) -> float:
        return sum(self.delays) / len(self.delays) if self.delays else math.nan

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.windows


def evaluate(verdicts: Sequence[AnomalyVerdict], events: Sequence[tuple[int, int]]) -> Outcome:
    """Score verdicts against injected events, each [onset, end) in windows."""
    inside = set[int]()
    delays = []
    for onset, end in events:
        inside.update(range(onset, end))
        hits = [i for i in range(onset, end) if verdicts[i].anomalous]
        if hits:
            delays.append(hits[0] - onset)
    false_positives = sum(1 for i, v in enumerate(verdicts) if v.anomalous and i not in inside)
    return Outcome(len(events), len(delays), delays, false_positives, len(verdicts))


def report(name: str, outcome: Outcome) -> None:
    print(
        f"\n{name}: detected {outcome.detected}/{outcome.injected}, "
        f"mean delay {outcome.mean_delay:.2f} windows, false positives "
        f"{outcome.false_positives}/{outcome.windows} ({outcome.false_positive_rate:.3%})"
    )


def run(detector: AnomalyDetector, values: Iterable[float]) -> list[AnomalyVerdict]:
    return [detector.observe(v) for v in values]


def noise(seed: int, n: int = WINDOWS, mean: float = MEAN, sigma: float = SIGMA) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sigma) for _ in range(n)]


@pytest.mark.parametrize("direction", ["both", "up"])
def test_stationary_noise_false_positive_rate_is_below_a_tenth_of_a_percent(
    direction: Direction,
) -> None:
    verdicts = run(AnomalyDetector(AnomalySettings(direction=direction)), noise(1))
    outcome = evaluate(verdicts, [])
    report(f"stationary noise ({direction})", outcome)
    assert outcome.false_positive_rate < 0.001
    assert sum(v.warming_up for v in verdicts) == 30


def _spiked(seed: int, size: float, length: int = 3) -> tuple[list[float], list[tuple[int, int]]]:
    values = noise(seed)
    events = [(onset, onset + length) for onset in range(300, WINDOWS, 240)]
    for onset, end in events:
        for i in range(onset, end):
            values[i] += size * SIGMA
    return values, events


def test_eight_sigma_spikes_are_each_caught_one_window_after_onset() -> None:
    values, events = _spiked(2, 8.0)
    detector = AnomalyDetector(UP)
    outcome = evaluate(run(detector, values), events)
    report("8-sigma spikes, 3 windows", outcome)
    assert outcome.injected == 20
    assert outcome.detected == outcome.injected
    # consecutive=2: the second spike window is the first that can be reported.
    assert outcome.delays == [1] * 20
    assert outcome.false_positives == 0
    # The spikes stayed out of the baseline.
    assert abs(detector.mean - MEAN) < 0.5 * SIGMA
    assert detector.deviation < 1.3 * SIGMA


def test_six_sigma_spikes_are_caught_within_the_spike() -> None:
    # ~1 % of 6-sigma spikes are missed (a window drawn just under 3.5 sigma): allow one miss.
    values, events = _spiked(3, 6.0)
    outcome = evaluate(run(AnomalyDetector(UP), values), events)
    report("6-sigma spikes, 3 windows", outcome)
    assert outcome.detected >= outcome.injected - 1
    assert max(outcome.delays) <= 2
    assert outcome.mean_delay <= 1.2
    assert outcome.false_positives == 0


def test_a_doubled_level_is_reported_promptly_then_learned_as_the_new_normal() -> None:
    onset = 1_000
    values = noise(4, onset) + noise(5, 2 * WINDOWS // 5, 2 * MEAN, 2 * SIGMA)
    detector = AnomalyDetector(UP)
    verdicts = run(detector, values)
    outcome = evaluate(verdicts, [(onset, len(values))])
    flagged = [i - onset for i, v in enumerate(verdicts) if v.anomalous]
    report("level shift x2", outcome)
    print(f"  reported on {len(flagged)} windows, last {flagged[-1]} windows after onset")
    assert outcome.detected == 1 and outcome.delays[0] <= 2
    assert outcome.false_positives == 0
    # Re-learned at the 30th window on the new side: at most 30 - 2 verdicts, none after.
    settings = detector.settings
    assert len(flagged) <= settings.relearn_windows - settings.consecutive
    assert flagged[-1] < settings.relearn_windows
    relearned = [i - onset for i, v in enumerate(verdicts) if v.reason.startswith("re-learned")]
    assert relearned == [settings.relearn_windows - 1]
    assert abs(detector.mean - 2 * MEAN) < 2 * SIGMA
    assert 1.4 * SIGMA < detector.deviation < 2.6 * SIGMA


def test_a_slow_drift_within_the_noise_is_followed_not_flagged() -> None:
    rate = 0.02 * SIGMA  # per window: +100 sigma over the series
    rng = random.Random(6)
    values = [MEAN + rate * i + rng.gauss(0.0, SIGMA) for i in range(WINDOWS)]
    # No relative floor: the growing level must not be what keeps the band wide.
    detector = AnomalyDetector(AnomalySettings(relative_floor=0.0))
    outcome = evaluate(run(detector, values), [])
    report("slow drift 0.02 sigma/window", outcome)
    assert outcome.false_positives == 0
    lag = MEAN + rate * (WINDOWS - 1) - detector.mean
    # Expected lag ~rate / alpha = 0.87 sigma.
    assert 0.0 < lag < 2.0 * SIGMA


def test_one_sided_detection_ignores_drops_but_learns_a_lasting_one() -> None:
    drop = noise(7, 300)
    for i in range(200, 210):
        drop[i] -= 10 * SIGMA
    assert not any(v.anomalous for v in run(AnomalyDetector(UP), drop))
    both = evaluate(run(AnomalyDetector(), drop), [(200, 210)])
    assert both.detected == 1 and both.delays == [1]
    down = evaluate(run(AnomalyDetector(AnomalySettings(direction="down")), drop), [(200, 210)])
    assert down.detected == 1

    halved = noise(8, 200) + noise(9, 200, MEAN / 2)
    detector = AnomalyDetector(UP)
    verdicts = run(detector, halved)
    assert not any(v.anomalous for v in verdicts)
    assert any(v.reason.startswith("re-learned") for v in verdicts[200:230])
    assert abs(detector.mean - MEAN / 2) < SIGMA


def test_warm_up_gives_no_verdict() -> None:
    values = noise(10, 40)
    values[10] = values[11] = values[12] = 1e6
    verdicts = run(AnomalyDetector(AnomalySettings(warmup=20)), values)
    assert all(v.warming_up and not v.anomalous for v in verdicts[:20])
    assert verdicts[19].reason == "warming up: 20 of 20 samples"
    assert not any(v.warming_up for v in verdicts[20:])


def test_a_flat_series_does_not_flag_a_tiny_change_thanks_to_the_floor() -> None:
    flat = [0.02] * 100 + [0.0201] * 5 + [0.05] * 5
    floored = run(AnomalyDetector(AnomalySettings(deviation_floor=0.001, relative_floor=0)), flat)
    assert not any(v.anomalous for v in floored[:105])
    assert floored[100].score == pytest.approx(0.1)
    assert floored[106].anomalous  # a real change still is
    # Without floors the same 0.5 % change would be millions of deviations.
    bare = AnomalySettings(deviation_floor=1e-12, relative_floor=0)
    assert run(AnomalyDetector(bare), flat)[101].anomalous
    # The default relative floor (1 % of the level) also keeps it quiet.
    assert not any(v.anomalous for v in run(AnomalyDetector(), flat)[:105])


def test_min_change_gates_small_absolute_changes() -> None:
    values = noise(11, 100, sigma=0.1) + [MEAN + 1.0] * 5  # +10 sigma, but only +1.0
    assert run(AnomalyDetector(AnomalySettings(relative_floor=0)), values)[101].anomalous
    gated = run(AnomalyDetector(AnomalySettings(relative_floor=0, min_change=2.0)), values)
    assert not any(v.anomalous for v in gated)
    assert gated[101].reason.startswith("change below min_change")


def test_non_finite_values_are_ignored() -> None:
    detector = AnomalyDetector(AnomalySettings(warmup=2))
    for value in (1.0, 2.0, math.nan, math.inf):
        verdict = detector.observe(value)
    assert detector.samples == 2 and detector.mean == 1.5
    assert verdict.reason == "ignored: value is not finite" and not verdict.anomalous


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("half_life_windows", 0.0),
        ("half_life_windows", math.inf),
        ("threshold", -1.0),
        ("deviation_floor", 0.0),
        ("relative_floor", -0.1),
        ("min_change", math.nan),
        ("consecutive", 0),
        ("consecutive", 1.5),
        ("warmup", 1),
        ("relearn_windows", 2),
        ("direction", "sideways"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        AnomalySettings(**{field: value})  # type: ignore[arg-type]


def test_settings_are_immutable_and_alpha_follows_the_half_life() -> None:
    settings = AnomalySettings(half_life_windows=10)
    assert (1 - settings.alpha) ** 10 == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        settings.threshold = 1.0  # type: ignore[misc]


def test_detectors_are_made_per_key_with_per_signal_settings() -> None:
    detectors = AnomalyDetectors(per_signal={"error_rate": UP})
    detectors.observe("checkout", "error_rate", 0.01, now=0.0)
    detectors.observe("checkout", "inflight", 3.0, now=0.0)
    detectors.observe("search", "error_rate", 0.02, now=0.0)
    assert len(detectors) == 3 and ("checkout", "inflight") in detectors
    assert detectors.get("checkout", "error_rate").settings is UP  # type: ignore[union-attr]
    assert detectors.get("checkout", "inflight").settings == AnomalySettings()  # type: ignore[union-attr]
    assert detectors.get("checkout", "latency_p99") is None


def test_detectors_evict_the_least_recently_updated_beyond_max_keys() -> None:
    detectors = AnomalyDetectors(max_keys=3)
    for t, service in enumerate(["a", "b", "c"]):
        detectors.observe(service, "latency", 1.0, now=float(t))
    detectors.observe("a", "latency", 1.0, now=3.0)  # "b" is now the oldest
    detectors.observe("d", "latency", 1.0, now=4.0)
    assert len(detectors) == 3
    assert ("b", "latency") not in detectors
    assert all((s, "latency") in detectors for s in "acd")


def test_detectors_forget_idle_keys_and_start_over() -> None:
    detectors = AnomalyDetectors(idle_after=60.0)
    for t in range(40):
        detectors.observe("a", "latency", 1.0, now=10.0 * t)
    detectors.observe("b", "latency", 1.0, now=420.0)
    assert detectors.forget_idle(now=449.0) == 0
    assert detectors.forget_idle(now=450.5) == 1  # "a" was updated last at 390
    assert ("a", "latency") not in detectors and ("b", "latency") in detectors
    # Observing sweeps too: "b" (last seen at 420) goes, and "c" starts its own baseline.
    assert detectors.observe("c", "latency", 1.0, now=1_000.0).warming_up
    assert len(detectors) == 1
    assert detectors.observe("a", "latency", 1.0, now=1_000.0).warming_up


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_keys": 0}, "max_keys"), ({"idle_after": 0.0}, "idle_after")],
)
def test_detectors_reject_bad_limits(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AnomalyDetectors(**kwargs)  # type: ignore[arg-type]
