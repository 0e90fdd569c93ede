"""Logs, traces and metrics.

* Structured logs: one JSON object per line with the active trace and span
  ids, so a log line can be joined to its RPC's span.
* An OpenTelemetry server interceptor: one span and one duration sample per
  RPC, labelled with the method and the final status code.
* Exporters come from settings: none (default; spans are still created so
  logs carry trace ids), console, or OTLP over gRPC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
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

from bulwark_server.api.handlers import rewrap, status_of
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
    """The tracer and meter providers of one replica; ``shutdown`` flushes exporters."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(settings: Settings) -> Telemetry:
    """Build providers with the exporters chosen by ``otel_exporter``."""
    resource = Resource.create(
        {"service.name": "bulwark", "service.instance.id": settings.replica_id}
    )
    tracer_provider = TracerProvider(resource=resource)
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
    return Telemetry(tracer_provider, meter_provider)


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """A span, a duration sample and a count for every RPC, by method and status code."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._tracer = telemetry.tracer_provider.get_tracer("bulwark.server")
        meter = telemetry.meter_provider.get_meter("bulwark.server")
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )
        self._count = meter.create_counter(
            "rpc.server.requests", unit="{request}", description="Inbound RPCs by final status"
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return rewrap(
            handler,
            lambda behavior: self._unary(method, behavior),
            lambda behavior: self._streaming(method, behavior),
        )

    def _attributes(self, method: str) -> dict[str, str]:
        service, _, name = method.lstrip("/").rpartition("/")
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def _record(self, attrs: dict[str, str], code: grpc.StatusCode, started: float) -> None:
        labels = {**attrs, "rpc.grpc.status_code": code.name}
        self._duration.record((time.perf_counter() - started) * 1000.0, labels)
        self._count.add(1, labels)

    @contextlib.contextmanager
    def _observed(
        self,
        method: str,
        attrs: dict[str, str],
        context: grpc.aio.ServicerContext,
        failure: grpc.StatusCode,
    ) -> Iterator[None]:
        """Span and metrics around one RPC; ``failure`` is the code when none was set."""
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        with self._tracer.start_as_current_span(
            method, kind=trace.SpanKind.SERVER, attributes=attrs
        ) as span:
            try:
                yield
                code = status_of(context)
            except BaseException:
                code = status_of(context)
                if code is grpc.StatusCode.OK:
                    code = failure
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code.name)
                self._record(attrs, code, started)

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        attrs = self._attributes(method)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self._observed(method, attrs, context, grpc.StatusCode.UNKNOWN):
                return await behavior(request, context)

        return wrapper

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        attrs = self._attributes(method)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            # A stream ended by the caller (GeneratorExit) counts as CANCELLED.
            # Not made current: the generator is resumed and closed from other contexts,
            # where detaching a context attached elsewhere fails.
            span = self._tracer.start_span(method, kind=trace.SpanKind.SERVER, attributes=attrs)
            started = time.perf_counter()
            code = grpc.StatusCode.CANCELLED
            try:
                async for response in behavior(request, context):
                    yield response
                code = status_of(context)
            except BaseException:
                code = status_of(context)
                if code is grpc.StatusCode.OK:
                    code = grpc.StatusCode.CANCELLED
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code.name)
                span.end()
                self._record(attrs, code, started)

        return wrapper
