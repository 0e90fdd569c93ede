"""EtcdStore: the facade every other package uses to reach etcd.

It is composed of one part per concern, each in its own module:
``connection`` (endpoints, TLS, the client, reachability), ``kv``
(linearizable reads and compare-and-swap transactions), ``leases``,
``members``, and ``watch`` (the watch, resyncs and probe that keep the
``Cache`` current). ``writelog`` records the revisions a task's writes reached.

Guarantees, method by method:

* ``get`` / ``scan`` answer from the watch-fed cache: no round trip, may be
  stale. ``status().stale`` says whether etcd is currently unreachable, in
  which case the cache is the last state seen.
* ``read`` and ``read_all`` are linearizable reads from etcd.
* ``create``, ``update``, ``put``, ``delete`` and the batch writes are single
  etcd transactions: all or nothing. ``create`` compares the key's create
  revision with 0, ``update`` (and ``delete`` when given a revision) compare
  its ``mod_revision``, so concurrent writers never lose an update: the loser
  gets ``Conflict``. Any write may carry a ``Fence``; the transaction then
  also requires the leader key to still have the fenced term, and a deposed
  leader gets ``NotLeader`` with nothing written.
* ``upsert`` and ``modify`` repeat compare-and-swap until one applies, each
  retry built from etcd's current value, never from a stale cache.
* While the last health probe failed, writes fail at once with
  ``StoreUnavailable``. A write that times out raises ``StoreUnavailable`` too;
  it may or may not have been applied, which is safe for compare-and-swap
  callers (a retry either applies or reports a ``Conflict``).
* etcd3aio's built-in retry of Put/Txn on UNAVAILABLE is disabled (a repeated
  non-idempotent write could apply twice); callers decide about retries.
* The cache resyncs with a full range read at start, after every reconnect
  and after a compaction made the watch's resume point unavailable. Each
  resync is reported to subscribers as plain puts and deletes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from bulwark_server.errors import AlreadyExists, Conflict, NotFound, StoreUnavailable
from bulwark_server.store.cache import Cache, Entry, Event
from bulwark_server.store.connection import ETCD_ERRORS, Connection, EtcdTls
from bulwark_server.store.keys import PREFIX, key_for, kind_prefix
from bulwark_server.store.kv import KV, Fence, Unchanged
from bulwark_server.store.leases import Leases
from bulwark_server.store.members import MemberInfo, Members
from bulwark_server.store.watch import CacheFeed, StoreStatus

log = logging.getLogger(__name__)

_PREFIX = PREFIX.encode()


class EtcdStore:
    """State under ``/bulwark/v1/`` in etcd, with a watch-fed cache of all of it."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        probe_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        tls: EtcdTls | None = None,
    ) -> None:
        self._clock = clock
        self.cache = Cache()
        self._conn = Connection(endpoints, tls=tls, timeout=timeout)
        self._feed = CacheFeed(self._conn, self.cache, probe_interval=probe_interval, clock=clock)
        self._kv = KV(self._conn, self._feed.wait_for_revision)
        self._leases = Leases(self._conn)
        self._members = Members(self._conn)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, wait: float = 30.0) -> None:
        """Connect and load the cache; StoreUnavailable if etcd stays unreachable for ``wait`` s."""
        conn = self._conn
        await conn.open()
        deadline = self._clock() + wait
        while True:
            try:
                await self._feed.resync()
                conn.reachable = True
                break
            except ETCD_ERRORS as exc:
                if not conn.last_error:
                    log.warning(
                        "waiting up to %.0fs for etcd at %s: %s",
                        wait,
                        ",".join(conn.endpoints),
                        exc,
                        extra={"event": "etcd.waiting"},
                    )
                conn.last_error = f"{type(exc).__name__}: {exc}"
                if self._clock() >= deadline:
                    await self.close()
                    raise StoreUnavailable(
                        f"etcd at {','.join(conn.endpoints)} unreachable for {wait:.0f}s: "
                        f"{conn.last_error}"
                    ) from exc
                await asyncio.sleep(0.2)
        self._feed.start()

    async def close(self) -> None:
        """Stop the watch and probe, and close every channel."""
        await self._feed.stop()
        await self._members.close()
        await self._conn.close()

    # -- cached reads (never wait for etcd; may be stale) --------------------------

    def get(self, kind: str, name: str) -> Entry | None:
        """The cached entry, or None. May be stale; see ``status()``."""
        return self.cache.get(key_for(kind, name))

    def scan(self, kind: str, start_after: str = "", limit: int = 0) -> list[Entry]:
        """Cached entries of ``kind`` in name order, after ``start_after``. May be stale."""
        prefix = kind_prefix(kind)
        after = prefix + start_after.encode() if start_after else b""
        return self.cache.scan(prefix, after, limit)

    def count(self, kind: str) -> int:
        """How many cached entries ``kind`` has, without visiting them. May be stale."""
        return self.cache.count(kind_prefix(kind))

    def subscribe(self, *kinds: str) -> asyncio.Queue[list[Event]]:
        """A queue of every later change under the prefix, or only of keys of ``kinds``
        (see ``Cache.subscribe``): a reader woken only by what it reads costs the
        replica nothing on the writes of other kinds."""
        return self.cache.subscribe(tuple(kind_prefix(kind) for kind in kinds))

    def unsubscribe(self, queue: asyncio.Queue[list[Event]]) -> None:
        """Stop feeding a queue from ``subscribe``."""
        self.cache.unsubscribe(queue)

    async def changes(self, *kinds: str) -> AsyncIterator[list[Event]]:
        """Iterate over batches of changes (of keys of ``kinds``, if any) until cancelled.

        An empty batch means this reader fell too far behind and changes were
        dropped: re-read what it needs from the cache. It keeps receiving later
        changes either way.
        """
        queue = self.subscribe(*kinds)
        try:
            while True:
                batch = await queue.get()
                if not batch:
                    self.unsubscribe(queue)
                    queue = self.subscribe(*kinds)
                yield batch
        finally:
            self.unsubscribe(queue)

    def status(self) -> StoreStatus:
        """How current the cache is: reachability, watch, revisions, lag, last error."""
        return self._feed.status()

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the cache reflects ``revision``; False on timeout."""
        return await self._feed.wait_for_revision(revision, timeout)

    # -- linearizable reads ------------------------------------------------------

    async def read(self, kind: str, name: str) -> Entry | None:
        """Read one key from etcd (linearizable). StoreUnavailable when etcd cannot answer."""
        return await self._kv.read(kind, name)

    async def read_all(self, prefix: bytes = _PREFIX) -> tuple[int, list[Entry]]:
        """Every key under ``prefix`` read from etcd at one revision; (revision, entries)."""
        return await self._kv.read_all(prefix)

    # -- compare-and-swap writes -------------------------------------------------

    async def create(
        self,
        kind: str,
        name: str,
        value: bytes,
        *,
        lease: int = 0,
        fence: Fence | None = None,
        guards: Sequence[Unchanged] = (),
    ) -> int:
        """Create a key that must not exist; return the write's revision (its create revision).

        A failed guard raises Conflict; a lease that has ended raises NotFound.
        """
        return await self._kv.create(kind, name, value, lease=lease, fence=fence, guards=guards)

    async def update(
        self,
        kind: str,
        name: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: int = 0,
        fence: Fence | None = None,
        guards: Sequence[Unchanged] = (),
    ) -> int:
        """Replace a key only if its mod_revision is still ``expected_mod_revision``.

        A failed guard raises Conflict; a lease that has ended raises NotFound.
        """
        return await self._kv.update(
            kind,
            name,
            value,
            expected_mod_revision=expected_mod_revision,
            lease=lease,
            fence=fence,
            guards=guards,
        )

    async def upsert(
        self,
        kind: str,
        name: str,
        build: Callable[[Entry | None], bytes],
        *,
        expected_revision: int = 0,
        attempts: int = 20,
        guards: Callable[[], Sequence[Unchanged]] = tuple,
        fence: Fence | None = None,
    ) -> tuple[int, bool]:
        """Create or replace a key with compare-and-swap; return (revision, created).

        ``build`` makes the new value from the current entry (None when absent).
        With ``expected_revision`` the write applies only at that revision
        (NotFound if absent, Conflict if changed). Without, a write that loses to
        a concurrent writer is rebuilt from etcd's current value and retried,
        up to ``attempts`` times (then Conflict). ``guards`` is called after
        each ``build`` for the conditions that build relied on; ``fence`` makes
        every write a leader-only one.
        """
        if expected_revision:
            current = self.get(kind, name)
            if current is None or current.mod_revision != expected_revision:
                # Build on the version the caller named, never on a stale cache.
                current = await self.read(kind, name)
            value = build(current)
            revision = await self.update(
                kind,
                name,
                value,
                expected_mod_revision=expected_revision,
                guards=guards(),
                fence=fence,
            )
            return revision, False
        entry = self.get(kind, name)
        for attempt in range(attempts):
            if attempt:
                # The cache misled the last attempt: ask etcd itself.
                entry = await self.read(kind, name)
            try:
                if entry is None:
                    value = build(None)
                    created = await self.create(kind, name, value, guards=guards(), fence=fence)
                    return created, True
                value = build(entry)
                revision = await self.update(
                    kind,
                    name,
                    value,
                    expected_mod_revision=entry.mod_revision,
                    guards=guards(),
                    fence=fence,
                )
                return revision, False
            except (AlreadyExists, Conflict, NotFound):
                continue
        raise Conflict(f"{kind}/{name} kept changing concurrently; retry")

    async def modify(
        self,
        kind: str,
        name: str,
        change: Callable[[Entry], bytes | None],
        *,
        fence: Fence | None = None,
        attempts: int = 50,
    ) -> tuple[Entry, bool]:
        """Rewrite an existing key from its current value with compare-and-swap.

        ``change`` makes the new value from the current entry, or returns None
        to leave it. A write that loses to a concurrent writer is rebuilt from
        the value that won and retried, up to ``attempts`` times (then
        Conflict). The key keeps its lease. Returns (the entry as written or as
        left, whether it was written). NotFound when the key does not exist.
        """
        entry = self.get(kind, name)
        for _ in range(attempts):
            if entry is None:
                # The cache may not have seen a key created a moment ago.
                entry = await self.read(kind, name)
                if entry is None:
                    raise NotFound(f"{kind}/{name} does not exist")
            value = change(entry)
            if value is None:
                return entry, False
            try:
                revision = await self.update(
                    kind,
                    name,
                    value,
                    expected_mod_revision=entry.mod_revision,
                    lease=entry.lease,
                    fence=fence,
                )
            except Conflict as exc:
                entry = exc.current
                continue
            written = Entry(
                entry.key, value, entry.create_revision, revision, entry.version + 1, entry.lease
            )
            return written, True
        raise Conflict(f"{kind}/{name} changed too often to update; retry")

    async def put(
        self,
        kind: str,
        name: str,
        value: bytes,
        *,
        lease: int = 0,
        fence: Fence | None = None,
        fail_fast: bool = True,
    ) -> int:
        """Write a key whatever its state (for keys with one writer, such as a replica's own).

        ``fail_fast=False`` asks etcd even while the last probe failed: for a
        caller that must act on etcd's own answer, such as a leader proving its term.
        A lease that has ended raises NotFound.
        """
        return await self._kv.put(kind, name, value, lease=lease, fence=fence, fail_fast=fail_fast)

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        expected_mod_revision: int | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Delete a key (only at ``expected_mod_revision`` if given); NotFound if absent."""
        return await self._kv.delete(
            kind, name, expected_mod_revision=expected_mod_revision, fence=fence
        )

    # -- batch writes (one transaction each, at most MAX_TXN_OPS keys) -------------

    async def prove(self, fence: Fence, *, fail_fast: bool = True) -> int:
        """Prove the fence's term holds with a read-only transaction (NotLeader if not)."""
        return await self._kv.prove(fence, fail_fast=fail_fast)

    async def put_many(
        self, kind: str, items: Sequence[tuple[str, bytes]], *, fence: Fence | None = None
    ) -> int:
        """Write several keys of ``kind`` in one transaction (at most ``MAX_TXN_OPS``)."""
        return await self._kv.put_raw(
            [(key_for(kind, name), value) for name, value in items], fence
        )

    async def delete_many(
        self, kind: str, names: Sequence[str], *, fence: Fence | None = None
    ) -> int:
        """Delete several keys of ``kind`` (absent ones are no error) in one transaction."""
        return await self._kv.delete_raw([key_for(kind, name) for name in names], fence)

    async def put_raw(
        self, items: Sequence[tuple[bytes, bytes]], fence: Fence | None = None
    ) -> int:
        """Write full etcd keys in one transaction (snapshot restores and drills)."""
        return await self._kv.put_raw(items, fence)

    async def delete_raw(self, keys: Sequence[bytes], fence: Fence | None = None) -> int:
        """Delete full etcd keys (absent ones are no error) in one transaction."""
        return await self._kv.delete_raw(keys, fence)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` (one request); return how many went.

        Not compare-and-swap and not fenced: for scratch space only one caller owns.
        """
        return await self._kv.delete_prefix(prefix)

    # -- leases ------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds and return its id (fails fast while unreachable)."""
        return await self._leases.grant(ttl)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew a lease once; return its remaining TTL in seconds (0: it has expired)."""
        return (await self._leases.renew(lease_id))[0]

    async def renew(self, lease_id: int) -> tuple[int, int]:
        """Renew a lease once; return (remaining TTL in seconds, etcd's revision then).

        A reader that must not answer from an older state than etcd's at the
        renewal waits for the cache to reach that revision.
        """
        return await self._leases.renew(lease_id)

    async def lease_remaining(self, lease_id: int) -> int:
        """Whole seconds left of a lease, without renewing it (0: under one second, still
        alive; -1: ended)."""
        return await self._leases.remaining(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease; keys attached to it are deleted by etcd at once."""
        await self._leases.revoke(lease_id)

    # -- cluster -----------------------------------------------------------------

    async def members(self) -> list[MemberInfo]:
        """etcd members, each asked for its status (concurrently, bounded by the timeout)."""
        return await self._members.list()
