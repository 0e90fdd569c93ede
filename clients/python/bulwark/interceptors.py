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
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bulwark.errors import BulwarkError, ResourceExhaustedError

if TYPE_CHECKING:
    from bulwark._core import Decision
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

log = logging.getLogger("bulwark")

#: Downstream statuses that count as a failure of the dependency.
DEFAULT_FAILURE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

#: Trailing metadata key naming the step that refused a call.
REJECTED_BY_KEY = "bulwark-rejected-by"


@dataclass(frozen=True)
class Guard:
    """What guards the calls of one method or service; each part is optional.

    ``limit`` is ``(domain, descriptor)``, e.g. ``("outbound", {"service": "payments"})``.
    """

    breaker: str | None = None
    bulkhead: str | None = None
    limit: tuple[str, Mapping[str, str]] | None = None


class RejectedCall(grpc.RpcError, grpc.Call):
    """A call Bulwark refused before it reached the downstream (synchronous channels)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, rejected_by: str, retry_after: float | None
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self.rejected_by = rejected_by
        self.retry_after = retry_after
        self._trailing = _trailing_metadata(rejected_by, retry_after)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _trailing_metadata(rejected_by: str, retry_after: float | None) -> tuple[tuple[str, str], ...]:
    items = [(REJECTED_BY_KEY, rejected_by)]
    if retry_after is not None:
        items.append(("retry-after-ms", str(max(0, round(retry_after * 1000)))))
    return tuple(items)


class _Refusal(Exception):
    """Internal: a guard step refused the call."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        rejected_by: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.rejected_by = rejected_by
        self.retry_after = retry_after

    def as_aio_error(self) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            self.code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*_trailing_metadata(self.rejected_by, self.retry_after)),
            details=self.details,
        )

    def as_rejected_call(self) -> RejectedCall:
        return RejectedCall(self.code, self.details, self.rejected_by, self.retry_after)


class _Policy:
    """Rule lookup, outcome classification and Bulwark-error handling shared by both."""

    def __init__(
        self,
        rules: Mapping[str, Guard],
        failure_codes: Collection[grpc.StatusCode],
        fail_open: bool,
    ) -> None:
        exact: dict[str, Guard] = {}
        prefixes: list[tuple[str, Guard]] = []
        for key, guard in rules.items():
            if not key.startswith("/"):
                raise ValueError(f"rule {key!r}: a method starts with '/' ('/pkg.Service/Method')")
            if not isinstance(guard, Guard):
                raise TypeError(f"rule {key!r}: expected a Guard, got {type(guard).__name__}")
            if key.endswith("/"):
                prefixes.append((key, guard))
            else:
                exact[key] = guard
        self._exact = exact
        self._prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
        self._cache: dict[str, Guard | None] = {}
        self.failure_codes = frozenset(failure_codes)
        self.fail_open = fail_open
        self._warned: set[tuple[str, str, grpc.StatusCode]] = set()

    def guard_for(self, method: str | bytes) -> Guard | None:
        name = method.decode() if isinstance(method, bytes) else method
        if name in self._cache:
            return self._cache[name]
        guard = self._exact.get(name)
        if guard is None:
            guard = next((g for prefix, g in self._prefixes if name.startswith(prefix)), None)
        if len(self._cache) < 10_000:  # method names are few; never grow without bound
            self._cache[name] = guard
        return guard

    def failed(self, code: grpc.StatusCode | None) -> bool:
        return code in self.failure_codes

    def refused_by_breaker(self, name: str, decision: Decision) -> _Refusal:
        when = f"; retry in {decision.retry_after:.3f}s" if decision.retry_after is not None else ""
        return _Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"circuit breaker {name!r} is open ({decision.source}){when}",
            "breaker",
            decision.retry_after,
        )

    @staticmethod
    def refused_by_limit(domain: str, descriptor: Mapping[str, str]) -> _Refusal:
        return _Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"over the rate limit of {domain!r}: {dict(descriptor)}",
            "rate-limit",
        )

    @staticmethod
    def refused_by_bulkhead(name: str, error: ResourceExhaustedError) -> _Refusal:
        return _Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"bulkhead {name!r} is full: {error.details}",
            "bulkhead",
            getattr(error, "retry_after", None),
        )

    def bulwark_failed(self, step: str, name: str, error: BulwarkError) -> None:
        """Bulwark could not decide ``step`` for ``name``: go on (fail open) or refuse."""
        key = (step, name, error.code)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "bulwark could not decide %s %r (%s); %s",
                step,
                name,
                error,
                "calls go ahead without it" if self.fail_open else "calls fail with UNAVAILABLE",
            )
        if not self.fail_open:
            raise _Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"bulwark could not decide {step} {name!r}: {error}",
                step,
            )


def _slow_call(client: Any) -> float:
    """The client's slow-call threshold in seconds (60 when it has none)."""
    options = getattr(client, "options", None)
    return float(getattr(options, "slow_call", 60.0))


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
        self._policy = _Policy(rules, failure_codes, fail_open)

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
        except _Refusal as refusal:
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
                within = await client.check(domain, descriptor)
            except BulwarkError as error:
                policy.bulwark_failed("rate-limit", domain, error)
                within = True
            if not within:
                raise policy.refused_by_limit(domain, descriptor)
        breaker = guard.breaker
        async with contextlib.AsyncExitStack() as stack:
            # The permit before the breaker: a trial call a full bulkhead then refused
            # would never report, and would hold the breaker HALF_OPEN.
            if guard.bulkhead is not None:
                try:
                    await stack.enter_async_context(client.permit(guard.bulkhead))
                except ResourceExhaustedError as error:
                    raise policy.refused_by_bulkhead(guard.bulkhead, error) from None
                except BulwarkError as error:
                    policy.bulwark_failed("bulkhead", guard.bulkhead, error)
            if breaker is not None:
                try:
                    decision = await client.allow(breaker)
                except BulwarkError as error:
                    policy.bulwark_failed("breaker", breaker, error)
                else:
                    if not decision.allowed:
                        raise policy.refused_by_breaker(breaker, decision)
            started = time.monotonic()
            try:
                call = await continuation(details, request)
                code = await call.code()
            except grpc.aio.AioRpcError as error:  # raised by an inner interceptor
                self._record(breaker, error.code(), started)
                raise
            self._record(breaker, code, started)
            return call

    def _record(self, breaker: str | None, code: grpc.StatusCode | None, started: float) -> None:
        if breaker is None:
            return
        failed = self._policy.failed(code)
        slow = time.monotonic() - started > _slow_call(self._client)
        self._client.record(breaker, not failed, slow=slow)


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
        self._policy = _Policy(rules, failure_codes, fail_open)

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
        except _Refusal as refusal:
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
                within = client.check(domain, descriptor)
            except BulwarkError as error:
                policy.bulwark_failed("rate-limit", domain, error)
                within = True
            if not within:
                raise policy.refused_by_limit(domain, descriptor)
        breaker = guard.breaker
        if guard.bulkhead is None:
            self._check_breaker(breaker)
            started = time.monotonic()
            outcome = continuation(details, request)
            if breaker is not None:
                # Blocking calls are complete already; futures report when done.
                outcome.add_done_callback(lambda done: self._record(breaker, done, started))
            return outcome
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(client.permit(guard.bulkhead))
            except ResourceExhaustedError as error:
                raise policy.refused_by_bulkhead(guard.bulkhead, error) from None
            except BulwarkError as error:
                policy.bulwark_failed("bulkhead", guard.bulkhead, error)
            # The permit before the breaker: a trial call a full bulkhead then refused
            # would never report, and would hold the breaker HALF_OPEN.
            self._check_breaker(breaker)
            started = time.monotonic()
            outcome = continuation(details, request)
            outcome.code()  # waits for the end of the call: the permit covers all of it
        self._record(breaker, outcome, started)
        return outcome

    def _check_breaker(self, breaker: str | None) -> None:
        """Refuse the call when the breaker is open (no-op without a breaker)."""
        if breaker is None:
            return
        try:
            decision = self._client.allow(breaker)
        except BulwarkError as error:
            self._policy.bulwark_failed("breaker", breaker, error)
        else:
            if not decision.allowed:
                raise self._policy.refused_by_breaker(breaker, decision)

    def _record(self, breaker: str | None, outcome: Any, started: float) -> None:
        if breaker is None:
            return
        try:
            code = outcome.code()
        except Exception:  # not a grpc.Call: the call failed before reaching the wire
            code = grpc.StatusCode.UNKNOWN
        failed = self._policy.failed(code)
        slow = time.monotonic() - started > _slow_call(self._client)
        self._client.record(breaker, not failed, slow=slow)
