"""TLS material from settings: the gRPC port's credentials, replica-to-replica and etcd TLS."""

from __future__ import annotations

from pathlib import Path

import grpc

from bulwark_server.config import Settings
from bulwark_server.store import EtcdTls


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mutual with a client CA) for the gRPC port; None for plaintext."""
    if not settings.tls:
        return None
    client_ca = _read(settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key), _read(settings.tls_cert))],
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
        root_certificates=_read(settings.tls_peer_ca or settings.tls_client_ca),
        private_key=_read(settings.tls_key),
        certificate_chain=_read(settings.tls_cert),
    )


def etcd_tls(settings: Settings) -> EtcdTls | None:
    """TLS to etcd, or None for plaintext."""
    ca = _read(settings.etcd_ca)
    if ca is None:
        return None
    return EtcdTls(ca=ca, cert=_read(settings.etcd_cert), key=_read(settings.etcd_key))
