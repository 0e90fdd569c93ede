"""The interceptors' client-side backpressure: one limiter and one throttle per downstream.

I/O-free, like ``_guard``: the interceptors read the clock and make the calls, this module
only decides and counts. It drives the cores of ``bulwark._adaptive``:

* ``Guard.adaptive`` puts a ``Gradient2Limiter`` (Netflix concurrency-limits' Gradient2;
  ``adaptive=True`` takes Bulwark's client defaults, ``Gradient2Settings()``: initial
  limit 20, minimum 1, maximum 200, smoothing 0.2, RTT tolerance 1.5, long window 6,000
  samples, queue size 4; ``_adaptive`` says where and why they differ from Netflix's) in
  front of the downstream. A call over the limit is refused at once with RESOURCE_EXHAUSTED and
  ``bulwark-rejected-by: concurrency``; nothing waits.
* ``Guard.throttle`` puts an ``AdaptiveThrottle`` (Google SRE book, chapter 21: reject
  with probability ``max(0, (requests - K * accepts) / (requests + 1))``, K = 2, a
  two-minute window) in front of it. A rejected call fails with RESOURCE_EXHAUSTED and
  ``bulwark-rejected-by: throttle``.

**Which downstream.** State is kept per downstream key: the Guard's ``service`` when it
has one, else the rule's own key (``"/pkg.Service/"`` or ``"/pkg.Service/Method"``).
Rules naming the same ``service`` share one limiter and one throttle: a part set in one of
them holds for all (a rule that sets neither takes part too), and two rules setting the
same part differently are refused. Keys come from the rules, never from the methods
called, so the state is bounded by the number of rules and built once, up front.

**Central policies.** With a client, a service whose rules leave ``adaptive`` or
``throttle`` unset (None) follows the central ``BackpressurePolicy`` of that name for that
part (``BackpressureService``, watched by the client like breakers; a zero field is the
client default): enabled there, it is on here, and a change reaches the next call. A local
setting wins, ``False`` included (off whatever the policy says). A changed, disabled or
re-enabled policy keeps the limiter and what it learned (``Gradient2Limiter.reconfigure``),
so the calls it let in stay counted; a changed throttle starts counting again. Policies are
named for services, so a rule without ``service`` never follows one.

**What an answer means.** For the limiter (as Netflix's gRPC client interceptor, plus
timeouts): OK is a sample of the downstream's RTT; UNAVAILABLE, RESOURCE_EXHAUSTED and
DEADLINE_EXCEEDED are drops (the downstream refused the call or did not answer in time;
the limit takes a multiplicative cut and the RTT stays out of the average); any other
status, a cancelled call and an exception that is no gRPC answer free the slot without a
sample (a fast INVALID_ARGUMENT says nothing about how loaded the downstream is). For the
throttle: UNAVAILABLE and RESOURCE_EXHAUSTED are refusals, every other answer an accept;
a call cancelled by its caller or that never got an answer is not counted at all.

**Priority.** A call's ``bulwark-priority`` metadata (``critical``, ``default``,
``sheddable``; none: ``default``), the class Bulwark's own shedding reads, counts here
too: a sheddable call is refused by the limiter from half the limit in flight, so the
rest of the limit stays for the others; a critical call is never throttled locally
(the throttle still counts its answer).

Not thread-safe by itself: the synchronous interceptor hands in a lock, held for each
short decision or count; the asyncio one runs on a single event loop and needs none.
"""

from __future__ import annotations

import contextlib
import logging
import random as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc

from bulwark._adaptive import (
    AdaptiveThrottle,
    Gradient2Limiter,
    Gradient2Settings,
    Permit,
    ThrottleSettings,
)
from bulwark._guard import Refusal
from bulwark.v1 import backpressure_pb2

if TYPE_CHECKING:
    from bulwark._guard import Guard

__all__ = [
    "DROPPED_CODES",
    "PRIORITY_KEY",
    "REFUSED_CODES",
    "Backpressure",
    "Downstream",
    "DownstreamState",
    "Flight",
    "PolicySource",
    "adaptive_settings",
    "policy_settings",
    "priority_of",
    "throttle_settings",
]

log = logging.getLogger("bulwark")

#: Answers by which the downstream refused work: the throttle counts them as refusals.
REFUSED_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
#: Answers that make the limiter cut its limit: refusals and timeouts.
DROPPED_CODES: frozenset[grpc.StatusCode] = REFUSED_CODES | {grpc.StatusCode.DEADLINE_EXCEEDED}

#: The call's class, as Bulwark's shedding reads it (``bulwark-priority`` metadata).
PRIORITY_KEY = "bulwark-priority"
CRITICAL, DEFAULT, SHEDDABLE = "critical", "default", "sheddable"
#: Sheddable calls may use this share of the adaptive limit.
SHEDDABLE_SHARE = 0.5

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED


def adaptive_settings(value: Gradient2Settings | bool | None) -> Gradient2Settings | None:
    """``Guard.adaptive`` as settings: True is the client defaults, False or None is off."""
    if value is True:
        return Gradient2Settings()
    return value or None


def throttle_settings(value: ThrottleSettings | bool | None) -> ThrottleSettings | None:
    """``Guard.throttle`` as settings: True is the SRE book's defaults, False or None is off."""
    if value is True:
        return ThrottleSettings()
    return value or None


class PolicySource(Protocol):
    """Where the central policies come from (the client's watch-fed cache)."""

    #: Moves whenever a policy changed (or a snapshot came).
    version: int

    def get(self, name: str) -> backpressure_pb2.BackpressurePolicy | None: ...


def policy_settings(
    policy: backpressure_pb2.BackpressurePolicy,
) -> tuple[Gradient2Settings | None, ThrottleSettings | None]:
    """A central policy as the cores' settings: each part None when off.

    A zero field is the client default. Bulwark checks policies when they are written,
    so a part this client cannot take (a newer server's rule) is off, with a warning.
    """
    adaptive: Gradient2Settings | None = None
    throttle: ThrottleSettings | None = None
    c = policy.concurrency
    if c.enabled:
        d = Gradient2Settings()
        # Unset bounds fit around the set ones, as the server's check allows.
        high = c.max_limit or max(d.max_limit, c.min_limit, c.initial_limit)
        low = c.min_limit or min(d.min_limit, high)
        try:
            adaptive = Gradient2Settings(
                initial_limit=c.initial_limit or max(low, min(d.initial_limit, high)),
                min_limit=low,
                max_limit=high,
                smoothing=c.smoothing or d.smoothing,
                rtt_tolerance=c.rtt_tolerance or d.rtt_tolerance,
                long_window=c.long_window or d.long_window,
                queue_size=c.queue_size or d.queue_size,
            )
        except ValueError as exc:
            log.warning("backpressure policy %r: concurrency ignored: %s", policy.name, exc)
    t = policy.throttle
    if t.enabled:
        window = ThrottleSettings().window_seconds
        if t.HasField("window"):
            window = max(1, round(t.window.seconds + t.window.nanos / 1e9))
        try:
            throttle = ThrottleSettings(k=t.k or ThrottleSettings().k, window_seconds=window)
        except ValueError as exc:
            log.warning("backpressure policy %r: throttle ignored: %s", policy.name, exc)
    return adaptive, throttle


@dataclass(frozen=True, slots=True)
class DownstreamState:
    """What one downstream's backpressure looks like at a moment (for metrics and tests).

    ``limit`` and ``in_flight`` are None without ``adaptive``; ``reject_probability`` is
    None without ``throttle``.
    """

    limit: int | None
    in_flight: int | None
    reject_probability: float | None


class Downstream:
    """The limiter and throttle of one downstream key; either may be None."""

    __slots__ = ("_lock", "key", "limiter", "spare", "throttle")

    def __init__(
        self,
        key: str,
        limiter: Gradient2Limiter | None,
        throttle: AdaptiveThrottle | None,
        lock: contextlib.AbstractContextManager[object],
    ) -> None:
        self.key = key
        self.limiter = limiter
        self.throttle = throttle
        #: The limiter a central policy turned off, kept for its calls still in flight
        #: and taken back if the policy turns on again.
        self.spare: Gradient2Limiter | None = None
        self._lock = lock

    def check_throttle(self, now: float, priority: str = DEFAULT) -> None:
        """The throttle's step: raise a ``Refusal`` when it rejects the call locally."""
        throttle = self.throttle
        if throttle is None or priority == CRITICAL:
            return
        with self._lock:
            if not throttle.should_reject(now):
                return
            requests, accepts = throttle.counts(now)
            probability = throttle.reject_probability(now)
        window = throttle.settings.window_seconds
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"adaptive throttle of {self.key!r} rejected the call locally "
            f"(p={probability:.2f}: {accepts} of {requests} requests accepted in {window}s)",
            "throttle",
        )

    def admit(self, now: float, priority: str = DEFAULT) -> Flight:
        """The concurrency step: a ``Flight`` to finish or abandon, or a ``Refusal``."""
        limiter = self.limiter
        if limiter is None:
            return Flight(self, None, now)
        with self._lock:
            limit = limiter.limit
            shed = priority == SHEDDABLE and limiter.in_flight >= limit * SHEDDABLE_SHARE
            permit = None if shed else limiter.try_acquire(now)
            if permit is not None:
                return Flight(self, permit, now, limiter)
        if shed:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"adaptive concurrency limit of {self.key!r}: sheddable calls are refused "
                f"from {limit * SHEDDABLE_SHARE:g} in flight (limit {limit})",
                "concurrency",
            )
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"adaptive concurrency limit of {self.key!r} reached: {limit} calls in flight",
            "concurrency",
        )

    def state(self, now: float) -> DownstreamState:
        with self._lock:
            limiter, throttle = self.limiter, self.throttle
            return DownstreamState(
                limit=limiter.limit if limiter is not None else None,
                in_flight=limiter.in_flight if limiter is not None else None,
                reject_probability=(
                    throttle.reject_probability(now) if throttle is not None else None
                ),
            )


class Flight:
    """One admitted call, from admission to its answer; ends exactly once.

    ``finish`` or ``abandon`` may both be reached on some paths (an exception after a
    done-callback, say): the first one counts, the rest do nothing. The slot goes back to
    the limiter that gave it, even if a central policy has replaced it since.
    """

    __slots__ = ("_downstream", "_limiter", "_open", "_permit", "_sent")

    def __init__(
        self,
        downstream: Downstream,
        permit: Permit | None,
        now: float,
        limiter: Gradient2Limiter | None = None,
    ) -> None:
        self._downstream = downstream
        self._permit = permit
        self._limiter = limiter
        self._open = True
        self._sent = now

    def sent(self, now: float) -> None:
        """The call leaves now: its RTT is measured from here, not from the admission.

        The steps between (the breaker's decision) are the client's time, not the
        downstream's, and would otherwise inflate its RTT.
        """
        self._sent = now

    def finish(self, code: grpc.StatusCode, now: float) -> None:
        """The downstream answered ``code`` at ``now``: release the slot and count it."""
        downstream = self._downstream
        with downstream._lock:
            if not self._open:
                return
            self._open = False
            permit, limiter = self._permit, self._limiter
            if permit is not None and limiter is not None:
                # The limiter measures from the admission: shift the end by the time
                # spent between admission and sending, so the RTT is the call's alone.
                end = now - (self._sent - permit.started)
                if code == _OK:
                    limiter.release(permit, end)
                elif code in DROPPED_CODES:
                    limiter.release(permit, end, dropped=True)
                else:
                    limiter.forget(permit)
            throttle = downstream.throttle
            if throttle is not None and code != _CANCELLED:
                throttle.record(now, accepted=code not in REFUSED_CODES)

    def abandon(self) -> None:
        """No answer (cancelled, refused by a later step, or failed locally): free the slot."""
        downstream = self._downstream
        with downstream._lock:
            if not self._open:
                return
            self._open = False
            if self._permit is not None and self._limiter is not None:
                self._limiter.forget(self._permit)


class Backpressure:
    """Every downstream's limiter and throttle for one interceptor, built from its rules.

    ``central``, when given, is called once, at the first decision (so a client can start
    its watch on the event loop that makes the calls), for the central policies that
    rules without local settings follow (the module's "Central policies").
    """

    def __init__(
        self,
        rules: Mapping[str, Guard],
        *,
        lock: contextlib.AbstractContextManager[object] | None = None,
        random: Callable[[], float] | None = None,
        central: Callable[[], PolicySource] | None = None,
    ) -> None:
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._draw = random if random is not None else _random.random
        # key -> [adaptive, throttle] as some rule sets them (None: no rule does)
        local: dict[str, list[object]] = {}
        services: set[str] = set()
        keys: dict[str, str] = {}
        for rule, guard in rules.items():
            if guard.adaptive is None and guard.throttle is None and guard.service is None:
                continue
            key = guard.service if guard.service is not None else rule
            if guard.service is not None:
                services.add(key)
            keys[rule] = key
            parts = local.setdefault(key, [None, None])
            for i, value in enumerate((guard.adaptive, guard.throttle)):
                if value is None:
                    continue
                value = (adaptive_settings if i == 0 else throttle_settings)(value) or False
                if parts[i] is not None and parts[i] != value:
                    raise ValueError(
                        f"rule {rule!r}: downstream {key!r} has other adaptive/throttle "
                        "settings in another rule; rules sharing a service must agree"
                    )
                parts[i] = value
        by_key: dict[str, Downstream] = {}
        #: key -> (adaptive follows the policy, throttle follows it)
        self._follows: dict[str, tuple[bool, bool]] = {}
        for key, (adaptive, throttle) in local.items():
            follows = tuple(
                central is not None and key in services and p is None for p in (adaptive, throttle)
            )
            if not (adaptive or throttle or any(follows)):
                continue
            by_key[key] = Downstream(
                key,
                Gradient2Limiter(adaptive) if isinstance(adaptive, Gradient2Settings) else None,
                AdaptiveThrottle(throttle, random=self._draw)
                if isinstance(throttle, ThrottleSettings)
                else None,
                self._lock,
            )
            if any(follows):
                self._follows[key] = follows  # type: ignore[assignment]
        self._by_rule = {rule: by_key[key] for rule, key in keys.items() if key in by_key}
        self._by_key = by_key
        self._central = central if self._follows else None
        self._source: PolicySource | None = None
        self._seen = -1

    def for_rule(self, rule: str) -> Downstream | None:
        """The downstream guarded by the rule keyed ``rule``; None when it has neither."""
        if self._central is not None:
            self._refresh()
        return self._by_rule.get(rule)

    def downstream(self, key: str) -> Downstream | None:
        """The downstream of key ``key`` (a service name or a rule's key)."""
        return self._by_key.get(key)

    def states(self, now: float) -> dict[str, DownstreamState]:
        """Every downstream's limit, calls in flight and reject probability at ``now``.

        Takes in central changes only once a call has started following them: reading
        the state (from a metrics thread, say) never starts a watch.
        """
        if self._source is not None:
            self._refresh()
        return {key: downstream.state(now) for key, downstream in self._by_key.items()}

    def _refresh(self) -> None:
        """Apply the central policies if they changed since the last look (one int compare
        when they did not)."""
        source = self._source
        if source is None:
            source = self._source = self._central()  # type: ignore[misc]
        if source.version == self._seen:
            return
        with self._lock:
            # Read before applying: a change that lands meanwhile is applied next time.
            version = source.version
            for key, (adaptive_follows, throttle_follows) in self._follows.items():
                policy = source.get(key)
                adaptive, throttle = policy_settings(policy) if policy is not None else (None, None)
                downstream = self._by_key[key]
                if adaptive_follows:
                    _follow(downstream, adaptive)
                if throttle_follows:
                    downstream.throttle = _throttle(downstream.throttle, throttle, self._draw)
            self._seen = version


def _follow(downstream: Downstream, settings: Gradient2Settings | None) -> None:
    """The downstream's limiter as the policy wants it: off (kept as the spare), on, or
    reconfigured; one limiter for its whole life, so no admitted call is forgotten."""
    limiter = downstream.limiter or downstream.spare
    if settings is None:
        downstream.limiter, downstream.spare = None, limiter
        return
    if limiter is None:
        limiter = Gradient2Limiter(settings)
    elif limiter.settings != settings:
        limiter.reconfigure(settings)
    downstream.limiter, downstream.spare = limiter, None


def _throttle(
    throttle: AdaptiveThrottle | None,
    settings: ThrottleSettings | None,
    draw: Callable[[], float],
) -> AdaptiveThrottle | None:
    if settings is None:
        return None
    if throttle is not None and throttle.settings == settings:
        return throttle
    return AdaptiveThrottle(settings, random=draw)


def priority_of(metadata: object) -> str:
    """The class a call's metadata claims (``default`` when none or unknown)."""
    for item in metadata or ():  # type: ignore[attr-defined]
        key, value = item
        if key == PRIORITY_KEY and value in (CRITICAL, DEFAULT, SHEDDABLE):
            return str(value)
    return DEFAULT
