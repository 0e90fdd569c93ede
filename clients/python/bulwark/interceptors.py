"""gRPC client interceptors that put Bulwark in front of a service's own outgoing calls.

A service adds one to the channels it opens to a downstream service; each
unary-unary call whose method matches a rule is guarded, in this order:

1. **Adaptive throttle** (``Guard.throttle``): while the downstream refuses
   work, the call may be rejected locally with RESOURCE_EXHAUSTED, with the SRE
   book's probability ``max(0, (requests - K * accepts) / (requests + 1))``.
   First, because it is the cheapest and needs no one: a throttled call spends
   no rate-limit quota and takes no bulkhead permit.
2. **Rate limit** (``Guard.limit``): over the limit, the call fails with
   RESOURCE_EXHAUSTED and never leaves the process.
3. **Bulkhead** (``Guard.bulkhead``): a cluster-wide permit is held for the
   whole call; a full bulkhead fails the call with RESOURCE_EXHAUSTED.
4. **Adaptive concurrency** (``Guard.adaptive``): at its Gradient2 limit of
   calls in flight, the call fails at once with RESOURCE_EXHAUSTED. After the
   bulkhead, so that Bulwark's own latency never counts as the downstream's.
5. **Circuit breaker** (``Guard.breaker``): refused, the call fails fast with
   UNAVAILABLE without reaching the downstream. Last, after every step that
   can refuse: a trial call a later step refused would never report, and
   would hold the breaker HALF_OPEN.
6. **Fault rules** (``ChaosService``), only where the client opted in
   (``ClientOptions.chaos``): an active rule matching the call (by this service
   and instance, the Guard's ``service`` else its ``breaker``, the method and the
   request metadata) delays it and may fail it with the rule's status before it
   is sent, as the downstream would. The breaker records an injected failure as a
   failure; the delay counts in the call's latency.

Once the downstream answers, the breaker records the outcome: a failure when
the status is one of ``failure_codes`` (by default UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and RESOURCE_EXHAUSTED: the dependency's
fault), a success otherwise (INVALID_ARGUMENT, NOT_FOUND and the like are the
caller's fault and say nothing about the dependency's health; CANCELLED is the
caller giving up). A call slower than the client's ``slow_call`` also counts
as slow. The concurrency limit gets the call's RTT back (a timeout or a
refusal cuts it) and the throttle counts the answer as accepted or refused
(UNAVAILABLE or RESOURCE_EXHAUSTED); ``bulwark._backpressure`` has the details.

Rules map a full method name (``"/pkg.Service/Method"``) or a prefix ending in
``/`` (``"/pkg.Service/"``; ``"/"`` matches every method) to a ``Guard``. The
exact name wins, then the longest prefix; methods matching no rule pass
through untouched. Adaptive state is kept per downstream: the Guard's
``service`` if set, else the rule's key.

A refused call fails like any gRPC call: with ``grpc.aio.AioRpcError`` on an
asyncio channel, with ``RejectedCall`` (a ``grpc.RpcError`` and ``grpc.Call``)
on a synchronous one. Its trailing metadata carries ``bulwark-rejected-by``
(``throttle``, ``rate-limit``, ``bulkhead``, ``concurrency``, ``breaker`` or
``fault``).

When Bulwark itself cannot answer (an unknown breaker or bulkhead, refused
credentials, no endpoint reachable for a bulkhead permit) the call goes ahead
unguarded by that step (``fail_open=True``, the default, logged once per name
and status) or fails with UNAVAILABLE (``fail_open=False``). Breaker decisions
and rate limits never need that: the clients decide them from their caches and
local fallbacks while Bulwark is away. Throttling and adaptive concurrency
never ask Bulwark: with rules that use nothing else, the client may be None.
With a client, a rule naming a ``service`` without its own ``adaptive`` or
``throttle`` follows that service's central ``BackpressurePolicy``
(``bulwark._backpressure``, "Central policies"); a local setting wins.

Usage::

    rules = {
        "/payments.v1.Payments/": Guard(
            breaker="payments", bulkhead="payments", adaptive=True, throttle=True
        )
    }
    channel = grpc.aio.insecure_channel(
        "payments:443", interceptors=[AsyncBulwarkInterceptor(bulwark, rules)]
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bulwark._adaptive import Gradient2Settings, ThrottleSettings
from bulwark._backpressure import (
    Backpressure,
    Downstream,
    DownstreamState,
    Flight,
    priority_of,
)
from bulwark._faults import Fault
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
    "DownstreamState",
    "Gradient2Settings",
    "Guard",
    "RejectedCall",
    "ThrottleSettings",
]


def _check_client(client: object, rules: Mapping[str, Guard]) -> None:
    if client is not None:
        return
    for key, guard in rules.items():
        if isinstance(guard, Guard) and guard.needs_client:
            raise ValueError(
                f"rule {key!r}: breaker, bulkhead, limit and service need a Bulwark client; "
                "only adaptive and throttle work with client=None"
            )


class _Interceptor:
    """What both interceptors share: the rules, the backpressure state and the clock."""

    def __init__(
        self,
        client: Any,
        rules: Mapping[str, Guard],
        failure_codes: Collection[grpc.StatusCode],
        fail_open: bool,
        clock: Callable[[], float],
        random: Callable[[], float] | None,
        lock: contextlib.AbstractContextManager[object] | None,
    ) -> None:
        self._client = client
        self._policy = GuardPolicy(rules, failure_codes, fail_open)
        _check_client(client, rules)
        # Central backpressure policies come from the client's watch, started at the
        # first call (on the event loop, for the asyncio client).
        central = getattr(client, "backpressure_policies", None)
        self._backpressure = Backpressure(rules, lock=lock, random=random, central=central)
        self._clock = clock
        # The client's fault rules, if it opted in to chaos (None: it never applies any).
        self._faults = getattr(client, "faults", None)

    def backpressure(self) -> dict[str, DownstreamState]:
        """Each downstream's adaptive limit, calls in flight and throttle probability."""
        return self._backpressure.states(self._clock())

    def _admit(self, downstream: Downstream | None, priority: str) -> Flight | None:
        """Step 4; None without a downstream to track."""
        return downstream.admit(self._clock(), priority) if downstream is not None else None

    def _fault(self, guard: Guard, method: str | bytes, metadata: Any) -> Fault | None:
        """Step 6: the fault this call gets from the client's rules, if any."""
        injector = self._faults() if self._faults is not None else None
        if injector is None:
            return None
        name = method.decode() if isinstance(method, bytes) else method
        return injector.decide(guard.service or guard.breaker or "", name, metadata)

    def _aborted(self, guard: Guard, flight: Flight | None, fault: Fault, started: float) -> None:
        """Step 6 failed the call: counted as the downstream's answer, then refused."""
        if fault.code is not None:
            self._answered(guard, flight, fault.code, started)
            raise Refusal(fault.code, fault.details, "fault")

    def _answered(
        self, guard: Guard, flight: Flight | None, code: grpc.StatusCode | None, started: float
    ) -> None:
        """The call ended with ``code`` (None: no gRPC answer at all): count it everywhere."""
        now = self._clock()
        if flight is not None:
            if code is None:
                flight.abandon()
            else:
                flight.finish(code, now)
        if guard.breaker is None and guard.service is None:
            return
        if code is None:
            code = grpc.StatusCode.UNKNOWN  # failed before reaching the wire: the breaker's view
        elapsed = now - started
        success, slow = self._policy.outcome(code, elapsed, slow_call_of(self._client))
        if guard.breaker is not None:
            self._client.record(guard.breaker, success, slow=slow)
        if guard.service is not None:
            self._client.record_call(guard.service, failed=not success, latency=elapsed)


# -- asyncio -------------------------------------------------------------------------


class AsyncBulwarkInterceptor(_Interceptor, grpc.aio.UnaryUnaryClientInterceptor):
    """Guards the unary calls of a ``grpc.aio`` channel with an ``AsyncClient``.

    Use the channel on the event loop the client runs on. ``client`` may be None when
    every rule uses only ``adaptive`` and ``throttle``. ``clock`` (monotonic seconds)
    and ``random`` (uniform in [0, 1), the throttle's draw) are there for tests.
    """

    def __init__(
        self,
        client: AsyncClient | None,
        rules: Mapping[str, Guard],
        *,
        failure_codes: Collection[grpc.StatusCode] = DEFAULT_FAILURE_CODES,
        fail_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] | None = None,
    ) -> None:
        # One event loop: the backpressure state needs no lock.
        super().__init__(client, rules, failure_codes, fail_open, clock, random, None)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        rule = self._policy.rule_for(client_call_details.method)
        if rule is None:
            return await continuation(client_call_details, request)
        try:
            return await self._guarded(rule, continuation, client_call_details, request)
        except Refusal as refusal:
            raise refusal.as_aio_error() from None

    async def _guarded(
        self,
        rule: tuple[str, Guard],
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        policy, client, clock = self._policy, self._client, self._clock
        key, guard = rule
        downstream = self._backpressure.for_rule(key)
        priority = priority_of(details.metadata)
        if downstream is not None:
            downstream.check_throttle(clock(), priority)
        if guard.limit is not None:
            domain, descriptor = guard.limit
            try:
                within: Any = await client.check(domain, descriptor)
            except BulwarkError as error:
                within = error
            policy.within_limit(domain, descriptor, within)
        breaker = guard.breaker
        async with contextlib.AsyncExitStack() as stack:
            if guard.bulkhead is not None:
                try:
                    await stack.enter_async_context(client.permit(guard.bulkhead))
                except BulwarkError as error:
                    policy.permit_failed(guard.bulkhead, error)
            flight = self._admit(downstream, priority)
            try:
                if breaker is not None:
                    try:
                        decision: Any = await client.allow(breaker)
                    except BulwarkError as error:
                        decision = error
                    policy.admitted(breaker, decision)
                started = clock()
                if flight is not None:
                    flight.sent(started)
                fault = self._fault(guard, details.method, details.metadata)
                if fault is not None:
                    try:
                        await asyncio.sleep(fault.delay)
                    finally:
                        fault.release()
                    self._aborted(guard, flight, fault, started)
                try:
                    call = await continuation(details, request)
                    code = await call.code()
                except grpc.aio.AioRpcError as error:  # raised by an inner interceptor
                    self._answered(guard, flight, error.code(), started)
                    raise
                self._answered(guard, flight, code, started)
                return call
            finally:
                if flight is not None:
                    # A no-op once finished; else the call got no answer (refused by the
                    # breaker, cancelled by its caller, failed in the process): free its slot.
                    flight.abandon()


# -- threads ---------------------------------------------------------------------------


class BulwarkInterceptor(_Interceptor, grpc.UnaryUnaryClientInterceptor):
    """Guards the unary calls of a synchronous channel with a ``bulwark.sync.Client``.

    ``grpc.intercept_channel(channel, BulwarkInterceptor(bulwark, rules))``. A
    refused call raises ``RejectedCall``. With a bulkhead, ``.future()`` calls
    wait for the response inside the interceptor (the permit is held for the call);
    without one, a future's outcome is counted by a done-callback. ``client`` may be
    None when every rule uses only ``adaptive`` and ``throttle``; ``clock`` and
    ``random`` are there for tests.
    """

    def __init__(
        self,
        client: Client | None,
        rules: Mapping[str, Guard],
        *,
        failure_codes: Collection[grpc.StatusCode] = DEFAULT_FAILURE_CODES,
        fail_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] | None = None,
    ) -> None:
        # Calls start on the caller's threads and end on gRPC's: one lock for the state.
        lock = threading.Lock()
        super().__init__(client, rules, failure_codes, fail_open, clock, random, lock)

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        rule = self._policy.rule_for(client_call_details.method)
        if rule is None:
            return continuation(client_call_details, request)
        try:
            return self._guarded(rule, continuation, client_call_details, request)
        except Refusal as refusal:
            raise refusal.as_rejected_call() from None

    def _guarded(
        self,
        rule: tuple[str, Guard],
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        policy, client = self._policy, self._client
        key, guard = rule
        downstream = self._backpressure.for_rule(key)
        priority = priority_of(details.metadata)
        if downstream is not None:
            downstream.check_throttle(self._clock(), priority)
        if guard.limit is not None:
            domain, descriptor = guard.limit
            try:
                within: Any = client.check(domain, descriptor)
            except BulwarkError as error:
                within = error
            policy.within_limit(domain, descriptor, within)
        if guard.bulkhead is None:
            flight = self._admit(downstream, priority)
            try:
                started = self._send(guard, flight, details)
                outcome = continuation(details, request)
            except BaseException:
                if flight is not None:
                    flight.abandon()
                raise
            if flight is not None or guard.breaker is not None or guard.service is not None:
                # Blocking calls are complete already; futures report when done.
                outcome.add_done_callback(
                    lambda done: self._answered(guard, flight, _code_of(done), started)
                )
            return outcome
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(client.permit(guard.bulkhead))
            except BulwarkError as error:
                policy.permit_failed(guard.bulkhead, error)
            flight = self._admit(downstream, priority)
            try:
                started = self._send(guard, flight, details)
                outcome = continuation(details, request)
                outcome.code()  # waits for the end of the call: the permit covers all of it
            except BaseException:
                if flight is not None:
                    flight.abandon()
                raise
            # Before the permit goes back: its release is Bulwark's time, not the call's.
            self._answered(guard, flight, _code_of(outcome), started)
        return outcome

    def _send(self, guard: Guard, flight: Flight | None, details: Any) -> float:
        """Steps 5 and 6, then the time the call leaves (the start of its RTT)."""
        breaker = guard.breaker
        if breaker is not None:
            try:
                decision: Any = self._client.allow(breaker)
            except BulwarkError as error:
                decision = error
            self._policy.admitted(breaker, decision)
        started = self._clock()
        if flight is not None:
            flight.sent(started)
        fault = self._fault(guard, details.method, details.metadata)
        if fault is not None:
            try:
                time.sleep(fault.delay)
            finally:
                fault.release()
            self._aborted(guard, flight, fault, started)
        return started


def _code_of(outcome: Any) -> grpc.StatusCode | None:
    """A finished call's status; None when it is no ``grpc.Call`` (it failed in-process)."""
    try:
        return outcome.code()
    except Exception:
        return None
