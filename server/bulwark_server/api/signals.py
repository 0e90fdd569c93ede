"""RegistryService's signal RPCs: validate, call the signals on the leader, map errors.

``RegistryServicer`` serves them (it derives from ``SignalsServicer``); reports and
reads run on the leader, which holds the fleet's sums (``signals.manager``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import registry_pb2_grpc, signals_pb2
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.errors import NotLeader, StoreUnavailable
from bulwark_server.signals import rules
from bulwark_server.signals.manager import SignalsManager
from bulwark_server.validation import validate_name

log = logging.getLogger(__name__)


def _report_stub(channel: grpc.aio.Channel) -> Any:
    return registry_pb2_grpc.RegistryServiceStub(channel).ReportSignals


def _get_stub(channel: grpc.aio.Channel) -> Any:
    return registry_pb2_grpc.RegistryServiceStub(channel).GetServiceSignals


class SignalsServicer(registry_pb2_grpc.RegistryServiceServicer):
    """The signal RPCs; the registry's servicer adds the rest."""

    def __init__(self, signals: SignalsManager, router: LeaderRouter) -> None:
        self._signals = signals
        self._router = router

    @rpc
    async def ReportSignals(
        self, request: signals_pb2.ReportSignalsRequest, context: grpc.aio.ServicerContext
    ) -> signals_pb2.ReportSignalsResponse:
        rules.check_report(request)
        return await self._router.run(
            context,
            request,
            _report_stub,
            lambda: signals_pb2.ReportSignalsResponse(accepted=self._signals.report(request)),
        )

    @rpc
    async def GetServiceSignals(
        self, request: signals_pb2.GetServiceSignalsRequest, context: grpc.aio.ServicerContext
    ) -> signals_pb2.GetServiceSignalsResponse:
        validate_name(request.service, "service")
        window = rules.window_of(request.window, request.HasField("window"))
        return await self._router.run(
            context,
            request,
            _get_stub,
            lambda: signals_pb2.GetServiceSignalsResponse(
                signals=self._signals.signals(request.service, window)
            ),
        )

    @rpc_stream
    async def WatchServiceSignals(
        self, request: signals_pb2.WatchServiceSignalsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[signals_pb2.WatchServiceSignalsResponse]:
        services = rules.check_watched(request.services)
        window = rules.window_of(request.window, request.HasField("window"))
        interval = rules.interval_of(request.interval, request.HasField("interval"))
        while True:
            for service in services:
                ask = signals_pb2.GetServiceSignalsRequest(service=service)
                ask.window.FromNanoseconds(int(window * 1e9))
                try:
                    answer = await self._router.run(
                        context,
                        ask,
                        _get_stub,
                        lambda s=service: signals_pb2.GetServiceSignalsResponse(  # type: ignore[misc]
                            signals=self._signals.signals(s, window)
                        ),
                    )
                except (NotLeader, StoreUnavailable) as exc:
                    # A leader change: this round is skipped, the watch goes on.
                    log.debug("signals of %s not read this round: %s", service, exc)
                    continue
                yield signals_pb2.WatchServiceSignalsResponse(signals=answer.signals)
            await asyncio.sleep(interval)
