"""The report of a run: a readable summary, ghz's JSON, or one CSV row per call.

JSON uses ghz's field names and units: durations in integer nanoseconds
(``total``, ``average``, ``fastest``, ``slowest``, ``latencyDistribution[].latency``),
histogram marks in seconds, ``date`` in RFC 3339. Status codes are gRPC's names
(``OK``, ``UNAVAILABLE`` …). Beyond ghz: ``errors``, ``unsent``, ``latencyFrom``
(``send`` or ``schedule``), ``schedule`` and ``thresholds``. The schema is pinned by
``tests/loadtest_report.schema.json``.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bulwark_server.cli.loadtest.stats import CODE_NAMES, CallLog, Summary
from bulwark_server.cli.loadtest.thresholds import METRICS, Verdict, format_seconds, format_value

BAR = "∎"
BAR_WIDTH = 40


@dataclass(frozen=True)
class Report:
    """A finished run: its numbers and what the report needs around them."""

    summary: Summary
    verdicts: Sequence[Verdict]
    options: dict[str, Any]
    started: datetime.datetime  # wall clock at the start of the load
    end_reason: str  # normal (count reached), timeout (duration reached), cancel
    unsent: int
    schedule: str | None  # the schedule described, None for a closed loop
    log: CallLog  # every call, for -O csv

    @property
    def breached(self) -> list[Verdict]:
        return [verdict for verdict in self.verdicts if verdict.breached]


def _rfc3339(moment: datetime.datetime) -> str:
    text = moment.astimezone(datetime.UTC).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def _ns(seconds: float) -> int | None:
    return None if math.isnan(seconds) else round(seconds * 1e9)


def _threshold_json(verdict: Verdict) -> dict[str, Any]:
    threshold = verdict.threshold
    scale = 1e9 if threshold.kind == "latency" else 1.0

    def scaled(value: float | None) -> float | int | None:
        if value is None:
            return None
        return round(value * scale) if threshold.kind == "latency" else value

    return {
        "expression": threshold.text,
        "metric": threshold.metric,
        "operator": threshold.op,
        "limit": scaled(threshold.limit),
        "value": scaled(verdict.value),
        "breached": verdict.breached,
    }


def to_json(report: Report) -> dict[str, Any]:
    """The report as ghz's JSON object (see the module docstring)."""
    s = report.summary
    return {
        "date": _rfc3339(report.started),
        "endReason": report.end_reason,
        "options": report.options,
        "count": s.count,
        "errors": s.errors,
        "unsent": report.unsent,
        "total": _ns(s.total) or 0,
        "average": _ns(s.average),
        "fastest": _ns(s.fastest),
        "slowest": _ns(s.slowest),
        "rps": round(s.rps, 3) if not math.isnan(s.rps) else 0.0,
        "latencyFrom": "send" if report.schedule is None else "schedule",
        "schedule": report.schedule,
        "errorDistribution": s.error_messages,
        "statusCodeDistribution": s.status_codes,
        "latencyDistribution": [
            {"percentage": pct, "latency": _ns(value)}
            for pct, value in s.percentiles.items()
            if not math.isnan(value)
        ],
        "histogram": [
            {"mark": b.mark, "count": b.count, "frequency": b.frequency} for b in s.histogram
        ],
        "thresholds": [_threshold_json(verdict) for verdict in report.verdicts],
    }


def format_json(report: Report, pretty: bool = False) -> str:
    return json.dumps(to_json(report), indent=2 if pretty else None, ensure_ascii=False) + "\n"


def format_summary(report: Report) -> str:
    """ghz's summary layout: totals, the histogram, percentiles, codes, errors, thresholds."""
    s = report.summary
    lines = ["", "Summary:"]
    rows = [
        ("Count", str(s.count)),
        ("Total", format_seconds(s.total)),
        ("Slowest", _duration(s.slowest)),
        ("Fastest", _duration(s.fastest)),
        ("Average", _duration(s.average)),
        ("Requests/sec", f"{s.rps:.2f}" if not math.isnan(s.rps) else "none"),
    ]
    lines += [f"  {label + ':':<14}{value}" for label, value in rows]
    load = f"open loop at {report.schedule}" if report.schedule else "closed loop"
    since = "its due time" if report.schedule else "its send"
    lines.append(f"  {'Load:':<14}{load}; each latency counts from {since}")
    if report.end_reason != "normal":
        why = {"timeout": "the duration ended", "cancel": "interrupted"}[report.end_reason]
        lines.append(f"  {'Ended:':<14}{why}")
    if report.unsent:
        lines.append(
            f"  {'Unsent:':<14}{report.unsent} calls fell due but were never sent "
            "(every worker was waiting): raise -c/--concurrency"
        )
    if s.histogram:
        lines += ["", "Response time histogram:"]
        top = max(bucket.count for bucket in s.histogram) or 1
        for bucket in s.histogram:
            bar = BAR * round(bucket.count / top * BAR_WIDTH)
            lines.append(f"  {bucket.mark * 1e3:10.3f} ms [{bucket.count}]\t|{bar}")
        lines += ["", "Latency distribution:"]
        lines += [f"  {pct:g} % in {format_seconds(value)}" for pct, value in s.percentiles.items()]
    lines += ["", "Status code distribution:"]
    lines += [f"  [{code}]\t{n} responses" for code, n in s.status_codes.items()]
    if s.error_messages:
        lines += ["", "Error distribution:"]
        lines += [f"  [{n}]\t{message}" for message, n in s.error_messages.items()]
    if report.verdicts:
        lines += ["", "Thresholds (--fail-if):"]
        for verdict in report.verdicts:
            kind = METRICS[verdict.threshold.metric]
            state = "BREACHED" if verdict.breached else "ok"
            seen = format_value(kind, verdict.value)
            lines.append(
                f"  {verdict.threshold.text:<24} {state:<9} ({verdict.threshold.metric} {seen})"
            )
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return "none" if math.isnan(seconds) else format_seconds(seconds)


def format_csv(log: CallLog, started: datetime.datetime) -> str:
    """One row per call, in the order they ended: its start (RFC 3339, UTC), latency in
    milliseconds, status code name, error message (empty for OK)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "latency_ms", "status", "error"])
    base = started.astimezone(datetime.UTC)
    for start, latency, code, error in zip(
        log.starts, log.latencies, log.codes, log.errors, strict=True
    ):
        moment = base + datetime.timedelta(seconds=start)
        writer.writerow(
            [
                moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                f"{latency * 1e3:.3f}",
                CODE_NAMES.get(code, str(code)),
                log.messages[error] if error else "",
            ]
        )
    return out.getvalue()
