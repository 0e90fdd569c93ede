"""``bulwark loadtest``'s runner on a simulated clock (coordinated omission), the signal
reports, and the report's formats against the pinned JSON schema."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jsonschema
import pytest

from bulwark._signals import bucket_of as client_bucket_of
from bulwark_server.cli import build_parser
from bulwark_server.cli.loadtest.options import from_args
from bulwark_server.cli.loadtest.report import Report, format_csv, format_summary, to_json
from bulwark_server.cli.loadtest.runner import Plan, Runner, start_time
from bulwark_server.cli.loadtest.schedule import Schedule
from bulwark_server.cli.loadtest.session import plan_of
from bulwark_server.cli.loadtest.signals import REPORTER, SignalReporter, bucket_of
from bulwark_server.cli.loadtest.stats import CallLog, summarize
from bulwark_server.cli.loadtest.thresholds import evaluate, parse_threshold

SCHEMA = json.loads((Path(__file__).parents[1] / "loadtest_report.schema.json").read_text())


class SimulatedTime:
    """A clock that moves only when the runner sleeps or a call is served."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def served_in(time: SimulatedTime, service: list[float]) -> Any:
    """An invoke whose call ``n`` takes ``service[n]`` simulated seconds, all OK."""

    async def invoke(number: int, worker: str) -> tuple[int, str | None]:
        time.now += service[number]
        await asyncio.sleep(0)
        return 0, None

    return invoke


async def test_a_stall_counts_for_every_call_due_during_it_in_rate_mode() -> None:
    """10 calls/s, one worker, the first call takes 1 s: the four calls due during it
    are sent late, and each one's latency runs from when it was due."""
    time = SimulatedTime()
    plan = Plan(concurrency=1, total=5, schedule=Schedule("const", 10), early=0.0)
    runner = Runner(
        plan, served_in(time, [1.0, 0.01, 0.01, 0.01, 0.01]), clock=time.clock, sleep=time.sleep
    )
    await runner.run()
    assert list(runner.log.starts) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # sent at 1.00, 1.01, 1.02, 1.03; answered 10 ms later each
    assert list(runner.log.latencies) == pytest.approx([1.0, 0.91, 0.82, 0.73, 0.64])
    assert (runner.end_reason, runner.unsent) == ("normal", 0)
    assert runner.elapsed == pytest.approx(1.04)


async def test_a_closed_loop_times_each_call_from_its_send() -> None:
    time = SimulatedTime()
    runner = Runner(
        Plan(concurrency=1, total=5),
        served_in(time, [1.0, 0.01, 0.01, 0.01, 0.01]),
        clock=time.clock,
        sleep=time.sleep,
    )
    await runner.run()
    assert list(runner.log.latencies) == pytest.approx([1.0, 0.01, 0.01, 0.01, 0.01])
    assert list(runner.log.starts) == pytest.approx([0.0, 1.0, 1.01, 1.02, 1.03])


async def test_a_call_sent_early_counts_from_its_send() -> None:
    """The worker wakes ``early`` before the due time; a call that went early is not
    credited the time before it was sent."""
    time = SimulatedTime()
    plan = Plan(concurrency=1, total=3, schedule=Schedule("const", 10), early=0.001)
    runner = Runner(plan, served_in(time, [0.0005] * 3), clock=time.clock, sleep=time.sleep)
    await runner.run()
    assert list(runner.log.latencies) == pytest.approx([0.0005] * 3)
    assert list(runner.log.starts) == pytest.approx([0.0, 0.099, 0.199])
    assert start_time(sent=2.0, due=1.5) == 1.5 and start_time(sent=1.4, due=1.5) == 1.4
    assert start_time(sent=2.0, due=None) == 2.0


async def test_calls_due_but_never_sent_by_the_end_are_counted_unsent() -> None:
    """10/s for 1 s with one worker whose first call takes 2 s: nine calls fell due
    while it waited and were never sent."""
    time = SimulatedTime()
    plan = Plan(concurrency=1, duration=1.0, schedule=Schedule("const", 10), early=0.0)
    runner = Runner(plan, served_in(time, [2.0] + [0.01] * 20), clock=time.clock, sleep=time.sleep)
    await runner.run()
    assert len(runner.log) == 1
    assert (runner.unsent, runner.end_reason) == (9, "timeout")


async def test_worker_processes_take_interleaved_call_numbers() -> None:
    time = SimulatedTime()
    seen: list[int] = []

    async def invoke(number: int, worker: str) -> tuple[int, str | None]:
        seen.append(number)
        time.now += 0.01
        await asyncio.sleep(0)
        return 0, None

    plan = Plan(concurrency=1, total=7, offset=1, stride=3)
    await Runner(plan, invoke, clock=time.clock, sleep=time.sleep).run()
    assert seen == [1, 4]


def test_plans_split_concurrency_and_worker_ids_across_processes() -> None:
    args = build_parser().parse_args(
        ["loadtest", "127.0.0.1:1", "--call", "a.B/C", "-n", "10", "-c", "5", "--workers", "2"]
    )
    options = from_args(args)
    first, second = plan_of(options, 0, 2), plan_of(options, 1, 2)
    assert (first.concurrency, first.first_worker) == (3, 0)
    assert (second.concurrency, second.first_worker) == (2, 3)
    assert (second.offset, second.stride, second.total) == (1, 2, 10)


# --------------------------------------------------------------------------- signals


def test_latency_buckets_match_the_client_library() -> None:
    for seconds in (0.0, 1e-7, 0.0004, 0.001, 0.0123, 0.5, 3.0, 1e6, float("inf")):
        assert bucket_of(seconds) == client_bucket_of(seconds)


class FlakyStub:
    """ReportSignals that fails the first time, then records what it is sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.failures = 1

    async def ReportSignals(self, request: Any, **call: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        self.sent.append(request)
        return None


async def test_a_failed_signal_report_is_sent_with_the_next() -> None:
    log = CallLog()
    stub = FlakyStub()
    warnings: list[str] = []

    class Err:
        def write(self, text: str) -> None:
            warnings.append(text)

        def flush(self) -> None:
            pass

    reporter = SignalReporter(stub, "checkout", log, err=Err())  # type: ignore[arg-type]
    log.add(0.0, 0.001, 0, None)
    log.add(0.0, 0.001, 14, "UNAVAILABLE: x")
    await reporter.flush()  # fails: kept
    assert not stub.sent and any("ReportSignals failed" in w for w in warnings)
    log.add(0.0, 0.002, 0, None)
    await reporter.flush()
    (request,) = stub.sent
    assert request.reporter == REPORTER
    (report,) = request.reports
    assert (report.service, report.counts.calls, report.counts.errors) == ("checkout", 3, 1)
    assert report.counts.latency.offset == bucket_of(0.001)
    assert sum(report.counts.latency.counts) == 3
    await reporter.flush()  # nothing new: nothing sent
    assert len(stub.sent) == 1 and reporter.sent_calls == 3


# --------------------------------------------------------------------------- reports


def _report(log: CallLog, thresholds: tuple[str, ...] = (), schedule: str | None = None) -> Report:
    args = build_parser().parse_args(
        ["loadtest", "127.0.0.1:1", "--call", "a.B/C", "-n", "10", "-m", "authorization=secret"]
    )
    summary = summarize(log, 2.0)
    verdicts = evaluate(tuple(map(parse_threshold, thresholds)), summary.metric_values())
    return Report(
        summary=summary,
        verdicts=verdicts,
        options=from_args(args).shown,
        started=datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC),
        end_reason="normal",
        unsent=0,
        schedule=schedule,
        log=log,
    )


def test_the_json_report_follows_ghz_and_the_pinned_schema() -> None:
    log = CallLog()
    for i in range(1, 201):
        log.add(i / 100, i / 10_000, 0, None)
    log.add(2.0, 0.003, 14, "UNAVAILABLE: down")
    report = _report(log, ("p99>10ms", "rps<1000"), schedule="100/s")
    document = to_json(report)
    jsonschema.validate(document, SCHEMA)
    assert document["date"] == "2026-12-03T12:00:00Z"
    assert (document["count"], document["errors"], document["total"]) == (201, 1, 2_000_000_000)
    assert document["fastest"] == 100_000 and document["slowest"] == 20_000_000
    assert document["statusCodeDistribution"] == {"OK": 200, "UNAVAILABLE": 1}
    assert document["errorDistribution"] == {"UNAVAILABLE: down": 1}
    assert {"percentage": 99, "latency": 19_800_000} in document["latencyDistribution"]
    assert document["latencyFrom"] == "schedule"
    assert [t["breached"] for t in document["thresholds"]] == [True, True]
    assert document["thresholds"][0]["limit"] == 10_000_000  # nanoseconds, like latencies
    assert document["options"]["metadata"] == {"authorization": "<redacted>"}
    assert len(document["histogram"]) == 11


def test_a_report_without_a_successful_call_still_fits_the_schema() -> None:
    log = CallLog()
    log.add(0.0, 0.001, 5, "NOT_FOUND: no such breaker")
    document = to_json(_report(log, ("p99>10ms",)))
    jsonschema.validate(document, SCHEMA)
    assert document["fastest"] is None and document["latencyDistribution"] == []
    assert document["thresholds"][0]["value"] is None and document["thresholds"][0]["breached"]
    with pytest.raises(jsonschema.ValidationError):  # the schema does pin the fields
        jsonschema.validate({**document, "count": "1"}, SCHEMA)


def test_the_summary_and_csv_say_what_happened() -> None:
    log = CallLog()
    log.add(0.5, 0.002, 0, None)
    log.add(0.75, 0.004, 8, "RESOURCE_EXHAUSTED: slow, down")
    text = format_summary(_report(log, ("error_rate>1%", "p50>1s")))
    assert "Count:        2" in text and "[RESOURCE_EXHAUSTED]\t1 responses" in text
    assert "error_rate>1%            BREACHED" in text and "p50>1s                   ok" in text
    rows = format_csv(log, datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)).splitlines()
    assert rows[0] == "timestamp,latency_ms,status,error"
    assert rows[1] == "2026-12-03T00:00:00.500000Z,2.000,OK,"
    assert (
        rows[2]
        == '2026-12-03T00:00:00.750000Z,4.000,RESOURCE_EXHAUSTED,"RESOURCE_EXHAUSTED: slow, down"'
    )
