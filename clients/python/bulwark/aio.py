"""AsyncClient: the Bulwark client for asyncio services (grpc.aio), over the shared core.

What it guarantees:

* "May I call X?", "is feature F available?" and "who is primary?" are
  answered in-process from caches fed by watch streams; a call to Bulwark is
  made only when the cache cannot decide (a HALF_OPEN trial permit).
* Outcomes are reported in the background, batched (every ~100 ms or 500
  outcomes), with bounded memory while Bulwark is unreachable.
* When no endpoint answers: the last known breaker, feature and primary state
  keeps answering (``staleness()`` says for how long it has been unconfirmed);
  a local breaker keeps counting each dependency's outcomes and cuts it off
  by the breaker's own thresholds; rate limits are enforced from the last
  quota lease, then a configured safe rate. Watches resume from the last
  revision when Bulwark is back.
* Every call has a deadline; a call is retried on another endpoint only when
  that is safe (``_core.retryable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from bulwark import _core
from bulwark._settings import ClientOptions, channel_credentials
from bulwark.errors import (
    BreakerOpenError,
    BulwarkError,
    RateLimitedError,
    UnavailableError,
)
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    watch_pb2,
)

__all__ = ["AsyncClient", "Bulkhead", "Feature", "PrimaryCallback"]

log = logging.getLogger("bulwark")

T = TypeVar("T")
# gRPC's own reconnect backoff grows to 120 s: far too slow to notice Bulwark is back.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # A watch on a connection that died silently must end, not look live forever.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]
REFUSED_BACKOFF_MAX_S = 5.0
# Codes meaning "this endpoint did not answer": back it off, count Bulwark as away.
AWAY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
PrimaryCallback = Callable[[str, registry_pb2.Primary | None], None]


class AsyncClient:
    """One per process: ``async with AsyncClient(["10.0.0.1:50051", ...]) as bulwark:``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = options or ClientOptions(**kwargs)
        addresses = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._endpoints = _core.Endpoints(addresses)
        self._client_id = self.options.client_id or f"client-{uuid.uuid4().hex[:12]}"
        self._credentials = channel_credentials(self.options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.breakers = _core.BreakerCache()
        self.features = _core.FeatureCache()
        self.primaries = _core.PrimaryCache()
        self._outcomes = _core.OutcomeBuffer(interval=self.options.report_interval)
        self._local: dict[str, _core.LocalBreaker] = {}
        self._quotas: dict[tuple[str, tuple[tuple[str, str], ...]], _core.QuotaBucket] = {}
        self._callbacks: dict[str, list[PrimaryCallback]] = {}
        self._instances: dict[str, _core.InstanceCache] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reachable = True
        self._closed = False

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the watches and the reporter; wait (up to the timeout) for a first sync."""
        loop = asyncio.get_running_loop()
        watches = [
            ("breakers", self._watch_breakers, self.breakers),
            ("features", self._watch_features, self.features),
            ("primaries", self._watch_primaries, self.primaries),
        ]
        for name, run, cache in watches:
            self._tasks.append(
                loop.create_task(self._follow(name, run, cache), name=f"bulwark-{name}")
            )
        self._tasks.append(loop.create_task(self._report_loop(), name="bulwark-reporter"))
        deadline = time.monotonic() + self.options.timeout
        caches = (self.breakers, self.features, self.primaries)
        while time.monotonic() < deadline and any(c.synced_at is None for c in caches):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Send the outcomes still buffered, stop the background tasks, close channels."""
        if self._closed:
            return
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
        now = time.monotonic()
        return {
            "breakers": self.breakers.staleness(now),
            "features": self.features.staleness(now),
            "primaries": self.primaries.staleness(now),
        }

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
        """One unary call; on a retryable failure, once more on each other endpoint."""
        last: grpc.aio.AioRpcError | None = None
        now = time.monotonic()
        first = self._endpoints.next_healthy(now) or self._endpoints.current()
        addresses = self._endpoints.addresses
        start = addresses.index(first)
        for address in addresses[start:] + addresses[:start]:
            if address != first and not self._endpoints.healthy(address, time.monotonic()):
                continue  # backing off after a failure: not worth a deadline now
            try:
                call = getattr(stub(self._channel(address)), method)
                response = await call(
                    request,
                    timeout=deadline or self.options.timeout,
                    metadata=self.options.metadata(),
                )
            except grpc.aio.AioRpcError as exc:
                last = exc
                away = exc.code() in AWAY
                if away:
                    self._endpoints.failed(address, time.monotonic())
                if not _core.retryable(exc.code(), idempotent):
                    if away:
                        self._reachable = False
                    raise BulwarkError.from_rpc(exc) from None
                continue
            except grpc.aio.UsageError:  # the channel was closed by close() meanwhile
                raise UnavailableError(grpc.StatusCode.CANCELLED, "the client is closed") from None
            self._endpoints.succeeded(address)
            self._reachable = True
            return response
        if last is None or last.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            self._reachable = False
        if last is None:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "no endpoint to try")
        raise BulwarkError.from_rpc(last) from None

    # -- watches ----------------------------------------------------------------

    async def _follow(
        self, name: str, run: Callable[[grpc.aio.Channel], Awaitable[None]], cache: Any
    ) -> None:
        """Keep one watch running, failing over and resuming until closed."""
        refused = 0.0
        while True:
            now = time.monotonic()
            address = self._endpoints.next_healthy(now)
            if address is None:
                await asyncio.sleep(self._endpoints.wait_time(now) * (1 + random.random() / 4))
                continue
            try:
                await run(self._channel(address))
                code, details = grpc.StatusCode.UNAVAILABLE, "stream ended"
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
            except TimeoutError:
                # The channel did not become ready in time: the replica is away.
                code, details = grpc.StatusCode.UNAVAILABLE, "not reachable in time"
            except Exception:  # a bug must not end the watch for good
                log.exception("bulwark %s watch on %s failed", name, address)
                code, details = grpc.StatusCode.UNKNOWN, "client error"
            # Always: a half-received snapshot must not mix with the next one.
            cache.mark_disconnected(time.monotonic() if cache.connected else None)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._endpoints.failed(address, time.monotonic())
                self._reachable = False
                refused = 0.0
                log.debug("bulwark %s watch on %s ended: %s", name, address, code.name)
                await asyncio.sleep(0.05 + random.random() * 0.1)
                continue
            # A replica that answers but refuses (credentials, role): retrying fast
            # would not help, and somebody should hear about it.
            if not refused:
                log.warning(
                    "bulwark refused the %s watch on %s: %s: %s",
                    name,
                    address,
                    code.name,
                    details,
                )
            refused = min(REFUSED_BACKOFF_MAX_S, max(0.2, refused * 2))
            await asyncio.sleep(refused * (1 + random.random() / 4))

    async def _watch_breakers(self, channel: grpc.aio.Channel) -> None:
        request = breaker_pb2.WatchBreakersRequest(start_revision=self.breakers.revision)
        stream = breaker_pb2_grpc.CircuitBreakerServiceStub(channel).WatchBreakers(
            request, metadata=self.options.metadata()
        )
        await self._consume(channel, stream, self.breakers, lambda ev: self._on_breaker(ev))

    async def _watch_features(self, channel: grpc.aio.Channel) -> None:
        request = feature_pb2.WatchFeaturesRequest(start_revision=self.features.revision)
        stream = feature_pb2_grpc.FeatureServiceStub(channel).WatchFeatures(
            request, metadata=self.options.metadata()
        )
        await self._consume(
            channel, stream, self.features, lambda ev: self.features.apply(ev, time.monotonic())
        )

    async def _watch_primaries(self, channel: grpc.aio.Channel) -> None:
        request = registry_pb2.WatchPrimaryRequest(start_revision=self.primaries.revision)
        stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchPrimary(
            request, metadata=self.options.metadata()
        )
        await self._consume(channel, stream, self.primaries, self._on_primary)

    async def _consume(
        self, channel: grpc.aio.Channel, stream: Any, cache: Any, apply: Callable[[Any], None]
    ) -> None:
        if cache.revision > 0:
            # A resumed stream sends only what changed, perhaps nothing, and the server
            # sends no headers before its first event: it is live once the channel is.
            async with asyncio.timeout(self.options.timeout):
                await channel.channel_ready()
            cache.mark_connected(time.monotonic())
            self._on_connected(cache)
        async for event in stream:
            apply(event)
            self._reachable = True

    def _on_connected(self, cache: Any) -> None:
        self._reachable = True
        if cache is self.breakers:
            # The fleet's breakers decide again; what was counted while away is done with.
            self._local.clear()

    def _on_breaker(self, event: breaker_pb2.WatchBreakersResponse) -> None:
        self.breakers.apply(event, time.monotonic(), time.time())
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            self._on_connected(self.breakers)

    def _on_primary(self, event: registry_pb2.WatchPrimaryResponse) -> None:
        for service in self.primaries.apply(event, time.monotonic()):
            for callback in self._callbacks.get(service, []):
                try:
                    callback(service, self.primaries.get(service))
                except Exception:
                    log.exception("primary change callback for %s failed", service)

    # -- circuit breakers -------------------------------------------------------

    async def allow(self, name: str) -> _core.Decision:
        """Whether a call to the dependency behind breaker ``name`` may go ahead now."""
        now = time.monotonic()
        decision = self.breakers.decide(name, now)
        if not self.breakers.connected:
            # Away from Bulwark: the local breaker may have cut the dependency off since.
            local = self._local.get(name)
            if local is not None:
                refused = local.decide(now)
                if not refused.allowed:
                    return refused
            if decision.source != "cache" and self._endpoints.next_healthy(now) is None:
                return self._local_breaker(name).decide(now)
        if decision.source == "cache":
            return decision
        try:
            response = await self._call(
                breaker_pb2_grpc.CircuitBreakerServiceStub,
                "Allow",
                breaker_pb2.AllowRequest(name=name, caller=self._client_id),
                idempotent=False,
            )
        except UnavailableError:
            return self._local_breaker(name).decide(time.monotonic())
        retry = (
            response.retry_after.ToNanoseconds() / 1e9 if response.HasField("retry_after") else None
        )
        return _core.Decision(response.allowed, response.state, "remote", retry)

    def record(self, name: str, success: bool, slow: bool = False) -> None:
        """Count one call's outcome; sent in the next batch."""
        self._outcomes.add(name, success, slow)
        if name in self._local or not self._reachable:
            self._local_breaker(name).record(success, time.monotonic())

    def _local_breaker(self, name: str) -> _core.LocalBreaker:
        local = self._local.get(name)
        if local is None:
            view = self.breakers.get(name)
            local = _core.LocalBreaker.from_view(view) if view else _core.LocalBreaker()
            self._local[name] = local
        return local

    @contextlib.asynccontextmanager
    async def breaker(self, name: str) -> AsyncIterator[_core.Decision]:
        """``async with bulwark.breaker("payments"):`` — refuse fast, record the outcome."""
        decision = await self.allow(name)
        if not decision.allowed:
            raise BreakerOpenError(name, decision.retry_after, decision.source)
        started = time.monotonic()
        try:
            yield decision
        except BaseException:
            self.record(name, success=False)
            raise
        self.record(name, True, slow=time.monotonic() - started > self.options.slow_call)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.report_interval / 2)
            if self._outcomes.due(time.monotonic()):
                with contextlib.suppress(BulwarkError):
                    await self._flush()

    async def _flush(self, drain: bool = False) -> None:
        """Send what is due (everything with ``drain``): one report per batch, not per call."""
        while self._outcomes.pending and (drain or self._outcomes.due(time.monotonic())):
            batch = self._outcomes.take(time.monotonic())
            if not batch:
                return
            request = breaker_pb2.ReportOutcomesRequest(reporter=self._client_id, outcomes=batch)
            try:
                await self._call(
                    breaker_pb2_grpc.CircuitBreakerServiceStub,
                    "ReportOutcomes",
                    request,
                    idempotent=False,
                )
            except BulwarkError as exc:
                if exc.code == grpc.StatusCode.UNAVAILABLE:
                    # Not delivered: send again later (counts stay bounded per breaker).
                    self._outcomes.restore(batch)
                else:
                    # It may have been applied (a deadline): sending it again could count
                    # the same failures twice and trip the breaker for the whole fleet.
                    log.warning("dropped a report of %d breakers: %s", len(batch), exc)
                raise

    # -- bulkheads --------------------------------------------------------------

    def bulkhead(self, name: str) -> Bulkhead:
        """A handle: ``async with bulwark.bulkhead("db").permit():``."""
        return Bulkhead(self, name)

    @contextlib.asynccontextmanager
    async def permit(
        self, bulkhead: str, *, ttl: float | None = None, max_wait: float | None = None
    ) -> AsyncIterator[bulkhead_pb2.Permit]:
        """``async with bulwark.permit("db"):`` — a cluster-wide permit, released on exit."""
        request = bulkhead_pb2.AcquireRequest(bulkhead=bulkhead, holder=self._client_id)
        if ttl is not None:
            request.ttl.FromNanoseconds(int(ttl * 1e9))
        if max_wait is not None:
            request.max_wait.FromNanoseconds(int(max_wait * 1e9))
        timeout = self.options.timeout + (max_wait or 0.0)
        response = await self._call(
            bulkhead_pb2_grpc.BulkheadServiceStub,
            "Acquire",
            request,
            idempotent=False,
            deadline=timeout,
        )
        try:
            yield response.permit
        finally:
            with contextlib.suppress(BulwarkError):
                await self._call(
                    bulkhead_pb2_grpc.BulkheadServiceStub,
                    "Release",
                    bulkhead_pb2.ReleaseRequest(bulkhead=bulkhead, permit_id=response.permit.id),
                    idempotent=True,
                )

    # -- rate limits ------------------------------------------------------------

    async def check(
        self, domain: str, descriptor: Mapping[str, str] | Sequence[tuple[str, str]], hits: int = 1
    ) -> bool:
        """True when the request is within the limits; decided locally when Bulwark is away."""
        entries = tuple(descriptor.items() if isinstance(descriptor, Mapping) else descriptor)
        request = ratelimit_pb2.CheckRequest(domain=domain, hits=hits)
        request.descriptors.add().entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )
        if not self._reachable and self._endpoints.next_healthy(time.monotonic()) is None:
            # Every endpoint is backing off: decide now rather than wait out a deadline.
            return self.check_local(domain, entries, hits)
        try:
            response = await self._call(
                ratelimit_pb2_grpc.RateLimitServiceStub, "Check", request, idempotent=False
            )
        except UnavailableError:
            return self.check_local(domain, entries, hits)
        return response.overall_code != ratelimit_pb2.CHECK_CODE_OVER_LIMIT

    async def require(
        self, domain: str, descriptor: Mapping[str, str] | Sequence[tuple[str, str]], hits: int = 1
    ) -> None:
        """Like ``check``, raising RateLimitedError when over the limit."""
        if not await self.check(domain, descriptor, hits):
            raise RateLimitedError(domain, str(dict(descriptor)))

    async def lease(
        self, domain: str, descriptor: Mapping[str, str] | Sequence[tuple[str, str]], wanted: int
    ) -> int:
        """Lease a share of a limit for local decisions (``check_local``); the share granted."""
        entries = tuple(descriptor.items() if isinstance(descriptor, Mapping) else descriptor)
        request = ratelimit_pb2.LeaseQuotaRequest(
            domain=domain, client_id=self._client_id, wanted=wanted
        )
        request.descriptor.entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )
        response = await self._call(
            ratelimit_pb2_grpc.RateLimitServiceStub, "LeaseQuota", request, idempotent=True
        )
        now_mono, now_wall = time.monotonic(), time.time()
        rate = _core.per_second(response.granted, response.limit.unit)
        expires = _core.monotonic_from_wall(
            response.expires_at.ToNanoseconds() / 1e9, now_mono, now_wall
        )
        self._quota(domain, entries).grant(rate, max(1.0, rate), expires, now_mono)
        return int(response.granted)

    def check_local(
        self, domain: str, descriptor: Mapping[str, str] | Sequence[tuple[str, str]], hits: int = 1
    ) -> bool:
        """Decide from the leased share (or the safe rate) without calling Bulwark."""
        entries = tuple(descriptor.items() if isinstance(descriptor, Mapping) else descriptor)
        return self._quota(domain, entries).try_acquire(hits, time.monotonic())

    def _quota(self, domain: str, entries: tuple[tuple[str, str], ...]) -> _core.QuotaBucket:
        return _core.quota_for(self._quotas, (domain, entries), self.options.fallback_rate)

    # -- features and primaries -------------------------------------------------

    def feature(self, name: str) -> Feature:
        """The feature's state from the cache: ``bulwark.feature("email").available``."""
        return Feature(name, self.features)

    def primary(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary from the cache (None before the first sync)."""
        return self.primaries.get(service)

    def instances(self, service: str) -> list[registry_pb2.Instance]:
        """The service's instances from a watch-fed cache (started on the first call)."""
        cache = self._instances.get(service)
        if cache is None and not self._closed:
            cache = _core.InstanceCache(service)
            self._instances[service] = cache

            async def watch(channel: grpc.aio.Channel) -> None:
                request = registry_pb2.WatchInstancesRequest(
                    service=service, start_revision=cache.revision
                )
                stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchInstances(
                    request, metadata=self.options.metadata()
                )
                await self._consume(
                    channel, stream, cache, lambda ev: cache.apply(ev, time.monotonic())
                )

            self._tasks.append(
                asyncio.get_running_loop().create_task(
                    self._follow(f"instances of {service}", watch, cache),
                    name=f"bulwark-{service}",
                )
            )
        return cache.instances() if cache is not None else []

    def on_primary_change(self, service: str, callback: PrimaryCallback) -> None:
        """Call ``callback(service, primary)`` whenever the service's primary or epoch changes."""
        self._callbacks.setdefault(service, []).append(callback)

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


class Feature:
    """A feature's state as the client's cache knows it."""

    def __init__(self, name: str, cache: _core.FeatureCache) -> None:
        self.name = name
        self._cache = cache

    @property
    def available(self) -> bool:
        """True when AVAILABLE (or unknown: a feature Bulwark does not know is not degraded)."""
        state = self._cache.available(self.name)
        return True if state is None else state

    @property
    def status(self) -> int:
        view = self._cache.get(self.name)
        return view.effective_status if view is not None else feature_pb2.FEATURE_STATUS_AVAILABLE

    @property
    def fallback(self) -> str | None:
        return self._cache.fallback(self.name)


class Bulkhead:
    """A bulkhead of the fleet: ``async with bulwark.bulkhead("db").permit():``."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.name = name
        self._client = client

    def permit(
        self, *, ttl: float | None = None, max_wait: float | None = None
    ) -> contextlib.AbstractAsyncContextManager[bulkhead_pb2.Permit]:
        return self._client.permit(self.name, ttl=ttl, max_wait=max_wait)
