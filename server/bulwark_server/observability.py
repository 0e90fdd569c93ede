"""Logs, traces and metrics.

* Structured logs: one JSON object per line with the active trace and span
  ids, so a log line can be joined to its RPC's span.
* OpenTelemetry providers; ``transport.telemetry`` records one span and one
  duration sample per RPC with them.
* Exporters come from settings: none (default), console, or OTLP over gRPC.
  With none, nothing would receive a span's timings or a metric: spans are
  sampled out (they still carry ids, so logs carry trace ids) and metrics are
  not recorded (``Telemetry.metrics_read``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from bulwark_server.config import Settings

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with trace ids and any ``extra=`` fields."""

    def __init__(self, replica_id: str = "") -> None:
        super().__init__()
        self.replica_id = replica_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.replica_id:
            out["replica"] = self.replica_id
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = f"{ctx.trace_id:032x}"
            out["span_id"] = f"{ctx.span_id:016x}"
        for key, value in record.__dict__.items():
            # setdefault: an extra named like a core field must not overwrite it.
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(settings: Settings) -> None:
    """Send all logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(settings.replica_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # grpc and etcd client internals are chatty at INFO; their failures reach us as errors.
    for noisy in ("etcd3aio", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass
class Telemetry:
    """The tracer and meter providers of one replica; ``shutdown`` flushes exporters.

    ``metrics_read``: whether the meter provider has a reader. Readers are fixed
    when it is made; without one, a recorded measurement goes nowhere, and
    recording one costs more than the rest of a cheap RPC. ``spans_read``: whether
    spans are exported (and so worth recording); without an exporter a span's only
    use is its ids, which logs carry.
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    metrics_read: bool = True
    spans_read: bool = True

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(settings: Settings) -> Telemetry:
    """Build providers with the exporters chosen by ``otel_exporter``."""
    resource = Resource.create(
        {"service.name": "bulwark", "service.instance.id": settings.replica_id}
    )
    # Without an exporter no span is ever read: sampled out, a span still has ids (for
    # the logs) but costs a fifth of a recorded one. With one, the SDK's default sampler.
    exporting = settings.otel_exporter in ("console", "otlp")
    tracer_provider = TracerProvider(resource=resource, sampler=None if exporting else ALWAYS_OFF)
    readers: list[MetricReader] = []
    if settings.otel_exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint or None
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint)))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        tracer_provider, meter_provider, metrics_read=bool(readers), spans_read=exporting
    )
