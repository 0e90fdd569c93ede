"""Unit tests for the JSON log formatter in bulwark_server.observability."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from bulwark_server.observability import JsonFormatter


def make_record(
    msg: str = "hello %s", args: tuple = ("world",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        name="bulwark.test",
        level=logging.WARNING,
        pathname=__file__,
        lineno=10,
        msg=msg,
        args=args,
        exc_info=None,
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def format_json(record: logging.LogRecord, replica: str = "r-1") -> dict:
    line = JsonFormatter(replica).format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert isinstance(out, dict)
    return out


def test_core_fields() -> None:
    record = make_record()
    out = format_json(record)
    assert out["level"] == "WARNING"
    assert out["logger"] == "bulwark.test"
    assert out["msg"] == "hello world"
    assert out["replica"] == "r-1"
    assert out["ts"] == round(record.created, 6)
    assert isinstance(out["ts"], float)


def test_standard_record_attributes_are_not_copied() -> None:
    out = format_json(make_record())
    for noise in ("args", "pathname", "lineno", "levelno", "thread", "process", "msecs"):
        assert noise not in out


def test_replica_omitted_when_not_configured() -> None:
    out = format_json(make_record(), replica="")
    assert "replica" not in out


def test_extra_fields_are_included() -> None:
    out = format_json(make_record(event="leader.elected", term=7))
    assert out["event"] == "leader.elected"
    assert out["term"] == 7


def test_extra_through_a_logger(caplog) -> None:
    logger = logging.getLogger("bulwark.test.extra")
    with caplog.at_level(logging.INFO, logger="bulwark.test.extra"):
        logger.info("stepped down", extra={"event": "leader.stepped_down", "term": 3})
    (record,) = caplog.records
    out = format_json(record)
    assert out["msg"] == "stepped down"
    assert out["level"] == "INFO"
    assert out["event"] == "leader.stepped_down"
    assert out["term"] == 3


def test_private_attributes_are_skipped_and_odd_values_stringified() -> None:
    out = format_json(make_record(_hidden="x", where=Path("/var/bulwark"), size=2))
    assert "_hidden" not in out
    assert out["where"] == "/var/bulwark"
    assert out["size"] == 2


def test_exception_is_included() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = make_record(msg="failed", args=())
        record.exc_info = sys.exc_info()
    out = format_json(record)
    assert out["msg"] == "failed"
    assert "RuntimeError: boom" in out["exc"]


def test_trace_ids_present_inside_a_span() -> None:
    tracer = TracerProvider().get_tracer("bulwark.test")
    with tracer.start_as_current_span("op") as span:
        out = format_json(make_record())
        ctx = span.get_span_context()
    assert out["trace_id"] == f"{ctx.trace_id:032x}"
    assert out["span_id"] == f"{ctx.span_id:016x}"
    assert len(out["trace_id"]) == 32
    assert len(out["span_id"]) == 16
    assert int(out["trace_id"], 16) != 0


def test_nested_span_reports_inner_span_id() -> None:
    tracer = TracerProvider().get_tracer("bulwark.test")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner") as inner:
            out = format_json(make_record())
    assert out["trace_id"] == f"{outer.get_span_context().trace_id:032x}"
    assert out["span_id"] == f"{inner.get_span_context().span_id:016x}"
    assert out["span_id"] != f"{outer.get_span_context().span_id:016x}"


def test_trace_ids_absent_without_a_span() -> None:
    out = format_json(make_record())
    assert "trace_id" not in out
    assert "span_id" not in out
    # ...and absent again once a span has ended.
    tracer = TracerProvider().get_tracer("bulwark.test")
    with tracer.start_as_current_span("op"):
        pass
    out = format_json(make_record())
    assert "trace_id" not in out
    assert "span_id" not in out
