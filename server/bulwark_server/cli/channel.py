"""How a command reaches a replica: --server, --ca/--cert/--key and --token, in one place.

Every command that calls a running replica adds these flags with
:func:`add_client_arguments` and turns them into a :class:`ServerTarget` with
:func:`server_target`, which opens its channels (blocking or asyncio).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from bulwark_server import config


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--server and how to reach it securely: CA, client certificate, bearer token."""
    parser.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="host:port of any Bulwark replica (default 127.0.0.1:50051)",
    )
    parser.add_argument("--ca", help="PEM CA bundle to verify the server; turns TLS on")
    parser.add_argument("--cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument(
        "--token",
        default=os.environ.get("BULWARK_TOKEN"),
        help="bearer token to send [env BULWARK_TOKEN]",
    )


@dataclass(frozen=True)
class ServerTarget:
    """A replica's address, the TLS credentials to reach it (None: plaintext) and call metadata."""

    address: str
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]

    def channel(self) -> grpc.Channel:
        """A blocking channel to the replica."""
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel to the replica; open it inside the event loop that uses it."""
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, self.credentials)


def server_target(args: argparse.Namespace) -> ServerTarget:
    """The target the client flags name; ValueError or OSError for a bad flag or file."""
    config.split_host_port(args.server, "--server")
    return ServerTarget(args.server, client_credentials(args), client_metadata(args))


def client_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --ca/--cert/--key, or None for plaintext."""
    if not args.ca:
        if args.cert or args.key:
            raise ValueError("--cert and --key need --ca (client certificates go over TLS)")
        return None
    if bool(args.cert) != bool(args.key):
        raise ValueError("set both --cert and --key")
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    return grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))


def client_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The call metadata --token asks for: a bearer authorization header, or none."""
    return (("authorization", f"Bearer {args.token}"),) if args.token else ()
