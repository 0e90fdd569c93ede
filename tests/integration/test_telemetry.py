"""The telemetry interceptor on a real in-process grpc.aio server: spans and metrics per status."""

from __future__ import annotations

import grpc
import grpc.aio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc
from bulwark_server.api.status import rpc
from bulwark_server.errors import NotFound
from bulwark_server.observability import Telemetry
from bulwark_server.transport.telemetry import TelemetryInterceptor


class Servicer(cluster_pb2_grpc.ClusterServiceServicer):
    @rpc
    async def GetLeader(self, request, context):  # type: ignore[no-untyped-def]
        return cluster_pb2.GetLeaderResponse(answered_by="me")

    @rpc
    async def GetClusterStatus(self, request, context):  # type: ignore[no-untyped-def]
        raise NotFound("replica x does not exist")


async def test_every_rpc_gets_a_span_and_metrics_with_its_status_code():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))

    server = grpc.aio.server(interceptors=[TelemetryInterceptor(telemetry)])
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)
            assert (await stub.GetLeader(cluster_pb2.GetLeaderRequest())).answered_by == "me"
            try:
                await stub.GetClusterStatus(cluster_pb2.GetClusterStatusRequest())
                raise AssertionError("expected NOT_FOUND")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.NOT_FOUND
                assert "replica x" in (err.details() or "")
    finally:
        await server.stop(None)

    by_name = {s.name: s for s in spans.get_finished_spans()}
    ok = by_name["/bulwark.v1.ClusterService/GetLeader"]
    bad = by_name["/bulwark.v1.ClusterService/GetClusterStatus"]
    assert ok.attributes["rpc.grpc.status_code"] == "OK"
    assert bad.attributes["rpc.grpc.status_code"] == "NOT_FOUND"

    counts: dict[tuple[str, str], int] = {}
    durations = 0
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    key = (point.attributes["rpc.method"], point.attributes["rpc.grpc.status_code"])
                    if metric.name == "rpc.server.requests":
                        counts[key] = counts.get(key, 0) + point.value
                    elif metric.name == "rpc.server.duration":
                        durations += point.count
    assert counts == {("GetLeader", "OK"): 1, ("GetClusterStatus", "NOT_FOUND"): 1}
    assert durations == 2
    telemetry.shutdown()
