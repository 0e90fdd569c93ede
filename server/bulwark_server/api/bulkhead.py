"""BulkheadService: validate the request, call ``BulkheadManager``, fill the response.

Domain errors become gRPC codes through ``@rpc``: a bad field is
INVALID_ARGUMENT naming it, a full bulkhead RESOURCE_EXHAUSTED with
``retry-after-ms`` trailing metadata, an unknown permit NOT_FOUND.
"""

from __future__ import annotations

import grpc.aio

from bulwark.v1 import bulkhead_pb2, bulkhead_pb2_grpc
from bulwark_server.api.status import rpc
from bulwark_server.bulkheads import (
    BulkheadManager,
    parse_acquire,
    parse_bulkhead,
    parse_expected_revision,
    parse_permit_ref,
)
from bulwark_server.validation import page_params, validate_name


class BulkheadServicer(bulkhead_pb2_grpc.BulkheadServiceServicer):
    """Thin adapter; every guarantee is ``BulkheadManager``'s. Needs no leader."""

    def __init__(self, bulkheads: BulkheadManager) -> None:
        self._bulkheads = bulkheads

    @rpc
    async def PutBulkhead(
        self, request: bulkhead_pb2.PutBulkheadRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.PutBulkheadResponse:
        spec = parse_bulkhead(request.bulkhead)
        expected = parse_expected_revision(request.expected_revision)
        stored, created = await self._bulkheads.put(spec, expected)
        return bulkhead_pb2.PutBulkheadResponse(bulkhead=stored, created=created)

    @rpc
    async def GetBulkhead(
        self, request: bulkhead_pb2.GetBulkheadRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.GetBulkheadResponse:
        name = validate_name(request.name, "name")
        bulkhead, permits = await self._bulkheads.get(name)
        return bulkhead_pb2.GetBulkheadResponse(bulkhead=bulkhead, permits=permits)

    @rpc
    async def ListBulkheads(
        self, request: bulkhead_pb2.ListBulkheadsRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.ListBulkheadsResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        page, token = self._bulkheads.list(size, start_after)
        return bulkhead_pb2.ListBulkheadsResponse(bulkheads=page, next_page_token=token)

    @rpc
    async def DeleteBulkhead(
        self, request: bulkhead_pb2.DeleteBulkheadRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.DeleteBulkheadResponse:
        name = validate_name(request.name, "name")
        released = await self._bulkheads.delete(name)
        return bulkhead_pb2.DeleteBulkheadResponse(released_permits=released)

    @rpc
    async def Acquire(
        self, request: bulkhead_pb2.AcquireRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.AcquireResponse:
        spec = parse_acquire(request)
        permit = await self._bulkheads.acquire(spec)
        return bulkhead_pb2.AcquireResponse(permit=permit)

    @rpc
    async def Release(
        self, request: bulkhead_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.ReleaseResponse:
        ref = parse_permit_ref(request.bulkhead, request.permit_id)
        revision = await self._bulkheads.release(ref)
        return bulkhead_pb2.ReleaseResponse(revision=revision)

    @rpc
    async def ExtendPermit(
        self, request: bulkhead_pb2.ExtendPermitRequest, context: grpc.aio.ServicerContext
    ) -> bulkhead_pb2.ExtendPermitResponse:
        ref = parse_permit_ref(request.bulkhead, request.permit_id)
        permit, remaining = await self._bulkheads.extend(ref)
        response = bulkhead_pb2.ExtendPermitResponse(permit=permit)
        response.remaining.FromSeconds(remaining)
        return response
