"""RateLimitService: validate, decide on the leader (forwarding if needed), map errors.

A follower forwards Check to the leader. When no leader answers, the follower
decides on its own share of each limit and says so: ``local_fallback`` in the
response and ``bulwark-ratelimit-mode: local`` in the trailing metadata.
"""

from __future__ import annotations

import logging

import grpc
import grpc.aio

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.api.forwarding import LeaderForwarder, was_forwarded
from bulwark_server.api.status import rpc
from bulwark_server.cluster.election import Election
from bulwark_server.errors import InvalidArgument, NotLeader, StoreUnavailable
from bulwark_server.ratelimits.descriptors import validate_descriptor, validate_descriptors
from bulwark_server.ratelimits.manager import RateLimitManager
from bulwark_server.validation import page_params, validate_id, validate_name, validate_pair

log = logging.getLogger(__name__)

MAX_HITS = 1_000_000
MAX_WANTED = 1_000_000_000
# A decision on the request path must not wait long for a leader that does not
# answer: past this, the replica decides on its local share.
FORWARD_TIMEOUT_S = 0.25
LOCAL_MODE = (("bulwark-ratelimit-mode", "local"),)


def _validate_check(request: ratelimit_pb2.CheckRequest) -> int:
    """The hits to charge; InvalidArgument naming the field for bad input."""
    validate_name(request.domain, "domain")
    validate_descriptors(request.descriptors)
    hits = request.hits if request.HasField("hits") else 1
    if not 0 <= hits <= MAX_HITS:
        raise InvalidArgument("hits", f"must be 0-{MAX_HITS}, got {hits}")
    if request.HasField("load") and not 0.0 <= request.load <= 1.0:
        raise InvalidArgument("load", f"must be within 0-1, got {request.load}")
    return hits


class RateLimitServicer(ratelimit_pb2_grpc.RateLimitServiceServicer):
    """Thin layer over RateLimitManager."""

    def __init__(
        self, limiter: RateLimitManager, election: Election, forwarder: LeaderForwarder
    ) -> None:
        self._limiter = limiter
        self._election = election
        self._forwarder = forwarder

    @rpc
    async def PutLimit(
        self, request: ratelimit_pb2.PutLimitRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.PutLimitResponse:
        if request.expected_revision < 0:
            raise InvalidArgument("expected_revision", "must not be negative")
        limit, created = await self._limiter.put(request.limit, request.expected_revision)
        return ratelimit_pb2.PutLimitResponse(limit=limit, created=created)

    @rpc
    async def GetLimit(
        self, request: ratelimit_pb2.GetLimitRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.GetLimitResponse:
        validate_pair(request.domain, request.name, "domain", "name")
        return ratelimit_pb2.GetLimitResponse(limit=self._limiter.get(request.domain, request.name))

    @rpc
    async def ListLimits(
        self, request: ratelimit_pb2.ListLimitsRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.ListLimitsResponse:
        if request.domain:
            validate_name(request.domain, "domain")
        size, start_after = page_params(request.page_size, request.page_token)
        limits, token = self._limiter.list(request.domain, size, start_after)
        return ratelimit_pb2.ListLimitsResponse(limits=limits, next_page_token=token)

    @rpc
    async def DeleteLimit(
        self, request: ratelimit_pb2.DeleteLimitRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.DeleteLimitResponse:
        validate_pair(request.domain, request.name, "domain", "name")
        revision = await self._limiter.delete(request.domain, request.name)
        return ratelimit_pb2.DeleteLimitResponse(revision=revision)

    @rpc
    async def Check(
        self, request: ratelimit_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.CheckResponse:
        hits = _validate_check(request)
        descriptors = [d.entries for d in request.descriptors]
        if self._election.is_leader:
            load = request.load if request.HasField("load") else None
            return self._limiter.check(request.domain, descriptors, hits, load)
        if was_forwarded(context):
            raise NotLeader("this replica no longer leads; retry")
        try:
            return await self._forwarder.call(
                lambda channel: ratelimit_pb2_grpc.RateLimitServiceStub(channel).Check,
                request,
                deadline_s=FORWARD_TIMEOUT_S,
            )
        except (NotLeader, StoreUnavailable) as exc:
            log.debug("leader unreachable for Check, deciding locally: %s", exc)
        context.set_trailing_metadata(LOCAL_MODE)
        return self._limiter.check_local(request.domain, descriptors, hits)

    @rpc
    async def LeaseQuota(
        self, request: ratelimit_pb2.LeaseQuotaRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.LeaseQuotaResponse:
        validate_name(request.domain, "domain")
        validate_descriptor(request.descriptor, "descriptor")
        validate_id(request.client_id, "client_id")
        if not 0 <= request.wanted <= MAX_WANTED:
            raise InvalidArgument("wanted", f"must be 0-{MAX_WANTED}, got {request.wanted}")
        if self._election.is_leader:
            return self._limiter.lease(
                request.domain, request.descriptor.entries, request.client_id, request.wanted
            )
        if was_forwarded(context):
            raise NotLeader("this replica no longer leads; retry")
        # No local fallback: a client without a fresh lease keeps its last one or
        # its configured safe share until a leader answers.
        return await self._forwarder.call(
            lambda channel: ratelimit_pb2_grpc.RateLimitServiceStub(channel).LeaseQuota,
            request,
        )
