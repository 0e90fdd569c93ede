"""The gRPC port's TLS credentials and those a replica presents to another."""

from __future__ import annotations

import grpc

from bulwark_server.config import Settings
from bulwark_server.security.tls import read_pem


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mutual with a client CA) for the gRPC port; None for plaintext."""
    if not settings.tls:
        return None
    client_ca = read_pem(settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(read_pem(settings.tls_key), read_pem(settings.tls_cert))],
        root_certificates=client_ca,
        # gRPC can require a client certificate or not ask for one; nothing between.
        require_client_auth=client_ca is not None,
    )


def peer_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """How a replica reaches another (forwarding to the leader); None for plaintext.

    It trusts the peer CA (by default the client CA: replicas are usually issued
    by the same CA) and presents its own certificate, which therefore needs the
    client-auth usage.
    """
    if not settings.tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(settings.tls_peer_ca or settings.tls_client_ca),
        private_key=read_pem(settings.tls_key),
        certificate_chain=read_pem(settings.tls_cert),
    )
