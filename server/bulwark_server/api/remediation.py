"""RemediationService: validate, call the scaling on the leader, map errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import remediation_pb2, remediation_pb2_grpc
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import NotLeader, StoreUnavailable
from bulwark_server.remediation.scaling import ScalingManager
from bulwark_server.remediation.scaling_rules import hpa_settings
from bulwark_server.validation import duration_seconds, validate_name

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0  # the HPA controller's sync period


def _recommend_stub(channel: grpc.aio.Channel) -> Any:
    return remediation_pb2_grpc.RemediationServiceStub(channel).GetScalingRecommendation


class RemediationServicer(remediation_pb2_grpc.RemediationServiceServicer):
    """Scaling recommendations, computed on the leader (it keeps their history)."""

    def __init__(self, scaling: ScalingManager, router: LeaderRouter) -> None:
        self._scaling = scaling
        self._router = router

    @rpc
    async def GetScalingRecommendation(
        self,
        request: remediation_pb2.GetScalingRecommendationRequest,
        context: grpc.aio.ServicerContext,
    ) -> remediation_pb2.GetScalingRecommendationResponse:
        validate_name(request.service, "service")
        hpa_settings(request.spec)
        return await self._router.run(
            context,
            request,
            _recommend_stub,
            lambda: remediation_pb2.GetScalingRecommendationResponse(
                recommendation=self._scaling.recommend(request.service, request.spec)
            ),
        )

    @rpc_stream
    async def WatchScalingRecommendations(
        self,
        request: remediation_pb2.WatchScalingRecommendationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[remediation_pb2.WatchScalingRecommendationsResponse]:
        validate_name(request.service, "service")
        hpa_settings(request.spec)
        interval = DEFAULT_INTERVAL_S
        if request.HasField("interval"):
            interval = duration_seconds(request.interval, "interval", minimum=1.0, maximum=300.0)
        ask = remediation_pb2.GetScalingRecommendationRequest(
            service=request.service, spec=request.spec
        )
        while True:
            try:
                answer = await self._router.run(
                    context,
                    ask,
                    _recommend_stub,
                    lambda: remediation_pb2.GetScalingRecommendationResponse(
                        recommendation=self._scaling.recommend(ask.service, ask.spec)
                    ),
                )
            except (NotLeader, StoreUnavailable) as exc:
                # A leader change: this round is skipped, the watch goes on.
                log.debug("no recommendation for %s this round: %s", ask.service, exc)
            else:
                yield remediation_pb2.WatchScalingRecommendationsResponse(
                    recommendation=answer.recommendation
                )
            await asyncio.sleep(interval)
