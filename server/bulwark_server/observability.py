"""Logs, traces and metrics.

* Structured logs: one JSON object per line with the active trace and span
  ids, so a log line can be joined to its RPC's span.
* OpenTelemetry providers; ``transport.telemetry`` records one span and one
  duration sample per RPC with them.
* Exporters come from settings: none (default), console, or OTLP over gRPC.
  With none, nothing would receive a span's timings or a metric: spans are
  sampled out (they still carry ids, so logs carry trace ids) and metrics are
  not recorded (``Telemetry.metrics_read``).
* Exports run on the SDK's own threads: a collector that is slow or down delays
  no RPC. Spans beyond the batch queue are dropped; a stopping replica waits at
  most ``FLUSH_TIMEOUT_S`` for its last exports.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
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

log = logging.getLogger(__name__)

# How long a stopping replica waits for its last spans and metrics to be exported. A
# collector that answers takes milliseconds; one that is down would be retried until
# the exporter's timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s), for traces and then again
# for metrics, holding up the stop longer than a supervisor waits before SIGKILL.
FLUSH_TIMEOUT_S = 3.0

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
    use is its ids, which logs carry. ``exporters``: the span and metric exporters,
    which ``shutdown`` stops when they outlast its timeout.
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    metrics_read: bool = True
    spans_read: bool = True
    exporters: tuple[Any, ...] = ()

    def shutdown(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Export what is pending and stop the providers, for at most about ``timeout``
        seconds: then the exporters are shut down, which ends their retries, and what
        they had not exported is lost."""
        # The SDK's shutdown has no overall bound: it runs on a thread of its own, and
        # stopping the exporters is what makes it return.
        flushing = threading.Thread(target=self._shutdown, name="telemetry-shutdown", daemon=True)
        flushing.start()
        flushing.join(timeout)
        if flushing.is_alive():
            log.warning(
                "telemetry not exported within %.1fs of stopping; the rest is dropped",
                timeout,
                extra={"event": "telemetry.dropped"},
            )
            for exporter in self.exporters:
                exporter.shutdown()
            flushing.join(timeout)

    def _shutdown(self) -> None:
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
    exporters: tuple[Any, ...] = ()
    if settings.otel_exporter == "console":
        exporters = (ConsoleSpanExporter(), ConsoleMetricExporter())
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Empty: the exporters read OTEL_EXPORTER_OTLP_ENDPOINT and its defaults.
        endpoint = settings.otel_endpoint or None
        exporters = (OTLPSpanExporter(endpoint=endpoint), OTLPMetricExporter(endpoint=endpoint))
        log.info(
            "exporting traces and metrics over OTLP/gRPC to %s",
            endpoint or "the OTEL_EXPORTER_OTLP_ENDPOINT default",
            extra={"event": "telemetry.otlp", "endpoint": endpoint or ""},
        )
    readers: list[MetricReader] = []
    if exporters:
        span_exporter, metric_exporter = exporters
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers.append(PeriodicExportingMetricReader(metric_exporter))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        tracer_provider,
        meter_provider,
        metrics_read=bool(readers),
        spans_read=exporting,
        exporters=exporters,
    )
