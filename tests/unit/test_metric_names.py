"""tests/metric_names.py reads metric and label names as Prometheus would see them."""

from __future__ import annotations

import pytest

from tests.metric_names import (
    exported_labels,
    exported_names,
    grouping_labels,
    metric_names,
    selectors_keeping_instance,
)


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        (
            'sum by (job, le) (rate(a_bucket{job="x", le=~"0.1"}[5m]))',
            {"a_bucket"},
        ),
        ("max(a offset 10m) > bool on (instance) group_left(region) b", {"a", "b"}),
        ("histogram_quantile(0.99, sum without (instance) (rate(x_bucket[1m:15s])))", {"x_bucket"}),
        ('{__name__="up", job="x"} == 1', {"up"}),
        ("count(up == 0) or vector(0)", {"up"}),
        ("1e3 * job:foo:rate5m - Inf + NaN", {"job:foo:rate5m"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ('m{path="/a{b}[c]"} @ end()', {"m"}),
        ("SUM BY (breaker) (a) UNLESS ON (breaker) b", {"a", "b"}),
    ],
)
def test_metric_names_are_read_out_of_promql(promql: str, names: set[str]) -> None:
    assert metric_names(promql) == names


@pytest.mark.parametrize(
    ("promql", "keeping"),
    [
        ("max by (breaker) (s)", set()),
        ("max(s)", set()),
        ("max(s) by (breaker)", set()),
        ("sum without (instance, job) (s)", set()),
        ("s", {"s"}),
        ("topk(3, s)", {"s"}),
        ("max by (instance, breaker) (s)", {"s"}),
        ("max(s) by (instance)", {"s"}),
        ("sum without (job) (s)", {"s"}),
        ('max(s{instance=~"a|b"})', {"s"}),
        ("max by (breaker) (max by (instance, breaker) (s))", set()),
        ("max by (service) (s) / count(t)", set()),
    ],
)
def test_series_keeping_instance_are_found(promql: str, keeping: set[str]) -> None:
    assert selectors_keeping_instance(promql, {"s", "t"}) == keeping


def test_grouping_labels_are_those_of_every_by_clause() -> None:
    promql = "max by (breaker) (sum BY (breaker, state) (s)) / on (job) count(t) by (x)"
    assert grouping_labels(promql) == {"breaker", "state", "x"}


SCRAPE = """\
# HELP rpcs_total Calls.
# TYPE rpcs_total counter
# HELP refusals Refusals (OpenMetrics-style family name, no sample yet).
# TYPE refusals counter
# HELP seconds Durations.
# TYPE seconds histogram
seconds_bucket{method="Check",le="0.1"} 1.0
seconds_bucket{method="Check",le="+Inf"} 1.0
seconds_sum{method="Check"} 0.01
seconds_count{method="Check"} 1.0
# HELP lag Lag.
# TYPE lag gauge
lag 0.5
"""


def test_scrapes_give_series_names_with_or_without_samples() -> None:
    assert exported_names(SCRAPE) == {
        "rpcs_total",
        "refusals_total",
        "seconds_bucket",
        "seconds_sum",
        "seconds_count",
        "lag",
    }


def test_scrapes_give_the_label_names_of_series_with_samples() -> None:
    assert exported_labels(SCRAPE) == {
        "seconds_bucket": {"method", "le"},
        "seconds_sum": {"method"},
        "seconds_count": {"method"},
        "lag": set(),
    }
