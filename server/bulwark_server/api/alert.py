"""AlertService: validate, call the alert center, map errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark.v1 import alert_pb2, alert_pb2_grpc
from bulwark_server.alerts import rules
from bulwark_server.alerts.manager import AlertCenter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import InvalidArgument
from bulwark_server.security.identity import caller_name
from bulwark_server.validation import page_params, validate_id, validate_name

MAX_COMMENT = 1024


class AlertServicer(alert_pb2_grpc.AlertServiceServicer):
    """Thin layer over AlertCenter; every RPC works on any replica."""

    def __init__(self, center: AlertCenter) -> None:
        self._center = center

    @rpc
    async def ListAlerts(
        self, request: alert_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.ListAlertsResponse:
        rules.check_matchers(request.matchers, "matchers")
        size, start_after = page_params(request.page_size, request.page_token)
        alerts, token = self._center.list_alerts(
            request.firing_only, request.matchers, size, start_after
        )
        return alert_pb2.ListAlertsResponse(alerts=alerts, next_page_token=token)

    @rpc_stream
    async def WatchAlerts(
        self, request: alert_pb2.WatchAlertsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[alert_pb2.WatchAlertsResponse]:
        rules.check_matchers(request.matchers, "matchers")
        if request.start_revision < 0:
            raise InvalidArgument("start_revision", "must not be negative")
        async for response in self._center.watch(request.matchers, request.start_revision):
            yield response

    @rpc
    async def AcknowledgeAlert(
        self, request: alert_pb2.AcknowledgeAlertRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.AcknowledgeAlertResponse:
        rules.check_fingerprint(request.fingerprint, "fingerprint")
        if len(request.comment) > MAX_COMMENT:
            raise InvalidArgument("comment", f"longer than {MAX_COMMENT} characters")
        alert = await self._center.acknowledge(request.fingerprint, caller_name(), request.comment)
        return alert_pb2.AcknowledgeAlertResponse(alert=alert)

    @rpc
    async def PutSilence(
        self, request: alert_pb2.PutSilenceRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.PutSilenceResponse:
        if request.silence.id:
            validate_id(request.silence.id, "silence.id")
        silence = await self._center.put_silence(request.silence, caller_name())
        return alert_pb2.PutSilenceResponse(silence=silence)

    @rpc
    async def ListSilences(
        self, request: alert_pb2.ListSilencesRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.ListSilencesResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        silences, token = self._center.list_silences(request.include_expired, size, start_after)
        return alert_pb2.ListSilencesResponse(silences=silences, next_page_token=token)

    @rpc
    async def DeleteSilence(
        self, request: alert_pb2.DeleteSilenceRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.DeleteSilenceResponse:
        validate_id(request.id, "id")
        return alert_pb2.DeleteSilenceResponse(revision=await self._center.end_silence(request.id))

    @rpc
    async def PutAlertRoute(
        self, request: alert_pb2.PutAlertRouteRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.PutAlertRouteResponse:
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        route, created = await self._center.put_route(request.route, request.expected_revision)
        return alert_pb2.PutAlertRouteResponse(route=route, created=created)

    @rpc
    async def GetAlertRoute(
        self, request: alert_pb2.GetAlertRouteRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.GetAlertRouteResponse:
        validate_name(request.name)
        return alert_pb2.GetAlertRouteResponse(route=self._center.route(request.name))

    @rpc
    async def ListAlertRoutes(
        self, request: alert_pb2.ListAlertRoutesRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.ListAlertRoutesResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        routes, token = self._center.list_routes(size, start_after)
        return alert_pb2.ListAlertRoutesResponse(routes=routes, next_page_token=token)

    @rpc
    async def DeleteAlertRoute(
        self, request: alert_pb2.DeleteAlertRouteRequest, context: grpc.aio.ServicerContext
    ) -> alert_pb2.DeleteAlertRouteResponse:
        validate_name(request.name)
        revision = await self._center.delete_route(request.name)
        return alert_pb2.DeleteAlertRouteResponse(revision=revision)
