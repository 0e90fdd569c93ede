"""CircuitBreakerService: validate, call the breakers, map errors."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc, rpc_stream
from bulwark_server.breakers.manager import BreakerManager
from bulwark_server.errors import InvalidArgument
from bulwark_server.security.identity import caller_name
from bulwark_server.validation import page_params, validate_id, validate_name, validate_watch

MAX_REPORT_ENTRIES = 1000
MAX_COUNT = 10**9


def _expected_revision(value: int) -> int:
    if value < 0:
        raise InvalidArgument("expected_revision", f"must not be negative, got {value}")
    return value


def _validate_report(request: breaker_pb2.ReportOutcomesRequest) -> None:
    validate_id(request.reporter, "reporter")
    if len(request.outcomes) > MAX_REPORT_ENTRIES:
        raise InvalidArgument(
            "outcomes", f"at most {MAX_REPORT_ENTRIES} entries, got {len(request.outcomes)}"
        )
    for i, item in enumerate(request.outcomes):
        validate_name(item.name, f"outcomes[{i}].name")
        counts = item.counts
        for field in ("successes", "failures", "slow_calls"):
            value = getattr(counts, field)
            if not 0 <= value <= MAX_COUNT:
                raise InvalidArgument(
                    f"outcomes[{i}].counts.{field}", f"must be 0-{MAX_COUNT}, got {value}"
                )
        if counts.slow_calls > counts.successes + counts.failures:
            raise InvalidArgument(
                f"outcomes[{i}].counts.slow_calls",
                "cannot exceed successes + failures (slow calls are among them)",
            )


def _report_stub(channel: grpc.aio.Channel) -> Any:
    return breaker_pb2_grpc.CircuitBreakerServiceStub(channel).ReportOutcomes


class BreakerServicer(breaker_pb2_grpc.CircuitBreakerServiceServicer):
    """Thin layer over BreakerManager; ReportOutcomes on a follower is forwarded to the leader."""

    def __init__(
        self,
        breakers: BreakerManager,
        router: LeaderRouter,
    ) -> None:
        self._breakers = breakers
        self._router = router

    @rpc
    async def PutBreaker(
        self, request: breaker_pb2.PutBreakerRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.PutBreakerResponse:
        validate_name(request.name)
        expected = _expected_revision(request.expected_revision)
        breaker, created = await self._breakers.put(request.name, request.config, expected)
        return breaker_pb2.PutBreakerResponse(breaker=breaker, created=created)

    @rpc
    async def GetBreaker(
        self, request: breaker_pb2.GetBreakerRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.GetBreakerResponse:
        validate_name(request.name)
        return breaker_pb2.GetBreakerResponse(
            breaker=self._breakers.get(request.name), stale=self._breakers.stale
        )

    @rpc
    async def ListBreakers(
        self, request: breaker_pb2.ListBreakersRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.ListBreakersResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        breakers, token = self._breakers.list(size, start_after)
        return breaker_pb2.ListBreakersResponse(breakers=breakers, next_page_token=token)

    @rpc
    async def DeleteBreaker(
        self, request: breaker_pb2.DeleteBreakerRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.DeleteBreakerResponse:
        validate_name(request.name)
        expected = _expected_revision(request.expected_revision)
        revision = await self._breakers.delete(request.name, expected)
        return breaker_pb2.DeleteBreakerResponse(revision=revision)

    @rpc
    async def Allow(
        self, request: breaker_pb2.AllowRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.AllowResponse:
        validate_name(request.name)
        validate_id(request.caller, "caller", required=False)
        decision, state, revision = await self._breakers.allow(request.name)
        response = breaker_pb2.AllowResponse(
            allowed=decision.allowed,
            state=state,
            trial=decision.trial,
            revision=revision,
            stale=self._breakers.stale,
        )
        if not decision.allowed and math.isfinite(decision.retry_after):
            response.retry_after.FromNanoseconds(int(max(0.0, decision.retry_after) * 1e9))
        return response

    @rpc
    async def ReportOutcomes(
        self, request: breaker_pb2.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.ReportOutcomesResponse:
        _validate_report(request)
        return await self._router.run(context, request, _report_stub, lambda: self._record(request))

    async def _record(
        self, request: breaker_pb2.ReportOutcomesRequest
    ) -> breaker_pb2.ReportOutcomesResponse:
        accepted, unknown = await self._breakers.record(list(request.outcomes), request.reporter)
        return breaker_pb2.ReportOutcomesResponse(accepted=accepted, unknown_breakers=unknown)

    @rpc
    async def ForceState(
        self, request: breaker_pb2.ForceStateRequest, context: grpc.aio.ServicerContext
    ) -> breaker_pb2.ForceStateResponse:
        validate_name(request.name)
        # The state and reason rules are the capability's (breakers.machine.check_force).
        actor = caller_name(validate_id(request.actor, "actor", required=False))
        breaker = await self._breakers.force(request.name, request.state, actor, request.reason)
        return breaker_pb2.ForceStateResponse(breaker=breaker)

    @rpc_stream
    async def WatchBreakers(
        self, request: breaker_pb2.WatchBreakersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[breaker_pb2.WatchBreakersResponse]:
        names = validate_watch(request.start_revision, request.names)
        async for response in self._breakers.watch(names, request.start_revision):
            yield response
