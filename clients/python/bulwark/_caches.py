"""Watch-fed caches: breakers, features, primaries, instances and backpressure policies.

I/O-free and not thread-safe (the drivers serialize access). The SNAPSHOT
events up to the next SYNCED replace the whole view (objects absent from a new
snapshot are gone); ``revision`` only moves once a snapshot is complete, so
resuming from it never skips objects of a half-received snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from bulwark._states import (
    ALLOWING_STATES,
    DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_MINIMUM_NUMBER_OF_CALLS,
    DEFAULT_SLIDING_WINDOW_SIZE,
    DEFAULT_WAIT_DURATION_IN_OPEN_STATE,
    DELETE,
    FORCED_OPEN,
    OPEN,
    PUT,
    SNAPSHOT,
    SYNCED,
    UNSPECIFIED,
    Decision,
    seconds,
)
from bulwark.v1 import backpressure_pb2, breaker_pb2, feature_pb2, registry_pb2

__all__ = [
    "BackpressurePolicyCache",
    "BreakerCache",
    "BreakerView",
    "Feature",
    "FeatureCache",
    "InstanceCache",
    "PrimaryCache",
]

# The answers for breakers that let every call through, made once: the hot path
# (allow from the cache) hands them out without allocating.
_ALLOWED = {state: Decision(True, state, "cache") for state in ALLOWING_STATES}
_UNKNOWN = Decision(False, UNSPECIFIED, "remote-needed")

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
            seconds(config.wait_duration_in_open_state)
            if config.HasField("wait_duration_in_open_state")
            else DEFAULT_WAIT_DURATION_IN_OPEN_STATE
        )
        open_until: float | None = None
        status = breaker.status
        if status.HasField("open_until"):
            remaining = seconds(status.open_until) - now_wall
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
            return _UNKNOWN
        state = view.state
        allowed = _ALLOWED.get(state)
        if allowed is not None:
            return allowed
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


class BackpressurePolicyCache(_WatchedMap[str, backpressure_pb2.BackpressurePolicy]):
    """Central backpressure policies as seen through WatchBackpressurePolicies.

    Read by the interceptors' threads without the client's lock: ``version`` (an int) and
    ``get`` (one dict look-up, a snapshot swapped in whole) are each atomic.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Moves with every change of the live view, so readers notice one cheaply.
        self.version = 0
        #: Whether a driver has started the watch (it starts on first use).
        self.followed = False

    def apply(self, event: backpressure_pb2.WatchBackpressurePoliciesResponse, now: float) -> None:
        if self._apply(event.type, event.policy.name, event.policy, event.revision, now):
            self.version += 1

    def get(self, name: str) -> backpressure_pb2.BackpressurePolicy | None:
        return self._items.get(name)


class Feature:
    """A feature's state as the client's cache knows it (read at each property access)."""

    def __init__(self, name: str, cache: FeatureCache) -> None:
        self.name = name
        self._cache = cache

    @property
    def available(self) -> bool:
        """True when AVAILABLE (or unknown: a feature Bulwark does not know is not degraded)."""
        state = self._cache.available(self.name)
        return True if state is None else state

    @property
    def status(self) -> int:
        """The effective ``FeatureStatus`` (AVAILABLE when unknown)."""
        view = self._cache.get(self.name)
        return view.effective_status if view is not None else feature_pb2.FEATURE_STATUS_AVAILABLE

    @property
    def fallback(self) -> str | None:
        """What to use instead of the feature, or None."""
        return self._cache.fallback(self.name)
