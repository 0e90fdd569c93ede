"""One span, one duration sample and one count for every RPC, by method and final status."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from bulwark_server.observability import Telemetry
from bulwark_server.transport.handlers import rewrap, status_of

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """A span, a duration sample and a count for every RPC, by method and status code.

    Metrics are not recorded when no reader takes them (``Telemetry.metrics_read``),
    and spans carry their ids only when none is exported (``Telemetry.spans_read``):
    there is nobody to see the rest.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self._tracer = telemetry.tracer_provider.get_tracer("bulwark.server")
        meter = telemetry.meter_provider.get_meter("bulwark.server")
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )
        self._count = meter.create_counter(
            "rpc.server.requests", unit="{request}", description="Inbound RPCs by final status"
        )
        self._metered = telemetry.metrics_read
        self._traced = telemetry.spans_read
        self._ids = telemetry.tracer_provider.id_generator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return self.wrap(handler_call_details.method, await continuation(handler_call_details))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """``handler`` observed (None stays None): what ``intercept_service`` returns."""
        if handler is None:
            return handler
        return rewrap(
            handler,
            lambda behavior: self._unary(method, behavior),
            lambda behavior: self._streaming(method, behavior),
        )

    def _attributes(self, method: str) -> dict[str, str]:
        service, _, name = method.lstrip("/").rpartition("/")
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def _labels(self, method: str) -> dict[grpc.StatusCode, dict[str, str]]:
        """The metric labels of each final status of ``method``, made once (the SDK
        copies what it keeps)."""
        attrs = self._attributes(method)
        return {code: {**attrs, "rpc.grpc.status_code": code.name} for code in grpc.StatusCode}

    def _record(self, labels: dict[str, str], started: float) -> None:
        if self._metered:
            self._duration.record((time.perf_counter() - started) * 1000.0, labels)
            self._count.add(1, labels)

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if not self._traced:
            return self._unary_untraced(method, behavior)
        attrs = self._attributes(method)
        labels = self._labels(method)
        start_span, clock = self._tracer.start_span, time.perf_counter
        duration, count, metered = self._duration.record, self._count.add, self._metered
        attach, detach, current = context_api.attach, context_api.detach, trace.set_span_in_context
        server = trace.SpanKind.SERVER

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # What ``start_as_current_span`` does (the span current while the call runs;
            # an exception recorded on it with the status ERROR; ended on the way out),
            # without its two generator context managers.
            started = clock()
            code = _UNKNOWN
            span = start_span(method, kind=server, attributes=attrs)
            token = attach(current(span))
            try:
                try:
                    response = await behavior(request, context)
                    code = status_of(context)
                    return response
                except BaseException:
                    code = status_of(context)
                    if code is _OK:
                        code = _UNKNOWN
                    raise
                finally:
                    span.set_attribute("rpc.grpc.status_code", code.name)
                    if metered:
                        duration((clock() - started) * 1000.0, labels[code])
                        count(1, labels[code])
                    detach(token)
            except Exception as exc:
                if span.is_recording():
                    span.record_exception(exc)
                    span.set_status(
                        Status(StatusCode.ERROR, description=f"{type(exc).__name__}: {exc}")
                    )
                raise
            finally:
                span.end()

        return wrapper

    def _unary_untraced(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """``_unary`` when no span is read (``Telemetry.spans_read``): the span current
        while the call runs has ids only, for the logs, made as the SDK makes a span
        it samples out (the trace of a current span, if any, else a new one), without
        the SDK's sampling; what is set on such a span goes nowhere, and is not set."""
        labels = self._labels(method)
        clock, metered = time.perf_counter, self._metered
        duration, count = self._duration.record, self._count.add
        attach, detach, current = context_api.attach, context_api.detach, trace.set_span_in_context
        ids = self._ids

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = clock() if metered else 0.0
            parent = trace.get_current_span().get_span_context()
            trace_id = parent.trace_id if parent.is_valid else ids.generate_trace_id()
            span = trace.NonRecordingSpan(
                trace.SpanContext(trace_id, ids.generate_span_id(), is_remote=False)
            )
            token = attach(current(span))
            code = _UNKNOWN
            try:
                response = await behavior(request, context)
                code = status_of(context)
                return response
            except BaseException:
                code = status_of(context)
                if code is _OK:
                    code = _UNKNOWN
                raise
            finally:
                if metered:
                    duration((clock() - started) * 1000.0, labels[code])
                    count(1, labels[code])
                detach(token)

        return wrapper

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        attrs = self._attributes(method)
        labels = self._labels(method)

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
                self._record(labels[code], started)

        return wrapper
