"""The client's decision policy: one for ``Client`` (threads) and ``AsyncClient`` (asyncio).

Every operation of a client asks a ``ClientPolicy`` first. The answer is either
final (a ``Decision``, a bool) or a ``Remote``: the one gRPC call to make, with
what turns its response (``done``) or its error (``failed``) into the answer.
The drivers only perform that call (blocking or ``grpc.aio``), read the clock
and feed the result back, so both clients decide alike by construction.

Guarantees:

* No I/O: no gRPC call, no thread, no asyncio, no clock read. Times come in as
  ``now`` (``time.monotonic()``) and, where the server's wall clock matters,
  ``now_wall`` (``time.time()``, read at the same moment). Randomness (watch
  retry jitter) comes from an injectable ``jitter`` function. The one side effect
  is logging, through the ``bulwark`` logger (a dropped report, a refused watch).
* Not thread-safe: the synchronous driver calls it under one lock, the async
  driver from its event loop only.
* Allow from the cache (the hot path) allocates nothing: it returns a shared,
  immutable ``Decision``.
* Fail safe: Bulwark counts as unreachable from the moment a call or a watch
  fails with UNAVAILABLE or DEADLINE_EXCEEDED (or no endpoint could be tried)
  until a call succeeds or a watch proves live again; meanwhile breakers,
  rate limits and reports follow the explicit fallbacks below.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from bulwark._caches import (
    BackpressurePolicyCache,
    BreakerCache,
    FeatureCache,
    InstanceCache,
    PrimaryCache,
)
from bulwark._endpoints import AWAY, CallPlan, Endpoints
from bulwark._faults import FaultInjector, FaultRuleCache
from bulwark._local_breaker import LocalBreaker
from bulwark._outcomes import NO_HURRY, OutcomeBuffer, failure_rule
from bulwark._quota import QuotaBucket, quota_for
from bulwark._remote import Remote
from bulwark._settings import ClientOptions
from bulwark._signals import SignalBuffer
from bulwark._states import SYNCED, Decision, monotonic_from_wall, per_second
from bulwark._watching import Watch
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
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    signals_pb2,
)

__all__ = ["ClientPolicy", "Descriptor", "Remote", "entries_of"]

T = TypeVar("T")
Descriptor = Mapping[str, str] | Sequence[tuple[str, str]]
Entries = tuple[tuple[str, str], ...]
PrimaryCallback = Callable[[str, registry_pb2.Primary | None], None]


def entries_of(descriptor: Descriptor) -> Entries:
    """A descriptor (mapping or pairs) as a hashable tuple of (key, value) pairs."""
    return tuple(descriptor.items() if isinstance(descriptor, Mapping) else descriptor)


def _response(response: Any, now: float, now_wall: float) -> Any:
    return response


class ClientPolicy:
    """Everything a Bulwark client decides, for one client; see the module's guarantees."""

    def __init__(
        self,
        addresses: Sequence[str],
        options: ClientOptions,
        client_id: str,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.options = options
        self.client_id = client_id
        self.jitter = jitter
        self.endpoints = Endpoints(addresses)
        self.breakers = BreakerCache()
        self.features = FeatureCache()
        self.primaries = PrimaryCache()
        self.instances: dict[str, InstanceCache] = {}
        self.backpressure = BackpressurePolicyCache()  # its watch starts on first use
        self.faults = FaultRuleCache()  # so does this one, and only with options.chaos
        instance = options.instance or os.environ.get("BULWARK_INSTANCE") or client_id
        self.injector = FaultInjector(self.faults, options.reporter, instance)
        self.outcomes = OutcomeBuffer(interval=options.report_interval)
        self.signals = SignalBuffer()
        self.local: dict[str, LocalBreaker] = {}
        self.quotas: dict[tuple[str, Entries], QuotaBucket] = {}
        self.callbacks: dict[str, list[PrimaryCallback]] = {}
        #: False from a failure meaning "no replica answered" until one answers again.
        self.reachable = True

    # -- circuit breakers -------------------------------------------------------

    def allow(self, name: str, now: float) -> Decision | Remote[Decision]:
        """May a call behind breaker ``name`` go ahead: a Decision, or the Allow call to make.

        While the breakers watch is live the cache decides, and only a question
        it cannot answer (unknown breaker, wait over, HALF_OPEN) goes to
        Bulwark. While it is not: a local breaker that has cut the dependency
        off refuses, and when every endpoint is backing off the local breaker
        decides instead of waiting out a deadline.
        """
        breakers = self.breakers
        decision = breakers.decide(name, now)
        if breakers.connected:
            if decision.source == "cache":
                return decision
        else:
            local = self.local.get(name)
            if local is not None:
                refused = local.decide(now)
                if not refused.allowed:
                    return refused
            if decision.source == "cache":
                return decision
            if self.endpoints.next_healthy(now) is None:
                return self.local_breaker(name).decide(now)
        return Remote(
            breaker_pb2_grpc.CircuitBreakerServiceStub,
            "Allow",
            breaker_pb2.AllowRequest(name=name, caller=self.client_id),
            idempotent=False,
            timeout=self.options.timeout,
            done=_allowed,
            # No replica answered: the local breaker decides (never a NotFound guess).
            failed=lambda error, now: self._allow_failed(name, error, now),
        )

    def _allow_failed(self, name: str, error: BulwarkError, now: float) -> Decision:
        if isinstance(error, UnavailableError):
            return self.local_breaker(name).decide(now)
        raise error

    def record(self, name: str, success: bool, slow: bool, now: float) -> bool:
        """Count one outcome for the next report; and locally while Bulwark is away.

        True when a failure makes the report urgent (``_outcomes``): wake the reporter.
        """
        if success:
            urgent = self.outcomes.add(name, True, slow)
        else:  # While Bulwark is away an early report would only fail: no hurry.
            rule = failure_rule(self.breakers.get(name)) if self.reachable else NO_HURRY
            urgent = self.outcomes.add(name, False, slow, now=now, rule=rule)
        if name in self.local or not self.reachable:
            self.local_breaker(name).record(success, now)
        return urgent

    def local_breaker(self, name: str) -> LocalBreaker:
        """The local breaker of ``name``, configured like the fleet's when the cache knows it."""
        local = self.local.get(name)
        if local is None:
            view = self.breakers.get(name)
            local = LocalBreaker.from_view(view) if view else LocalBreaker()
            self.local[name] = local
        return local

    @staticmethod
    def admit(name: str, decision: Decision) -> Decision:
        """Enter a ``breaker()`` block: the decision when allowed, else BreakerOpenError."""
        if not decision.allowed:
            raise BreakerOpenError(name, decision.retry_after, decision.source)
        return decision

    def record_call(self, service: str, failed: bool, latency: float) -> None:
        """Count one call to ``service`` for the next signal report (about once a second)."""
        if not service:
            raise ValueError("service is required")
        self.signals.add(service, failed, latency)

    def leave(self, name: str, error: BaseException | None, elapsed: float, now: float) -> bool:
        """Leave a ``breaker()`` block: an exception is a failure, a slow success is slow.

        A cancellation (``asyncio.CancelledError``), ``KeyboardInterrupt`` or
        ``SystemExit`` says nothing of the downstream: no outcome is counted.
        True as ``record``: wake the reporter.
        """
        if error is None:
            return self.record(name, True, elapsed > self.options.slow_call, now)
        if isinstance(error, Exception):
            return self.record(name, False, False, now)
        return False

    # -- rate limits ------------------------------------------------------------

    def check(self, domain: str, descriptor: Descriptor, hits: int, now: float) -> bool | Remote:
        """Within the limits: a bool decided locally, or the Check call to make.

        Decided locally (leased quota, else the fallback rate) when Bulwark is
        unreachable and every endpoint is backing off, or when the call finds
        no replica answering.
        """
        entries = entries_of(descriptor)
        if not self.reachable and self.endpoints.next_healthy(now) is None:
            return self.check_local(domain, entries, hits, now)
        request = ratelimit_pb2.CheckRequest(domain=domain, hits=hits)
        request.descriptors.add().entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )

        def failed(error: BulwarkError, now: float) -> bool:
            if isinstance(error, UnavailableError):
                return self.check_local(domain, entries, hits, now)
            raise error

        return Remote(
            ratelimit_pb2_grpc.RateLimitServiceStub,
            "Check",
            request,
            idempotent=False,
            timeout=self.options.timeout,
            done=_within,
            failed=failed,
        )

    @staticmethod
    def refused(domain: str, descriptor: Descriptor, within: bool) -> None:
        """``require``: nothing when within the limits, else RateLimitedError."""
        if not within:
            raise RateLimitedError(domain, str(dict(descriptor)))

    def lease(self, domain: str, descriptor: Descriptor, wanted: int) -> Remote[int]:
        """The LeaseQuota call; its answer installs the share in the descriptor's bucket."""
        entries = entries_of(descriptor)
        request = ratelimit_pb2.LeaseQuotaRequest(
            domain=domain, client_id=self.client_id, wanted=wanted
        )
        request.descriptor.entries.extend(
            ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries
        )

        def done(response: ratelimit_pb2.LeaseQuotaResponse, now: float, now_wall: float) -> int:
            expires = monotonic_from_wall(response.expires_at.ToNanoseconds() / 1e9, now, now_wall)
            # Nothing granted (a limit of rate 0 blocks everything) admits nothing, and
            # needs no unit: a replica of the previous version reports none for it.
            rate = per_second(response.granted, response.limit.unit) if response.granted > 0 else 0
            burst = max(1.0, rate) if response.granted > 0 else 0.0
            self._quota(domain, entries).grant(rate, burst, expires, now)
            return int(response.granted)

        return Remote(
            ratelimit_pb2_grpc.RateLimitServiceStub,
            "LeaseQuota",
            request,
            idempotent=True,
            timeout=self.options.timeout,
            done=done,
        )

    def check_local(self, domain: str, descriptor: Descriptor, hits: int, now: float) -> bool:
        """Decide from the leased share (or the fallback rate) without calling Bulwark."""
        return self._quota(domain, entries_of(descriptor)).try_acquire(hits, now)

    def _quota(self, domain: str, entries: Entries) -> QuotaBucket:
        return quota_for(self.quotas, (domain, entries), self.options.fallback_rate)

    # -- bulkheads --------------------------------------------------------------

    def acquire(
        self, bulkhead: str, ttl: float | None, max_wait: float | None
    ) -> Remote[bulkhead_pb2.AcquireResponse]:
        """The Acquire call of ``permit()``; its deadline covers the wait for a slot."""
        request = bulkhead_pb2.AcquireRequest(bulkhead=bulkhead, holder=self.client_id)
        if ttl is not None:
            request.ttl.FromNanoseconds(int(ttl * 1e9))
        if max_wait is not None:
            request.max_wait.FromNanoseconds(int(max_wait * 1e9))
        return Remote(
            bulkhead_pb2_grpc.BulkheadServiceStub,
            "Acquire",
            request,
            idempotent=False,
            timeout=self.options.timeout + (max_wait or 0.0),
            done=_response,
        )

    def release(self, bulkhead: str, permit: bulkhead_pb2.Permit) -> Remote[None]:
        """The Release call on leaving ``permit()``; a failure is ignored (the TTL frees it)."""
        return Remote(
            bulkhead_pb2_grpc.BulkheadServiceStub,
            "Release",
            bulkhead_pb2.ReleaseRequest(bulkhead=bulkhead, permit_id=permit.id),
            idempotent=True,
            timeout=self.options.timeout,
            done=_nothing,
            failed=_nothing_failed,
        )

    # -- one call, with failover -------------------------------------------------

    def plan(self, idempotent: bool, now: float) -> CallPlan:
        """The attempts of one call (see ``CallPlan``)."""
        return CallPlan(self.endpoints, idempotent, now)

    def attempt_failed(
        self, plan: CallPlan, address: str, code: grpc.StatusCode, now: float
    ) -> bool:
        """An attempt failed: True to try the next endpoint, False to raise the error."""
        if plan.failed(address, code, now):
            return True
        if code in AWAY:
            self.reachable = False
        return False

    def attempt_succeeded(self, address: str) -> None:
        """A replica answered: stick to it; Bulwark is reachable."""
        self.endpoints.succeeded(address)
        self.reachable = True

    def exhausted(self, plan: CallPlan, error: BulwarkError | None) -> BulwarkError:
        """Every endpoint had its turn: the error to raise (the last one's)."""
        if plan.last_code is None or plan.last_code in AWAY:
            self.reachable = False
        if error is None:
            return UnavailableError(grpc.StatusCode.UNAVAILABLE, "no endpoint to try")
        return error

    # -- watches ------------------------------------------------------------------

    def watch(self, name: str, service: str = "") -> Watch:
        """The watch ``name`` (breakers, features, primaries, backpressure, faults;
        instances of ``service``)."""
        if name == "instances":
            cache = self.instances.get(service)
            if cache is None:
                cache = self.instances[service] = InstanceCache(service)
            return Watch(f"instances-{service}", cache, service, self.jitter)
        return Watch(name, getattr(self, name), jitter=self.jitter)

    def on_event(
        self, cache: Any, event: Any, now: float, now_wall: float
    ) -> list[tuple[PrimaryCallback, str, registry_pb2.Primary | None]]:
        """Apply one watch event; the primary-change callbacks to run (outside any lock).

        An event proves Bulwark reachable; a breakers SYNCED hands decisions
        back to the fleet's breakers (the local ones are forgotten).
        """
        self.reachable = True
        if cache is self.breakers:
            cache.apply(event, now, now_wall)
            if event.type == SYNCED:
                self.local.clear()
            return []
        if cache is not self.primaries:
            cache.apply(event, now)
            return []
        calls = []
        for service in cache.apply(event, now):
            primary = cache.get(service)
            for callback in self.callbacks.get(service, ()):
                calls.append((callback, service, primary))
        return calls

    def on_live(self, cache: Any, now: float) -> None:
        """A resumed stream proved live (see ``serving``): its cache is current again."""
        cache.mark_connected(now)
        self.reachable = True
        if cache is self.breakers and cache.connected:
            # Bulwark is back: the fleet's breakers decide again, not the local ones.
            self.local.clear()

    def on_watch_end(self, cache: Any, address: str, code: grpc.StatusCode, now: float) -> bool:
        """A stream ended with ``code``: mark its cache; whether it had been live."""
        was_live = bool(cache.connected)
        # Always: a half-received snapshot must not mix with the next one.
        cache.mark_disconnected(now if was_live else None)
        if code in AWAY:
            self.endpoints.failed(address, now)
            self.reachable = False
        return was_live

    # -- outcome reports ------------------------------------------------------------

    def next_report(self, now: float, drain: bool) -> Remote[None] | None:
        """The ReportOutcomes call due now (with ``drain``: anything pending), or None.

        Due: a full batch, the interval since the last report, a backlog, or urgent
        failures (``_outcomes``' rule) once the short gap since the last report is over.
        A report that found no replica is put back (merged, bounded); one that
        may have been applied (a deadline) is dropped, since sending it again
        could count the same failures twice and trip the fleet's breaker.
        """
        outcomes = self.outcomes
        if not outcomes.pending or not (drain or outcomes.due(now)):
            return self._next_signals(now, drain)
        batch = outcomes.take(now)
        if not batch:
            return self._next_signals(now, drain)
        return Remote(
            breaker_pb2_grpc.CircuitBreakerServiceStub,
            "ReportOutcomes",
            breaker_pb2.ReportOutcomesRequest(reporter=self.client_id, outcomes=batch),
            idempotent=False,
            timeout=self.options.timeout,
            done=_nothing,
            failed=outcomes.report_failed(batch),
        )

    def report_wait(self, now: float, pause: float) -> float:
        """How long the reporter may sleep: ``pause``, or less if an urgent report is due sooner."""
        return self.outcomes.wait(now, pause)

    def _next_signals(self, now: float, drain: bool) -> Remote[None] | None:
        """The ReportSignals call due now, or None; put back unless it may have landed."""
        signals = self.signals
        if not (signals.due(now) or (drain and signals.pending)):
            return None
        reports = signals.take(now)

        def failed(error: BulwarkError, now: float) -> None:
            if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                signals.restore(reports)
            raise error

        return Remote(
            registry_pb2_grpc.RegistryServiceStub,
            "ReportSignals",
            signals_pb2.ReportSignalsRequest(reporter=self.options.reporter, reports=reports),
            idempotent=False,
            timeout=self.options.timeout,
            done=_nothing,
            failed=failed,
        )

    def staleness(self, now: float) -> dict[str, float]:
        """Seconds each main cache has gone unconfirmed (0 while its watch is live), and
        the backpressure policies' and the fault rules' once followed."""
        staleness = {
            "breakers": self.breakers.staleness(now),
            "features": self.features.staleness(now),
            "primaries": self.primaries.staleness(now),
        }
        for name, cache in (("backpressure", self.backpressure), ("faults", self.faults)):
            if cache.followed:
                staleness[name] = cache.staleness(now)
        return staleness


def _allowed(response: breaker_pb2.AllowResponse, now: float, now_wall: float) -> Decision:
    retry = response.retry_after.ToNanoseconds() / 1e9 if response.HasField("retry_after") else None
    return Decision(response.allowed, response.state, "remote", retry)


def _within(response: ratelimit_pb2.CheckResponse, now: float, now_wall: float) -> bool:
    return response.overall_code != ratelimit_pb2.CHECK_CODE_OVER_LIMIT


def _nothing(response: Any, now: float, now_wall: float) -> None:
    return None


def _nothing_failed(error: BulwarkError, now: float) -> None:
    return None
