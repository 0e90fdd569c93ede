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

    def fence(self) -> Fence:
        """The fence of a leader-only write (NotLeader when this replica does not lead)."""
        return self._fence()

    def get(self, experiment_id: str) -> chaos_pb2.Experiment:
        entry = self._store.get(EXPERIMENT_KIND, experiment_id)
        if entry is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return _experiment(entry)

    def all(self) -> list[chaos_pb2.Experiment]:
        """Every experiment, in id order, from the cache."""
        return [_experiment(e) for e in self._store.scan(EXPERIMENT_KIND)]

    def running(self) -> list[chaos_pb2.Experiment]:
        """The running experiments (copies the caller may change), in id order."""
        prefix = kind_prefix(EXPERIMENT_KIND)
        seen: dict[str, chaos_pb2.Experiment] = {}
        out = []
        for entry in self._store.scan(EXPERIMENT_KIND):
            name = entry.key[len(prefix) :].decode()
            parsed = self._parsed.get(name)
            if parsed is None or parsed.revision != entry.mod_revision:
                parsed = _experiment(entry)
            seen[name] = parsed
            if parsed.state == RUNNING:
                copy = chaos_pb2.Experiment()
                copy.CopyFrom(parsed)
                out.append(copy)
        self._parsed = seen
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
        return experiment

    async def forget(self, experiment_id: str) -> None:
        await self._store.delete_many(EXPERIMENT_KIND, [experiment_id], fence=self._fence())

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
