"""The etcd cluster's members, each asked directly for its status.

Guarantees:

* ``list`` needs the member list from etcd (StoreUnavailable when it cannot
  answer); each member is then asked over a channel of its own, concurrently,
  within the store's timeout (at most 1 s each). A member that does not
  answer is reported unhealthy with the reason, never raised.
* Channels to members are kept for later calls and closed by ``close``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc.aio

from bulwark_server.errors import StoreUnavailable
from bulwark_server.store import _etcd_client as ec
from bulwark_server.store.connection import (
    ETCD_ERRORS,
    Connection,
    describe,
    host_of,
    resolve_endpoints,
    url_to_endpoint,
)


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


class Members:
    """Lists etcd members through one ``Connection`` and asks each for its status."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def list(self) -> list[MemberInfo]:
        """etcd members, each asked for its status (concurrently, bounded by the timeout)."""
        client = self._conn.require_client()
        try:
            resp = await client.cluster.member_list(timeout=self._conn.timeout)
        except ETCD_ERRORS as exc:
            raise self._conn.failed("member list", exc) from exc
        return list(await asyncio.gather(*(self._status(m) for m in resp.members)))

    async def close(self) -> None:
        """Close the channels to members."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _status(self, member: ec.rpc_pb2.Member) -> MemberInfo:
        urls = tuple(member.clientURLs)
        base = MemberInfo(int(member.ID), member.name, urls, healthy=False)
        if not urls:
            return MemberInfo(**{**base.__dict__, "error": "member has not started"})
        endpoint = url_to_endpoint(urls[0])
        channel = self._channels.get(endpoint)
        if channel is None:
            try:
                resolved = await resolve_endpoints([endpoint])
            except StoreUnavailable as exc:
                return MemberInfo(**{**base.__dict__, "error": exc.message})
            tls = self._conn.tls
            if tls is None:
                channel = grpc.aio.insecure_channel(resolved[0])
            else:
                channel = grpc.aio.secure_channel(
                    resolved[0],
                    tls.channel_credentials(),
                    options=[("grpc.ssl_target_name_override", host_of(endpoint))],
                )
            self._channels[endpoint] = channel
        stub = ec.rpc_grpc.MaintenanceStub(channel)
        timeout = min(self._conn.timeout, 1.0)
        try:
            status = await stub.Status(ec.rpc_pb2.StatusRequest(), timeout=timeout)
        except ETCD_ERRORS as exc:
            return MemberInfo(**{**base.__dict__, "error": describe(exc)})
        return MemberInfo(
            int(member.ID),
            member.name,
            urls,
            healthy=True,
            is_raft_leader=status.leader == member.ID,
            version=status.version,
            db_size_bytes=int(status.dbSize),
        )
