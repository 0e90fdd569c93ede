"""Per-RPC Prometheus metrics under the names go-grpc-prometheus gave them.

Dashboards and alerts written for gRPC servers read ``grpc_server_started_total``,
``grpc_server_handled_total{grpc_code}`` and ``grpc_server_handling_seconds``, each
labelled ``grpc_type``, ``grpc_service`` and ``grpc_method``: Bulwark exports the same
series with the same help texts and buckets, so they work unchanged.

A method's series are made at its first call, not when it is registered: a replica
serves about a hundred methods, and series for each one never called would only
grow every scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from bulwark_server.transport.handlers import rewrap, status_of

# go-grpc-prometheus' default buckets (Prometheus' DefBuckets), in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ("grpc_type", "grpc_service", "grpc_method")
# Status codes as go-grpc-prometheus labels them (grpc-go's ``codes.Code.String()``),
# which dashboards and alerts match: "ResourceExhausted", not "RESOURCE_EXHAUSTED".
GO_CODES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
GO_CODES[grpc.StatusCode.OK] = "OK"
GO_CODES[grpc.StatusCode.CANCELLED] = "Canceled"
_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    """go-grpc-prometheus' name of the method's kind."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts every call as it starts and as it ends (by status code) and records its
    duration, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            LABELS,
            buckets=BUCKETS,
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return self.wrap(handler_call_details.method, await continuation(handler_call_details))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """``handler`` counted and timed (None stays None)."""
        if handler is None:
            return handler
        service, _, name = method.lstrip("/").rpartition("/")
        series = _Series(self, (grpc_type(handler), service, name))
        return rewrap(
            handler, lambda behavior: _unary(series, behavior), lambda b: _streaming(series, b)
        )


class _Series:
    """One method's children of the three metrics, made at its first call."""

    __slots__ = ("_handled", "_labels", "_metrics", "observe", "start")

    def __init__(self, metrics: RpcMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.start: Callable[[], None] = self._first_start
        self.observe: Callable[[float], None] = self._first_observe

    def _first_start(self) -> None:
        self.start = self._metrics.started.labels(*self._labels).inc
        self.start()

    def _first_observe(self, seconds: float) -> None:
        self.observe = self._metrics.seconds.labels(*self._labels).observe
        self.observe(seconds)

    def handled(self, code: grpc.StatusCode) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(
                *self._labels, GO_CODES[code]
            )
        child.inc()


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The call's final code; one that ended by an exception with none set is UNKNOWN
    (what gRPC answers), or CANCELLED when the caller went away."""
    code = status_of(context)
    if error is None or code is not _OK:
        return code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return _UNKNOWN


def _unary(series: _Series, behavior: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.perf_counter

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        series.start()
        started = clock()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            series.handled(_code(context, error))
            series.observe(clock() - started)

    return wrapper


def _streaming(series: _Series, behavior: Callable[..., AsyncIterator[Any]]) -> Any:
    clock = time.perf_counter

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        series.start()
        started = clock()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            series.handled(_code(context, error))
            series.observe(clock() - started)

    return wrapper
