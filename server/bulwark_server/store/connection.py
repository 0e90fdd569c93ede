"""The connection to etcd: endpoints, TLS, the client, and whether etcd is reachable.

Guarantees:

* ``Connection.open`` dials with one attempt per call: etcd3aio's built-in
  retry of Put/Txn on UNAVAILABLE is disabled, because a repeated
  non-idempotent write could apply twice. Callers decide about retries.
* Endpoints are resolved to IPv4 and dialled by IP; with TLS the certificate
  is verified for the host name given, not the IP.
* ``note_failure`` is the one place a failed call is recorded: a connectivity
  failure (UNAVAILABLE, DEADLINE_EXCEEDED, a dropped connection, a timeout)
  marks etcd unreachable and tells the watch to restart; any failure becomes
  ``last_error``. While etcd is marked unreachable, ``check_reachable`` makes
  writes fail at once with ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from bulwark_server.errors import StoreUnavailable
from bulwark_server.store import _etcd_client as ec

# What a call to etcd can raise when etcd (or the way to it) fails.
ETCD_ERRORS = (ec.EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError)


@dataclass(frozen=True)
class EtcdTls:
    """PEM material for TLS to etcd: the CA to trust, and a client certificate if etcd asks."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for a gRPC channel of our own to an etcd member."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


async def resolve_endpoints(endpoints: Sequence[str]) -> list[str]:
    """Resolve ``host:port`` endpoints to IPv4 ``ip:port`` (etcd3aio takes only IPv4 literals).

    StoreUnavailable when a name does not resolve or nothing resolves to IPv4.
    """
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


def host_of(endpoint: str) -> str:
    """The host part of ``host:port`` (brackets of an IPv6 literal removed)."""
    return endpoint.rpartition(":")[0].strip("[]")


def url_to_endpoint(url: str) -> str:
    """``host:port`` of a member's client URL such as ``https://host:port/``."""
    return url.split("://", 1)[-1].rstrip("/")


def describe(exc: BaseException) -> str:
    """A one-line description of an etcd failure for errors and ``last_error``."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_connectivity(exc: BaseException) -> bool:
    """Whether ``exc`` says etcd could not be reached (rather than that it refused a call)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, ec.EtcdConnectionError | ec.EtcdTransientError | TimeoutError | OSError)


def too_large(exc: BaseException) -> bool:
    """Whether etcd refused a request for its size (``--max-request-bytes``)."""
    # etcd's own check ("request is too large"), or its gRPC server's limit on the
    # message ("received message larger than max"). Not any RESOURCE_EXHAUSTED:
    # etcd's full space quota answers with that code too.
    text = (exc.details() or "") if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    return "request is too large" in text or "larger than max" in text


def lease_ended(exc: BaseException) -> bool:
    """Whether etcd refused a call because the lease it named has expired or was revoked."""
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() == grpc.StatusCode.NOT_FOUND
        and "lease" in (exc.details() or "")
    )


class Connection:
    """The etcd client and stubs, with the reachability every part of the store shares."""

    def __init__(self, endpoints: Sequence[str], *, tls: EtcdTls | None, timeout: float) -> None:
        self.endpoints = list(endpoints)
        self.tls = tls
        self.timeout = timeout
        self.client: ec.Etcd3Client | None = None
        self.watch_stub: ec.rpc_grpc.WatchStub | None = None
        self.lease_stub: ec.rpc_grpc.LeaseStub | None = None
        # False until the first load succeeds; then the last probe's or call's verdict.
        self.reachable = False
        self.last_error = ""
        # Called when a connectivity failure is noted: the watch restarts and resyncs.
        self.on_disconnect: Callable[[], None] | None = None

    async def open(self) -> None:
        """Resolve the endpoints and connect (StoreUnavailable if a name does not resolve)."""
        resolved = await resolve_endpoints(self.endpoints)
        tls_args: dict[str, Any] = {}
        if self.tls is not None:
            tls_args = {
                "ca_cert": self.tls.ca,
                "cert_key": self.tls.key,
                "cert_chain": self.tls.cert,
                # Endpoints are dialled by IP: verify the certificate for the name given.
                "tls_server_name": host_of(self.endpoints[0]),
            }
        # One attempt per call: a retried Put/Txn could apply twice.
        self.client = ec.Etcd3Client(resolved, rpc_max_attempts=1, **tls_args)
        await self.client.connect()
        channel = self.client._channel
        self.watch_stub = ec.rpc_grpc.WatchStub(channel)
        self.lease_stub = ec.rpc_grpc.LeaseStub(channel)

    async def close(self) -> None:
        """Close the client's channel (idempotent)."""
        if self.client is not None:
            await self.client.close()
            self.client = None

    def require_client(self) -> ec.Etcd3Client:
        """The client; StoreUnavailable before ``open`` or after ``close``."""
        if self.client is None or self.client.kv is None:
            raise StoreUnavailable("store is not started")
        return self.client

    def require_lease_stub(self) -> ec.rpc_grpc.LeaseStub:
        """The lease stub; StoreUnavailable before ``open``."""
        if self.lease_stub is None:
            raise StoreUnavailable("store is not started")
        return self.lease_stub

    def check_reachable(self) -> None:
        """StoreUnavailable at once while etcd is marked unreachable (a write's fast path)."""
        if not self.reachable:
            raise StoreUnavailable(
                f"etcd is unreachable ({self.last_error or 'no answer'}); nothing was written"
            )

    def note_failure(self, exc: BaseException) -> None:
        """Record a failed call; a connectivity failure marks etcd unreachable."""
        self.last_error = describe(exc)
        if is_connectivity(exc):
            self.reachable = False
            if self.on_disconnect is not None:
                self.on_disconnect()

    def failed(self, what: str, exc: BaseException) -> StoreUnavailable:
        """Record a failed call and return the error to raise for it ("etcd <what> failed")."""
        self.note_failure(exc)
        return StoreUnavailable(f"etcd {what} failed: {describe(exc)}")
