"""RemediationService: validate, call the playbooks or the scaling, map errors.

Playbooks and the pause switch are configuration any replica writes; remediations are
read from any replica's cache; scaling recommendations run on the leader.
"""

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
from bulwark_server.errors import InvalidArgument, NotLeader, StoreUnavailable
from bulwark_server.remediation.manager import RemediationManager
from bulwark_server.remediation.scaling import ScalingManager
from bulwark_server.remediation.scaling_rules import hpa_settings
from bulwark_server.validation import (
    duration_seconds,
    page_params,
    validate_id,
    validate_name,
    validate_watch,
)

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0  # the HPA controller's sync period


def _recommend_stub(channel: grpc.aio.Channel) -> Any:
    return remediation_pb2_grpc.RemediationServiceStub(channel).GetScalingRecommendation


class RemediationServicer(remediation_pb2_grpc.RemediationServiceServicer):
    """Playbooks and remediations; scaling recommendations, computed on the leader (it
    keeps their history)."""

    def __init__(
        self, remediation: RemediationManager, scaling: ScalingManager, router: LeaderRouter
    ) -> None:
        self._remediation = remediation
        self._scaling = scaling
        self._router = router

    @rpc
    async def PutPlaybook(
        self, request: remediation_pb2.PutPlaybookRequest, context: grpc.aio.ServicerContext
    ) -> remediation_pb2.PutPlaybookResponse:
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        # The playbook's rules are the capability's (remediation.playbooks.check_playbook).
        stored = await self._remediation.put_playbook(request.playbook, request.expected_revision)
        return remediation_pb2.PutPlaybookResponse(playbook=stored)

    @rpc
    async def GetPlaybook(
        self, request: remediation_pb2.GetPlaybookRequest, context: grpc.aio.ServicerContext
    ) -> remediation_pb2.GetPlaybookResponse:
        validate_name(request.name)
        return remediation_pb2.GetPlaybookResponse(
            playbook=self._remediation.playbook(request.name)
        )

    @rpc
    async def ListPlaybooks(
        self, request: remediation_pb2.ListPlaybooksRequest, context: grpc.aio.ServicerContext
    ) -> remediation_pb2.ListPlaybooksResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        playbooks, token = self._remediation.list_playbooks(size, start_after)
        return remediation_pb2.ListPlaybooksResponse(playbooks=playbooks, next_page_token=token)

    @rpc
    async def DeletePlaybook(
        self, request: remediation_pb2.DeletePlaybookRequest, context: grpc.aio.ServicerContext
    ) -> remediation_pb2.DeletePlaybookResponse:
        validate_name(request.name)
        revision = await self._remediation.delete_playbook(request.name)
        return remediation_pb2.DeletePlaybookResponse(revision=revision)

    @rpc
    async def ListRemediations(
        self, request: remediation_pb2.ListRemediationsRequest, context: grpc.aio.ServicerContext
    ) -> remediation_pb2.ListRemediationsResponse:
        if request.playbook:
            validate_name(request.playbook, "playbook")
        size, start_after = page_params(request.page_size, request.page_token)
        found, token = self._remediation.list_remediations(request.playbook, size, start_after)
        return remediation_pb2.ListRemediationsResponse(remediations=found, next_page_token=token)

    @rpc_stream
    async def WatchRemediations(
        self, request: remediation_pb2.WatchRemediationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[remediation_pb2.WatchRemediationsResponse]:
        validate_watch(request.start_revision, ())
        async for response in self._remediation.watch(request.start_revision):
            yield response

    @rpc
    async def SetRemediationPaused(
        self,
        request: remediation_pb2.SetRemediationPausedRequest,
        context: grpc.aio.ServicerContext,
    ) -> remediation_pb2.SetRemediationPausedResponse:
        validate_id(request.reason, "reason", required=request.paused)
        paused = await self._remediation.set_paused(request.paused, request.reason)
        return remediation_pb2.SetRemediationPausedResponse(paused=paused)

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
