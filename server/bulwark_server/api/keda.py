"""KEDA's external scaler protocol (``externalscaler.ExternalScaler``): validate the
trigger's metadata, read the value on the leader, map errors.

A ``ScaledObject`` trigger of type ``external`` (KEDA polls ``IsActive`` and
``GetMetrics``) or ``external-push`` (KEDA holds ``StreamIsActive`` open) points at
Bulwark's gRPC port; its metadata says what to scale on
(``remediation.scaling_rules``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import InvalidArgument, NotLeader, StoreUnavailable
from bulwark_server.keda_api import externalscaler_pb2, externalscaler_pb2_grpc
from bulwark_server.remediation.scaling import ScalingManager
from bulwark_server.remediation.scaling_rules import ScalerQuery, parse_metadata

log = logging.getLogger(__name__)

# How often StreamIsActive looks again; it sends only when the answer changes.
PUSH_CHECK_S = 1.0


def _metrics_stub(channel: grpc.aio.Channel) -> Any:
    return externalscaler_pb2_grpc.ExternalScalerStub(channel).GetMetrics


class ExternalScalerServicer(externalscaler_pb2_grpc.ExternalScalerServicer):
    """KEDA's scaler: values read where the signals and the history are (the leader)."""

    def __init__(self, scaling: ScalingManager, router: LeaderRouter) -> None:
        self._scaling = scaling
        self._router = router

    @rpc
    async def IsActive(
        self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> externalscaler_pb2.IsActiveResponse:
        query = parse_metadata(request.scalerMetadata)
        value = await self._value(context, request, query)
        return externalscaler_pb2.IsActiveResponse(result=value > query.activation)

    @rpc_stream
    async def StreamIsActive(
        self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[externalscaler_pb2.IsActiveResponse]:
        query = parse_metadata(request.scalerMetadata)
        last: bool | None = None
        while True:
            try:
                active = await self._value(context, request, query) > query.activation
            except (NotLeader, StoreUnavailable) as exc:
                log.debug("activity of %s not read this round: %s", query.service, exc)
            else:
                if active != last:
                    last = active
                    yield externalscaler_pb2.IsActiveResponse(result=active)
            await asyncio.sleep(PUSH_CHECK_S)

    @rpc
    async def GetMetricSpec(
        self, request: externalscaler_pb2.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> externalscaler_pb2.GetMetricSpecResponse:
        query = parse_metadata(request.scalerMetadata)
        spec = externalscaler_pb2.MetricSpec(
            metricName=query.metric_name,
            targetSize=max(1, round(query.target)),
            targetSizeFloat=query.target,
        )
        return externalscaler_pb2.GetMetricSpecResponse(metricSpecs=[spec])

    @rpc
    async def GetMetrics(
        self, request: externalscaler_pb2.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> externalscaler_pb2.GetMetricsResponse:
        query = parse_metadata(request.scaledObjectRef.scalerMetadata)
        if request.metricName and request.metricName.lower() != query.metric_name:
            raise InvalidArgument("metricName", f"this trigger's metric is {query.metric_name!r}")
        return await self._router.run(context, request, _metrics_stub, lambda: self._metrics(query))

    async def _value(
        self,
        context: grpc.aio.ServicerContext,
        ref: externalscaler_pb2.ScaledObjectRef,
        query: ScalerQuery,
    ) -> float:
        ask = externalscaler_pb2.GetMetricsRequest(
            scaledObjectRef=ref, metricName=query.metric_name
        )
        answer = await self._router.run(context, ask, _metrics_stub, lambda: self._metrics(query))
        return answer.metricValues[0].metricValueFloat

    def _metrics(self, query: ScalerQuery) -> externalscaler_pb2.GetMetricsResponse:
        value = self._scaling.value(query)
        return externalscaler_pb2.GetMetricsResponse(
            metricValues=[
                externalscaler_pb2.MetricValue(
                    metricName=query.metric_name,
                    metricValue=round(value),
                    metricValueFloat=value,
                )
            ]
        )
