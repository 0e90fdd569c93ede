"""Direct key-value calls to etcd: linearizable reads and compare-and-swap transactions.

Guarantees:

* ``read`` and ``read_all`` ask etcd itself (linearizable); ``read_all`` reads
  in pages, every page at the revision of the first, so the result is one
  consistent state.
* Every write is one etcd transaction: all or nothing. ``create`` compares the
  key's create revision with 0, ``update`` (and ``delete`` when given a
  revision) compare its ``mod_revision``, so concurrent writers never lose an
  update: the loser gets ``Conflict``. ``Unchanged`` guards add further
  compares to the same transaction.
* A write may carry a ``Fence``: the transaction then also requires the leader
  key to still have the fenced term, and a deposed leader gets ``NotLeader``
  with nothing written.
* While etcd is marked unreachable, writes fail at once with
  ``StoreUnavailable`` (``put(fail_fast=False)`` asks etcd anyway). A write
  that times out raises ``StoreUnavailable`` too; it may or may not have been
  applied, which is safe for compare-and-swap callers (a retry either applies
  or reports a ``Conflict``).
* A successful write under the Bulwark prefix returns only once the cache has
  caught up with it (or the timeout passed): read-your-writes for ``get``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from bulwark_server.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    NotLeader,
    RequestTooLarge,
    StoreUnavailable,
)
from bulwark_server.store import _etcd_client as ec
from bulwark_server.store import _pb
from bulwark_server.store.cache import Entry
from bulwark_server.store.connection import (
    ETCD_ERRORS,
    Connection,
    describe,
    lease_ended,
    too_large,
)
from bulwark_server.store.keys import PREFIX, key_for, kind_prefix
from bulwark_server.store.writelog import note_write

_PREFIX = PREFIX.encode()
# Keys per range read, so no answer nears gRPC's 4 MiB message limit unless single
# values are very large.
RANGE_PAGE = 500
# Operations per transaction: etcd refuses more than 128 by default (--max-txn-ops).
MAX_TXN_OPS = 100
# Bytes of one write request: etcd refuses more than 1.5 MiB by default
# (--max-request-bytes); this leaves room for keys and the fence's compare.
MAX_REQUEST_BYTES = 512 * 1024


def batches(
    items: Sequence[tuple[str, bytes]], max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[list[tuple[str, bytes]]]:
    """Split (name, value) items into transactions of at most ``MAX_TXN_OPS`` items
    and, as far as one item allows, ``max_bytes`` of values."""
    batch: list[tuple[str, bytes]] = []
    size = 0
    for name, value in items:
        if batch and (len(batch) == MAX_TXN_OPS or size + len(value) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append((name, value))
        size += len(value)
    if batch:
        yield batch


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


async def read_prefix(
    client: ec.Etcd3Client, prefix: bytes, rpc_timeout: float
) -> tuple[int, list[Entry]]:
    """Read a prefix in pages, all at the revision of the first page; etcd's errors raw.

    ``rpc_timeout`` bounds each page's request, not the whole read.
    """
    entries: list[Entry] = []
    start, revision = prefix, 0
    end = ec.prefix_range_end(prefix)
    while True:
        resp = await client.kv.get(
            start, range_end=end, revision=revision, limit=RANGE_PAGE, timeout=rpc_timeout
        )
        revision = revision or int(resp.header.revision)
        entries.extend(_pb.entry(kv) for kv in resp.kvs)
        if not resp.more or not resp.kvs:
            break
        start = bytes(resp.kvs[-1].key) + b"\x00"
    return revision, entries


def _guards(guards: Sequence[Unchanged]) -> list[ec.rpc_pb2.Compare]:
    out = []
    for guard in guards:
        if guard.name:
            out.append(_pb.compare(key_for(guard.kind, guard.name), "MOD", guard.revision))
        else:
            prefix = kind_prefix(guard.kind)
            # etcd applies a compare with a range end to every key in the range.
            compare = _pb.compare(prefix, "MOD", guard.revision + 1, ec.rpc_pb2.Compare.LESS)
            compare.range_end = ec.prefix_range_end(prefix)
            out.append(compare)
    return out


def _raise_fence(resp: ec.rpc_pb2.TxnResponse, fence: Fence | None) -> None:
    """NotLeader when a failed transaction failed because the fenced term is over."""
    if fence is None:
        return
    current = _pb.read_back(resp, fence.key)
    if current is None or current.create_revision != fence.term:
        holder = f"term {current.create_revision}" if current else "no leader"
        raise NotLeader(f"fenced write refused: term {fence.term} is over ({holder})")


class KV:
    """Reads from and transactions on etcd through one ``Connection``."""

    def __init__(
        self, conn: Connection, caught_up: Callable[[int, float | None], Awaitable[bool]]
    ) -> None:
        self._conn = conn
        # Waits until the cache reflects a revision (False on timeout).
        self._caught_up = caught_up

    async def read(self, kind: str, name: str) -> Entry | None:
        """Read one key from etcd (linearizable). StoreUnavailable when etcd cannot answer."""
        client = self._conn.require_client()
        try:
            resp = await client.kv.get(key_for(kind, name), timeout=self._conn.timeout)
        except ETCD_ERRORS as exc:
            raise self._conn.failed("read", exc) from exc
        return _pb.entry(resp.kvs[0]) if resp.kvs else None

    async def read_all(self, prefix: bytes) -> tuple[int, list[Entry]]:
        """Every key under ``prefix`` read from etcd at one revision; (revision, entries)."""
        try:
            return await read_prefix(self._conn.require_client(), prefix, self._conn.timeout)
        except ETCD_ERRORS as exc:
            raise self._conn.failed("read", exc) from exc

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
        """Create a key that must not exist; return the write's revision (its create revision)."""
        key = key_for(kind, name)
        compare = [_pb.compare(key, "CREATE", 0), *_guards(guards)]
        resp = await self.txn(compare, [_pb.put_op(key, value, lease)], key, fence)
        if not resp.succeeded:
            _raise_fence(resp, fence)
            if _pb.read_back(resp, key) is None:
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
        """Replace a key only if its mod_revision is still ``expected_mod_revision``."""
        key = key_for(kind, name)
        compare = [_pb.compare(key, "MOD", expected_mod_revision), *_guards(guards)]
        resp = await self.txn(compare, [_pb.put_op(key, value, lease)], key, fence)
        if not resp.succeeded:
            _raise_fence(resp, fence)
            current = _pb.read_back(resp, key)
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
        """Write a key whatever its state; only the fence (if any) is compared."""
        key = key_for(kind, name)
        ops = [_pb.put_op(key, value, lease)]
        resp = await self.txn([], ops, key, fence, fail_fast=fail_fast)
        if not resp.succeeded:
            _raise_fence(resp, fence)
        return int(resp.header.revision)

    async def prove(self, fence: Fence, *, fail_fast: bool = True) -> int:
        """Prove ``fence``'s term still holds without writing (NotLeader if it does not).

        A transaction of compares only is read-only for etcd: it is answered with
        a linearizable read, not a Raft proposal.
        """
        resp = await self.txn([], [], fence.key, fence, fail_fast=fail_fast)
        if not resp.succeeded:
            _raise_fence(resp, fence)
        return int(resp.header.revision)

    async def put_raw(
        self, items: Sequence[tuple[bytes, bytes]], fence: Fence | None = None
    ) -> int:
        """Write full etcd keys in one transaction (at most ``MAX_TXN_OPS``; else ValueError)."""
        if not items:
            return 0
        if len(items) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} keys per transaction, got {len(items)}")
        ops = [_pb.put_op(key, value, 0) for key, value in items]
        resp = await self.txn([], ops, items[0][0], fence)
        if not resp.succeeded:
            _raise_fence(resp, fence)
        return int(resp.header.revision)

    async def delete_raw(self, keys: Sequence[bytes], fence: Fence | None = None) -> int:
        """Delete full etcd keys in one transaction (at most ``MAX_TXN_OPS``; else ValueError)."""
        if not keys:
            return 0
        if len(keys) > MAX_TXN_OPS:
            raise ValueError(f"at most {MAX_TXN_OPS} keys per transaction, got {len(keys)}")
        resp = await self.txn([], [_pb.delete_op(key) for key in keys], keys[0], fence)
        if not resp.succeeded:
            _raise_fence(resp, fence)
        return int(resp.header.revision)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` (one request); return how many went."""
        if not prefix:
            raise ValueError("refusing to delete an empty prefix")
        self._conn.check_reachable()
        client = self._conn.require_client()
        try:
            resp = await client.kv.delete(
                prefix, range_end=ec.prefix_range_end(prefix), timeout=self._conn.timeout
            )
        except ETCD_ERRORS as exc:
            raise self._conn.failed("delete", exc) from exc
        return int(resp.deleted)

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
            compare = [_pb.compare(key, "VERSION", 0, ec.rpc_pb2.Compare.GREATER)]
        else:
            compare = [_pb.compare(key, "MOD", expected_mod_revision)]
        resp = await self.txn(compare, [_pb.delete_op(key)], key, fence)
        if not resp.succeeded:
            _raise_fence(resp, fence)
            current = _pb.read_back(resp, key)
            if current is None:
                raise NotFound(f"{kind}/{name} does not exist")
            raise Conflict(
                f"{kind}/{name} changed at revision {current.mod_revision} "
                f"(expected {expected_mod_revision}); re-read and retry",
                current=current,
            )
        return int(resp.header.revision)

    async def txn(
        self,
        compare: list[ec.rpc_pb2.Compare],
        success: list[ec.rpc_pb2.RequestOp],
        key: bytes,
        fence: Fence | None,
        *,
        fail_fast: bool = True,
    ) -> ec.rpc_pb2.TxnResponse:
        """Run one transaction; on failure it reads back ``key`` (and the fence's key).

        NotFound when a lease it names has ended; StoreUnavailable when etcd
        fails or times out (the write may or may not have been applied).
        """
        if fail_fast:
            self._conn.check_reachable()
        client = self._conn.require_client()
        failure = [_pb.range_op(key)]
        if fence is not None:
            compare = [*compare, _pb.compare(fence.key, "CREATE", fence.term)]
            failure.append(_pb.range_op(fence.key))
        try:
            resp = await client.kv.txn(compare, success, failure, timeout=self._conn.timeout)
        except ETCD_ERRORS as exc:
            if lease_ended(exc):
                raise NotFound("the lease has ended (expired or revoked)") from exc
            self._conn.note_failure(exc)
            if too_large(exc):
                raise RequestTooLarge(f"etcd refused it as too large ({describe(exc)})") from exc
            raise StoreUnavailable(
                f"etcd write failed ({describe(exc)}); it may not have been applied"
            ) from exc
        if resp.succeeded:
            if success:
                note_write(int(resp.header.revision))
            # Read-your-writes for the cache, which mirrors only the Bulwark prefix: a
            # write elsewhere (a drill's scratch space) would wait out the timeout.
            if key.startswith(_PREFIX):
                await self._caught_up(int(resp.header.revision), self._conn.timeout)
        return resp
