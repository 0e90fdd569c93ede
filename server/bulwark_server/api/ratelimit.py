"""RateLimitService: validate, decide where the counters live, map errors.

Every replica decides a Check (``RateLimitManager.check``: its counters' owners,
shares of busy counters). Under a leader of an earlier version, which keeps every
counter, a replica forwards Check to it as that version's followers do, and when
it does not answer in time decides by the capability's fallback
(``RateLimitManager.check_fallback``). A decision made on this replica's own
share of a limit says so: ``local_fallback`` in the response and
``bulwark-ratelimit-mode: local`` in the trailing metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits.config import MAX_REQUESTS_PER_UNIT, UNIT_SECONDS
from bulwark_server.ratelimits.descriptors import Entry, read_descriptors, validate_descriptor
from bulwark_server.ratelimits.manager import RateLimitManager
from bulwark_server.validation import page_params, validate_id, validate_name, validate_pair

log = logging.getLogger(__name__)

MAX_HITS = 1_000_000
MAX_WANTED = 1_000_000_000
LOCAL_MODE = (("bulwark-ratelimit-mode", "local"),)


def _validate_check(
    request: ratelimit_pb2.CheckRequest,
) -> tuple[list[tuple[Entry, ...]], list[int], list[ratelimit_pb2.Rate | None] | None]:
    """Each descriptor's entries (read once), the hits to charge to it, and the
    descriptors' own limits (None when none has one); InvalidArgument naming the field
    for bad input."""
    validate_name(request.domain, "domain")
    descriptors = request.descriptors
    entries = read_descriptors(descriptors)
    hits = request.hits if request.HasField("hits") else 1
    if not 0 <= hits <= MAX_HITS:
        raise InvalidArgument("hits", f"must be 0-{MAX_HITS}, got {hits}")
    if request.HasField("load") and not 0.0 <= request.load <= 1.0:
        raise InvalidArgument("load", f"must be within 0-1, got {request.load}")
    each = []
    own: list[ratelimit_pb2.Rate | None] | None = None
    for i, descriptor in enumerate(descriptors):
        charge = descriptor.hits if descriptor.HasField("hits") else hits
        if not 0 <= charge <= MAX_HITS:
            raise InvalidArgument(f"descriptors[{i}].hits", f"must be 0-{MAX_HITS}, got {charge}")
        if descriptor.HasField("limit"):
            validate_own(descriptor.limit, f"descriptors[{i}].limit")
            if own is None:
                own = [None] * len(descriptors)
            own[i] = descriptor.limit
        each.append(charge)
    return entries, each, own


def validate_own(rate: ratelimit_pb2.Rate, field: str) -> None:
    """A descriptor's own limit: a unit and 0 (blocks) to the largest stored rate."""
    if not 0 <= rate.requests_per_unit <= MAX_REQUESTS_PER_UNIT:
        raise InvalidArgument(
            f"{field}.requests_per_unit",
            f"must be 0-{MAX_REQUESTS_PER_UNIT}, got {rate.requests_per_unit}",
        )
    if rate.unit not in UNIT_SECONDS:
        raise InvalidArgument(
            f"{field}.unit", f"must be SECOND, MINUTE, HOUR or DAY, got {rate.unit}"
        )


def _check_stub(channel: grpc.aio.Channel) -> Any:
    return ratelimit_pb2_grpc.RateLimitServiceStub(channel).Check


def _lease_stub(channel: grpc.aio.Channel) -> Any:
    return ratelimit_pb2_grpc.RateLimitServiceStub(channel).LeaseQuota


async def decide_check(
    router: LeaderRouter,
    limits: RateLimitManager,
    request: ratelimit_pb2.CheckRequest,
    context: grpc.aio.ServicerContext,
) -> ratelimit_pb2.CheckResponse:
    """A Check, validated and decided where its counters live; under a leader of an
    earlier version, on that leader (or by the fallback when it is away). A decision
    made on this replica's own share is marked in the trailing metadata."""
    descriptors, hits, own = _validate_check(request)
    load = request.load if request.HasField("load") else None
    return await decide(
        router, limits, context, request.domain, descriptors, hits, own, load, lambda: request
    )


async def decide(
    router: LeaderRouter,
    limits: RateLimitManager,
    context: grpc.aio.ServicerContext,
    domain: str,
    descriptors: Sequence[Sequence[Entry]],
    hits: Sequence[int],
    own: Sequence[ratelimit_pb2.Rate | None] | None,
    load: float | None,
    native: Callable[[], ratelimit_pb2.CheckRequest],
) -> ratelimit_pb2.CheckResponse:
    """A Check validated as ``_validate_check`` validates it, decided as ``decide_check``
    says. ``native()`` makes the Check as a request, to forward to a leader of an
    earlier version: made only then. Shared by the native and Envoy APIs."""
    if limits.decides_here():
        response = await limits.check(domain, descriptors, hits, load, own)
    else:
        response, _ = await router.run_or_fallback(
            context,
            native(),
            _check_stub,
            lambda: limits.check(domain, descriptors, hits, load, own),
            lambda: limits.check_fallback(domain, descriptors, hits, own),
        )
    if response.local_fallback:
        context.set_trailing_metadata(LOCAL_MODE)
    return response


class RateLimitServicer(ratelimit_pb2_grpc.RateLimitServiceServicer):
    """Thin layer over RateLimitManager."""

    def __init__(self, limiter: RateLimitManager, router: LeaderRouter) -> None:
        self._limiter = limiter
        self._router = router

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
        return await decide_check(self._router, self._limiter, request, context)

    @rpc
    async def LeaseQuota(
        self, request: ratelimit_pb2.LeaseQuotaRequest, context: grpc.aio.ServicerContext
    ) -> ratelimit_pb2.LeaseQuotaResponse:
        validate_name(request.domain, "domain")
        validate_descriptor(request.descriptor, "descriptor")
        validate_id(request.client_id, "client_id")
        if not 0 <= request.wanted <= MAX_WANTED:
            raise InvalidArgument("wanted", f"must be 0-{MAX_WANTED}, got {request.wanted}")
        # No local fallback: a client without a fresh lease keeps its last one or
        # its configured safe share until the counter's owner answers.
        if self._limiter.decides_here():
            return await self._limiter.lease(
                request.domain, request.descriptor.entries, request.client_id, request.wanted
            )
        # Under a leader of an earlier version, it keeps every lease.
        return await self._router.run(
            context,
            request,
            _lease_stub,
            lambda: self._limiter.lease(
                request.domain, request.descriptor.entries, request.client_id, request.wanted
            ),
        )
