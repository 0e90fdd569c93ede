"""BackpressureService: validate, call the policies, map errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark.v1 import backpressure_pb2, backpressure_pb2_grpc
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.backpressure.manager import BackpressureManager
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import page_params, validate_name, validate_watch

B = backpressure_pb2


class BackpressureServicer(backpressure_pb2_grpc.BackpressureServiceServicer):
    """Thin layer over BackpressureManager; every RPC works on any replica."""

    def __init__(self, policies: BackpressureManager) -> None:
        self._policies = policies

    @rpc
    async def PutBackpressurePolicy(
        self, request: B.PutBackpressurePolicyRequest, context: grpc.aio.ServicerContext
    ) -> B.PutBackpressurePolicyResponse:
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        # The policy's rules are the capability's (backpressure.rules.check_policy).
        policy = await self._policies.put(request.policy, request.expected_revision)
        return B.PutBackpressurePolicyResponse(policy=policy)

    @rpc
    async def GetBackpressurePolicy(
        self, request: B.GetBackpressurePolicyRequest, context: grpc.aio.ServicerContext
    ) -> B.GetBackpressurePolicyResponse:
        validate_name(request.name)
        return B.GetBackpressurePolicyResponse(policy=self._policies.get(request.name))

    @rpc
    async def ListBackpressurePolicies(
        self, request: B.ListBackpressurePoliciesRequest, context: grpc.aio.ServicerContext
    ) -> B.ListBackpressurePoliciesResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        policies, token = self._policies.list(size, start_after)
        return B.ListBackpressurePoliciesResponse(policies=policies, next_page_token=token)

    @rpc
    async def DeleteBackpressurePolicy(
        self, request: B.DeleteBackpressurePolicyRequest, context: grpc.aio.ServicerContext
    ) -> B.DeleteBackpressurePolicyResponse:
        validate_name(request.name)
        revision = await self._policies.delete(request.name)
        return B.DeleteBackpressurePolicyResponse(revision=revision)

    @rpc_stream
    async def WatchBackpressurePolicies(
        self, request: B.WatchBackpressurePoliciesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[B.WatchBackpressurePoliciesResponse]:
        names = validate_watch(request.start_revision, request.names)
        async for response in self._policies.watch(names, request.start_revision):
            yield response
