"""The I/O-free core shared by the synchronous ``Client`` and the ``AsyncClient``.

Everything a client decides locally lives here, in the httpx/httpcore spirit:
the sync and async clients only move bytes (gRPC calls, watch streams, timers)
and feed what they receive into these objects, so both behave the same and
all of it is testable without a server.

Guarantees:

* No I/O: nothing here calls gRPC, starts threads, touches asyncio or reads a
  clock. Every time-dependent method takes ``now`` (seconds from
  ``time.monotonic()``); wall-clock times from the server are converted with an
  explicit ``now_wall`` (``time.time()``) taken by the caller at the same moment.
* Not thread-safe: each object is meant to be owned by one thread or one event
  loop; the clients serialize access themselves.
* Bounded memory: the outcome buffer holds one entry per breaker however many
  calls are recorded, counts saturate instead of growing without limit, and a
  local breaker holds at most its window of outcomes.
* Watch caches follow ``WatchEventType``'s contract: the SNAPSHOT events up to
  the next SYNCED replace the whole view (objects absent from a new snapshot
  are gone); ``revision`` only moves once a snapshot is complete, so resuming
  from it never skips objects of a half-received snapshot.
* Fail safe, not fail silent: when the cache cannot decide a breaker it says
  ``"remote-needed"`` instead of guessing, and every fallback (local breaker,
  fallback rate) is explicit.

This module never imports ``bulwark_server``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from bulwark.v1 import breaker_pb2, feature_pb2, ratelimit_pb2, registry_pb2, watch_pb2

__all__ = [
    "COUNT_CAP",
    "MAX_REPORT_ENTRIES",
    "BreakerCache",
    "BreakerView",
    "Decision",
    "Endpoints",
    "FeatureCache",
    "InstanceCache",
    "LocalBreaker",
    "OutcomeBuffer",
    "PrimaryCache",
    "QuotaBucket",
    "monotonic_from_wall",
    "per_second",
    "quota_for",
    "retryable",
]

SNAPSHOT = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT = watch_pb2.WATCH_EVENT_TYPE_PUT
DELETE = watch_pb2.WATCH_EVENT_TYPE_DELETE

UNSPECIFIED = breaker_pb2.BREAKER_STATE_UNSPECIFIED
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = breaker_pb2.BREAKER_STATE_DISABLED
METRICS_ONLY = breaker_pb2.BREAKER_STATE_METRICS_ONLY

# States in which every call goes ahead, whatever the window says.
_ALLOWING_STATES = frozenset({CLOSED, DISABLED, METRICS_ONLY})

# resilience4j's defaults, used when a breaker's config leaves a field unset.
# (The server stores normalized configs, so these only matter for hand-built
# or older messages.)
DEFAULT_FAILURE_RATE_THRESHOLD = 50.0
DEFAULT_MINIMUM_NUMBER_OF_CALLS = 100
DEFAULT_SLIDING_WINDOW_SIZE = 100
DEFAULT_WAIT_DURATION_IN_OPEN_STATE = 60.0

#: Per-breaker outcome counts saturate here, so counts kept while Bulwark is
#: unreachable stay bounded (and well inside int64) however long the outage.
COUNT_CAP = 10**9

#: ReportOutcomesRequest accepts at most this many entries.
MAX_REPORT_ENTRIES = 1000

_UNIT_SECONDS = {
    ratelimit_pb2.RATE_UNIT_SECOND: 1.0,
    ratelimit_pb2.RATE_UNIT_MINUTE: 60.0,
    ratelimit_pb2.RATE_UNIT_HOUR: 3600.0,
    ratelimit_pb2.RATE_UNIT_DAY: 86400.0,
}


def monotonic_from_wall(wall: float, now_mono: float, now_wall: float) -> float:
    """Convert a wall-clock time (Unix seconds) to the monotonic clock.

    ``now_mono`` and ``now_wall`` must be read together; the result is only as
    good as the agreement between this host's wall clock and the server's.
    """
    return now_mono + (wall - now_wall)


def per_second(requests_per_unit: float, unit: int) -> float:
    """A rate in requests per ``ratelimit_pb2.RateUnit`` as requests per second."""
    try:
        return requests_per_unit / _UNIT_SECONDS[unit]
    except KeyError:
        raise ValueError(f"unknown rate unit {unit}") from None


def _seconds(message: duration_pb2.Duration | timestamp_pb2.Timestamp) -> float:
    """Seconds of a Duration or Timestamp."""
    return message.seconds + message.nanos / 1e9


# -- breakers -----------------------------------------------------------------


@dataclass(slots=True)
class BreakerView:
    """What a client needs to know about one breaker, with times on the monotonic clock."""

    name: str
    state: int
    open_until_monotonic: float | None
    revision: int
    failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD
    minimum_number_of_calls: int = DEFAULT_MINIMUM_NUMBER_OF_CALLS
    sliding_window_size: int = DEFAULT_SLIDING_WINDOW_SIZE
    wait_duration_in_open_state: float = DEFAULT_WAIT_DURATION_IN_OPEN_STATE

    @classmethod
    def from_proto(
        cls, breaker: breaker_pb2.CircuitBreaker, now_monotonic: float, now_wall: float
    ) -> BreakerView:
        """Build a view; ``now_monotonic`` and ``now_wall`` must be read together.

        A TIME_BASED window's size (seconds) is used as a number of calls: the
        local fallback only keeps a count-based window.
        """
        config = breaker.config
        wait = (
            _seconds(config.wait_duration_in_open_state)
            if config.HasField("wait_duration_in_open_state")
            else DEFAULT_WAIT_DURATION_IN_OPEN_STATE
        )
        open_until: float | None = None
        status = breaker.status
        if status.HasField("open_until"):
            remaining = _seconds(status.open_until) - now_wall
            # open_until is the server's wall clock. If ours runs behind, the raw
            # difference could keep a breaker refused far longer than the wait the
            # server ever applies; no OPEN lasts longer than its configured wait.
            remaining = min(remaining, wait)
            open_until = now_monotonic + remaining
        return cls(
            name=breaker.name,
            state=status.state,
            open_until_monotonic=open_until,
            revision=breaker.revision,
            failure_rate_threshold=(
                config.failure_rate_threshold
                if config.HasField("failure_rate_threshold")
                else DEFAULT_FAILURE_RATE_THRESHOLD
            ),
            minimum_number_of_calls=(
                config.minimum_number_of_calls
                if config.HasField("minimum_number_of_calls")
                else DEFAULT_MINIMUM_NUMBER_OF_CALLS
            ),
            sliding_window_size=(
                config.sliding_window_size
                if config.HasField("sliding_window_size")
                else DEFAULT_SLIDING_WINDOW_SIZE
            ),
            wait_duration_in_open_state=wait,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The cache's answer to "may I call?".

    ``source`` is ``"cache"`` (decided from the watched state), ``"local"``
    (decided by a ``LocalBreaker`` while Bulwark is unreachable) or
    ``"remote-needed"`` (the client must ask ``Allow``; ``allowed`` is then
    False and means "not decided", not "refused"). ``retry_after`` is seconds
    until a call may be allowed again, when known.
    """

    allowed: bool
    state: int
    source: str
    retry_after: float | None = None


K = TypeVar("K")
V = TypeVar("V")


class _WatchedMap(Generic[K, V]):
    """A view kept by a Watch* stream: SNAPSHOT..SYNCED replaces, PUT/DELETE change.

    Staleness: a live stream pushes every change, so while connected the view
    is current (staleness 0) even if nothing happened for an hour; the server
    sends no heartbeats, so measuring time since the last event would call a
    quiet stream stale. Once disconnected, staleness grows from the last
    moment the view was known current.
    """

    def __init__(self) -> None:
        self._items: dict[K, V] = {}
        # The snapshot being received, or None: it replaces _items only once
        # SYNCED says it is complete, so readers never see half a snapshot.
        self._pending: dict[K, V] | None = None
        self.revision = 0
        self.synced_at: float | None = None
        self.connected = False

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def staleness(self, now: float) -> float:
        """0 while a synced stream is live; seconds since last known current otherwise.

        ``math.inf`` until the first snapshot has been received.
        """
        if self.synced_at is None:
            return math.inf
        if self.connected:
            return 0.0
        return max(0.0, now - self.synced_at)

    def mark_connected(self, now: float) -> None:
        """A resumed stream (``start_revision`` = ``revision``) is up again.

        Resumed streams send only the changes since ``revision`` and no SYNCED,
        so the client says when the stream is established. Ignored before the
        first snapshot: there is no view to vouch for yet.
        """
        if self.synced_at is not None:
            self.connected = True
            self.synced_at = now

    def mark_disconnected(self, now: float | None = None) -> None:
        """The stream ended: keep the data, let staleness grow.

        With ``now``, the view counts as current until then (the stream was live
        up to the moment it broke). A half-received snapshot is dropped: the
        next stream resumes from ``revision``, which it never advanced.
        """
        if self.connected and now is not None and self.synced_at is not None:
            self.synced_at = max(self.synced_at, now)
        self.connected = False
        self._pending = None

    def _apply(self, event_type: int, key: K, value: V | None, revision: int, now: float) -> bool:
        """Apply one event; True when the live view changed (SYNCED always counts)."""
        if event_type == SYNCED:
            # Zero SNAPSHOT events before SYNCED is an empty snapshot: nothing exists.
            self._items = self._pending if self._pending is not None else {}
            self._pending = None
            self.revision = revision
            self.synced_at = now
            self.connected = True
            return True
        if event_type not in (SNAPSHOT, PUT, DELETE):
            return False  # Unknown event types from a newer server are skipped.
        if event_type == SNAPSHOT:
            if self._pending is None:
                self._pending = {}
            target = self._pending
        elif self._pending is not None:
            # A change during a snapshot belongs to that snapshot; the revision
            # moves only with SYNCED.
            target = self._pending
        else:
            target = self._items
            self.revision = max(self.revision, revision)
            if self.synced_at is not None:
                # An event proves the stream is live (also on a resumed stream).
                self.synced_at = now
                self.connected = True
        if event_type == DELETE:
            target.pop(key, None)
        elif value is None or not self._newer(target.get(key), value):
            return False
        else:
            target[key] = value
        return target is self._items

    def _newer(self, old: V | None, new: V) -> bool:
        """Whether ``new`` should replace ``old`` (subclasses reject older versions)."""
        return True


class BreakerCache(_WatchedMap[str, BreakerView]):
    """Breakers as seen through WatchBreakers, answering "may I call?" from memory."""

    def apply(
        self, event: breaker_pb2.WatchBreakersResponse, now_mono: float, now_wall: float
    ) -> None:
        """Apply one event of the stream (``now_mono``/``now_wall`` read together)."""
        view = None
        if event.type in (SNAPSHOT, PUT):
            view = BreakerView.from_proto(event.breaker, now_mono, now_wall)
        self._apply(event.type, event.breaker.name, view, event.revision, now_mono)

    def _newer(self, old: BreakerView | None, new: BreakerView) -> bool:
        # A replayed or reordered PUT must not bring back an older state.
        return old is None or not (new.revision and old.revision > new.revision)

    def get(self, name: str) -> BreakerView | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def decide(self, name: str, now: float) -> Decision:
        """Decide from the cache alone; see ``Decision`` for ``"remote-needed"``."""
        view = self._items.get(name)
        if view is None:
            return Decision(False, UNSPECIFIED, "remote-needed")
        state = view.state
        if state in _ALLOWING_STATES:
            return Decision(True, state, "cache")
        if state == FORCED_OPEN:
            # Stays refused until an operator resets it: no useful retry time.
            return Decision(False, state, "cache")
        if state == OPEN:
            until = view.open_until_monotonic
            if until is not None and until > now:
                return Decision(False, state, "cache", until - now)
            # The wait is over (or unknown): the server's Allow moves the breaker
            # to HALF_OPEN and hands out the fleet's trial permits.
            return Decision(False, state, "remote-needed")
        # HALF_OPEN (trial permits are counted fleet-wide by the server) or a state
        # this client does not know.
        return Decision(False, state, "remote-needed")


class OutcomeBuffer:
    """Outcome counts waiting to be reported, aggregated per breaker.

    Memory is one small entry per breaker name, never per call.
    """

    def __init__(self, max_batch: int = 500, interval: float = 0.1) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.max_batch = max_batch
        self.interval = interval
        # name -> [successes, failures, slow_calls]
        self._counts: dict[str, list[int]] = {}
        self._pending = 0
        # -inf: the first outcomes are reported without waiting a whole interval.
        self.last_flush = -math.inf
        # The last take left breakers behind (more than fit one report).
        self._backlog = False

    def __len__(self) -> int:
        """Breakers with pending counts."""
        return len(self._counts)

    @property
    def pending(self) -> int:
        """Calls counted and not yet taken."""
        return self._pending

    def add(self, name: str, success: bool, slow: bool = False) -> None:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = [0, 0, 0]
        index = 0 if success else 1
        if counts[index] < COUNT_CAP:
            counts[index] += 1
            self._pending += 1
        if slow and counts[2] < COUNT_CAP:
            counts[2] += 1

    def due(self, now: float) -> bool:
        """True when a report should be sent now."""
        if not self._counts:
            return False
        return (
            self._backlog
            or self._pending >= self.max_batch
            or now - self.last_flush >= self.interval
        )

    def take(
        self, now: float, limit: int = MAX_REPORT_ENTRIES
    ) -> list[breaker_pb2.BreakerOutcomes]:
        """Remove and return up to ``limit`` breakers' counts, oldest first.

        When more breakers are pending than fit one report, ``due`` stays true so
        the rest goes out in the next report right away.
        """
        out: list[breaker_pb2.BreakerOutcomes] = []
        for name in list(islice(self._counts, max(1, limit))):
            successes, failures, slow = self._counts.pop(name)
            self._pending -= successes + failures
            out.append(
                breaker_pb2.BreakerOutcomes(
                    name=name,
                    counts=breaker_pb2.OutcomeCounts(
                        successes=successes, failures=failures, slow_calls=slow
                    ),
                )
            )
        self.last_flush = now
        self._backlog = bool(self._counts)
        return out

    def restore(self, items: Iterable[breaker_pb2.BreakerOutcomes]) -> None:
        """Put back a batch whose report failed, merged with counts added since."""
        for item in items:
            counts = self._counts.get(item.name)
            if counts is None:
                counts = self._counts[item.name] = [0, 0, 0]
            before = counts[0] + counts[1]
            counts[0] = min(COUNT_CAP, counts[0] + max(0, item.counts.successes))
            counts[1] = min(COUNT_CAP, counts[1] + max(0, item.counts.failures))
            counts[2] = min(COUNT_CAP, counts[2] + max(0, item.counts.slow_calls))
            self._pending += counts[0] + counts[1] - before


class LocalBreaker:
    """One breaker decided in-process while Bulwark is unreachable.

    A count-based window of the last ``sliding_window_size`` outcomes; trips
    OPEN when it holds at least ``minimum_number_of_calls`` (capped at the
    window size, as resilience4j does) and the failure rate reaches the
    threshold; after the wait lets exactly one trial call through, whose
    success closes it and whose failure re-opens it.
    """

    def __init__(
        self,
        failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD,
        minimum_number_of_calls: int = DEFAULT_MINIMUM_NUMBER_OF_CALLS,
        sliding_window_size: int = DEFAULT_SLIDING_WINDOW_SIZE,
        wait_duration_in_open_state: float = DEFAULT_WAIT_DURATION_IN_OPEN_STATE,
    ) -> None:
        if sliding_window_size < 1:
            raise ValueError("sliding_window_size must be at least 1")
        self.failure_rate_threshold = failure_rate_threshold
        self.minimum_number_of_calls = max(1, min(minimum_number_of_calls, sliding_window_size))
        self.sliding_window_size = sliding_window_size
        self.wait_duration_in_open_state = wait_duration_in_open_state
        self._window: deque[bool] = deque(maxlen=sliding_window_size)
        self._failures = 0
        self.state = CLOSED
        self._open_until = 0.0
        self._trial_since: float | None = None

    @classmethod
    def from_view(cls, view: BreakerView) -> LocalBreaker:
        return cls(
            failure_rate_threshold=view.failure_rate_threshold,
            minimum_number_of_calls=view.minimum_number_of_calls,
            sliding_window_size=view.sliding_window_size,
            wait_duration_in_open_state=view.wait_duration_in_open_state,
        )

    @property
    def calls(self) -> int:
        return len(self._window)

    @property
    def failure_rate(self) -> float:
        """Failure rate in percent of the window, or -1 below the minimum of calls."""
        calls = len(self._window)
        if calls == 0 or calls < self.minimum_number_of_calls:
            return -1.0
        return self._failures * 100.0 / calls

    def retry_after(self, now: float) -> float | None:
        """Seconds until a trial call may go ahead while OPEN; None otherwise."""
        if self.state != OPEN:
            return None
        return max(0.0, self._open_until - now)

    def allowed(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now < self._open_until:
                return False
            self.state = HALF_OPEN
            self._trial_since = now
            return True
        # HALF_OPEN: one trial is out. If its outcome never comes (the caller lost
        # it), another trial is let through after a further wait instead of
        # refusing forever.
        if self._trial_since is not None and now - self._trial_since >= (
            self.wait_duration_in_open_state
        ):
            self._trial_since = now
            return True
        return False

    def record(self, success: bool, now: float) -> None:
        if self.state == OPEN:
            return  # Late outcomes of calls let through before tripping change nothing.
        if self.state == HALF_OPEN:
            if success:
                self._close()
            else:
                self._open(now)
            return
        if len(self._window) == self._window.maxlen and not self._window[0]:
            self._failures -= 1  # The oldest outcome, a failure, falls out of the window.
        self._window.append(success)
        if not success:
            self._failures += 1
        rate = self.failure_rate
        if rate >= 0 and rate >= self.failure_rate_threshold:
            self._open(now)

    def decide(self, now: float) -> Decision:
        """``allowed`` as a Decision with source ``"local"``."""
        allowed = self.allowed(now)
        return Decision(allowed, self.state, "local", None if allowed else self.retry_after(now))

    def reset(self) -> None:
        """Forget everything (Bulwark is reachable again and decides)."""
        self._close()

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._open_until = now + self.wait_duration_in_open_state
        self._trial_since = None
        self._window.clear()
        self._failures = 0

    def _close(self) -> None:
        self.state = CLOSED
        self._trial_since = None
        self._window.clear()
        self._failures = 0


# -- features and the registry ------------------------------------------------------


class FeatureCache(_WatchedMap[str, feature_pb2.FeatureView]):
    """Features as seen through WatchFeatures, with their effective status."""

    def apply(self, event: feature_pb2.WatchFeaturesResponse, now: float) -> None:
        # PUT also comes when only the effective status changed (a dependency
        # moved), with the feature's own revision unchanged: always take it.
        self._apply(event.type, event.feature.feature.name, event.feature, event.revision, now)

    def get(self, name: str) -> feature_pb2.FeatureView | None:
        return self._items.get(name)

    def available(self, name: str) -> bool | None:
        """True when AVAILABLE, False when DEGRADED or DISABLED, None when unknown."""
        view = self._items.get(name)
        if view is None:
            return None
        return view.effective_status in (
            feature_pb2.FEATURE_STATUS_AVAILABLE,
            feature_pb2.FEATURE_STATUS_UNSPECIFIED,  # "Not set: AVAILABLE".
        )

    def fallback(self, name: str) -> str | None:
        """What to use instead of the feature, or None (unknown, or none configured)."""
        view = self._items.get(name)
        if view is None or not view.feature.fallback:
            return None
        return view.feature.fallback


def _primary_key(primary: registry_pb2.Primary | None) -> tuple[str, int] | None:
    return None if primary is None else (primary.instance_id, primary.epoch)


class PrimaryCache(_WatchedMap[str, registry_pb2.Primary]):
    """Primaries as seen through WatchPrimary."""

    def apply(self, event: registry_pb2.WatchPrimaryResponse, now: float) -> list[str]:
        """Apply one event; return the services whose primary (id or epoch) changed.

        A service seen for the first time counts as changed, and so does one
        absent from a new snapshot (its primary is now unknown, ``get`` -> None).
        """
        service = event.primary.service
        if event.type == SYNCED:
            before = {s: _primary_key(p) for s, p in self._items.items()}
            self._apply(event.type, service, None, event.revision, now)
            after = {s: _primary_key(p) for s, p in self._items.items()}
            return sorted(s for s in before.keys() | after.keys() if before.get(s) != after.get(s))
        before_key = _primary_key(self._items.get(service))
        if not self._apply(event.type, service, event.primary, event.revision, now):
            return []
        return [service] if _primary_key(self._items.get(service)) != before_key else []

    def _newer(self, old: registry_pb2.Primary | None, new: registry_pb2.Primary) -> bool:
        # The epoch never goes down: a replayed older record must not undo a promotion.
        if old is None:
            return True
        if new.epoch < old.epoch:
            return False
        return not (new.revision and old.revision > new.revision)

    def get(self, service: str) -> registry_pb2.Primary | None:
        return self._items.get(service)


class InstanceCache(_WatchedMap[str, registry_pb2.Instance]):
    """The instances of one service as seen through WatchInstances."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def apply(self, event: registry_pb2.WatchInstancesResponse, now: float) -> None:
        if event.type != SYNCED and event.instance.service not in ("", self.service):
            return  # Not this cache's service.
        self._apply(event.type, event.instance.id, event.instance, event.revision, now)

    def get(self, instance_id: str) -> registry_pb2.Instance | None:
        return self._items.get(instance_id)

    def instances(self) -> list[registry_pb2.Instance]:
        """The instances in id order."""
        return [self._items[i] for i in sorted(self._items)]


# -- rate limits ---------------------------------------------------------------


class QuotaBucket:
    """A local token bucket spending a leased share of a global rate limit.

    While a lease is valid, calls are taken from the lease's rate and burst.
    Without one (never granted, or expired because Bulwark is unreachable),
    ``fallback_rate`` decides: None lets every call through (fail open), a
    number enforces that many requests per second locally (``fallback_burst``
    of them at once; default ``max(1, fallback_rate)``).
    """

    def __init__(
        self, fallback_rate: float | None = None, fallback_burst: float | None = None
    ) -> None:
        if fallback_rate is not None and fallback_rate < 0:
            raise ValueError("fallback_rate must not be negative")
        self.fallback_rate = fallback_rate
        self.fallback_burst = (
            None
            if fallback_rate is None
            else (fallback_burst if fallback_burst is not None else max(1.0, fallback_rate))
        )
        self.rate = 0.0
        self.burst = 0.0
        self.expires_at: float | None = None
        # Fallback mode starts full, like a fresh lease.
        self._tokens = self.fallback_burst or 0.0
        self._updated: float | None = None

    def valid(self, now: float) -> bool:
        """Whether a lease is in force at ``now``."""
        return self.expires_at is not None and now < self.expires_at

    def grant(self, per_second: float, burst: float, expires_at_mono: float, now: float) -> None:
        """Install a lease (a LeaseQuota answer, converted by the caller)."""
        if per_second < 0 or burst < 0:
            raise ValueError("rate and burst must not be negative")
        fresh = not self.valid(now)
        self._advance(now)
        self.rate = per_second
        self.burst = burst
        self.expires_at = expires_at_mono
        # A renewal keeps what is left (capped at the new burst), so renewing
        # often cannot mint extra calls; a first lease starts full.
        self._tokens = burst if fresh else min(self._tokens, burst)
        self._updated = now

    def tokens(self, now: float) -> float:
        """Calls available now (``math.inf`` when nothing is enforced)."""
        self._advance(now)
        if not self.valid(now) and self.fallback_rate is None:
            return math.inf
        return self._tokens

    def try_acquire(self, n: float, now: float) -> bool:
        """Take ``n`` calls' worth of tokens if available."""
        if n <= 0:
            return True
        self._advance(now)
        if not self.valid(now) and self.fallback_rate is None:
            return True
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def _advance(self, now: float) -> None:
        """Refill up to ``now``: at the lease rate until it expires, then the fallback's."""
        last = self._updated
        if last is not None and now <= last:
            return  # Never refill twice for the same time, nor backwards.
        self._updated = now
        if last is None:
            return
        expires = self.expires_at
        if expires is not None and last < expires:
            end = min(now, expires)
            self._tokens = min(self.burst, self._tokens + (end - last) * self.rate)
            if now < expires:
                return
            last = end
        if self.fallback_rate is None:
            return
        # Past the lease (or without one): what is left carries over, but never
        # above the fallback burst.
        capacity = self.fallback_burst or 0.0
        self._tokens = min(capacity, self._tokens + (now - last) * self.fallback_rate)


# -- connections ---------------------------------------------------------------


MAX_QUOTA_BUCKETS = 10_000


def quota_for(
    buckets: dict[Any, QuotaBucket], key: Any, fallback_rate: float | None
) -> QuotaBucket:
    """The bucket of one descriptor, kept in ``buckets``, which never grows past
    ``MAX_QUOTA_BUCKETS`` however many descriptors (users, addresses) come by."""
    bucket = buckets.get(key)
    if bucket is None:
        bucket = QuotaBucket(fallback_rate=fallback_rate)
        if len(buckets) >= MAX_QUOTA_BUCKETS:
            # Dicts keep insertion order: the oldest descriptor goes first.
            del buckets[next(iter(buckets))]
        buckets[key] = bucket
    return bucket


class Endpoints:
    """The Bulwark replicas to try, with an exponential backoff per address.

    Deterministic (no jitter): a client wanting jitter adds it to its sleeps.
    """

    def __init__(
        self, addresses: Sequence[str], base_backoff: float = 0.1, max_backoff: float = 5.0
    ) -> None:
        unique = list(dict.fromkeys(a for a in addresses if a))
        if not unique:
            raise ValueError("at least one address is needed")
        self.addresses = unique
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._index = 0
        self._backoff: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}

    def current(self) -> str:
        return self.addresses[self._index]

    def backoff(self, address: str) -> float:
        """The backoff last applied to ``address`` (0 when healthy)."""
        return self._backoff.get(address, 0.0)

    def failed(self, address: str, now: float) -> None:
        """``address`` failed at ``now``: back it off and move on to the next one."""
        if address not in self.addresses:
            return
        previous = self._backoff.get(address)
        if previous is not None and now < self._retry_at.get(address, 0.0):
            # Already backing off: the watches, the reporter and callers all report
            # one outage, which must double the wait once, not once per reporter.
            delay = previous
        else:
            delay = self.base_backoff if previous is None else min(self.max_backoff, previous * 2)
            self._retry_at[address] = now + delay
        self._backoff[address] = delay
        if self.current() == address:
            self._index = (self._index + 1) % len(self.addresses)

    def healthy(self, address: str, now: float) -> bool:
        """True when ``address`` is not backing off after a failure."""
        return now >= self._retry_at.get(address, 0.0)

    def succeeded(self, address: str) -> None:
        """``address`` answered: clear its backoff and stick to it."""
        if address not in self.addresses:
            return
        self._backoff.pop(address, None)
        self._retry_at.pop(address, None)
        self._index = self.addresses.index(address)

    def next_healthy(self, now: float) -> str | None:
        """The first address from the current one on whose backoff has passed.

        None when all are backing off: wait ``wait_time(now)`` and ask again.
        """
        count = len(self.addresses)
        for step in range(count):
            index = (self._index + step) % count
            if self._retry_at.get(self.addresses[index], -math.inf) <= now:
                self._index = index
                return self.addresses[index]
        return None

    def wait_time(self, now: float) -> float:
        """Seconds until some address may be tried again (0 when one may be now)."""
        soonest = min(self._retry_at.get(a, -math.inf) for a in self.addresses)
        return max(0.0, soonest - now)


_IDEMPOTENT_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def retryable(code: grpc.StatusCode, idempotent: bool) -> bool:
    """Whether a failed call may be sent again (to this or another replica).

    UNAVAILABLE always: the request never reached a replica's logic, or it was
    refused during a leader change. DEADLINE_EXCEEDED, ABORTED and
    RESOURCE_EXHAUSTED may have been applied, so only idempotent calls repeat.
    """
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return idempotent and code in _IDEMPOTENT_RETRY_CODES
