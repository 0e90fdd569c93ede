"""FeatureManager: features in etcd, effective status from the cache, expiry on the leader.

Layout: ``/bulwark/v1/features/<name>`` holds a ``Feature`` (revision cleared).

Guarantees:

* **The graph stays acyclic.** PutFeature checks its dependencies against the
  features in the cache at revision R and writes in one transaction that also
  requires no feature key to have changed after R, so two concurrent writes
  cannot each close half of a cycle. Dependencies must exist when written.
* Effective status, ``blocked_by`` and ``effective_reason`` are computed from
  the cache on every read (features and breakers at one revision), so they are
  never older than the replica's cache; an expired status reads AVAILABLE at
  once, and the leader also writes the reset so watchers get an event.
* WatchFeatures sends a PUT for a feature whenever its view changes, whether
  the feature itself changed or a feature or breaker it depends on did; a
  change that leaves a view as it was sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Protocol

from google.protobuf import timestamp_pb2

from bulwark.v1 import feature_pb2, watch_pb2
from bulwark_server import timestamps
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.features import graph, rules
from bulwark_server.store import Entry, EtcdStore, Event, Page, Unchanged, follow, scan_page
from bulwark_server.store.keys import FEATURE_KIND, kind_prefix

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 20
# Guards per write: etcd refuses transactions of more than 128 operations by default.
MAX_GUARDS = 100


class BreakerStates(Protocol):
    """What features need of the breakers capability (``BreakerManager`` provides it).

    Features depend on breakers but never read breaker keys: they ask for a
    breaker's state, and which breakers a batch of store events changed.
    """

    def state(self, name: str) -> int | None:
        """The breaker's ``BreakerState`` now; None when there is no such breaker."""
        ...

    def change_prefixes(self) -> tuple[bytes, ...]:
        """Key ranges to follow for breaker changes (with the features' own, in one stream)."""
        ...

    def changed(self, events: Iterable[Event]) -> set[str]:
        """Names of the breakers ``events`` changed."""
        ...


def _status_name(status: int) -> str:
    return feature_pb2.FeatureStatus.Name(status).removeprefix("FEATURE_STATUS_")


class _Features(Mapping[str, feature_pb2.Feature]):
    """The cached features as a mapping, decoded on demand (and once per version)."""

    def __init__(self, store: EtcdStore, decoded: dict[str, tuple[int, feature_pb2.Feature]]):
        self._store = store
        self._decoded = decoded

    def __getitem__(self, name: str) -> feature_pb2.Feature:
        entry = self._store.get(FEATURE_KIND, name)
        if entry is None:
            raise KeyError(name)
        return self._decode(name, entry)

    def _decode(self, name: str, entry: Entry) -> feature_pb2.Feature:
        held = self._decoded.get(name)
        if held is None or held[0] != entry.mod_revision:
            feature = feature_pb2.Feature.FromString(entry.value)
            feature.revision = entry.mod_revision
            held = (entry.mod_revision, feature)
            self._decoded[name] = held
        return held[1]

    def __iter__(self) -> Iterator[str]:
        start = len(kind_prefix(FEATURE_KIND))
        return (e.key[start:].decode() for e in self._store.scan(FEATURE_KIND))

    def __len__(self) -> int:
        return len(self._store.scan(FEATURE_KIND))


class FeatureManager:
    """Feature definitions and statuses; see the module docstring for guarantees."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        breakers: BreakerStates,
        *,
        clock: Callable[[], float] = time.time,
        tick_interval: float = 0.25,
    ) -> None:
        self._store = store
        self._election = election
        self._breaker_states = breakers
        self._clock = clock
        self._tick_interval = tick_interval
        self._decoded: dict[str, tuple[int, feature_pb2.Feature]] = {}
        self._leading = LeaderTask(election, self._lead, "features-leader")

    # -- reads ------------------------------------------------------------------

    def features(self) -> Mapping[str, feature_pb2.Feature]:
        return _Features(self._store, self._decoded)

    def names(self) -> list[str]:
        """Every feature's name, from the cache."""
        return sorted(self.features())

    def affected_by(self, events: Iterable[Event]) -> set[str]:
        """Features whose effective view ``events`` may change: those changed or deleted,
        and those depending on a changed feature or breaker (asked by the alerts)."""
        prefix = kind_prefix(FEATURE_KIND)
        changed = {
            ev.entry.key[len(prefix) :].decode() for ev in events if ev.entry.key.startswith(prefix)
        }
        breakers = self._breaker_states.changed(events)
        return changed | graph.affected(self.features(), changed, breakers)

    def depending_on_breaker(self, name: str) -> list[str]:
        """Features whose dependencies reach breaker ``name``, directly or not (asked by
        the alerts, for an open breaker's impact)."""
        return sorted(graph.affected(self.features(), (), (name,)))

    def view(
        self,
        name: str,
        features: Mapping[str, feature_pb2.Feature] | None = None,
        memo: dict[str, graph.Effective] | None = None,
    ) -> feature_pb2.FeatureView:
        """The feature with its effective status; NotFound if it does not exist."""
        features = self.features() if features is None else features
        feature = features.get(name)
        if feature is None:
            raise NotFound(f"feature {name!r} does not exist")
        effective = graph.evaluate(name, features, self._breaker_states.state, self._clock(), memo)
        return feature_pb2.FeatureView(
            feature=feature,
            effective_status=effective.status,
            blocked_by=effective.blocked_by,
            effective_reason=effective.reason,
        )

    @property
    def stale(self) -> bool:
        """True while this replica's cache does not follow etcd (answers are its last view)."""
        return self._store.status().stale

    def list(self, size: int, start_after: str) -> Page[feature_pb2.FeatureView]:
        """One page of features in name order, and the next page's token ("" on the last)."""
        prefix = kind_prefix(FEATURE_KIND)
        page = scan_page(self._store.cache, prefix, size, start_after)
        features = self.features()
        memo: dict[str, graph.Effective] = {}
        return page.map(lambda e: self.view(e.key[len(prefix) :].decode(), features, memo))

    # -- writes -----------------------------------------------------------------

    async def put(
        self, feature: feature_pb2.Feature, expected_revision: int = 0
    ) -> tuple[feature_pb2.FeatureView, bool]:
        """Create or replace a feature, keeping the dependency graph acyclic.

        The definition is checked and defaulted by ``rules.normalize_feature``
        before anything is read; its name and ``updated_by`` are the caller's to check.
        """
        name = feature.name
        now = self._clock()
        record = rules.normalize_feature(feature, now)
        record.ClearField("revision")
        record.updated_at.CopyFrom(timestamps.at(now))
        value = record.SerializeToString()
        for attempt in range(PUT_ATTEMPTS):
            if attempt:
                # Let the cache catch up with the write that won.
                await asyncio.sleep(0.01 * attempt)
            revision = self._store.cache.revision
            features = self.features()
            self._check_dependencies(record, features)
            entry = self._store.get(FEATURE_KIND, name)
            if expected_revision and (entry is None or entry.mod_revision != expected_revision):
                entry = await self._store.read(FEATURE_KIND, name)
                if entry is None:
                    raise NotFound(f"feature {name!r} does not exist")
                if entry.mod_revision != expected_revision:
                    raise Conflict(
                        f"feature {name!r} is at revision {entry.mod_revision}, "
                        f"not {expected_revision}"
                    )
            guards = self._graph_guards(record, features, revision)
            try:
                if entry is None:
                    await self._store.create(FEATURE_KIND, name, value, guards=guards)
                    created = True
                else:
                    await self._store.update(
                        FEATURE_KIND,
                        name,
                        value,
                        expected_mod_revision=entry.mod_revision,
                        guards=guards,
                    )
                    created = False
            except (AlreadyExists, Conflict, NotFound):
                continue
            log.info(
                "feature %s %s: %s",
                name,
                "created" if created else "replaced",
                _status_name(record.status),
                extra={"event": "feature.put", "feature": name},
            )
            return self.view(name), created
        raise Conflict(f"features kept changing while {name!r} was being written; retry")

    def _graph_guards(
        self,
        feature: feature_pb2.Feature,
        features: Mapping[str, feature_pb2.Feature],
        revision: int,
    ) -> list[Unchanged]:
        """Conditions under which the cycle check still holds when the write applies.

        A cycle through this feature needs a path back from one of its
        dependencies, so only the features reachable from them matter: a
        concurrent write closing a cycle with this one changes one of them.
        Beyond what one etcd transaction may compare, every feature is guarded.
        """
        seen: set[str] = set()
        todo = [d.name for d in feature.depends_on if d.kind == graph.FEATURE]
        while todo:
            name = todo.pop()
            if name in seen or name == feature.name or name not in features:
                continue
            seen.add(name)
            if len(seen) > MAX_GUARDS:
                return [Unchanged(FEATURE_KIND, "", revision)]
            todo.extend(d.name for d in features[name].depends_on if d.kind == graph.FEATURE)
        return [Unchanged(FEATURE_KIND, name, features[name].revision) for name in sorted(seen)]

    def _check_dependencies(
        self, feature: feature_pb2.Feature, features: Mapping[str, feature_pb2.Feature]
    ) -> None:
        for i, dep in enumerate(feature.depends_on):
            field = f"feature.depends_on[{i}]"
            if dep.kind == graph.FEATURE:
                if dep.name != feature.name and dep.name not in features:
                    raise NotFound(f"{field}: feature {dep.name!r} does not exist")
            elif self._breaker_states.state(dep.name) is None:
                raise NotFound(f"{field}: circuit breaker {dep.name!r} does not exist")
        cycle = graph.find_cycle(features, feature)
        if cycle is not None:
            raise InvalidArgument("feature.depends_on", f"would form a cycle: {' -> '.join(cycle)}")

    async def set_status(
        self,
        name: str,
        status: int,
        reason: str,
        expires_at: timestamp_pb2.Timestamp | None,
        updated_by: str,
    ) -> feature_pb2.FeatureView:
        """Change a feature's own status, reason and expiry.

        ``status`` is required and the rules (``rules``) are checked before
        anything is read; ``expires_at`` must already be a valid timestamp.
        """
        now = self._clock()
        status = rules.parse_status(status, "status", required=True)
        rules.check_reason(reason, "reason")
        rules.check_expiry(status, expires_at, now, "expires_at")

        def change(entry: Entry) -> bytes:
            feature = feature_pb2.Feature.FromString(entry.value)
            feature.status = status
            feature.reason = reason
            feature.updated_by = updated_by
            feature.updated_at.CopyFrom(timestamps.at(now))
            feature.ClearField("expires_at")
            if expires_at is not None:
                feature.expires_at.CopyFrom(expires_at)
            return feature.SerializeToString()

        try:
            await self._store.modify(FEATURE_KIND, name, change)
        except NotFound:
            raise NotFound(f"feature {name!r} does not exist") from None
        log.info(
            "feature %s set %s by %s: %s",
            name,
            _status_name(status),
            updated_by or "anonymous",
            reason,
            extra={"event": "feature.status", "feature": name},
        )
        return self.view(name)

    # -- watch ------------------------------------------------------------------

    def watch(
        self, names: frozenset[str], start_revision: int = 0
    ) -> AsyncIterator[feature_pb2.WatchFeaturesResponse]:
        """A snapshot (SNAPSHOT events, then SYNCED), then a PUT for each changed view.

        With ``start_revision`` (and history reaching back to it), the views
        affected by changes after it come first instead of a snapshot.
        """
        sent: dict[str, bytes] = {}
        feature_prefix = kind_prefix(FEATURE_KIND)
        breakers = self._breaker_states

        def views(wanted: set[str]) -> list[feature_pb2.FeatureView]:
            features = self.features()
            memo: dict[str, graph.Effective] = {}
            return [self.view(n, features, memo) for n in sorted(wanted) if n in features]

        def snapshot() -> tuple[list[feature_pb2.WatchFeaturesResponse], int]:
            revision = self._store.cache.revision
            sent.clear()
            out = []
            for view in views(set(names) if names else set(self.features())):
                sent[view.feature.name] = view.SerializeToString()
                out.append(
                    feature_pb2.WatchFeaturesResponse(
                        type=watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, feature=view, revision=revision
                    )
                )
            out.append(
                feature_pb2.WatchFeaturesResponse(
                    type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=revision
                )
            )
            return out, revision

        def convert(events: list[Event]) -> list[feature_pb2.WatchFeaturesResponse]:
            changed_features = {
                ev.entry.key[len(feature_prefix) :].decode()
                for ev in events
                if ev.entry.key.startswith(feature_prefix)
            }
            changed_breakers = breakers.changed(events)
            touched = graph.affected(self.features(), changed_features, changed_breakers)
            if names:
                touched &= names
            revision = events[-1].revision
            out = []
            for view in views(touched):
                encoded = view.SerializeToString()
                if sent.get(view.feature.name) == encoded:
                    continue
                sent[view.feature.name] = encoded
                out.append(
                    feature_pb2.WatchFeaturesResponse(
                        type=watch_pb2.WATCH_EVENT_TYPE_PUT, feature=view, revision=revision
                    )
                )
            return out

        # One stream over both, so a view is never built from features and
        # breakers at different revisions.
        prefixes = (feature_prefix, *breakers.change_prefixes())
        return follow(self._store, prefixes, start_revision, snapshot, convert)

    # -- the leader's expiry loop -----------------------------------------------

    async def stop(self) -> None:
        await self._leading.stop()

    async def _lead(self) -> None:
        while True:
            if self._election.is_leader:
                try:
                    await self.expire()
                except (NotLeader, StoreUnavailable) as exc:
                    log.debug("feature expiry loop: %s", exc)
                except Exception:
                    log.exception("feature expiry loop failed; continuing")
            await asyncio.sleep(self._tick_interval)

    async def expire(self) -> None:
        """Return every feature whose status expired to AVAILABLE (fenced writes)."""
        now = self._clock()
        for name, feature in list(self.features().items()):
            if not feature.HasField("expires_at") or timestamps.unix(feature.expires_at) > now:
                continue

            def reset(entry: Entry) -> bytes | None:
                current = feature_pb2.Feature.FromString(entry.value)
                if not current.HasField("expires_at") or timestamps.unix(current.expires_at) > now:
                    return None
                was = f"{_status_name(current.status)}: {current.reason}"
                current.status = graph.AVAILABLE
                current.reason = f"expired (was {was})"
                current.updated_by = "bulwark"
                current.updated_at.CopyFrom(timestamps.at(now))
                current.ClearField("expires_at")
                return current.SerializeToString()

            with contextlib.suppress(NotFound):
                await self._store.modify(FEATURE_KIND, name, reset, fence=self._election.fence())
                log.info(
                    "feature %s expired back to AVAILABLE",
                    name,
                    extra={"event": "feature.expired", "feature": name},
                )
