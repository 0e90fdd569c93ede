"""``bulwark loadtest``'s pure parts: templates, schedules, thresholds, statistics."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest

from bulwark_server.cli.loadtest.options import parse_duration
from bulwark_server.cli.loadtest.schedule import Schedule, ScheduleError
from bulwark_server.cli.loadtest.stats import (
    CallLog,
    histogram,
    percentile,
    summarize,
)
from bulwark_server.cli.loadtest.template import Call, MethodNames, Template, TemplateError
from bulwark_server.cli.loadtest.thresholds import ThresholdError, evaluate, parse_threshold

# --------------------------------------------------------------------------- templates


def test_a_template_without_actions_is_static_and_renders_itself() -> None:
    template = Template('{"name": "payments"}')
    assert template.static
    assert template.render(Call(7, "w1")) == '{"name": "payments"}'


def test_request_number_worker_and_names_render_per_call() -> None:
    names = MethodNames("bulwark.v1.X.Y", "Y", "X", "YRequest", "YResponse")
    template = Template(
        '{"n": {{.RequestNumber}}, "w": "{{ .WorkerID }}", "m": "{{.FullyQualifiedName}}", '
        '"s": "{{.ServiceName}}/{{.MethodName}}", "io": "{{.InputName}}>{{.OutputName}}"}',
        names,
    )
    assert not template.static
    rendered = json.loads(template.render(Call(41, "w3")))
    assert rendered == {
        "n": 41,
        "w": "w3",
        "m": "bulwark.v1.X.Y",
        "s": "X/Y",
        "io": "YRequest>YResponse",
    }


def test_uuid_is_one_per_call_and_new_uuid_one_per_use() -> None:
    template = Template("{{.UUID}} {{.UUID}} {{newUUID}} {{newUUID}}")
    first = template.render(Call(0, "w0")).split()
    second = template.render(Call(1, "w0")).split()
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(uuid.match(value) for value in first + second)
    assert first[0] == first[1] and first[0] != second[0]
    assert first[2] != first[3]


def test_random_string_and_int_stay_in_their_range() -> None:
    template = Template("{{randomString 8}}|{{randomInt 1 4}}|{{randomString 0}}")
    seen = set()
    for n in range(300):
        text, number, free = template.render(Call(n, "w0")).split("|")
        assert len(text) == 8 and text.isalnum()
        assert 2 <= len(free) <= 16 and free.isalnum()
        seen.add(int(number))
    assert seen == {1, 2, 3}  # MIN <= n < MAX


def test_timestamps_are_of_the_call() -> None:
    template = Template("{{.Timestamp}} {{.TimestampUnix}} {{.TimestampUnixMilli}}")
    stamp, seconds, millis = template.render(Call(0, "w0")).split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert int(millis) // 1000 == int(seconds)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{{.Nope}}", "unknown template action"),
        ("{{randomInt 5}}", "takes 2 integer"),
        ("{{randomInt a b}}", "takes integers"),
        ("{{randomInt 5 5}}", "MAX must be above MIN"),
        ("{{randomString}}", "takes 1 integer"),
        ("{{.UUID extra}}", "takes no arguments"),
        ('{"a": "{{.RequestNumber"}', "not closed"),
        ("{{}}", "empty action"),
    ],
)
def test_bad_actions_are_refused_at_compile_time(text: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        Template(text)


# --------------------------------------------------------------------------- schedules


def _first(schedule: Schedule, n: int) -> list[float]:
    return list(itertools.islice(schedule.validate().due_times(), n))


def test_a_constant_rate_spaces_calls_evenly() -> None:
    assert _first(Schedule("const", 4), 5) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert Schedule("const", 4).calls_before(2.0) == 8


def test_a_step_schedule_changes_rate_every_step_until_its_end() -> None:
    # 2/s for 1 s, 4/s for 1 s, then 6/s held (the end).
    schedule = Schedule("step", start=2, step=2, end=6, step_duration=1.0).validate()
    due = _first(schedule, 12)
    assert due[:2] == pytest.approx([0, 0.5])
    assert due[2:6] == pytest.approx([1.0, 1.25, 1.5, 1.75])
    assert due[6:9] == pytest.approx([2.0, 2 + 1 / 6, 2 + 2 / 6])
    assert [schedule.rate_at(t) for t in (0.5, 1.5, 2.5, 100)] == [2, 4, 6, 6]
    assert schedule.calls_before(3.0) == 2 + 4 + 6


def test_a_step_schedule_holds_after_its_max_duration() -> None:
    schedule = Schedule("step", start=100, step=100, step_duration=5, max_duration=12)
    schedule.validate()
    assert [schedule.rate_at(t) for t in (0, 5, 10, 12, 60)] == [100, 200, 300, 300, 300]


def test_a_line_schedule_ramps_continuously_then_holds() -> None:
    # 10/s + 10/s per second until 30/s (t = 2 s), then 30/s.
    schedule = Schedule("line", start=10, step=10, end=30).validate()
    assert schedule.rate_at(1.5) == pytest.approx(25)
    # Integral 10t + 5t²: 15 calls by 1 s, 40 by 2 s, then 30 a second.
    assert schedule.calls_before(1.0) == 15
    assert schedule.calls_before(3.0) == 40 + 30
    due = _first(schedule, 41)
    assert due[15] == pytest.approx(1.0)
    assert due[40] == pytest.approx(2.0)
    assert due[1] == pytest.approx((-10 + math.sqrt(100 + 20)) / 10)  # 10t + 5t² = 1


def test_a_falling_line_never_reaches_zero() -> None:
    schedule = Schedule("line", start=100, step=-20, end=20).validate()
    due = _first(schedule, 400)
    assert all(b > a for a, b in itertools.pairwise(due))
    assert schedule.rate_at(10) == 20


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        (Schedule("const", 0), "--rps must be a positive"),
        (Schedule("step", 10, 0, step_duration=1), "--load-step must not be 0"),
        (Schedule("step", 10, 5), "--load-step-duration must be positive"),
        (Schedule("line", 10, -1), "falling schedule needs --load-end"),
        (Schedule("line", 10, 5, end=5), "--load-end must be above --load-start"),
        (Schedule("line", 10, -5, max_duration=4), "falls to 0"),
    ],
)
def test_bad_schedules_name_their_flag(schedule: Schedule, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        schedule.validate()


def test_durations_read_as_go_and_ghz_write_them() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("1m30s") == 90
    assert parse_duration("1.5") == 1.5
    assert parse_duration("100us") == pytest.approx(1e-4)
    for bad in ("", "10 parsecs", "5x", "s", "-1s", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p99>50ms", "p99", ">", 0.05),
        ("p99.9 >= 1s", "p999", ">=", 1.0),
        ("average<250us", "average", "<", 250e-6),
        ("error_rate>1%", "error_rate", ">", 0.01),
        ("error_rate>0.5", "error_rate", ">", 0.5),
        ("rps<100", "rps", "<", 100),
        ("errors>=1", "errors", ">=", 1),
        ("count<=10", "count", "<=", 10),
        ("P50>2ms", "p50", ">", 0.002),
    ],
)
def test_thresholds_parse_into_base_units(text: str, metric: str, op: str, limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99", "expected METRIC OP VALUE"),
        ("p99=>5ms", "expected METRIC OP VALUE"),
        ("p98>5ms", "unknown metric 'p98'"),
        ("p99>50", "needs a time unit"),
        ("p99>50%", "needs a time unit"),
        ("error_rate>5", "percentage"),
        ("rps<100ms", "plain number"),
    ],
)
def test_bad_thresholds_name_the_flag(text: str, says: str) -> None:
    with pytest.raises(ThresholdError, match=says) as caught:
        parse_threshold(text)
    assert "--fail-if" in str(caught.value)


def test_thresholds_breach_on_their_condition_and_on_missing_values() -> None:
    thresholds = tuple(parse_threshold(t) for t in ("p99>50ms", "rps<100", "error_rate>1%"))
    met = evaluate(thresholds, {"p99": 0.049, "rps": 150.0, "error_rate": 0.01})
    assert [v.breached for v in met] == [False, False, False]
    breached = evaluate(thresholds, {"p99": 0.051, "rps": 99.0, "error_rate": 0.02})
    assert [v.breached for v in breached] == [True, True, True]
    # No successful call: no p99 to show the condition was met.
    assert evaluate(thresholds[:1], {"p99": None})[0].breached


# --------------------------------------------------------------------------- statistics


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 1001)]
    assert percentile(values, 50) == 500
    assert percentile(values, 99) == 990
    assert percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000
    assert percentile([3.0], 10) == 3.0
    assert math.isnan(percentile([], 50))


def test_the_histogram_follows_ghz_marks_and_counts() -> None:
    values = [1.0, 1.0, 2.0, 5.5, 11.0]
    buckets = histogram(values, 10)
    assert [b.mark for b in buckets] == pytest.approx([1 + i for i in range(11)])
    assert [b.count for b in buckets] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1]  # (mark-1, mark]
    assert sum(b.frequency for b in buckets) == pytest.approx(1.0)
    assert histogram([]) == []
    assert histogram([2.0, 2.0])[0].count == 2  # all equal: the first mark


def test_a_summary_counts_every_call_and_ranks_the_successful_ones() -> None:
    log = CallLog()
    for i in range(1, 101):
        log.add(i / 100, i / 1000, 0, None)  # 1..100 ms, OK
    for _ in range(3):
        log.add(1.0, 0.5, 14, "UNAVAILABLE: down")
    log.add(1.0, 0.001, 8, "RESOURCE_EXHAUSTED: slow down")
    summary = summarize(log, total=2.0)
    assert (summary.count, summary.errors, summary.rps) == (104, 4, 52.0)
    assert summary.status_codes == {"OK": 100, "RESOURCE_EXHAUSTED": 1, "UNAVAILABLE": 3}
    assert summary.error_messages == {"UNAVAILABLE: down": 3, "RESOURCE_EXHAUSTED: slow down": 1}
    assert summary.fastest == pytest.approx(0.001) and summary.slowest == pytest.approx(0.1)
    assert summary.percentiles[50] == pytest.approx(0.050)
    assert summary.percentiles[99] == pytest.approx(0.099)
    # The average covers every call, as ghz's does.
    assert summary.average == pytest.approx((5.050 + 1.5 + 0.001) / 104)
    assert summary.metric_values()["error_rate"] == pytest.approx(4 / 104)


def test_error_messages_are_bounded_and_logs_merge() -> None:
    log = CallLog()
    for i in range(150):
        log.add(0.0, 0.001, 2, f"UNKNOWN: request {i}")
    assert len(log.messages) <= 102  # "" + 100 kept + the rest together
    other = CallLog()
    other.add(0.0, 0.002, 0, None)
    other.add(0.0, 0.003, 5, "NOT_FOUND: gone")
    log.extend(other)
    summary = summarize(log, 1.0)
    assert summary.count == 152
    # The merged log's new message finds no room either.
    assert summary.error_messages["(other errors)"] == 51
    assert summary.status_codes == {"OK": 1, "UNKNOWN": 150, "NOT_FOUND": 1}
