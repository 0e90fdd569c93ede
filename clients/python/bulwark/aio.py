"""AsyncClient: the Bulwark client for asyncio services (grpc.aio), over the shared core.

The asyncio twin of :class:`bulwark.sync.Client`: every decision is made by
the same I/O-free ``bulwark._policy.ClientPolicy``; this driver only performs
the remote calls it names (``grpc.aio``) and runs the watches and the
reporter as tasks on the event loop.

What it guarantees:

* "May I call X?", "is feature F available?" and "who is primary?" are
  answered in-process from caches fed by watch streams; a call to Bulwark is
  made only when the cache cannot decide (a HALF_OPEN trial permit).
* Outcomes are reported in the background, batched (every ~100 ms or 500
  outcomes), with bounded memory while Bulwark is unreachable; a burst of
  failures goes out at once (the rule is ``bulwark._outcomes``').
* When no endpoint answers: the last known breaker, feature and primary state
  keeps answering (``staleness()`` says for how long it has been unconfirmed);
  a local breaker keeps counting each dependency's outcomes and cuts it off
  by the breaker's own thresholds; rate limits are enforced from the last
  quota lease, then a configured safe rate. Watches resume from the last
  revision when Bulwark is back, and the local breakers give way to the
  fleet's again.
* Every call has a deadline; a call is retried on another endpoint only when
  that is safe (``_endpoints.retryable``), each endpoint at most once per call.
* Use it from one event loop (the one ``start()`` ran on). ``close()`` sends
  the outcomes still buffered, stops every task and closes the channels; it is
  idempotent, and ``start()`` after it raises RuntimeError.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from bulwark._caches import Feature
from bulwark._driver import Driver
from bulwark._policy import Descriptor, Remote
from bulwark._settings import CHANNEL_OPTIONS, ClientOptions
from bulwark._states import Decision
from bulwark._watching import Watch, health_check, report_pause, run_callback, serving
from bulwark.errors import BulwarkError, UnavailableError
from bulwark.v1 import (
    bulkhead_pb2,
    registry_pb2,
)

__all__ = ["CHANNEL_OPTIONS", "AsyncClient", "Bulkhead", "Feature", "PrimaryCallback"]

log = logging.getLogger("bulwark")

T = TypeVar("T")
PrimaryCallback = Callable[[str, registry_pb2.Primary | None], None]
_monotonic = time.monotonic


class AsyncClient(Driver):
    """One per process: ``async with AsyncClient(["10.0.0.1:50051", ...]) as bulwark:``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, options=options, **kwargs)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reporter: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        # Wakes the reporter before its timer: urgent failures (``_outcomes``), or close().
        self._wake = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the watches and the reporter; wait (up to the timeout) for a first sync.

        A second call does nothing; a call after ``close()`` raises RuntimeError.
        """
        if self._closed or self._stopping:
            raise RuntimeError("this AsyncClient is closed")
        if self._reporter is not None:
            return  # Already started.
        for name in ("breakers", "features", "primaries"):
            self._spawn(self._policy.watch(name))
        self._reporter = asyncio.get_running_loop().create_task(
            self._report_loop(), name="bulwark-reporter"
        )
        deadline = _monotonic() + self.options.timeout
        caches = (self.breakers, self.features, self.primaries)
        while _monotonic() < deadline and any(c.synced_at is None for c in caches):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Send the outcomes still buffered, stop the background tasks, close channels."""
        if self._closed or self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._reporter is not None:
            # Let a report in flight finish (its deadline bounds it), then drain.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reporter
        with contextlib.suppress(BulwarkError):
            await self._flush(drain=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._closed = True
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def staleness(self) -> dict[str, float]:
        """Seconds each cache has gone unconfirmed (0 while its watch is live)."""
        return self._policy.staleness(_monotonic())

    # -- calls with failover ----------------------------------------------------

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._closed:
            raise UnavailableError(grpc.StatusCode.CANCELLED, "the client is closed")
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(
                    address, self._credentials, options=CHANNEL_OPTIONS
                )
            self._channels[address] = channel
        return channel

    async def _call(
        self,
        stub: Callable[[grpc.aio.Channel], Any],
        method: str,
        request: Any,
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> Any:
        """One unary call on the endpoints the policy's ``CallPlan`` picks, in turn."""
        policy = self._policy
        plan = policy.plan(idempotent, _monotonic())
        error: BulwarkError | None = None
        while (address := plan.next_address(_monotonic())) is not None:
            try:
                call = getattr(stub(self._channel(address)), method)
                response = await call(
                    request,
                    timeout=deadline or self.options.timeout,
                    metadata=self.options.metadata(),
                )
            except grpc.aio.UsageError:  # the channel was closed by close() meanwhile
                raise UnavailableError(grpc.StatusCode.CANCELLED, "the client is closed") from None
            except grpc.RpcError as exc:
                error = BulwarkError.from_rpc(exc)
                if not policy.attempt_failed(plan, address, error.code, _monotonic()):
                    raise error from None
                continue
            policy.attempt_succeeded(address)
            return response
        raise policy.exhausted(plan, error) from None

    async def _run(self, remote: Remote[T]) -> T:
        """Make the call the policy asked for and let it turn the outcome into the answer."""
        try:
            response = await self._call(
                remote.stub,
                remote.method,
                remote.request,
                idempotent=remote.idempotent,
                deadline=remote.timeout,
            )
        except BulwarkError as error:
            return remote.failed(error, _monotonic())
        return remote.done(response, _monotonic(), time.time())

    # -- watches ----------------------------------------------------------------

    def _spawn(self, watch: Watch) -> None:
        self._tasks.append(
            asyncio.get_running_loop().create_task(
                self._follow(watch), name=f"bulwark-{watch.name}"
            )
        )

    async def _follow(self, watch: Watch) -> None:
        """Keep one watch running, failing over and resuming until closed (see ``WatchRetry``)."""
        while True:
            now = _monotonic()
            address = self._endpoints.next_healthy(now)
            if address is None:
                await asyncio.sleep(watch.retry.all_backing_off(self._endpoints.wait_time(now)))
                continue
            try:
                await self._consume(watch, self._channel(address))
                code, details = grpc.StatusCode.UNAVAILABLE, "stream ended"
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
            except BulwarkError as exc:  # the replica failed its health check, or closed
                code, details = exc.code, exc.details
            except Exception:  # a bug must not end the watch for good
                log.exception("bulwark %s watch on %s failed", watch.name, address)
                code, details = grpc.StatusCode.UNKNOWN, "client error"
            was_live = self._policy.on_watch_end(watch.cache, address, code, _monotonic())
            delay = watch.ended(address, code, details, was_live)
            await asyncio.sleep(delay)

    async def _consume(self, watch: Watch, channel: grpc.aio.Channel) -> None:
        """Feed one stream into its cache until it ends."""
        cache, policy = watch.cache, self._policy
        request = watch.request()
        stream = getattr(watch.stub(channel), watch.method)(
            request, metadata=self.options.metadata()
        )
        if request.start_revision > 0:
            # A resumed stream sends only what changed, perhaps nothing: the
            # replica's health check says whether it is live already.
            live = await self._probe(channel)
            if live is False:
                stream.cancel()
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "health check failed")
            if live and not stream.done():
                policy.on_live(cache, _monotonic())
        async for event in stream:
            for callback, service, primary in policy.on_event(
                cache, event, _monotonic(), time.time()
            ):
                run_callback(callback, service, primary)

    async def _probe(self, channel: grpc.aio.Channel) -> bool | None:
        """The gRPC health check on ``channel``, as ``_policy.serving`` reads it."""
        try:
            status = await health_check(channel)(
                None, timeout=self.options.timeout, metadata=self.options.metadata()
            )
        except grpc.aio.AioRpcError as exc:
            return serving(None, exc.code())
        return serving(status, None)

    # -- circuit breakers -------------------------------------------------------

    async def allow(self, name: str) -> Decision:
        """Whether a call to the dependency behind breaker ``name`` may go ahead now."""
        answer = self._policy.allow(name, _monotonic())
        if answer.__class__ is Decision:
            return answer  # type: ignore[return-value]
        return await self._run(answer)  # type: ignore[arg-type]

    def record_call(self, service: str, *, failed: bool, latency: float) -> None:
        """Count one call this process made to ``service``: whether it failed and how
        long it took (seconds). Reported about once a second, summed by Bulwark into
        the service's signals (``GetServiceSignals``)."""
        self._policy.record_call(service, failed, latency)

    def record(self, name: str, success: bool, slow: bool = False) -> None:
        """Count one call's outcome; sent in the next batch (failures of a burst at once)."""
        if self._policy.record(name, success, slow, _monotonic()):
            self._wake.set()

    @contextlib.asynccontextmanager
    async def breaker(self, name: str) -> AsyncIterator[Decision]:
        """``async with bulwark.breaker("payments"):`` — refuse fast, record the outcome."""
        decision = self._policy.admit(name, await self.allow(name))
        fault = self._fault(name)
        started = _monotonic()
        try:
            if fault is not None:
                try:  # a fault is active while it delays (gRFC A33's max_active_faults)
                    await asyncio.sleep(fault.delay)
                finally:
                    fault.release()
                fault.raise_abort()
            yield decision
        except BaseException as exc:
            if self._policy.leave(name, exc, _monotonic() - started, _monotonic()):
                self._wake.set()
            raise
        now = _monotonic()
        if self._policy.leave(name, None, now - started, now):
            self._wake.set()

    async def _report_loop(self) -> None:
        pause = report_pause(self.options.report_interval)
        wait = pause
        while not self._stopping:
            # asyncio.timeout, not wait_for: no task per look at the buffer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            # Cleared before the flush: a failure recorded during it wakes the next wait.
            self._wake.clear()
            if self._stopping:
                return  # close() drains what is left.
            try:
                await self._flush()
            except BulwarkError:
                pass  # Kept (bounded) for the next report, or dropped by the policy.
            except Exception:
                log.exception("bulwark outcome report failed")
            # Urgent failures held back by the minimum gap set a shorter sleep.
            wait = self._policy.report_wait(_monotonic(), pause)

    async def _flush(self, drain: bool = False) -> None:
        """Send what is due (everything with ``drain``): one report per batch, not per call."""
        while (remote := self._policy.next_report(_monotonic(), drain)) is not None:
            await self._run(remote)

    # -- bulkheads --------------------------------------------------------------

    def bulkhead(self, name: str) -> Bulkhead:
        """A handle: ``async with bulwark.bulkhead("db").permit():``."""
        return Bulkhead(self, name)

    @contextlib.asynccontextmanager
    async def permit(
        self, bulkhead: str, *, ttl: float | None = None, max_wait: float | None = None
    ) -> AsyncIterator[bulkhead_pb2.Permit]:
        """``async with bulwark.permit("db"):`` — a cluster-wide permit, released on exit."""
        response = await self._run(self._policy.acquire(bulkhead, ttl, max_wait))
        try:
            yield response.permit
        finally:
            await self._run(self._policy.release(bulkhead, response.permit))

    # -- rate limits ------------------------------------------------------------

    async def check(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """True when the request is within the limits; decided locally when Bulwark is away."""
        answer = self._policy.check(domain, descriptor, hits, _monotonic())
        if answer.__class__ is bool:
            return answer  # type: ignore[return-value]
        return await self._run(answer)  # type: ignore[arg-type]

    async def require(self, domain: str, descriptor: Descriptor, hits: int = 1) -> None:
        """Like ``check``, raising RateLimitedError when over the limit."""
        self._policy.refused(domain, descriptor, await self.check(domain, descriptor, hits))

    async def lease(self, domain: str, descriptor: Descriptor, wanted: int) -> int:
        """Lease a share of a limit for local decisions (``check_local``); the share granted."""
        return await self._run(self._policy.lease(domain, descriptor, wanted))

    def check_local(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """Decide from the leased share (or the safe rate) without calling Bulwark."""
        return self._policy.check_local(domain, descriptor, hits, _monotonic())

    # -- features and primaries -------------------------------------------------

    def feature(self, name: str) -> Feature:
        """The feature's state from the cache: ``bulwark.feature("email").available``."""
        return Feature(name, self.features)

    def primary(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary from the cache (None before the first sync)."""
        return self.primaries.get(service)

    def instances(self, service: str) -> list[registry_pb2.Instance]:
        """The service's instances from a watch-fed cache (its watch starts on the first call).

        After ``close()`` no watch starts: an unknown service has no instances.
        """
        cache = self._policy.instances.get(service)
        if cache is None:
            if self._closed or self._stopping:
                return []
            watch = self._policy.watch("instances", service)
            self._spawn(watch)
            cache = watch.cache
        return cache.instances()

    def _follow_lazily(self, name: str) -> Any:
        cache = getattr(self._policy, name)
        if not cache.followed and not (self._closed or self._stopping):
            self._spawn(self._policy.watch(name))  # raises without a running loop
            cache.followed = True
        return cache

    def on_primary_change(self, service: str, callback: PrimaryCallback) -> None:
        """Call ``callback(service, primary)`` whenever the service's primary or epoch changes.

        Callbacks run on the event loop, in the primaries watch task: keep them short.
        """
        self._policy.callbacks.setdefault(service, []).append(callback)

    # -- decorators -------------------------------------------------------------

    def guard(
        self,
        *,
        breaker: str | None = None,
        bulkhead: str | None = None,
        limit: tuple[str, Mapping[str, str]] | None = None,
    ) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
        """Decorate an async function: rate limit, then bulkhead permit, then breaker."""

        def decorate(func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> T:
                if limit is not None:
                    await self.require(*limit)
                async with contextlib.AsyncExitStack() as stack:
                    # The permit first: a full bulkhead is no failure of the dependency.
                    if bulkhead is not None:
                        await stack.enter_async_context(self.permit(bulkhead))
                    if breaker is not None:
                        await stack.enter_async_context(self.breaker(breaker))
                    return await func(*args, **kwargs)

            return wrapper

        return decorate


class Bulkhead:
    """A bulkhead of the fleet: ``async with bulwark.bulkhead("db").permit():``."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.name = name
        self._client = client

    def permit(
        self, *, ttl: float | None = None, max_wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[bulkhead_pb2.Permit]:
        return self._client.permit(self.name, ttl=ttl, max_wait=max_wait)
