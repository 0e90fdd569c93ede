"""Keeping the cache current: the watch, resyncs, the health probe, and how stale it all is.

Guarantees:

* The cache is loaded with a full range read (in pages, all at one revision)
  at start, after every reconnect and after a compaction made the watch's
  resume point unavailable. Each resync reaches subscribers as plain puts
  and deletes (see ``Cache.load``).
* Between resyncs the watch applies etcd's events in revision order; nothing
  is skipped. The watch asks for ``hasleader``, so a member cut off from the
  raft leader ends the stream rather than serving a frozen view.
* The watch restarts on any error, after a backoff of up to 1 s; an
  unexpected exception is logged, never allowed to end it for good.
* The probe asks etcd for its status every ``probe_interval``: it marks etcd
  reachable or not, and requests a progress notification so a quiet watch
  still proves it is alive (``StoreStatus.lag_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc.aio

from bulwark_server.store import _etcd_client as ec
from bulwark_server.store import _pb
from bulwark_server.store.cache import Cache
from bulwark_server.store.connection import ETCD_ERRORS, Connection, describe
from bulwark_server.store.keys import PREFIX
from bulwark_server.store.kv import read_prefix

log = logging.getLogger(__name__)

_PREFIX = PREFIX.encode()
_PREFIX_END = ec.prefix_range_end(_PREFIX)


@dataclass(frozen=True)
class StoreStatus:
    """How current this replica's view of etcd is."""

    reachable: bool
    watching: bool
    revision: int
    etcd_revision: int
    lag_seconds: float
    keys: int
    resyncs: int
    last_error: str

    @property
    def stale(self) -> bool:
        """Whether reads may be behind etcd: it is unreachable or not being watched."""
        return not (self.reachable and self.watching)


class CacheFeed:
    """Feeds ``cache`` from etcd through ``conn``: resyncs, the watch and the probe."""

    def __init__(
        self,
        conn: Connection,
        cache: Cache,
        *,
        probe_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conn = conn
        self._cache = cache
        self._probe_interval = probe_interval
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._watching = False
        self._etcd_revision = 0
        self._confirmed_at = clock()
        self._resyncs = 0
        self._watch_call: grpc.aio.StreamStreamCall | None = None
        self._progress: asyncio.Queue[ec.rpc_pb2.WatchRequest] | None = None
        self._reset_watch = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closing = False
        conn.on_disconnect = self._interrupt

    def start(self) -> None:
        """Start the watch (from the cache's revision) and the probe; call after a resync."""
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="store-watch"),
            asyncio.create_task(self._probe_loop(), name="store-probe"),
        ]

    async def stop(self) -> None:
        """Stop the watch and the probe for good."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def status(self) -> StoreStatus:
        """How current the cache is (see ``StoreStatus``)."""
        cache = self._cache
        etcd_rev = max(self._etcd_revision, cache.revision)
        return StoreStatus(
            reachable=self._conn.reachable,
            watching=self._watching,
            revision=cache.revision,
            etcd_revision=etcd_rev if self._etcd_revision else 0,
            lag_seconds=max(0.0, self._clock() - self._confirmed_at),
            keys=len(cache),
            resyncs=self._resyncs,
            last_error=self._conn.last_error,
        )

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the cache reflects ``revision``; False on timeout."""
        if self._cache.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            async with asyncio.timeout(self._conn.timeout if timeout is None else timeout):
                await future
            return True
        except TimeoutError:
            return False

    async def resync(self) -> int:
        """Reload the whole prefix in pages, all read at one revision (etcd errors raw)."""
        client = self._conn.require_client()
        revision, entries = await read_prefix(client, _PREFIX, self._conn.timeout)
        self._cache.load(entries, revision)
        self._resyncs += 1
        self._confirm(revision)
        return revision

    async def watch_from(self, start_revision: int) -> None:
        """Follow the prefix from ``start_revision``; return when a resync is needed."""
        assert self._conn.watch_stub is not None
        requests: asyncio.Queue[ec.rpc_pb2.WatchRequest] = asyncio.Queue()
        requests.put_nowait(
            ec.rpc_pb2.WatchRequest(
                create_request=ec.rpc_pb2.WatchCreateRequest(
                    key=_PREFIX, range_end=_PREFIX_END, start_revision=start_revision
                )
            )
        )

        async def outgoing() -> AsyncIterator[ec.rpc_pb2.WatchRequest]:
            while True:
                yield await requests.get()

        # hasleader: etcd ends the stream if its member loses the raft leader, instead
        # of keeping a cut-off member's frozen view alive.
        call = self._conn.watch_stub.Watch(outgoing(), metadata=(("hasleader", "true"),))
        self._watch_call = call
        self._progress = requests
        try:
            async for resp in call:
                if resp.compact_revision:
                    log.warning(
                        "etcd compacted past revision %d (now %d); resyncing",
                        start_revision,
                        resp.compact_revision,
                    )
                    return
                if resp.canceled:
                    self._conn.last_error = resp.cancel_reason or "watch canceled by etcd"
                    return
                if resp.created:
                    self._watching = True
                    continue
                if resp.events:
                    events = [_pb.event(ev) for ev in resp.events]
                    self._cache.apply(events, max(ev.revision for ev in events))
                    self._confirm(self._cache.revision)
                else:
                    # A progress notification proves the stream is alive. Before etcd
                    # 3.5.8 its revision may run ahead of events still queued
                    # (etcd issue 15220), so it must not advance the cache revision.
                    self._confirm(self._cache.revision)
            if self._reset_watch:
                return
        finally:
            self._watch_call = None
            self._progress = None
            self._watching = False
            call.cancel()

    def _interrupt(self) -> None:
        """etcd was found unreachable: end the watch, which then resyncs once it can."""
        self._reset_watch = True
        if self._watch_call is not None:
            self._watch_call.cancel()

    def _confirm(self, revision: int) -> None:
        self._confirmed_at = self._clock()
        self._etcd_revision = max(self._etcd_revision, revision)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for rev, future in self._waiters:
            if future.done():
                continue
            if rev <= self._cache.revision:
                future.set_result(None)
            else:
                still.append((rev, future))
        self._waiters = still

    async def _watch_loop(self) -> None:
        backoff = 0.05
        need_resync = False
        while not self._closing:
            try:
                revision = await self.resync() if need_resync else self._cache.revision
                need_resync = True
                await self.watch_from(revision + 1)
                backoff = 0.05
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closing or (current is not None and current.cancelling()):
                    raise
            except Exception as exc:
                # Anything else (a bug, an unexpected error type) must not end the
                # watch for good: the cache would stay stale forever.
                if not isinstance(exc, ETCD_ERRORS):
                    log.exception("unexpected error in the etcd watch")
                self._conn.note_failure(exc)
                # One warning per outage; the retries that follow would only repeat it.
                level = logging.WARNING if backoff <= 0.05 else logging.DEBUG
                log.log(level, "etcd watch interrupted: %s; will resync", self._conn.last_error)
            self._watching = False
            self._reset_watch = False
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _probe_loop(self) -> None:
        conn = self._conn
        while not self._closing:
            client = conn.client
            if client is None or client.maintenance is None:
                return
            try:
                status = await client.maintenance.status(timeout=min(conn.timeout, 1.0))
                if not conn.reachable:
                    log.info("etcd reachable again at revision %d", status.header.revision)
                conn.reachable = True
                self._etcd_revision = max(self._etcd_revision, int(status.header.revision))
                if self._progress is not None and self._watching:
                    self._progress.put_nowait(
                        ec.rpc_pb2.WatchRequest(progress_request=ec.rpc_pb2.WatchProgressRequest())
                    )
            except Exception as exc:
                if not isinstance(exc, ETCD_ERRORS):
                    log.exception("unexpected error in the etcd probe")
                if conn.reachable:
                    log.warning("etcd unreachable: %s; serving stale reads", describe(exc))
                conn.note_failure(exc)
                conn.reachable = False
            await asyncio.sleep(self._probe_interval)
