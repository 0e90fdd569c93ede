"""Client: the Bulwark client for threaded (synchronous) services, over the shared core.

The synchronous twin of :class:`bulwark.aio.AsyncClient`: the same decisions,
made by the same I/O-free objects of ``bulwark._core``; only the I/O differs
(blocking gRPC channels and background daemon threads instead of grpc.aio
and tasks).

What it guarantees:

* "May I call X?", "is feature F available?" and "who is primary?" are
  answered in-process from caches fed by watch streams; a call to Bulwark is
  made only when the cache cannot decide (a HALF_OPEN trial permit).
* Outcomes are reported by a background thread, batched (every ~100 ms or
  500 outcomes), with bounded memory while Bulwark is unreachable.
* When no endpoint answers: the last known breaker, feature and primary state
  keeps answering (``staleness()`` says for how long it has been unconfirmed);
  a local breaker keeps counting each dependency's outcomes and cuts it off
  by the breaker's own thresholds; rate limits are enforced from the last
  quota lease, then a configured safe rate. Watches resume from the last
  revision when Bulwark is back, and the local breakers give way to the
  fleet's again.
* Every call has a deadline; a call is retried on another endpoint only when
  that is safe (``_core.retryable``), each endpoint at most once per call.
* Thread-safe: any number of threads may share one client. The core objects
  (caches, buffers, local breakers, buckets, endpoints) are only touched under
  one lock, never held across a network call; primary-change callbacks run on
  the watch thread, outside the lock.
* ``close()`` sends the outcomes still buffered, stops every thread (the watch
  streams are cancelled) and closes the channels; it is idempotent.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark import _core
from bulwark._settings import ClientOptions, channel_credentials
from bulwark.aio import CHANNEL_OPTIONS, Feature
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

__all__ = ["Client", "Feature", "PrimaryCallback"]

log = logging.getLogger("bulwark")

T = TypeVar("T")
PrimaryCallback = Callable[[str, registry_pb2.Primary | None], None]
Descriptor = Mapping[str, str] | Sequence[tuple[str, str]]

# gRPC's own reconnect backoff (up to 120 s by default) would hide a replica that
# is back long after ``Endpoints`` lets it be tried again: keep it within the
# endpoints' own backoff, which paces the retries.
_CHANNEL_OPTIONS = CHANNEL_OPTIONS

# Codes meaning "this endpoint did not answer": back it off, count Bulwark as away.
_AWAY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class _Closed(Exception):
    """The client is closed: no new channel, no new call."""

    code = grpc.StatusCode.CANCELLED


class Client:
    """One per process: ``with Client(["10.0.0.1:50051", ...]) as bulwark:``."""

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
        self._channels: dict[str, grpc.Channel] = {}
        self.breakers = _core.BreakerCache()
        self.features = _core.FeatureCache()
        self.primaries = _core.PrimaryCache()
        self._outcomes = _core.OutcomeBuffer(interval=self.options.report_interval)
        self._local: dict[str, _core.LocalBreaker] = {}
        self._quotas: dict[tuple[str, tuple[tuple[str, str], ...]], _core.QuotaBucket] = {}
        self._callbacks: dict[str, list[PrimaryCallback]] = {}
        self._reachable = True
        # Guards every core object above (none is thread-safe) and the fields below.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        # Set by each watch's first SYNCED: start() waits for them.
        self._synced = {name: threading.Event() for name in ("breakers", "features", "primaries")}
        self._closed = False
        self._watch_threads: list[threading.Thread] = []
        self._instances: dict[str, _core.InstanceCache] = {}
        self._reporter: threading.Thread | None = None
        self._streams: dict[str, grpc.Future] = {}

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the watches and the reporter; wait (up to the timeout) for a first sync.

        Returns when all three caches hold a snapshot, or after ``options.timeout``
        (Bulwark unreachable: the watches keep trying in the background).
        """
        with self._lock:
            if self._closed or self._stopping.is_set():
                raise RuntimeError("this Client is closed")
            if self._reporter is not None:
                return  # Already started.
            watches: list[tuple[str, Any, Callable[[grpc.Channel], None]]] = [
                ("breakers", self.breakers, self._watch_breakers),
                ("features", self.features, self._watch_features),
                ("primaries", self.primaries, self._watch_primaries),
            ]
            for name, cache, run in watches:
                thread = threading.Thread(
                    target=self._follow,
                    args=(name, cache, run),
                    name=f"bulwark-{name}",
                    daemon=True,
                )
                self._watch_threads.append(thread)
            self._reporter = threading.Thread(
                target=self._report_loop, name="bulwark-reporter", daemon=True
            )
            threads = [*self._watch_threads, self._reporter]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + self.options.timeout
        for synced in self._synced.values():
            synced.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Send the outcomes still buffered, stop the background threads, close channels."""
        with self._lock:
            if self._closed or self._stopping.is_set():
                return
            self._stopping.set()
            reporter = self._reporter
        if reporter is not None and reporter is not threading.current_thread():
            reporter.join()  # Its last flush is bounded by the call deadlines.
        with contextlib.suppress(BulwarkError):
            self._flush(drain=True)
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.cancel()
        for thread in self._watch_threads:
            if thread is not threading.current_thread():  # close() from a callback
                thread.join(self.options.timeout + 1.0)
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()  # Also ends any RPC still running on it.

    def staleness(self) -> dict[str, float]:
        """Seconds each cache has gone unconfirmed (0 while its watch is live)."""
        with self._lock:
            now = time.monotonic()
            return {
                "breakers": self.breakers.staleness(now),
                "features": self.features.staleness(now),
                "primaries": self.primaries.staleness(now),
            }

    # -- calls with failover ----------------------------------------------------

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise _Closed("client closed")
            channel = self._channels.get(address)
            if channel is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
                else:
                    channel = grpc.secure_channel(
                        address, self._credentials, options=_CHANNEL_OPTIONS
                    )
                self._channels[address] = channel
            return channel

    def _candidates(self) -> list[str]:
        """Every endpoint not backing off, once, from the first healthy one on."""
        with self._lock:
            now = time.monotonic()
            first = self._endpoints.next_healthy(now) or self._endpoints.current()
            addresses = list(self._endpoints.addresses)
            start = addresses.index(first)
            ordered = addresses[start:] + addresses[:start]
            return [a for a in ordered if a == first or self._endpoints.healthy(a, now)]

    def _call(
        self,
        stub: Callable[[grpc.Channel], Any],
        method: str,
        request: Any,
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> Any:
        """One unary call; on a retryable failure, once more on each other endpoint."""
        last: grpc.RpcError | None = None
        for address in self._candidates():
            try:
                call = getattr(stub(self._channel(address)), method)
                response = call(
                    request,
                    timeout=deadline or self.options.timeout,
                    metadata=self.options.metadata(),
                )
            except _Closed as exc:  # Closed under our feet.
                raise UnavailableError(exc.code, str(exc)) from None
            except grpc.RpcError as exc:
                last = exc
                code = exc.code()  # type: ignore[attr-defined]
                if code in _AWAY:
                    with self._lock:
                        self._endpoints.failed(address, time.monotonic())
                if not _core.retryable(code, idempotent):
                    if code in _AWAY:
                        with self._lock:
                            self._reachable = False
                    raise BulwarkError.from_rpc(exc) from None
                continue
            except ValueError:  # the channel was closed by close() meanwhile
                raise UnavailableError(grpc.StatusCode.CANCELLED, "the client is closed") from None
            with self._lock:
                self._endpoints.succeeded(address)
                self._reachable = True
            return response
        if last is None:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "no endpoint to try")
        if last.code() in _AWAY:  # type: ignore[attr-defined]
            with self._lock:
                self._reachable = False
        raise BulwarkError.from_rpc(last) from None

    # -- watches ----------------------------------------------------------------

    def _follow(self, name: str, cache: Any, run: Callable[[grpc.Channel], None]) -> None:
        """Keep one watch running, failing over and resuming until closed.

        Only this watch's cache is marked disconnected when its stream ends: the
        other streams report their own state. An endpoint that does not answer is
        backed off (``Endpoints``); a stream refused by a replica that does answer
        (a bad token, say) is retried after a growing, jittered delay.
        """
        refusals = 0
        while not self._stopping.is_set():
            with self._lock:
                now = time.monotonic()
                address = self._endpoints.next_healthy(now)
                wait = self._endpoints.wait_time(now)
            if address is None:
                self._stopping.wait(wait * (1 + random.random() / 4))
                continue
            try:
                run(self._channel(address))
                code, details = grpc.StatusCode.UNAVAILABLE, "stream ended"
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
            except _Closed as exc:
                code, details = exc.code, str(exc)
            except Exception:  # A bug must not end the watch for good.
                log.exception("bulwark %s watch on %s failed", name, address)
                code, details = grpc.StatusCode.UNKNOWN, "client error"
            if self._stopping.is_set():
                return
            with self._lock:
                now = time.monotonic()
                was_live = cache.connected
                # Always: a half-received snapshot must not mix with the next one.
                cache.mark_disconnected(now if was_live else None)
                if code in _AWAY:
                    self._endpoints.failed(address, now)
                    self._reachable = False
            refusals = 0 if was_live or code in _AWAY else refusals + 1
            level = logging.WARNING if refusals == 1 else logging.DEBUG
            log.log(level, "bulwark %s watch on %s ended: %s %s", name, address, code.name, details)
            delay = 0.05 + random.random() * 0.1
            if refusals > 1:
                delay = min(5.0, 0.1 * 2 ** (refusals - 1)) * (1 + random.random() / 4)
            self._stopping.wait(delay)

    def _watch_breakers(self, channel: grpc.Channel) -> None:
        with self._lock:
            revision = self.breakers.revision
        request = breaker_pb2.WatchBreakersRequest(start_revision=revision)
        stream = breaker_pb2_grpc.CircuitBreakerServiceStub(channel).WatchBreakers(
            request, metadata=self.options.metadata()
        )
        self._consume("breakers", channel, stream, self.breakers, self._on_breaker)

    def _watch_features(self, channel: grpc.Channel) -> None:
        with self._lock:
            revision = self.features.revision
        request = feature_pb2.WatchFeaturesRequest(start_revision=revision)
        stream = feature_pb2_grpc.FeatureServiceStub(channel).WatchFeatures(
            request, metadata=self.options.metadata()
        )
        self._consume("features", channel, stream, self.features, self._on_feature)

    def _watch_primaries(self, channel: grpc.Channel) -> None:
        with self._lock:
            revision = self.primaries.revision
        request = registry_pb2.WatchPrimaryRequest(start_revision=revision)
        stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchPrimary(
            request, metadata=self.options.metadata()
        )
        self._consume("primaries", channel, stream, self.primaries, self._on_primary)

    def _consume(
        self,
        name: str,
        channel: grpc.Channel,
        stream: Any,
        cache: Any,
        apply: Callable[[Any], list[Callable[[], None]]],
    ) -> None:
        """Feed one stream into its cache until it ends; ``apply`` runs under the lock
        and returns what to call once the lock is released."""
        with self._lock:
            self._streams[name] = stream
            stopping = self._stopping.is_set()
            resumed = cache.revision > 0
        try:
            if stopping:
                stream.cancel()  # close() may have collected the streams already.
            if resumed and not stopping and self._serving(channel, stream):
                # A resumed stream sends only what changed, perhaps nothing: it is live once
                # open. (Otherwise its first event, if any, says so; if it failed, iterating
                # raises its error.)
                with self._lock:
                    cache.mark_connected(time.monotonic())
                    self._reachable = True
                    if cache is self.breakers and cache.connected:
                        # Bulwark is back: the fleet's breakers decide again, not the local ones.
                        self._local.clear()
            for event in stream:
                with self._lock:
                    after = apply(event)
                    self._reachable = True
                for callback in after:
                    callback()
        finally:
            with self._lock:
                if self._streams.get(name) is stream:
                    del self._streams[name]

    def _serving(self, channel: grpc.Channel, stream: Any) -> bool:
        """Whether the replica behind ``channel`` answers and serves while ``stream`` runs.

        A resumed stream may send nothing for a long time, and the server sends no
        headers before its first message: the gRPC health check on the same channel
        is the proof that the stream reached a live replica.
        """
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(),
                timeout=self.options.timeout,
                metadata=self.options.metadata(),
            )
        except grpc.RpcError as exc:
            serving = exc.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        else:
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
        return serving and not stream.done()

    def _on_breaker(self, event: breaker_pb2.WatchBreakersResponse) -> list[Callable[[], None]]:
        self.breakers.apply(event, time.monotonic(), time.time())
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            # Bulwark is back: the fleet's breaker decides again, not the local one.
            self._local.clear()
            self._synced["breakers"].set()
        return []

    def _on_feature(self, event: feature_pb2.WatchFeaturesResponse) -> list[Callable[[], None]]:
        self.features.apply(event, time.monotonic())
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            self._synced["features"].set()
        return []

    def _on_primary(self, event: registry_pb2.WatchPrimaryResponse) -> list[Callable[[], None]]:
        after: list[Callable[[], None]] = []
        if event.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED:
            self._synced["primaries"].set()
        for service in self.primaries.apply(event, time.monotonic()):
            primary = self.primaries.get(service)
            for callback in self._callbacks.get(service, []):
                after.append(functools.partial(_run_callback, callback, service, primary))
        return after

    # -- circuit breakers -------------------------------------------------------

    def allow(self, name: str) -> _core.Decision:
        """Whether a call to the dependency behind breaker ``name`` may go ahead now."""
        with self._lock:
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
            response = self._call(
                breaker_pb2_grpc.CircuitBreakerServiceStub,
                "Allow",
                breaker_pb2.AllowRequest(name=name, caller=self._client_id),
                idempotent=False,
            )
        except UnavailableError:
            with self._lock:
                return self._local_breaker(name).decide(time.monotonic())
        retry = (
            response.retry_after.ToNanoseconds() / 1e9 if response.HasField("retry_after") else None
        )
        return _core.Decision(response.allowed, response.state, "remote", retry)

    def record(self, name: str, success: bool, slow: bool = False) -> None:
        """Count one call's outcome; sent in the next batch."""
        with self._lock:
            self._outcomes.add(name, success, slow)
            if name in self._local or not self._reachable:
                self._local_breaker(name).record(success, time.monotonic())

    def _local_breaker(self, name: str) -> _core.LocalBreaker:
        """The local breaker of ``name`` (callers hold the lock)."""
        local = self._local.get(name)
        if local is None:
            view = self.breakers.get(name)
            local = _core.LocalBreaker.from_view(view) if view else _core.LocalBreaker()
            self._local[name] = local
        return local

    @contextlib.contextmanager
    def breaker(self, name: str) -> Iterator[_core.Decision]:
        """``with bulwark.breaker("payments"):`` — refuse fast, record the outcome."""
        decision = self.allow(name)
        if not decision.allowed:
            raise BreakerOpenError(name, decision.retry_after, decision.source)
        started = time.monotonic()
        try:
            yield decision
        except BaseException:
            self.record(name, success=False)
            raise
        self.record(name, True, slow=time.monotonic() - started > self.options.slow_call)

    def _report_loop(self) -> None:
        # Half the interval, but never asleep longer than 50 ms: a full batch (or the
        # first outcomes, which go out at once) need not wait for a long interval.
        pause = min(max(self.options.report_interval / 2, 0.005), 0.05)
        while not self._stopping.wait(pause):
            try:
                self._flush()
            except BulwarkError:
                pass  # Kept (bounded) for the next report.
            except Exception:
                log.exception("bulwark outcome report failed")

    def _flush(self, drain: bool = False) -> None:
        """Send what is due (a full batch, the interval, a backlog); everything with ``drain``.

        Not "until empty": under steady load that would send back-to-back reports of
        whatever came in during the previous one, never waiting for the interval.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                if not self._outcomes.pending or not (drain or self._outcomes.due(now)):
                    return
                batch = self._outcomes.take(now)
            if not batch:
                return
            request = breaker_pb2.ReportOutcomesRequest(reporter=self._client_id, outcomes=batch)
            try:
                self._call(
                    breaker_pb2_grpc.CircuitBreakerServiceStub,
                    "ReportOutcomes",
                    request,
                    idempotent=False,
                )
            except BulwarkError as exc:
                if exc.code == grpc.StatusCode.UNAVAILABLE:
                    # Not delivered: send again later (counts stay bounded per breaker).
                    with self._lock:
                        self._outcomes.restore(batch)
                else:
                    # It may have been applied (a deadline): sending it again could count
                    # the same failures twice and trip the breaker for the whole fleet.
                    log.warning("dropped a report of %d breakers: %s", len(batch), exc)
                raise

    # -- bulkheads --------------------------------------------------------------

    @contextlib.contextmanager
    def permit(
        self, bulkhead: str, *, ttl: float | None = None, max_wait: float | None = None
    ) -> Iterator[bulkhead_pb2.Permit]:
        """``with bulwark.permit("db"):`` — a cluster-wide permit, released on exit."""
        request = bulkhead_pb2.AcquireRequest(bulkhead=bulkhead, holder=self._client_id)
        if ttl is not None:
            request.ttl.FromNanoseconds(int(ttl * 1e9))
        if max_wait is not None:
            request.max_wait.FromNanoseconds(int(max_wait * 1e9))
        timeout = self.options.timeout + (max_wait or 0.0)
        response = self._call(
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
                self._call(
                    bulkhead_pb2_grpc.BulkheadServiceStub,
                    "Release",
                    bulkhead_pb2.ReleaseRequest(bulkhead=bulkhead, permit_id=response.permit.id),
                    idempotent=True,
                )

    # -- rate limits ------------------------------------------------------------

    def check(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """True when the request is within the limits; decided locally when Bulwark is away."""
        entries = _entries(descriptor)
        request = ratelimit_pb2.CheckRequest(domain=domain, hits=hits)
        request.descriptors.add().entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )
        with self._lock:
            away = not self._reachable and self._endpoints.next_healthy(time.monotonic()) is None
        if away:
            # Every endpoint is backing off: decide now rather than wait out a deadline.
            return self.check_local(domain, descriptor, hits)
        try:
            response = self._call(
                ratelimit_pb2_grpc.RateLimitServiceStub, "Check", request, idempotent=False
            )
        except UnavailableError:
            return self.check_local(domain, descriptor, hits)
        return bool(response.overall_code != ratelimit_pb2.CHECK_CODE_OVER_LIMIT)

    def require(self, domain: str, descriptor: Descriptor, hits: int = 1) -> None:
        """Like ``check``, raising RateLimitedError when over the limit."""
        if not self.check(domain, descriptor, hits):
            raise RateLimitedError(domain, str(dict(descriptor)))

    def lease(self, domain: str, descriptor: Descriptor, wanted: int) -> int:
        """Lease a share of a limit for local decisions (``check_local``); the share granted."""
        entries = _entries(descriptor)
        request = ratelimit_pb2.LeaseQuotaRequest(
            domain=domain, client_id=self._client_id, wanted=wanted
        )
        request.descriptor.entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )
        response = self._call(
            ratelimit_pb2_grpc.RateLimitServiceStub, "LeaseQuota", request, idempotent=True
        )
        with self._lock:
            now_mono, now_wall = time.monotonic(), time.time()
            rate = _core.per_second(response.granted, response.limit.unit)
            expires = _core.monotonic_from_wall(
                response.expires_at.ToNanoseconds() / 1e9, now_mono, now_wall
            )
            self._quota(domain, entries).grant(rate, max(1.0, rate), expires, now_mono)
        return int(response.granted)

    def check_local(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """Decide from the leased share (or the safe rate) without calling Bulwark."""
        entries = _entries(descriptor)
        with self._lock:
            return self._quota(domain, entries).try_acquire(hits, time.monotonic())

    def _quota(self, domain: str, entries: tuple[tuple[str, str], ...]) -> _core.QuotaBucket:
        """The bucket of one descriptor (callers hold the lock)."""
        return _core.quota_for(self._quotas, (domain, entries), self.options.fallback_rate)

    # -- features and primaries -------------------------------------------------

    def feature(self, name: str) -> Feature:
        """The feature's state from the cache: ``bulwark.feature("email").available``.

        Reads one dictionary entry per property (atomic in CPython), no lock needed.
        """
        return Feature(name, self.features)

    def primary(self, service: str) -> registry_pb2.Primary | None:
        """The service's primary from the cache (None before the first sync)."""
        with self._lock:
            return self.primaries.get(service)

    def instances(self, service: str) -> list[registry_pb2.Instance]:
        """The service's instances from a watch-fed cache (its watch starts on the first call)."""
        with self._lock:
            cache = self._instances.get(service)
            if cache is None:
                cache = _core.InstanceCache(service)
                self._instances[service] = cache
                name = f"instances-{service}"

                def watch(channel: grpc.Channel) -> None:
                    with self._lock:
                        revision = cache.revision
                    request = registry_pb2.WatchInstancesRequest(
                        service=service, start_revision=revision
                    )
                    stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchInstances(
                        request, metadata=self.options.metadata()
                    )

                    def apply(event: registry_pb2.WatchInstancesResponse) -> list[Any]:
                        cache.apply(event, time.monotonic())
                        return []

                    self._consume(name, channel, stream, cache, apply)

                thread = threading.Thread(
                    target=self._follow,
                    args=(name, cache, watch),
                    name=f"bulwark-{name}",
                    daemon=True,
                )
                self._watch_threads.append(thread)
                thread.start()
            return cache.instances()

    def bulkhead(self, name: str) -> Bulkhead:
        """A handle: ``with bulwark.bulkhead("db").permit():``."""
        return Bulkhead(self, name)

    def on_primary_change(self, service: str, callback: PrimaryCallback) -> None:
        """Call ``callback(service, primary)`` whenever the service's primary or epoch changes.

        Callbacks run on the primaries watch thread: keep them short.
        """
        with self._lock:
            self._callbacks.setdefault(service, []).append(callback)

    # -- decorators -------------------------------------------------------------

    def guard(
        self,
        *,
        breaker: str | None = None,
        bulkhead: str | None = None,
        limit: tuple[str, Mapping[str, str]] | None = None,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorate a function: rate limit, then bulkhead permit, then breaker, around it."""

        def decorate(func: Callable[..., T]) -> Callable[..., T]:
            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> T:
                if limit is not None:
                    self.require(*limit)
                with contextlib.ExitStack() as stack:
                    # The permit first: a full bulkhead is no failure of the dependency.
                    if bulkhead is not None:
                        stack.enter_context(self.permit(bulkhead))
                    if breaker is not None:
                        stack.enter_context(self.breaker(breaker))
                    return func(*args, **kwargs)

            return wrapper

        return decorate


def _entries(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    return tuple(descriptor.items() if isinstance(descriptor, Mapping) else descriptor)


def _run_callback(
    callback: PrimaryCallback, service: str, primary: registry_pb2.Primary | None
) -> None:
    try:
        callback(service, primary)
    except Exception:
        log.exception("primary change callback for %s failed", service)


class Bulkhead:
    """A bulkhead of the fleet: ``with bulwark.bulkhead("db").permit():``."""

    def __init__(self, client: Client, name: str) -> None:
        self.name = name
        self._client = client

    def permit(
        self, *, ttl: float | None = None, max_wait: float | None = None
    ) -> contextlib.AbstractContextManager[bulkhead_pb2.Permit]:
        return self._client.permit(self.name, ttl=ttl, max_wait=max_wait)
