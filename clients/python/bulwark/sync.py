"""Client: the Bulwark client for threaded (synchronous) services, over the shared core.

The synchronous twin of :class:`bulwark.aio.AsyncClient`: every decision is
made by the same I/O-free ``bulwark._policy.ClientPolicy``; this driver only
performs the remote calls it names (blocking gRPC) and runs the watches and
the reporter on background daemon threads.

It guarantees what :mod:`bulwark.aio` lists, and:

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
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from bulwark._caches import Feature
from bulwark._driver import Driver
from bulwark._policy import Descriptor, Remote
from bulwark._settings import CHANNEL_OPTIONS, ClientOptions
from bulwark._states import SYNCED, Decision
from bulwark._watching import Watch, health_check, report_pause, run_callback, serving
from bulwark.errors import BulwarkError, UnavailableError
from bulwark.v1 import bulkhead_pb2, registry_pb2

__all__ = ["Client", "Feature", "PrimaryCallback"]

log = logging.getLogger("bulwark")

T = TypeVar("T")
PrimaryCallback = Callable[[str, registry_pb2.Primary | None], None]
_monotonic = time.monotonic


class _Closed(Exception):
    """The client is closed: no new channel, no new call."""

    code = grpc.StatusCode.CANCELLED


class Client(Driver):
    """One per process: ``with Client(["10.0.0.1:50051", ...]) as bulwark:``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(endpoints, options=options, **kwargs)
        self._channels: dict[str, grpc.Channel] = {}
        # Guards the policy (not thread-safe) and the fields below; never held
        # across a network call.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        # Wakes the reporter before its timer: urgent failures (``_outcomes``), or close().
        self._wake = threading.Event()
        # Set by each watch's first SYNCED: start() waits for them.
        self._synced = {name: threading.Event() for name in ("breakers", "features", "primaries")}
        self._closed = False
        self._watch_threads: list[threading.Thread] = []
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
        (Bulwark unreachable: the watches keep trying in the background). A second
        call does nothing; a call after ``close()`` raises RuntimeError.
        """
        with self._lock:
            if self._closed or self._stopping.is_set():
                raise RuntimeError("this Client is closed")
            if self._reporter is not None:
                return  # Already started.
            for name in ("breakers", "features", "primaries"):
                self._start_watch(self._policy.watch(name))
            self._reporter = threading.Thread(
                target=self._report_loop, name="bulwark-reporter", daemon=True
            )
            self._reporter.start()
        deadline = _monotonic() + self.options.timeout
        for synced in self._synced.values():
            synced.wait(max(0.0, deadline - _monotonic()))

    def close(self) -> None:
        """Send the outcomes still buffered, stop the background threads, close channels."""
        with self._lock:
            if self._closed or self._stopping.is_set():
                return
            self._stopping.set()
            self._wake.set()
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
            return self._policy.staleness(_monotonic())

    # -- calls with failover ----------------------------------------------------

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise _Closed("client closed")
            channel = self._channels.get(address)
            if channel is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
                else:
                    channel = grpc.secure_channel(
                        address, self._credentials, options=CHANNEL_OPTIONS
                    )
                self._channels[address] = channel
            return channel

    def _call(
        self,
        stub: Callable[[grpc.Channel], Any],
        method: str,
        request: Any,
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> Any:
        """One unary call on the endpoints the policy's ``CallPlan`` picks, in turn."""
        policy = self._policy
        with self._lock:
            plan = policy.plan(idempotent, _monotonic())
        error: BulwarkError | None = None
        while True:
            with self._lock:
                address = plan.next_address(_monotonic())
                if address is None:
                    raise policy.exhausted(plan, error) from None
            try:
                call = getattr(stub(self._channel(address)), method)
                response = call(
                    request,
                    timeout=deadline or self.options.timeout,
                    metadata=self.options.metadata(),
                )
            except _Closed as exc:  # Closed under our feet.
                raise UnavailableError(exc.code, str(exc)) from None
            except ValueError:  # the channel was closed by close() meanwhile
                raise UnavailableError(grpc.StatusCode.CANCELLED, "the client is closed") from None
            except grpc.RpcError as exc:
                error = BulwarkError.from_rpc(exc)
                with self._lock:
                    if not policy.attempt_failed(plan, address, error.code, _monotonic()):
                        raise error from None
                continue
            with self._lock:
                policy.attempt_succeeded(address)
            return response

    def _run(self, remote: Remote[T]) -> T:
        """Make the call the policy asked for and let it turn the outcome into the answer."""
        try:
            response = self._call(
                remote.stub,
                remote.method,
                remote.request,
                idempotent=remote.idempotent,
                deadline=remote.timeout,
            )
        except BulwarkError as error:
            with self._lock:
                return remote.failed(error, _monotonic())
        with self._lock:
            return remote.done(response, _monotonic(), time.time())

    # -- watches ----------------------------------------------------------------

    def _follow(self, watch: Watch) -> None:
        """Keep one watch running, failing over and resuming until closed (see ``WatchRetry``)."""
        while not self._stopping.is_set():
            with self._lock:
                now = _monotonic()
                address = self._endpoints.next_healthy(now)
                wait = self._endpoints.wait_time(now)
            if address is None:
                self._stopping.wait(watch.retry.all_backing_off(wait))
                continue
            try:
                self._consume(watch, self._channel(address))
                code, details = grpc.StatusCode.UNAVAILABLE, "stream ended"
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
            except BulwarkError as exc:  # the replica failed its health check
                code, details = exc.code, exc.details
            except _Closed as exc:
                code, details = exc.code, str(exc)
            except Exception:  # A bug must not end the watch for good.
                log.exception("bulwark %s watch on %s failed", watch.name, address)
                code, details = grpc.StatusCode.UNKNOWN, "client error"
            if self._stopping.is_set():
                return
            with self._lock:
                was_live = self._policy.on_watch_end(watch.cache, address, code, _monotonic())
            delay = watch.ended(address, code, details, was_live)
            self._stopping.wait(delay)

    def _consume(self, watch: Watch, channel: grpc.Channel) -> None:
        """Feed one stream into its cache until it ends; callbacks run outside the lock."""
        cache, synced = watch.cache, self._synced.get(watch.name)
        with self._lock:
            request = watch.request()
        stream = getattr(watch.stub(channel), watch.method)(
            request, metadata=self.options.metadata()
        )
        with self._lock:
            self._streams[watch.name] = stream
            stopping = self._stopping.is_set()
        try:
            if stopping:
                stream.cancel()  # close() may have collected the streams already.
            elif request.start_revision > 0:
                # A resumed stream sends only what changed, perhaps nothing: the
                # replica's health check says whether it is live already.
                live = self._probe(channel)
                if live is False:
                    stream.cancel()
                    raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "health check failed")
                if live and not stream.done():
                    with self._lock:
                        self._policy.on_live(cache, _monotonic())
            for event in stream:
                with self._lock:
                    calls = self._policy.on_event(cache, event, _monotonic(), time.time())
                if synced is not None and event.type == SYNCED:
                    synced.set()
                for call in calls:
                    run_callback(*call)
        finally:
            with self._lock:
                if self._streams.get(watch.name) is stream:
                    del self._streams[watch.name]

    def _probe(self, channel: grpc.Channel) -> bool | None:
        """The gRPC health check on ``channel``, as ``_policy.serving`` reads it."""
        try:
            status = health_check(channel)(
                None, timeout=self.options.timeout, metadata=self.options.metadata()
            )
        except grpc.RpcError as exc:
            return serving(None, exc.code())  # type: ignore[attr-defined]
        return serving(status, None)

    # -- circuit breakers -------------------------------------------------------

    def allow(self, name: str) -> Decision:
        """Whether a call to the dependency behind breaker ``name`` may go ahead now."""
        with self._lock:
            answer = self._policy.allow(name, _monotonic())
        if answer.__class__ is Decision:
            return answer  # type: ignore[return-value]
        return self._run(answer)  # type: ignore[arg-type]

    def record_call(self, service: str, *, failed: bool, latency: float) -> None:
        """Count one call this process made to ``service``: whether it failed and how
        long it took (seconds). Reported about once a second, summed by Bulwark into
        the service's signals (``GetServiceSignals``)."""
        with self._lock:
            self._policy.record_call(service, failed, latency)

    def record(self, name: str, success: bool, slow: bool = False) -> None:
        """Count one call's outcome; sent in the next batch (failures of a burst at once)."""
        with self._lock:
            urgent = self._policy.record(name, success, slow, _monotonic())
        if urgent:
            self._wake.set()

    @contextlib.contextmanager
    def breaker(self, name: str) -> Iterator[Decision]:
        """``with bulwark.breaker("payments"):`` — refuse fast, record the outcome."""
        decision = self._policy.admit(name, self.allow(name))
        fault = self._fault(name)
        started = _monotonic()
        try:
            if fault is not None:
                try:  # a fault is active while it delays (gRFC A33's max_active_faults)
                    time.sleep(fault.delay)
                finally:
                    fault.release()
                fault.raise_abort()
            yield decision
        except BaseException as exc:
            with self._lock:
                urgent = self._policy.leave(name, exc, _monotonic() - started, _monotonic())
            if urgent:
                self._wake.set()
            raise
        with self._lock:
            now = _monotonic()
            urgent = self._policy.leave(name, None, now - started, now)
        if urgent:
            self._wake.set()

    def _report_loop(self) -> None:
        pause = report_pause(self.options.report_interval)
        wait = pause
        while True:
            self._wake.wait(wait)
            # Cleared before the flush: a failure recorded during it wakes the next wait.
            self._wake.clear()
            if self._stopping.is_set():
                return  # close() drains what is left.
            try:
                self._flush()
            except BulwarkError:
                pass  # Kept (bounded) for the next report, or dropped by the policy.
            except Exception:
                log.exception("bulwark outcome report failed")
            with self._lock:
                # Urgent failures held back by the minimum gap set a shorter sleep.
                wait = self._policy.report_wait(_monotonic(), pause)

    def _flush(self, drain: bool = False) -> None:
        """Send what is due (everything with ``drain``): one report per batch, not per call."""
        while True:
            with self._lock:
                remote = self._policy.next_report(_monotonic(), drain)
            if remote is None:
                return
            self._run(remote)

    # -- bulkheads --------------------------------------------------------------

    @contextlib.contextmanager
    def permit(
        self, bulkhead: str, *, ttl: float | None = None, max_wait: float | None = None
    ) -> Iterator[bulkhead_pb2.Permit]:
        """``with bulwark.permit("db"):`` — a cluster-wide permit, released on exit."""
        response = self._run(self._policy.acquire(bulkhead, ttl, max_wait))
        try:
            yield response.permit
        finally:
            self._run(self._policy.release(bulkhead, response.permit))

    def bulkhead(self, name: str) -> Bulkhead:
        """A handle: ``with bulwark.bulkhead("db").permit():``."""
        return Bulkhead(self, name)

    # -- rate limits ------------------------------------------------------------

    def check(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """True when the request is within the limits; decided locally when Bulwark is away."""
        with self._lock:
            answer = self._policy.check(domain, descriptor, hits, _monotonic())
        if answer.__class__ is bool:
            return answer  # type: ignore[return-value]
        return self._run(answer)  # type: ignore[arg-type]

    def require(self, domain: str, descriptor: Descriptor, hits: int = 1) -> None:
        """Like ``check``, raising RateLimitedError when over the limit."""
        self._policy.refused(domain, descriptor, self.check(domain, descriptor, hits))

    def lease(self, domain: str, descriptor: Descriptor, wanted: int) -> int:
        """Lease a share of a limit for local decisions (``check_local``); the share granted."""
        return self._run(self._policy.lease(domain, descriptor, wanted))

    def check_local(self, domain: str, descriptor: Descriptor, hits: int = 1) -> bool:
        """Decide from the leased share (or the safe rate) without calling Bulwark."""
        with self._lock:
            return self._policy.check_local(domain, descriptor, hits, _monotonic())

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
        """The service's instances from a watch-fed cache (its watch starts on the first call).

        After ``close()`` no watch starts: an unknown service has no instances.
        """
        with self._lock:
            cache = self._policy.instances.get(service)
            if cache is None:
                if self._closed or self._stopping.is_set():
                    return []
                cache = self._start_watch(self._policy.watch("instances", service))
            return cache.instances()

    def _follow_lazily(self, name: str) -> Any:
        with self._lock:
            cache = getattr(self._policy, name)
            if not cache.followed and not (self._closed or self._stopping.is_set()):
                self._start_watch(self._policy.watch(name))
                cache.followed = True
            return cache

    def _start_watch(self, watch: Watch) -> Any:
        """Start a thread that keeps ``watch`` running (under the lock); its cache."""
        thread = threading.Thread(
            target=self._follow, args=(watch,), name=f"bulwark-{watch.name}", daemon=True
        )
        self._watch_threads.append(thread)
        thread.start()
        return watch.cache

    def on_primary_change(self, service: str, callback: PrimaryCallback) -> None:
        """Call ``callback(service, primary)`` whenever the service's primary or epoch changes.

        Callbacks run on the primaries watch thread: keep them short.
        """
        with self._lock:
            self._policy.callbacks.setdefault(service, []).append(callback)

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


class Bulkhead:
    """A bulkhead of the fleet: ``with bulwark.bulkhead("db").permit():``."""

    def __init__(self, client: Client, name: str) -> None:
        self.name = name
        self._client = client

    def permit(
        self, *, ttl: float | None = None, max_wait: float | None = None
    ) -> contextlib.AbstractContextManager[bulkhead_pb2.Permit]:
        return self._client.permit(self.name, ttl=ttl, max_wait=max_wait)
