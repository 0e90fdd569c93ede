"""Experiment records in etcd, read from the cache.

Layout: ``/bulwark/v1/experiments/<id>`` holds an ``Experiment`` (revision
cleared), written by the leader only (fenced: a deposed leader cannot record a
step). Ids begin with the start time, so id order is start order.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable

from bulwark.v1 import chaos_pb2
from bulwark_server.errors import NotFound
from bulwark_server.store import (
    Entry,
    EtcdStore,
    Event,
    EventType,
    Fence,
    Page,
    follow,
    put_message,
    scan_page,
    with_revision,
)
from bulwark_server.store.keys import EXPERIMENT_KIND, key_for, kind_prefix

RUNNING = chaos_pb2.EXPERIMENT_STATE_RUNNING
MAX_TIMELINE = 500
KEPT_S = 7 * 86400.0  # ended experiments are deleted after a week


def _experiment(entry: Entry) -> chaos_pb2.Experiment:
    return with_revision(chaos_pb2.Experiment, entry)


def _copy(experiment: chaos_pb2.Experiment) -> chaos_pb2.Experiment:
    out = chaos_pb2.Experiment()
    out.CopyFrom(experiment)
    return out


def new_id(now: float) -> str:
    """Time-ordered and unique: ``20261203T175900-9f3a1c``."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}"


class Experiments:
    """See the module docstring."""

    def __init__(self, store: EtcdStore, fence: Callable[[], Fence]) -> None:
        self._store = store
        self._fence = fence
        # Parsed records by name, with the revision parsed: the leader looks for the
        # running ones many times a second, and a record changes far less often.
        self._parsed: dict[str, chaos_pb2.Experiment] = {}
        # This replica's writes, until the watch-fed cache shows them (see _current).
        self._written: dict[str, chaos_pb2.Experiment] = {}

    def fence(self) -> Fence:
        """The fence of a leader-only write (NotLeader when this replica does not lead)."""
        return self._fence()

    def _current(self, name: str, entry: Entry) -> chaos_pb2.Experiment:
        """The record ``entry`` holds (parsed once per revision), or this replica's own
        later write of it (not a copy).

        The leader's writes reach the watch-fed cache a moment after etcd applied
        them; acting on the older version would undo them: a renewal, a stop or the
        next round would write an ended experiment back as RUNNING, or drop a met
        expectation, the silences, the load reports.
        """
        written = self._written.get(name)
        if written is not None:
            if written.revision > entry.mod_revision:
                return written
            del self._written[name]  # the cache has caught up
        parsed = self._parsed.get(name)
        if parsed is None or parsed.revision != entry.mod_revision:
            parsed = self._parsed[name] = _experiment(entry)
        return parsed

    def _name(self, entry: Entry) -> str:
        return entry.key[len(kind_prefix(EXPERIMENT_KIND)) :].decode()

    def get(self, experiment_id: str) -> chaos_pb2.Experiment:
        """The experiment (a copy the caller may change)."""
        entry = self._store.get(EXPERIMENT_KIND, experiment_id)
        if entry is None:
            written = self._written.get(experiment_id)  # just created, not cached yet
            if written is None:
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            return _copy(written)
        return _copy(self._current(experiment_id, entry))

    def all(self) -> list[chaos_pb2.Experiment]:
        """Every experiment, in id order (copies the caller may change)."""
        return [_copy(self._current(self._name(e), e)) for e in self._store.scan(EXPERIMENT_KIND)]

    def running(self) -> list[chaos_pb2.Experiment]:
        """The running experiments (copies the caller may change), in id order."""
        names = set()
        out = []
        for entry in self._store.scan(EXPERIMENT_KIND):
            name = self._name(entry)
            names.add(name)
            current = self._current(name, entry)
            if current.state == RUNNING:
                out.append(_copy(current))
        for gone in self._parsed.keys() - names:
            del self._parsed[gone]
        # Just created here and not cached yet: running all the same (the sweep must
        # not take its rules for a dead experiment's).
        for name in sorted(self._written.keys() - names):
            if self._written[name].state == RUNNING:
                out.append(_copy(self._written[name]))
        return out

    def list(self, size: int, start_after: str) -> Page[chaos_pb2.Experiment]:
        page = scan_page(self._store.cache, kind_prefix(EXPERIMENT_KIND), size, start_after)
        return page.map(_experiment)

    async def put(self, experiment: chaos_pb2.Experiment) -> chaos_pb2.Experiment:
        """Record the leader's version (fenced); the timeline keeps its first and last
        entries when it grows past ``MAX_TIMELINE``."""
        if len(experiment.timeline) > MAX_TIMELINE:
            half = MAX_TIMELINE // 2
            del experiment.timeline[half : len(experiment.timeline) - half]
        stored, _ = await put_message(
            self._store, EXPERIMENT_KIND, experiment.id, experiment, fence=self._fence()
        )
        experiment.revision = stored.revision
        self._written[experiment.id] = _copy(experiment)
        return experiment

    async def forget(self, experiment_id: str) -> None:
        await self._store.delete_many(EXPERIMENT_KIND, [experiment_id], fence=self._fence())
        self._written.pop(experiment_id, None)

    def watch(self, experiment_id: str) -> AsyncIterator[chaos_pb2.Experiment]:
        """The experiment now, then each version; NotFound when there is none."""
        key = key_for(EXPERIMENT_KIND, experiment_id)

        def snapshot() -> tuple[list[chaos_pb2.Experiment], int]:
            return [self.get(experiment_id)], self._store.cache.revision

        def convert(events: list[Event]) -> list[chaos_pb2.Experiment]:
            return [
                _experiment(e.entry)
                for e in events
                if e.entry.key == key and e.type != EventType.DELETE
            ]

        return follow(self._store, (key,), 0, snapshot, convert)
