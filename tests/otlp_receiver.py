"""An OTLP/gRPC receiver for tests: what a collector would be sent, kept in memory.

``OtlpReceiver`` serves the OTLP trace and metrics services on 127.0.0.1 (a free
port) and keeps every span and every metric data point it is sent, flattened
(one ``ReceivedSpan`` or ``ReceivedPoint`` each, with its resource's attributes),
in the order received. Exporters call it from their own threads: everything is
kept under one lock, read as copies, and ``wait_for`` blocks until a condition on
what has arrived holds, woken by each export rather than by polling.

It answers every export with success; it does not check the requests beyond
decoding them.

    with OtlpReceiver() as receiver:
        start_something(otlp_endpoint=receiver.endpoint)
        spans = receiver.wait_for(lambda r: r.spans_named("/pkg.Svc/Call"), timeout=5)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
STATUS_UNSET = trace_pb2.Status.STATUS_CODE_UNSET
STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported: ids in hex (as logs print them), kind and status code as
    the OTLP enum values (``SERVER``, ``STATUS_ERROR``, ...)."""

    name: str
    trace_id: str
    span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of one metric. ``value``: a sum's or gauge's value, a histogram's
    sum; ``count``: a histogram's count (None for sums and gauges). Cumulative metrics
    come again with every export: the latest point of a series holds its total."""

    metric: str
    kind: str
    unit: str
    attributes: dict[str, Any]
    value: float
    count: int | None
    resource: dict[str, Any]
    scope: str


def attributes_of(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


def value_of(value: common_pb2.AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (None when unset)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, which)


class OtlpReceiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """A grpc server for the OTLP trace and metrics services; a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._changed = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self.exports = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"{host}:0")
        self.host = host

    @property
    def endpoint(self) -> str:
        """What an OTLP exporter is pointed at; ``http://`` makes it use plaintext."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop at once; exports still arriving fail on the caller's side."""
        self._server.stop(grace=None).wait()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the OTLP services ------------------------------------------------------

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        # One name serves both services: tell the requests apart by type.
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self._keep(spans=list(_spans(request)))
            return trace_service_pb2.ExportTraceServiceResponse()
        self._keep(points=list(_points(request)))
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _keep(
        self, spans: list[ReceivedSpan] | None = None, points: list[ReceivedPoint] | None = None
    ) -> None:
        with self._changed:
            self._spans.extend(spans or ())
            self._points.extend(points or ())
            self.exports += 1
            self._changed.notify_all()

    # -- reading ----------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def points(self) -> list[ReceivedPoint]:
        with self._changed:
            return list(self._points)

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.name == name]

    def points_of(self, metric: str) -> list[ReceivedPoint]:
        return [p for p in self.points() if p.metric == metric]

    def wait_for(self, predicate: Callable[[OtlpReceiver], T], timeout: float) -> T:
        """Wait until ``predicate(self)`` is truthy and return its value.

        Checked at once and after each export. Raises ``TimeoutError`` naming what
        had arrived by then.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({s.name for s in self._spans})
                    metrics = sorted({p.metric for p in self._points})
                    raise TimeoutError(
                        f"not received within {timeout}s; spans {names}, metrics {metrics}"
                    )
                self._changed.wait(left)


def _spans(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterable[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    kind=span.kind,
                    attributes=attributes_of(span.attributes),
                    status_code=span.status.code,
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope_spans.scope.name,
                )


def _points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> Iterable[ReceivedPoint]:
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                for kind, attributes, value, count in _data_points(metric):
                    yield ReceivedPoint(
                        metric.name, kind, metric.unit, attributes, value, count, resource, scope
                    )


def _data_points(
    metric: metrics_pb2.Metric,
) -> Iterable[tuple[str, dict[str, Any], float, int | None]]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        for number in getattr(metric, kind).data_points:
            value = getattr(number, number.WhichOneof("value") or "as_double")
            yield kind, attributes_of(number.attributes), value, None
    elif kind in ("histogram", "exponential_histogram"):
        for point in getattr(metric, kind).data_points:
            yield kind, attributes_of(point.attributes), point.sum, point.count
    elif kind == "summary":
        for summary in metric.summary.data_points:
            yield kind, attributes_of(summary.attributes), summary.sum, summary.count
