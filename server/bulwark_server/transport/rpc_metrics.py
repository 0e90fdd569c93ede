"""Per-RPC Prometheus metrics under the names go-grpc-prometheus gave them.

Dashboards and alerts written for gRPC servers read ``grpc_server_started_total``,
``grpc_server_handled_total{grpc_code}`` and ``grpc_server_handling_seconds``, each
labelled ``grpc_type``, ``grpc_service`` and ``grpc_method``, with the status code
spelled as grpc-go spells it ("ResourceExhausted"): Bulwark exports the same series
with the same help texts and buckets, so they work unchanged.

Every call passes here, so a call only adds to plain integers of its method (a
bucket found by bisection, no lock, no label lookup); the series are made from
them when the endpoint is scraped. A method has series once it has been called:
a replica serves about a hundred methods, and most are never called.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from bulwark_server.transport.handlers import ended_by, rewrap, status_of

# go-grpc-prometheus' default buckets (Prometheus' DefBuckets), in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LABELS = ["grpc_type", "grpc_service", "grpc_method"]
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


class _Method:
    """One method's counts: calls started, ended by code, and durations by bucket
    (``buckets[i]``: durations at most ``BUCKETS[i]``, not cumulative; the last
    item counts those above every bound)."""

    __slots__ = ("buckets", "handled", "labels", "seconds", "started")

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.started = 0
        self.handled: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0

    def end(self, code: grpc.StatusCode, seconds: float) -> None:
        self.handled[code] = self.handled.get(code, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts every call as it starts and as it ends (by status code) and its duration;
    ``collect`` gives the three families (a source for ``metrics.replica``)."""

    def __init__(self) -> None:
        self._methods: list[_Method] = []

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
        counts = _Method([grpc_type(handler), service, name])
        self._methods.append(counts)
        return rewrap(
            handler, lambda behavior: _unary(counts, behavior), lambda b: _streaming(counts, b)
        )

    def collect(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels=LABELS,
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=[*LABELS, "grpc_code"],
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            labels=LABELS,
        )
        bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
        for method in self._methods:
            if not method.started:
                continue
            started.add_metric(method.labels, method.started)
            for code, count in list(method.handled.items()):
                handled.add_metric([*method.labels, GO_CODES[code]], count)
            cumulative, running = [], 0
            for bound, count in zip(bounds, method.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            seconds.add_metric(method.labels, cumulative, method.seconds)
        yield from (started, handled, seconds)


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    return status_of(context) if error is None else ended_by(error, context)


def _unary(counts: _Method, behavior: Callable[..., Any]) -> Callable[..., Any]:
    clock = time.perf_counter

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        counts.started += 1
        started = clock()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            counts.end(_code(context, error), clock() - started)

    return wrapper


def _streaming(counts: _Method, behavior: Callable[..., AsyncIterator[Any]]) -> Any:
    clock = time.perf_counter

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        counts.started += 1
        started = clock()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            counts.end(_code(context, error), clock() - started)

    return wrapper
