"""Forward a request a follower cannot answer to the leader.

A forwarded call carries ``bulwark-forwarded: 1`` so the receiver never
forwards it again: if leadership moved meanwhile, the caller gets UNAVAILABLE
with the new leader's address and retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from bulwark_server.election import read_leader
from bulwark_server.errors import NotLeader
from bulwark_server.store import EtcdStore

FORWARDED = "bulwark-forwarded"
FORWARDED_METADATA = ((FORWARDED, "1"),)

Response = TypeVar("Response")


def was_forwarded(context: grpc.aio.ServicerContext) -> bool:
    """True when the call came from another replica forwarding it."""
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


class LeaderForwarder:
    """Channels to the current leader, opened on demand and reused."""

    def __init__(self, store: EtcdStore, replica_id: str, timeout: float = 2.0) -> None:
        self._store = store
        self._replica_id = replica_id
        self._timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self) -> tuple[str, grpc.aio.Channel]:
        """(address, channel) of the leader; NotLeader when none is known or it is us."""
        leader = read_leader(self._store)
        if leader is None or not leader.address:
            raise NotLeader("no leader is elected at the moment; retry shortly")
        if leader.replica_id == self._replica_id:
            raise NotLeader("leadership is changing; retry shortly", leader.address)
        channel = self._channels.get(leader.address)
        if channel is None:
            channel = grpc.aio.insecure_channel(leader.address)
            self._channels[leader.address] = channel
        return leader.address, channel

    async def call(
        self,
        make_call: Callable[[grpc.aio.Channel], Callable[..., Awaitable[Response]]],
        request: Any,
        deadline_s: float | None = None,
    ) -> Response:
        """Send ``request`` to the leader with ``make_call(channel)`` (a stub method)."""
        address, channel = self.channel()
        try:
            return await make_call(channel)(
                request, metadata=FORWARDED_METADATA, timeout=deadline_s or self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise NotLeader(
                f"leader {address} did not take the request: {exc.code().name}: {exc.details()}",
                address,
            ) from exc

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
