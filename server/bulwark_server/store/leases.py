"""etcd leases: keys that vanish when their owner stops renewing.

Guarantees:

* ``grant`` fails at once with ``StoreUnavailable`` while etcd is marked
  unreachable; ``renew`` and ``revoke`` always ask etcd, so an owner can
  still prove or end its lease as soon as etcd answers again.
* ``renew`` returns etcd's revision at the renewal, so a reader that must not
  answer from an older state can wait for the cache to reach it.
* ``revoke`` of a lease etcd no longer knows is no error: the keys are gone
  either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from bulwark_server.errors import StoreUnavailable
from bulwark_server.store import _etcd_client as ec
from bulwark_server.store.connection import ETCD_ERRORS, Connection, describe


class Leases:
    """Grant, renew and revoke leases through one ``Connection``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds and return its id."""
        self._conn.check_reachable()
        stub = self._conn.require_lease_stub()
        try:
            resp = await stub.LeaseGrant(
                ec.rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=self._conn.timeout
            )
        except ETCD_ERRORS as exc:
            raise self._conn.failed("lease grant", exc) from exc
        return int(resp.ID)

    async def renew(self, lease_id: int) -> tuple[int, int]:
        """Renew a lease once; return (remaining TTL in seconds, etcd's revision then).

        A TTL of 0 means the lease has expired.
        """
        stub = self._conn.require_lease_stub()

        async def one() -> AsyncIterator[ec.rpc_pb2.LeaseKeepAliveRequest]:
            yield ec.rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        call = stub.LeaseKeepAlive(one(), timeout=self._conn.timeout)
        try:
            async for resp in call:
                return max(-1, int(resp.TTL)), int(resp.header.revision)
        except ETCD_ERRORS as exc:
            raise self._conn.failed("lease keep-alive", exc) from exc
        finally:
            call.cancel()
        raise StoreUnavailable("etcd closed the keep-alive stream without an answer")

    async def remaining(self, lease_id: int) -> int:
        """Whole seconds left of a lease, rounded down as etcd counts them (0: less than
        one second left, still alive); -1 when it has ended or never existed."""
        stub = self._conn.require_lease_stub()
        try:
            resp = await stub.LeaseTimeToLive(
                ec.rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=self._conn.timeout
            )
        except ETCD_ERRORS as exc:
            raise self._conn.failed("lease time-to-live", exc) from exc
        return max(-1, int(resp.TTL))

    async def revoke(self, lease_id: int) -> None:
        """Revoke a lease; keys attached to it are deleted by etcd at once."""
        stub = self._conn.require_lease_stub()
        try:
            await stub.LeaseRevoke(
                ec.rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=self._conn.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise self._conn.failed("lease revoke", exc) from exc
        except ETCD_ERRORS as exc:
            raise StoreUnavailable(f"etcd lease revoke failed: {describe(exc)}") from exc
