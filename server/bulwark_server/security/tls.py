"""TLS material from settings: files read once, and the etcd connection's TLS."""

from __future__ import annotations

from pathlib import Path

from bulwark_server.config import Settings
from bulwark_server.store import EtcdTls


def read_pem(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def etcd_tls(settings: Settings) -> EtcdTls | None:
    """TLS to etcd, or None for plaintext."""
    ca = read_pem(settings.etcd_ca)
    if ca is None:
        return None
    return EtcdTls(ca=ca, cert=read_pem(settings.etcd_cert), key=read_pem(settings.etcd_key))
