"""EtcdStore: the only code in Bulwark that talks to etcd.

Guarantees, method by method:

* ``get`` / ``scan`` answer from the watch-fed cache: no round trip, may be
  stale. ``status().stale`` says whether etcd is currently unreachable, in
  which case the cache is the last state seen.
* ``read`` is a linearizable read from etcd.
* ``create``, ``update``, ``put`` and ``delete`` are single etcd
  transactions: all or nothing. ``create`` compares the key's create revision
  with 0, ``update`` (and ``delete`` when given a revision) compare its
  ``mod_revision``, so concurrent writers never lose an update: the loser gets
  ``Conflict``. Any write may carry a ``Fence``; the transaction then also
  requires the leader key to still have the fenced term, and a deposed leader
  gets ``NotLeader`` with nothing written.
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
import contextlib
import contextvars
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from bulwark_server.errors import AlreadyExists, Conflict, NotFound, NotLeader, StoreUnavailable
from bulwark_server.store import _etcd_client as ec
from bulwark_server.store.cache import Cache, Entry, Event, EventType
from bulwark_server.store.keys import PREFIX, key_for, kind_prefix

log = logging.getLogger(__name__)

_PREFIX = PREFIX.encode()
_PREFIX_END = ec.prefix_range_end(_PREFIX)
# Keys per range read when resyncing, so no answer nears gRPC's 4 MiB message limit
# unless single values are very large.
RESYNC_PAGE = 500
# Operations per transaction: etcd refuses more than 128 by default (--max-txn-ops).
MAX_TXN_OPS = 100
_ETCD_ERRORS = (ec.EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError)


class WriteLog:
    """The etcd revision of the last write made while this log is current."""

    __slots__ = ("revision",)

    def __init__(self) -> None:
        self.revision = 0


_WRITES: contextvars.ContextVar[WriteLog | None] = contextvars.ContextVar(
    "bulwark_writes", default=None
)


def track_writes() -> WriteLog:
    """Start recording the writes of the current task (and the tasks it starts).

    The audit trail uses it to learn the revision a call's change got without
    every capability having to report it.
    """
    writes = WriteLog()
    _WRITES.set(writes)
    return writes


@dataclass(frozen=True)
class Unchanged:
    """A further condition of a write: what it was decided on has not changed since.

    With a ``name``: that key's mod revision is still ``revision`` (0: the key
    must be absent). Without: no key of ``kind`` was written after ``revision``
    (keys deleted since are not noticed).
    """

    kind: str
    name: str
    revision: int


@dataclass(frozen=True)
class Fence:
    """Leader fencing: the write applies only while ``key`` still has create revision ``term``."""

    key: bytes
    term: int


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
        return not (self.reachable and self.watching)


@dataclass(frozen=True)
class MemberInfo:
    """One etcd member and whether it answered a status request."""

    id: int
    name: str
    client_urls: tuple[str, ...]
    healthy: bool
    is_raft_leader: bool = False
    version: str = ""
    db_size_bytes: int = 0
    error: str = ""


async def resolve_endpoints(endpoints: Sequence[str]) -> list[str]:
    """Resolve ``host:port`` endpoints to IPv4 ``ip:port`` (etcd3aio takes only IPv4 literals)."""
    loop = asyncio.get_running_loop()
    out: list[str] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        try:
            infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET)
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(f"etcd endpoint {endpoint!r}: cannot resolve: {exc}") from exc
        for info in infos:
            address = f"{info[4][0]}:{port}"
            if address not in out:
                out.append(address)
    if not out:
        raise StoreUnavailable(f"no IPv4 address for etcd endpoints {list(endpoints)}")
    return out


def _host_of(endpoint: str) -> str:
    return endpoint.rpartition(":")[0].strip("[]")


def _url_to_endpoint(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


@dataclass(frozen=True)
class EtcdTls:
    """PEM material for TLS to etcd: the CA to trust, and a client certificate if etcd asks."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


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
        self._endpoints = list(endpoints)
        self._tls = tls
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._clock = clock
        self.cache = Cache()
        self._client: ec.Etcd3Client | None = None
        self._watch_stub: ec.rpc_grpc.WatchStub | None = None
        self._lease_stub: ec.rpc_grpc.LeaseStub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reachable = False
        self._watching = False
        self._etcd_revision = 0
        self._confirmed_at = clock()
        self._resyncs = 0
        self._last_error = ""
        self._watch_call: grpc.aio.StreamStreamCall | None = None
        self._progress: asyncio.Queue[ec.rpc_pb2.WatchRequest] | None = None
        self._reset_watch = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._member_channels: dict[str, grpc.aio.Channel] = {}
        self._closing = False
        self._changed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, wait: float = 30.0) -> None:
        """Connect and load the cache; StoreUnavailable if etcd stays unreachable for ``wait`` s."""
        resolved = await resolve_endpoints(self._endpoints)
        tls_args: dict[str, Any] = {}
        if self._tls is not None:
            tls_args = {
                "ca_cert": self._tls.ca,
                "cert_key": self._tls.key,
                "cert_chain": self._tls.cert,
                # Endpoints are dialled by IP: verify the certificate for the name given.
                "tls_server_name": _host_of(self._endpoints[0]),
            }
        # One attempt per call: a retried Put/Txn could apply twice.
        self._client = ec.Etcd3Client(resolved, rpc_max_attempts=1, **tls_args)
        await self._client.connect()
        channel = self._client._channel
        self._watch_stub = ec.rpc_grpc.WatchStub(channel)
        self._lease_stub = ec.rpc_grpc.LeaseStub(channel)
        deadline = self._clock() + wait
        while True:
            try:
                await self._resync()
                self._reachable = True
                break
            except _ETCD_ERRORS as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                if self._clock() >= deadline:
                    await self.close()
                    raise StoreUnavailable(
                        f"etcd at {','.join(self._endpoints)} unreachable for {wait:.0f}s: "
                        f"{self._last_error}"
                    ) from exc
                await asyncio.sleep(0.2)
        self._tasks = [
            asyncio.create_task(self._watch_loop(), name="store-watch"),
            asyncio.create_task(self._probe_loop(), name="store-probe"),
        ]

    async def close(self) -> None:
        """Stop the watch and probe, and close every channel."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for channel in self._member_channels.values():
            await channel.close()
        self._member_channels.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- cached reads (never wait for etcd; may be stale) --------------------------

    def get(self, kind: str, name: str) -> Entry | None:
        """The cached entry, or None. May be stale; see ``status()``."""
        return self.cache.get(key_for(kind, name))

    def scan(self, kind: str, start_after: str = "", limit: int = 0) -> list[Entry]:
        """Cached entries of ``kind`` in name order, after ``start_after``. May be stale."""
        prefix = kind_prefix(kind)
        after = prefix + start_after.encode() if start_after else b""
        return self.cache.scan(prefix, after, limit)

    def subscribe(self) -> asyncio.Queue[list[Event]]:
        """A queue of every later change under the prefix (see ``Cache.subscribe``)."""
        return self.cache.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[list[Event]]) -> None:
        self.cache.unsubscribe(queue)

    async def changes(self) -> AsyncIterator[list[Event]]:
        """Iterate over batches of changes until cancelled.

        An empty batch means this reader fell too far behind and changes were
        dropped: re-read what it needs from the cache. It keeps receiving later
        changes either way.
        """
        queue = self.subscribe()
        try:
            while True:
                batch = await queue.get()
                if not batch:
                    self.unsubscribe(queue)
                    queue = self.subscribe()
                yield batch
        finally:
            self.unsubscribe(queue)

    def status(self) -> StoreStatus:
        etcd_rev = max(self._etcd_revision, self.cache.revision)
        return StoreStatus(
            reachable=self._reachable,
            watching=self._watching,
            revision=self.cache.revision,
            etcd_revision=etcd_rev if self._etcd_revision else 0,
            lag_seconds=max(0.0, self._clock() - self._confirmed_at),
            keys=len(self.cache),
            resyncs=self._resyncs,
            last_error=self._last_error,
        )

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the cache reflects ``revision``; False on timeout."""
        if self.cache.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                await future
            return True
        except TimeoutError:
            return False

    # -- linearizable read -------------------------------------------------------

    async def read(self, kind: str, name: str) -> Entry | None:
        """Read one key from etcd (linearizable). StoreUnavailable when etcd cannot answer."""
        client = self._require_client()
        key = key_for(kind, name)
        try:
            resp = await client.kv.get(key, timeout=self._timeout)
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd read failed: {_describe(exc)}") from exc
        return _entry(resp.kvs[0]) if resp.kvs else None

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
        key = key_for(kind, name)
        compare = [_cmp(key, "CREATE", 0), *_guards(guards)]
        resp = await self._txn(compare, [_put(key, value, lease)], key, fence)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
            if _read_back(resp, key) is None:
                raise Conflict(f"{kind}/{name}: what the write was decided on changed; retry")
            raise AlreadyExists(f"{kind}/{name} already exists")
        return int(resp.header.revision)

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
        key = key_for(kind, name)
        compare = [_cmp(key, "MOD", expected_mod_revision), *_guards(guards)]
        resp = await self._txn(compare, [_put(key, value, lease)], key, fence)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
            current = _read_back(resp, key)
            if current is None:
                raise NotFound(f"{kind}/{name} does not exist")
            if current.mod_revision == expected_mod_revision:
                raise Conflict(
                    f"{kind}/{name}: what the write was decided on changed; retry",
                    current=current,
                )
            raise Conflict(
                f"{kind}/{name} changed at revision {current.mod_revision} "
                f"(expected {expected_mod_revision}); re-read and retry",
                current=current,
            )
        return int(resp.header.revision)

    async def upsert(
        self,
        kind: str,
        name: str,
        build: Callable[[Entry | None], bytes],
        *,
        expected_revision: int = 0,
        attempts: int = 20,
        guards: Callable[[], Sequence[Unchanged]] = tuple,
    ) -> tuple[int, bool]:
        """Create or replace a key with compare-and-swap; return (revision, created).

        ``build`` makes the new value from the current entry (None when absent).
        With ``expected_revision`` the write applies only at that revision
        (NotFound if absent, Conflict if changed). Without, a write that loses to
        a concurrent writer is rebuilt from etcd's current value and retried,
        up to ``attempts`` times (then Conflict). ``guards`` is called after
        each ``build`` for the conditions that build relied on.
        """
        if expected_revision:
            current = self.get(kind, name)
            if current is None or current.mod_revision != expected_revision:
                # Build on the version the caller named, never on a stale cache.
                current = await self.read(kind, name)
            value = build(current)
            revision = await self.update(
                kind, name, value, expected_mod_revision=expected_revision, guards=guards()
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
                    return await self.create(kind, name, value, guards=guards()), True
                value = build(entry)
                revision = await self.update(
                    kind, name, value, expected_mod_revision=entry.mod_revision, guards=guards()
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
        key = key_for(kind, name)
        resp = await self._txn([], [_put(key, value, lease)], key, fence, fail_fast=fail_fast)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
        return int(resp.header.revision)

    async def put_many(
        self, kind: str, items: Sequence[tuple[str, bytes]], *, fence: Fence | None = None
    ) -> int:
        """Write several keys of ``kind`` in one transaction (at most ``MAX_TXN_OPS``)."""
        return await self.put_raw([(key_for(kind, name), value) for name, value in items], fence)

    async def delete_many(
        self, kind: str, names: Sequence[str], *, fence: Fence | None = None
    ) -> int:
        """Delete several keys of ``kind`` (absent ones are no error) in one transaction."""
        return await self.delete_raw([key_for(kind, name) for name in names], fence)

    async def put_raw(
        self, items: Sequence[tuple[bytes, bytes]], fence: Fence | None = None
    ) -> int:
        """Write full etcd keys in one transaction (snapshot restores and drills)."""
        if not items:
            return 0
        if len(items) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} keys per transaction, got {len(items)}")
        ops = [_put(key, value, 0) for key, value in items]
        resp = await self._txn([], ops, items[0][0], fence)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
        return int(resp.header.revision)

    async def delete_raw(self, keys: Sequence[bytes], fence: Fence | None = None) -> int:
        """Delete full etcd keys (absent ones are no error) in one transaction."""
        if not keys:
            return 0
        if len(keys) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} keys per transaction, got {len(keys)}")
        ops = [
            ec.rpc_pb2.RequestOp(request_delete_range=ec.rpc_pb2.DeleteRangeRequest(key=key))
            for key in keys
        ]
        resp = await self._txn([], ops, keys[0], fence)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
        return int(resp.header.revision)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` (one request); return how many went."""
        if not prefix:
            raise ValueError("refusing to delete an empty prefix")
        self._check_reachable()
        client = self._require_client()
        try:
            resp = await client.kv.delete(
                prefix, range_end=ec.prefix_range_end(prefix), timeout=self._timeout
            )
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd delete failed: {_describe(exc)}") from exc
        return int(resp.deleted)

    async def read_all(self, prefix: bytes = _PREFIX) -> tuple[int, list[Entry]]:
        """Every key under ``prefix`` read from etcd at one revision; (revision, entries)."""
        try:
            return await self._range(prefix)
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd read failed: {_describe(exc)}") from exc

    async def _range(self, prefix: bytes) -> tuple[int, list[Entry]]:
        """Read a prefix in pages, all at the revision of the first page (etcd errors raw)."""
        client = self._require_client()
        entries: list[Entry] = []
        start, revision = prefix, 0
        end = ec.prefix_range_end(prefix)
        while True:
            resp = await client.kv.get(
                start, range_end=end, revision=revision, limit=RESYNC_PAGE, timeout=self._timeout
            )
            revision = revision or int(resp.header.revision)
            entries.extend(_entry(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                break
            start = bytes(resp.kvs[-1].key) + b"\x00"
        return revision, entries

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        expected_mod_revision: int | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Delete a key (only at ``expected_mod_revision`` if given); NotFound if absent."""
        key = key_for(kind, name)
        if expected_mod_revision is None:
            compare = [_cmp(key, "VERSION", 0, ec.rpc_pb2.Compare.GREATER)]
        else:
            compare = [_cmp(key, "MOD", expected_mod_revision)]
        delete_op = ec.rpc_pb2.RequestOp(
            request_delete_range=ec.rpc_pb2.DeleteRangeRequest(key=key)
        )
        resp = await self._txn(compare, [delete_op], key, fence)
        if not resp.succeeded:
            self._raise_fence(resp, fence)
            current = _read_back(resp, key)
            if current is None:
                raise NotFound(f"{kind}/{name} does not exist")
            raise Conflict(
                f"{kind}/{name} changed at revision {current.mod_revision} "
                f"(expected {expected_mod_revision}); re-read and retry",
                current=current,
            )
        return int(resp.header.revision)

    # -- leases ------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds and return its id."""
        self._check_reachable()
        stub = self._require_lease_stub()
        try:
            resp = await stub.LeaseGrant(
                ec.rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=self._timeout
            )
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd lease grant failed: {_describe(exc)}") from exc
        return int(resp.ID)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew a lease once; return its remaining TTL in seconds (0: it has expired)."""
        return (await self.renew(lease_id))[0]

    async def renew(self, lease_id: int) -> tuple[int, int]:
        """Renew a lease once; return (remaining TTL in seconds, etcd's revision then).

        A reader that must not answer from an older state than etcd's at the
        renewal waits for the cache to reach that revision.
        """
        stub = self._require_lease_stub()

        async def one() -> AsyncIterator[ec.rpc_pb2.LeaseKeepAliveRequest]:
            yield ec.rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        call = stub.LeaseKeepAlive(one(), timeout=self._timeout)
        try:
            async for resp in call:
                return max(0, int(resp.TTL)), int(resp.header.revision)
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd lease keep-alive failed: {_describe(exc)}") from exc
        finally:
            call.cancel()
        raise StoreUnavailable("etcd closed the keep-alive stream without an answer")

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease; keys attached to it are deleted by etcd at once."""
        stub = self._require_lease_stub()
        try:
            await stub.LeaseRevoke(
                ec.rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd lease revoke failed: {_describe(exc)}") from exc
        except _ETCD_ERRORS as exc:
            raise StoreUnavailable(f"etcd lease revoke failed: {_describe(exc)}") from exc

    # -- cluster -----------------------------------------------------------------

    async def members(self) -> list[MemberInfo]:
        """etcd members, each asked for its status (concurrently, bounded by the timeout)."""
        client = self._require_client()
        try:
            resp = await client.cluster.member_list(timeout=self._timeout)
        except _ETCD_ERRORS as exc:
            self._note_failure(exc)
            raise StoreUnavailable(f"etcd member list failed: {_describe(exc)}") from exc
        return list(await asyncio.gather(*(self._member_status(m) for m in resp.members)))

    async def _member_status(self, member: ec.rpc_pb2.Member) -> MemberInfo:
        urls = tuple(member.clientURLs)
        base = MemberInfo(int(member.ID), member.name, urls, healthy=False)
        if not urls:
            return MemberInfo(**{**base.__dict__, "error": "member has not started"})
        endpoint = _url_to_endpoint(urls[0])
        channel = self._member_channels.get(endpoint)
        if channel is None:
            try:
                resolved = await resolve_endpoints([endpoint])
            except StoreUnavailable as exc:
                return MemberInfo(**{**base.__dict__, "error": exc.message})
            if self._tls is None:
                channel = grpc.aio.insecure_channel(resolved[0])
            else:
                channel = grpc.aio.secure_channel(
                    resolved[0],
                    self._tls.channel_credentials(),
                    options=[("grpc.ssl_target_name_override", _host_of(endpoint))],
                )
            self._member_channels[endpoint] = channel
        stub = ec.rpc_grpc.MaintenanceStub(channel)
        try:
            status = await stub.Status(ec.rpc_pb2.StatusRequest(), timeout=min(self._timeout, 1.0))
        except _ETCD_ERRORS as exc:
            return MemberInfo(**{**base.__dict__, "error": _describe(exc)})
        return MemberInfo(
            int(member.ID),
            member.name,
            urls,
            healthy=True,
            is_raft_leader=status.leader == member.ID,
            version=status.version,
            db_size_bytes=int(status.dbSize),
        )

    # -- internals ---------------------------------------------------------------

    def _require_client(self) -> ec.Etcd3Client:
        if self._client is None or self._client.kv is None:
            raise StoreUnavailable("store is not started")
        return self._client

    def _require_lease_stub(self) -> ec.rpc_grpc.LeaseStub:
        if self._lease_stub is None:
            raise StoreUnavailable("store is not started")
        return self._lease_stub

    def _check_reachable(self) -> None:
        if not self._reachable:
            raise StoreUnavailable(
                f"etcd is unreachable ({self._last_error or 'no answer'}); nothing was written"
            )

    async def _txn(
        self,
        compare: list[ec.rpc_pb2.Compare],
        success: list[ec.rpc_pb2.RequestOp],
        key: bytes,
        fence: Fence | None,
        *,
        fail_fast: bool = True,
    ) -> ec.rpc_pb2.TxnResponse:
        if fail_fast:
            self._check_reachable()
        client = self._require_client()
        failure = [ec.rpc_pb2.RequestOp(request_range=ec.rpc_pb2.RangeRequest(key=key))]
        if fence is not None:
            compare = [*compare, _cmp(fence.key, "CREATE", fence.term)]
            failure.append(
                ec.rpc_pb2.RequestOp(request_range=ec.rpc_pb2.RangeRequest(key=fence.key))
            )
        try:
            resp = await client.kv.txn(compare, success, failure, timeout=self._timeout)
        except _ETCD_ERRORS as exc:
            if _lease_ended(exc):
                raise NotFound("the lease has ended (expired or revoked)") from exc
            self._note_failure(exc)
            raise StoreUnavailable(
                f"etcd write failed ({_describe(exc)}); it may not have been applied"
            ) from exc
        if resp.succeeded:
            writes = _WRITES.get()
            if writes is not None and success:
                writes.revision = max(writes.revision, int(resp.header.revision))
            # Read-your-writes for the cache, which mirrors only the Bulwark prefix: a
            # write elsewhere (a drill's scratch space) would wait out the timeout.
            if key.startswith(_PREFIX):
                await self.wait_for_revision(int(resp.header.revision), timeout=self._timeout)
        return resp

    @staticmethod
    def _raise_fence(resp: ec.rpc_pb2.TxnResponse, fence: Fence | None) -> None:
        if fence is None:
            return
        current = _read_back(resp, fence.key)
        if current is None or current.create_revision != fence.term:
            holder = f"term {current.create_revision}" if current else "no leader"
            raise NotLeader(f"fenced write refused: term {fence.term} is over ({holder})")

    def _note_failure(self, exc: BaseException) -> None:
        self._last_error = _describe(exc)
        if _is_connectivity(exc):
            self._reachable = False
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
            if rev <= self.cache.revision:
                future.set_result(None)
            else:
                still.append((rev, future))
        self._waiters = still

    async def _resync(self) -> int:
        """Reload the whole prefix in pages, all read at one revision."""
        revision, entries = await self._range(_PREFIX)
        self.cache.load(entries, revision)
        self._resyncs += 1
        self._confirm(revision)
        return revision

    async def _watch_loop(self) -> None:
        backoff = 0.05
        need_resync = False
        while not self._closing:
            try:
                revision = await self._resync() if need_resync else self.cache.revision
                need_resync = True
                await self._watch_from(revision + 1)
                backoff = 0.05
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closing or (current is not None and current.cancelling()):
                    raise
            except Exception as exc:
                # Anything else (a bug, an unexpected error type) must not end the
                # watch for good: the cache would stay stale forever.
                if not isinstance(exc, _ETCD_ERRORS):
                    log.exception("unexpected error in the etcd watch")
                self._note_failure(exc)
                # One warning per outage; the retries that follow would only repeat it.
                level = logging.WARNING if backoff <= 0.05 else logging.DEBUG
                log.log(level, "etcd watch interrupted: %s; will resync", self._last_error)
            self._watching = False
            self._reset_watch = False
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _watch_from(self, start_revision: int) -> None:
        """Follow the prefix from ``start_revision``; return when a resync is needed."""
        assert self._watch_stub is not None
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
        call = self._watch_stub.Watch(outgoing(), metadata=(("hasleader", "true"),))
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
                    self._last_error = resp.cancel_reason or "watch canceled by etcd"
                    return
                if resp.created:
                    self._watching = True
                    continue
                if resp.events:
                    events = [_event(ev) for ev in resp.events]
                    self.cache.apply(events, max(ev.revision for ev in events))
                    self._confirm(self.cache.revision)
                else:
                    # A progress notification proves the stream is alive. Before etcd
                    # 3.5.8 its revision may run ahead of events still queued
                    # (etcd issue 15220), so it must not advance the cache revision.
                    self._confirm(self.cache.revision)
            if self._reset_watch:
                return
        finally:
            self._watch_call = None
            self._progress = None
            self._watching = False
            call.cancel()

    async def _probe_loop(self) -> None:
        while not self._closing:
            client = self._client
            if client is None or client.maintenance is None:
                return
            try:
                status = await client.maintenance.status(timeout=min(self._timeout, 1.0))
                if not self._reachable:
                    log.info("etcd reachable again at revision %d", status.header.revision)
                self._reachable = True
                self._etcd_revision = max(self._etcd_revision, int(status.header.revision))
                if self._progress is not None and self._watching:
                    self._progress.put_nowait(
                        ec.rpc_pb2.WatchRequest(progress_request=ec.rpc_pb2.WatchProgressRequest())
                    )
            except Exception as exc:
                if not isinstance(exc, _ETCD_ERRORS):
                    log.exception("unexpected error in the etcd probe")
                if self._reachable:
                    log.warning("etcd unreachable: %s; serving stale reads", _describe(exc))
                self._note_failure(exc)
                self._reachable = False
            await asyncio.sleep(self._probe_interval)


# -- protobuf helpers ------------------------------------------------------------


def _entry(kv: ec.kv_pb2.KeyValue) -> Entry:
    return Entry(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _event(ev: ec.kv_pb2.Event) -> Event:
    if ev.type == ec.kv_pb2.Event.DELETE:
        entry = Entry(bytes(ev.kv.key), b"", 0, int(ev.kv.mod_revision), 0)
        return Event(EventType.DELETE, entry, int(ev.kv.mod_revision))
    return Event(EventType.PUT, _entry(ev.kv), int(ev.kv.mod_revision))


def _cmp(key: bytes, target: str, value: int, result: int | None = None) -> ec.rpc_pb2.Compare:
    c = ec.rpc_pb2.Compare
    compare = c(key=key, target=getattr(c, target), result=c.EQUAL if result is None else result)
    if target == "CREATE":
        compare.create_revision = value
    elif target == "MOD":
        compare.mod_revision = value
    else:
        compare.version = value
    return compare


def _guards(guards: Sequence[Unchanged]) -> list[ec.rpc_pb2.Compare]:
    out = []
    for guard in guards:
        if guard.name:
            out.append(_cmp(key_for(guard.kind, guard.name), "MOD", guard.revision))
        else:
            prefix = kind_prefix(guard.kind)
            # etcd applies a compare with a range end to every key in the range.
            compare = _cmp(prefix, "MOD", guard.revision + 1, ec.rpc_pb2.Compare.LESS)
            compare.range_end = ec.prefix_range_end(prefix)
            out.append(compare)
    return out


def _lease_ended(exc: BaseException) -> bool:
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() == grpc.StatusCode.NOT_FOUND
        and "lease" in (exc.details() or "")
    )


def _put(key: bytes, value: bytes, lease: int) -> ec.rpc_pb2.RequestOp:
    return ec.rpc_pb2.RequestOp(
        request_put=ec.rpc_pb2.PutRequest(key=key, value=value, lease=lease)
    )


def _read_back(resp: ec.rpc_pb2.TxnResponse, key: bytes) -> Entry | None:
    for op in resp.responses:
        if op.HasField("response_range"):
            for kv in op.response_range.kvs:
                if bytes(kv.key) == key:
                    return _entry(kv)
    return None


def _is_connectivity(exc: BaseException) -> bool:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, ec.EtcdConnectionError | ec.EtcdTransientError | TimeoutError | OSError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
