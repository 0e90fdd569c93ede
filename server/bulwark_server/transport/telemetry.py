"""One span, one duration sample and one count for every RPC, by method and final status.

Spans follow OpenTelemetry's gRPC server conventions: named after the full method,
kind SERVER, with ``rpc.system``, ``rpc.service``, ``rpc.method`` and the final
``rpc.grpc.status_code`` (the code's name), plus ``bulwark.capability``: the
capability the service belongs to (``breakers``, ``ratelimits``, ``transport``,
...). A span's status is ERROR only for the codes that mean the server failed
(``SERVER_ERRORS``); NOT_FOUND, INVALID_ARGUMENT and the like are the caller's,
and leave it unset. Metrics carry the same labels but the capability, which
``rpc.service`` already determines.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from bulwark_server.observability import Telemetry
from bulwark_server.transport.handlers import ended_by, rewrap, status_of

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN

# The codes a server span reports as ERROR (OpenTelemetry's gRPC conventions).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """A span, a duration sample and a count for every RPC, by method and status code.

    Metrics are not recorded when no reader takes them (``Telemetry.metrics_read``),
    and spans carry their ids only when none is exported (``Telemetry.spans_read``):
    there is nobody to see the rest.

    ``capabilities``: the capability of each service, by full service name
    (``transport.server.capabilities``); a service missing from it gets no
    ``bulwark.capability`` attribute.
    """

    def __init__(self, telemetry: Telemetry, capabilities: Mapping[str, str] | None = None) -> None:
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
        self._capabilities = dict(capabilities or {})

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

    def span_attributes(self, method: str) -> dict[str, str]:
        """The attributes a span of ``method`` starts with; made once per method, when
        its handler is wrapped, so no call looks anything up."""
        attrs = self._attributes(method)
        capability = self._capabilities.get(attrs["rpc.service"])
        if capability is not None:
            attrs["bulwark.capability"] = capability
        return attrs

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
        attrs = self.span_attributes(method)
        labels = self._labels(method)
        start_span, clock = self._tracer.start_span, time.perf_counter
        duration, count, metered = self._duration.record, self._count.add, self._metered
        attach, detach, current = context_api.attach, context_api.detach, trace.set_span_in_context
        server, errors = trace.SpanKind.SERVER, SERVER_ERRORS

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # What ``start_as_current_span`` does (the span current while the call runs,
            # ended on the way out), without its two generator context managers; the
            # status comes from the call's final code, not from whether it raised (an
            # abort raises).
            started = clock()
            code = _UNKNOWN
            span = start_span(method, kind=server, attributes=attrs)
            token = attach(current(span))
            try:
                response = await behavior(request, context)
                code = status_of(context)
                return response
            except BaseException as exc:
                code = ended_by(exc, context)
                if code is _UNKNOWN:
                    # An exception grpc answers as UNKNOWN, not an abort: its traceback
                    # is the one clue to what went wrong.
                    span.record_exception(exc)
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code.name)
                if code is not _OK and code in errors:
                    span.set_status(Status(StatusCode.ERROR, context.details() or code.name))
                if metered:
                    duration((clock() - started) * 1000.0, labels[code])
                    count(1, labels[code])
                detach(token)
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
            except BaseException as exc:
                code = ended_by(exc, context)
                raise
            finally:
                if metered:
                    duration((clock() - started) * 1000.0, labels[code])
                    count(1, labels[code])
                detach(token)

        return wrapper

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        attrs = self.span_attributes(method)
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
            except BaseException as exc:
                code = ended_by(exc, context)
                if code is _UNKNOWN:
                    span.record_exception(exc)
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code.name)
                if code in SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, context.details() or code.name))
                span.end()
                self._record(labels[code], started)

        return wrapper
