"""ChaosService: validate, call the fault rules or the experiments, map errors.

Fault rules, reads and the kill switch work on any replica; starting, stopping
and renewing an experiment run on the leader, which runs experiments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import chaos_pb2, chaos_pb2_grpc
from bulwark_server import timestamps
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.chaos.manager import ChaosManager
from bulwark_server.errors import InvalidArgument
from bulwark_server.security.identity import caller_name
from bulwark_server.validation import page_params, validate_id, validate_name

C = chaos_pb2
RUNNING = chaos_pb2.EXPERIMENT_STATE_RUNNING


def _start_stub(channel: grpc.aio.Channel) -> Any:
    return chaos_pb2_grpc.ChaosServiceStub(channel).StartExperiment


def _stop_stub(channel: grpc.aio.Channel) -> Any:
    return chaos_pb2_grpc.ChaosServiceStub(channel).StopExperiment


def _renew_stub(channel: grpc.aio.Channel) -> Any:
    return chaos_pb2_grpc.ChaosServiceStub(channel).RenewExperiment


class ChaosServicer(chaos_pb2_grpc.ChaosServiceServicer):
    """See the module docstring."""

    def __init__(self, chaos: ChaosManager, router: LeaderRouter) -> None:
        self._chaos = chaos
        self._router = router

    # -- fault rules -------------------------------------------------------------------

    @rpc
    async def PutFaultRule(
        self, request: C.PutFaultRuleRequest, context: grpc.aio.ServicerContext
    ) -> C.PutFaultRuleResponse:
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        if request.rule.experiment:
            raise InvalidArgument("rule.experiment", "is set by experiments only")
        # The rule's rules are the capability's (chaos.rules.check_rule).
        rule = await self._chaos.faults.put(request.rule, request.expected_revision)
        return C.PutFaultRuleResponse(rule=rule)

    @rpc
    async def GetFaultRule(
        self, request: C.GetFaultRuleRequest, context: grpc.aio.ServicerContext
    ) -> C.GetFaultRuleResponse:
        validate_name(request.name)
        return C.GetFaultRuleResponse(rule=self._chaos.faults.get(request.name))

    @rpc
    async def ListFaultRules(
        self, request: C.ListFaultRulesRequest, context: grpc.aio.ServicerContext
    ) -> C.ListFaultRulesResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        rules, token = self._chaos.faults.list(size, start_after)
        return C.ListFaultRulesResponse(rules=rules, next_page_token=token)

    @rpc
    async def DeleteFaultRule(
        self, request: C.DeleteFaultRuleRequest, context: grpc.aio.ServicerContext
    ) -> C.DeleteFaultRuleResponse:
        validate_name(request.name)
        return C.DeleteFaultRuleResponse(revision=await self._chaos.faults.delete(request.name))

    @rpc_stream
    async def WatchFaultRules(
        self, request: C.WatchFaultRulesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[C.WatchFaultRulesResponse]:
        if request.start_revision < 0:
            raise InvalidArgument("start_revision", "must not be negative")
        async for response in self._chaos.faults.watch(request.start_revision):
            yield response

    # -- experiments -------------------------------------------------------------------

    @rpc
    async def StartExperiment(
        self, request: C.StartExperimentRequest, context: grpc.aio.ServicerContext
    ) -> C.StartExperimentResponse:
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "is required")
        # The spec's rules are the capability's (chaos.rules.check_spec).
        by = caller_name()

        async def start() -> C.StartExperimentResponse:
            experiment = await self._chaos.engine.start(request.spec, by)
            return C.StartExperimentResponse(experiment=experiment)

        return await self._router.run(context, request, _start_stub, start)

    @rpc
    async def GetExperiment(
        self, request: C.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> C.GetExperimentResponse:
        validate_name(request.id, "id")
        return C.GetExperimentResponse(experiment=self._chaos.experiments.get(request.id))

    @rpc
    async def ListExperiments(
        self, request: C.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> C.ListExperimentsResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        experiments, token = self._chaos.experiments.list(size, start_after)
        return C.ListExperimentsResponse(experiments=experiments, next_page_token=token)

    @rpc
    async def StopExperiment(
        self, request: C.StopExperimentRequest, context: grpc.aio.ServicerContext
    ) -> C.StopExperimentResponse:
        validate_name(request.id, "id")
        validate_id(request.reason, "reason", required=False)
        by = caller_name()

        async def stop() -> C.StopExperimentResponse:
            experiment = await self._chaos.engine.stop(request.id, request.reason, by)
            return C.StopExperimentResponse(experiment=experiment)

        return await self._router.run(context, request, _stop_stub, stop)

    @rpc_stream
    async def WatchExperiment(
        self, request: C.WatchExperimentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[C.WatchExperimentResponse]:
        validate_name(request.id, "id")
        self._chaos.experiments.get(request.id)  # NotFound before the stream starts
        async for experiment in self._chaos.experiments.watch(request.id):
            yield C.WatchExperimentResponse(experiment=experiment)
            if experiment.state != RUNNING:
                return

    @rpc
    async def RenewExperiment(
        self, request: C.RenewExperimentRequest, context: grpc.aio.ServicerContext
    ) -> C.RenewExperimentResponse:
        validate_name(request.id, "id")

        async def renew() -> C.RenewExperimentResponse:
            deadline = await self._chaos.engine.renew(request.id)
            return C.RenewExperimentResponse(deadline=timestamps.at(deadline))

        return await self._router.run(context, request, _renew_stub, renew)

    # -- the kill switch ---------------------------------------------------------------

    @rpc
    async def SetChaosHalted(
        self, request: C.SetChaosHaltedRequest, context: grpc.aio.ServicerContext
    ) -> C.SetChaosHaltedResponse:
        validate_id(request.reason, "reason", required=request.halted)
        halted = await self._chaos.faults.set_halted(request.halted, request.reason)
        return C.SetChaosHaltedResponse(halted=halted)

    @rpc
    async def GetChaosStatus(
        self, request: C.GetChaosStatusRequest, context: grpc.aio.ServicerContext
    ) -> C.GetChaosStatusResponse:
        return self._chaos.status()
