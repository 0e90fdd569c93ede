"""The spans of the telemetry interceptor: capability of each service, status per final code.

The wrapped behaviours are called directly with a stand-in for grpc's servicer
context; ``tests/integration/test_otlp_export.py`` sees the same spans arrive at
an OTLP receiver from a real replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from bulwark.v1 import cluster_pb2
from bulwark_server.api.status import rpc
from bulwark_server.cluster.election import Election
from bulwark_server.config import Settings
from bulwark_server.errors import NotFound, StoreUnavailable
from bulwark_server.observability import Telemetry
from bulwark_server.runner import Replica
from bulwark_server.security.audit import AuditLog
from bulwark_server.security.roles import OPEN_SERVICES, RULES
from bulwark_server.security.tokens import TokenStore
from bulwark_server.store import EtcdStore
from bulwark_server.transport.server import ServiceBinding, capabilities
from bulwark_server.transport.telemetry import TelemetryInterceptor

# What each service a replica serves is reported as; a new service must be added here.
EXPECTED = {
    "bulwark.v1.ClusterService": "cluster",
    "bulwark.v1.CircuitBreakerService": "breakers",
    "bulwark.v1.BulkheadService": "bulkheads",
    "bulwark.v1.RateLimitService": "ratelimits",
    "bulwark.v1.CounterService": "ratelimits",
    "envoy.service.ratelimit.v3.RateLimitService": "ratelimits",
    "bulwark.v1.RegistryService": "registry",
    "bulwark.v1.FeatureService": "features",
    "bulwark.v1.KeyBackupService": "backups",
    "bulwark.v1.RecoveryService": "recovery",
    "bulwark.v1.AuthService": "security",
    "bulwark.v1.AuditService": "security",
    "bulwark.v1.AlertService": "alerts",
    "bulwark.v1.BackpressureService": "backpressure",
    "bulwark.v1.ChaosService": "chaos",
    "bulwark.v1.RemediationService": "remediation",
    "externalscaler.ExternalScaler": "remediation",
    "grpc.health.v1.Health": "transport",
    "grpc.reflection.v1alpha.ServerReflection": "transport",
}
METHOD = "/bulwark.v1.CircuitBreakerService/Allow"


async def test_every_service_a_replica_serves_has_its_capability() -> None:
    # The bindings a replica registers, made as it makes them (nothing is started:
    # the store is never connected to).
    store = EtcdStore(["127.0.0.1:1"], timeout=0.1)
    replica = Replica(Settings(etcd_endpoints=("127.0.0.1:1",)).resolved())
    election = Election(store, cluster_pb2.Replica(id="r"), ttl=2)
    audit = AuditLog(store, election, "r", retention=1.0, max_events=1)
    try:
        bindings = [
            *replica._bindings(store, election),
            *replica._security_bindings(TokenStore(store), audit),
        ]
    finally:
        for close in replica._closers:
            await close()
    mapping = capabilities(bindings)
    assert mapping == EXPECTED
    # Every service of the one table of RPCs is served, so has a capability.
    ruled = {method.lstrip("/").rpartition("/")[0] for method in RULES}
    assert ruled | (OPEN_SERVICES & set(mapping)) == set(mapping)


def test_a_service_bound_to_two_capabilities_is_refused() -> None:
    def binding(capability: str) -> ServiceBinding:
        return ServiceBinding("pkg.Service", object(), lambda servicer, server: None, capability)

    assert capabilities([binding("a"), binding("a")])["pkg.Service"] == "a"
    with pytest.raises(ValueError, match=r"pkg\.Service"):
        capabilities([binding("a"), binding("b")])


class Context:
    """What the interceptor and ``api.status.rpc`` use of ``grpc.aio.ServicerContext``."""

    def __init__(self, time_remaining: float | None = None) -> None:
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._time_remaining = time_remaining

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def time_remaining(self) -> float | None:
        return self._time_remaining

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details
        raise grpc.aio.AbortError()


class Servicer:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    @rpc
    async def Allow(self, request: Any, context: Any) -> str:
        if self.error is not None:
            raise self.error
        return "answer"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def interceptor(spans: InMemorySpanExporter, *, traced: bool = True) -> TelemetryInterceptor:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider, MeterProvider(), metrics_read=False, spans_read=traced)
    return TelemetryInterceptor(telemetry, EXPECTED)


async def call(
    spans: InMemorySpanExporter, error: BaseException | None = None, context: Any = None
) -> ReadableSpan:
    handler = grpc.unary_unary_rpc_method_handler(Servicer(error).Allow)
    wrapped = interceptor(spans).wrap(METHOD, handler)
    spans.clear()
    try:
        await wrapped.unary_unary(None, context or Context())
    except BaseException:
        pass
    (span,) = spans.get_finished_spans()
    return span


def test_span_attributes_name_the_rpc_and_its_capability(spans: InMemorySpanExporter) -> None:
    attributes = interceptor(spans).span_attributes
    assert attributes(METHOD) == {
        "rpc.system": "grpc",
        "rpc.service": "bulwark.v1.CircuitBreakerService",
        "rpc.method": "Allow",
        "bulwark.capability": "breakers",
    }
    assert attributes("/grpc.health.v1.Health/Check")["bulwark.capability"] == "transport"
    # A service nobody named gets no capability rather than a made-up one.
    assert "bulwark.capability" not in attributes("/x.Y/Z")


async def test_the_capability_is_looked_up_once_per_method_and_never_untraced(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    original = TelemetryInterceptor.span_attributes

    def counted(self: TelemetryInterceptor, method: str) -> dict[str, str]:
        looked_up.append(method)
        return original(self, method)

    monkeypatch.setattr(TelemetryInterceptor, "span_attributes", counted)
    handler = grpc.unary_unary_rpc_method_handler(Servicer().Allow)
    traced = interceptor(spans).wrap(METHOD, handler)
    for _ in range(3):
        assert await traced.unary_unary(None, Context()) == "answer"
    assert looked_up == [METHOD]
    assert all(s.attributes["bulwark.capability"] == "breakers" for s in spans.get_finished_spans())

    untraced = interceptor(spans, traced=False).wrap(METHOD, handler)
    assert await untraced.unary_unary(None, Context()) == "answer"
    assert looked_up == [METHOD]


@pytest.mark.parametrize(
    ("error", "context", "code", "status"),
    [
        (None, None, "OK", StatusCode.UNSET),
        # The caller's mistakes: the server did its job.
        (NotFound("breaker 'x' does not exist"), None, "NOT_FOUND", StatusCode.UNSET),
        (asyncio.CancelledError(), Context(time_remaining=None), "CANCELLED", StatusCode.UNSET),
        # The server's failures.
        (StoreUnavailable("etcd did not answer"), None, "UNAVAILABLE", StatusCode.ERROR),
        (RuntimeError("a bug"), None, "INTERNAL", StatusCode.ERROR),
        (
            asyncio.CancelledError(),
            Context(time_remaining=0),
            "DEADLINE_EXCEEDED",
            StatusCode.ERROR,
        ),
    ],
)
async def test_the_span_status_is_error_for_server_failures_only(
    spans: InMemorySpanExporter,
    error: BaseException | None,
    context: Context | None,
    code: str,
    status: StatusCode,
) -> None:
    span = await call(spans, error, context)
    assert span.attributes["rpc.grpc.status_code"] == code
    assert span.status.status_code is status
    if error is not None and code == "UNAVAILABLE":
        # The details the caller got, not the abort that carried them.
        assert span.status.description == "etcd did not answer"
    # An abort is how a status is sent, not an exception worth a traceback.
    assert not span.events


async def test_an_exception_that_escapes_is_unknown_and_recorded(
    spans: InMemorySpanExporter,
) -> None:
    async def unguarded(request: Any, context: Any) -> None:
        raise KeyError("boom")

    wrapped = interceptor(spans).wrap(METHOD, grpc.unary_unary_rpc_method_handler(unguarded))
    with pytest.raises(KeyError):
        await wrapped.unary_unary(None, Context())
    (span,) = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == "UNKNOWN"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
