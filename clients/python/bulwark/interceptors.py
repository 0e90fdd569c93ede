"""gRPC client interceptors that put Bulwark in front of a service's own outgoing calls.

A service adds one to the channels it opens to a downstream service; each
unary-unary call whose method matches a rule is guarded, in this order:

1. **Rate limit** (``Guard.limit``): over the limit, the call fails with
   RESOURCE_EXHAUSTED and never leaves the process.
2. **Circuit breaker** (``Guard.breaker``): refused, the call fails fast with
   UNAVAILABLE without reaching the downstream.
3. **Bulkhead** (``Guard.bulkhead``): a cluster-wide permit is held for the
   whole call; a full bulkhead fails the call with RESOURCE_EXHAUSTED.

Once the downstream answers, the breaker records the outcome: a failure when
the status is one of ``failure_codes`` (by default UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and RESOURCE_EXHAUSTED: the dependency's
fault), a success otherwise (INVALID_ARGUMENT, NOT_FOUND and the like are the
caller's fault and say nothing about the dependency's health; CANCELLED is the
caller giving up). A call slower than the client's ``slow_call`` also counts
as slow.

Rules map a full method name (``"/pkg.Service/Method"``) or a prefix ending in
``/`` (``"/pkg.Service/"``; ``"/"`` matches every method) to a ``Guard``. The
exact name wins, then the longest prefix; methods matching no rule pass
through untouched.

A refused call fails like any gRPC call: with ``grpc.aio.AioRpcError`` on an
asyncio channel, with ``RejectedCall`` (a ``grpc.RpcError`` and ``grpc.Call``)
on a synchronous one. Its trailing metadata carries ``bulwark-rejected-by``
(``rate-limit``, ``breaker`` or ``bulkhead``).

When Bulwark itself cannot answer (an unknown breaker or bulkhead, refused
credentials, no endpoint reachable for a bulkhead permit) the call goes ahead
unguarded by that step (``fail_open=True``, the default, logged once per name
and status) or fails with UNAVAILABLE (``fail_open=False``). Breaker decisions
and rate limits never need that: the clients decide them from their caches and
local fallbacks while Bulwark is away.

Usage::

    rules = {"/payments.v1.Payments/": Guard(breaker="payments", bulkhead="payments")}
    channel = grpc.aio.insecure_channel(
        "payments:443", interceptors=[AsyncBulwarkInterceptor(bulwark, rules)]
    )
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bulwark._guard import (
    DEFAULT_FAILURE_CODES,
    REJECTED_BY_KEY,
    Guard,
    GuardPolicy,
    Refusal,
    RejectedCall,
    slow_call_of,
)
from bulwark.errors import BulwarkError

if TYPE_CHECKING:
    from bulwark.aio import AsyncClient
    from bulwark.sync import Client

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "REJECTED_BY_KEY",
    "AsyncBulwarkInterceptor",
    "BulwarkInterceptor",
    "Guard",
    "RejectedCall",
]

_monotonic = time.monotonic


# -- asyncio -------------------------------------------------------------------------


class AsyncBulwarkInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Guards the unary calls of a ``grpc.aio`` channel with an ``AsyncClient``.

    Use the channel on the event loop the client runs on.
    """

    def __init__(
        self,
        client: AsyncClient,
        rules: Mapping[str, Guard],
        *,
        failure_codes: Collection[grpc.StatusCode] = DEFAULT_FAILURE_CODES,
        fail_open: bool = True,
    ) -> None:
        self._client = client
        self._policy = GuardPolicy(rules, failure_codes, fail_open)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        guard = self._policy.guard_for(client_call_details.method)
        if guard is None:
            return await continuation(client_call_details, request)
        try:
            return await self._guarded(guard, continuation, client_call_details, request)
        except Refusal as refusal:
            raise refusal.as_aio_error() from None

    async def _guarded(
        self,
        guard: Guard,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        policy, client = self._policy, self._client
        if guard.limit is not None:
            domain, descriptor = guard.limit
            try:
                within: Any = await client.check(domain, descriptor)
            except BulwarkError as error:
                within = error
            policy.within_limit(domain, descriptor, within)
        breaker = guard.breaker
        async with contextlib.AsyncExitStack() as stack:
            # The permit before the breaker: a trial call a full bulkhead then refused
            # would never report, and would hold the breaker HALF_OPEN.
            if guard.bulkhead is not None:
                try:
                    await stack.enter_async_context(client.permit(guard.bulkhead))
                except BulwarkError as error:
                    policy.permit_failed(guard.bulkhead, error)
            if breaker is not None:
                try:
                    decision: Any = await client.allow(breaker)
                except BulwarkError as error:
                    decision = error
                policy.admitted(breaker, decision)
            started = _monotonic()
            try:
                call = await continuation(details, request)
                code = await call.code()
            except grpc.aio.AioRpcError as error:  # raised by an inner interceptor
                self._record(guard, error.code(), started)
                raise
            self._record(guard, code, started)
            return call

    def _record(self, guard: Guard, code: grpc.StatusCode | None, started: float) -> None:
        if guard.breaker is None and guard.service is None:
            return
        elapsed = _monotonic() - started
        success, slow = self._policy.outcome(code, elapsed, slow_call_of(self._client))
        if guard.breaker is not None:
            self._client.record(guard.breaker, success, slow=slow)
        if guard.service is not None:
            self._client.record_call(guard.service, failed=not success, latency=elapsed)


# -- threads ---------------------------------------------------------------------------


class BulwarkInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Guards the unary calls of a synchronous channel with a ``bulwark.sync.Client``.

    ``grpc.intercept_channel(channel, BulwarkInterceptor(bulwark, rules))``. A
    refused call raises ``RejectedCall``. With a bulkhead, ``.future()`` calls
    wait for the response inside the interceptor (the permit is held for the call).
    """

    def __init__(
        self,
        client: Client,
        rules: Mapping[str, Guard],
        *,
        failure_codes: Collection[grpc.StatusCode] = DEFAULT_FAILURE_CODES,
        fail_open: bool = True,
    ) -> None:
        self._client = client
        self._policy = GuardPolicy(rules, failure_codes, fail_open)

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        guard = self._policy.guard_for(client_call_details.method)
        if guard is None:
            return continuation(client_call_details, request)
        try:
            return self._guarded(guard, continuation, client_call_details, request)
        except Refusal as refusal:
            raise refusal.as_rejected_call() from None

    def _guarded(
        self,
        guard: Guard,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        policy, client = self._policy, self._client
        if guard.limit is not None:
            domain, descriptor = guard.limit
            try:
                within: Any = client.check(domain, descriptor)
            except BulwarkError as error:
                within = error
            policy.within_limit(domain, descriptor, within)
        breaker = guard.breaker
        if guard.bulkhead is None:
            self._check_breaker(breaker)
            started = _monotonic()
            outcome = continuation(details, request)
            if breaker is not None or guard.service is not None:
                # Blocking calls are complete already; futures report when done.
                outcome.add_done_callback(lambda done: self._record(guard, done, started))
            return outcome
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(client.permit(guard.bulkhead))
            except BulwarkError as error:
                policy.permit_failed(guard.bulkhead, error)
            # The permit before the breaker: a trial call a full bulkhead then refused
            # would never report, and would hold the breaker HALF_OPEN.
            self._check_breaker(breaker)
            started = _monotonic()
            outcome = continuation(details, request)
            outcome.code()  # waits for the end of the call: the permit covers all of it
        self._record(guard, outcome, started)
        return outcome

    def _check_breaker(self, breaker: str | None) -> None:
        """Refuse the call when the breaker is open (no-op without a breaker)."""
        if breaker is None:
            return
        try:
            decision: Any = self._client.allow(breaker)
        except BulwarkError as error:
            decision = error
        self._policy.admitted(breaker, decision)

    def _record(self, guard: Guard, outcome: Any, started: float) -> None:
        if guard.breaker is None and guard.service is None:
            return
        try:
            code = outcome.code()
        except Exception:  # not a grpc.Call: the call failed before reaching the wire
            code = grpc.StatusCode.UNKNOWN
        elapsed = _monotonic() - started
        success, slow = self._policy.outcome(code, elapsed, slow_call_of(self._client))
        if guard.breaker is not None:
            self._client.record(guard.breaker, success, slow=slow)
        if guard.service is not None:
            self._client.record_call(guard.service, failed=not success, latency=elapsed)
