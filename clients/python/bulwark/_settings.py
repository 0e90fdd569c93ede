"""Client options shared by Client and AsyncClient: endpoints' TLS, token, deadlines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

# gRPC's own reconnect backoff grows to 120 s: far too slow to notice Bulwark is
# back. Keep it within the endpoints' own backoff, which paces the retries.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # A watch on a connection that died silently must end, not look live forever.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


PRIORITIES = ("", "critical", "default", "sheddable")


@dataclass(frozen=True)
class ClientOptions:
    """How a client reaches Bulwark and how it behaves when Bulwark is away.

    ``ca``/``cert``/``key`` are PEM file paths (TLS; mutual TLS with cert and
    key); ``token`` is a bearer token (default: the ``BULWARK_TOKEN`` variable).
    ``fallback_rate`` is the requests per second a rate limit allows locally
    when no quota lease is valid and Bulwark cannot be reached (None: allow).
    ``priority`` (``critical``, ``default`` or ``sheddable``; empty: the server's
    default) goes with every call to Bulwark as ``bulwark-priority``: under
    overload Bulwark sheds sheddable calls first, critical ones last, and caps a
    claim at what the caller's identity may claim. ``service`` names the service
    this client runs in: the caller its signal reports are summed under (default:
    the ``BULWARK_SERVICE`` variable, else ``unnamed``). ``chaos`` lets Bulwark's
    fault rules (``ChaosService``) delay or fail this process's guarded calls; off,
    they never touch it. ``instance`` is this process's instance id, which a rule
    may target (default: the ``BULWARK_INSTANCE`` variable).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = None
    timeout: float = 2.0
    client_id: str = ""
    report_interval: float = 0.1
    slow_call: float = 60.0
    fallback_rate: float | None = None
    service: str = ""
    priority: str = ""
    chaos: bool = False
    instance: str = ""

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES[1:])}")

    @property
    def reporter(self) -> str:
        """The name signal reports go under."""
        return self.service or os.environ.get("BULWARK_SERVICE") or "unnamed"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.token or os.environ.get("BULWARK_TOKEN")
        out = (("authorization", f"Bearer {token}"),) if token else ()
        if self.priority:
            out = (*out, ("bulwark-priority", self.priority))
        return out


def channel_credentials(options: ClientOptions) -> grpc.ChannelCredentials | None:
    """TLS credentials from the options, or None for plaintext."""
    if options.ca is None:
        if options.cert or options.key:
            raise ValueError("cert and key need ca (client certificates go over TLS)")
        return None
    if bool(options.cert) != bool(options.key):
        raise ValueError("set both cert and key")

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(read(options.ca), read(options.key), read(options.cert))
