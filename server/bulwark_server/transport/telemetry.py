"""One span, one duration sample and one count for every RPC, by method and final status."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from bulwark_server.observability import Telemetry
from bulwark_server.transport.handlers import rewrap, status_of


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
