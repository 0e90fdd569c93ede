"""Forward a request a follower cannot answer to the leader.

A forwarded call carries ``bulwark-forwarded: 1`` so the receiver never
forwards it again: if leadership moved meanwhile, the caller gets UNAVAILABLE
with the new leader's address and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from bulwark_server.api.status import error_from_status
from bulwark_server.cluster.election import read_leader
from bulwark_server.errors import BulwarkError, NotLeader
from bulwark_server.security.identity import current_caller
from bulwark_server.store import EtcdStore

log = logging.getLogger(__name__)

FORWARDED = "bulwark-forwarded"
FORWARDED_METADATA = ((FORWARDED, "1"),)
# Who the forwarded call came from; the leader believes it only from a replica's token.
ON_BEHALF_OF = "bulwark-on-behalf-of"

Response = TypeVar("Response")
# A stub method of the leader's channel, e.g. ``lambda ch: FooServiceStub(ch).Bar``.
StubMethod = Callable[[grpc.aio.Channel], Callable[..., Awaitable[Response]]]


def open_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """A channel to another replica: TLS with the peer credentials when they are set."""
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


def was_forwarded(context: grpc.aio.ServicerContext) -> bool:
    """True when the call came from another replica forwarding it."""
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


class LeaderForwarder:
    """Channels to the current leader, opened on demand and reused."""

    def __init__(
        self,
        store: EtcdStore,
        replica_id: str,
        timeout: float = 2.0,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._replica_id = replica_id
        self._timeout = timeout
        self._credentials = credentials
        # The replica's own bearer token: the leader authorizes a forwarded call as it.
        self._token = token
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
            channel = self._channels[leader.address] = open_channel(
                leader.address, self._credentials
            )
        return leader.address, channel

    async def call(
        self,
        make_call: StubMethod[Response],
        request: Any,
        deadline_s: float | None = None,
    ) -> Response:
        """Send ``request`` to the leader with ``make_call(channel)`` (a stub method)."""
        address, channel = self.channel()
        metadata = FORWARDED_METADATA
        token = self._token()
        if token:
            caller = current_caller()
            metadata = (*metadata, ("authorization", f"Bearer {token}"))
            if caller is not None and caller.method != "none":
                metadata = (*metadata, (ON_BEHALF_OF, caller.name[:256]))
        try:
            return await make_call(channel)(
                request, metadata=metadata, timeout=deadline_s or self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise as_domain_error(exc, address) from exc

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def as_domain_error(exc: grpc.aio.AioRpcError, address: str) -> BulwarkError:
    """The leader's answer as the same domain error, so the caller sees the leader's status.

    The status table, read backwards, decides (``error_from_status``); whatever is no
    domain error (the leader unreachable, leader no more, or refusing this replica)
    becomes NotLeader: UNAVAILABLE, worth a retry.
    """
    code, details = exc.code(), exc.details() or ""
    trailing = {
        key: value for key, value in exc.trailing_metadata() or () if isinstance(value, str)
    }
    error = error_from_status(code, details, trailing)
    if error is not None:
        return error
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # The caller was admitted here: the leader refusing this replica is a
        # misconfiguration (peer CA, certificate usage, replica token), not theirs.
        log.error(
            "the leader %s refused a forwarded call: %s: %s",
            address,
            code.name,
            details,
            extra={"event": "forwarding.refused"},
        )
    return NotLeader(f"leader {address} did not take the request: {code.name}: {details}", address)
