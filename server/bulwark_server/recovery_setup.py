"""Where a replica's key backups and snapshots go, and the keys that seal them, from its
settings."""

from __future__ import annotations

import logging
import os

from bulwark_server.backups.envelope import KeyRing
from bulwark_server.backups.locations import BackupDir
from bulwark_server.config import Settings

log = logging.getLogger(__name__)


def key_ring(settings: Settings) -> KeyRing | None:
    """The key-encryption keys; with the embedded etcd and none configured, a local one.

    Raises RuntimeError for a KEK file or list that cannot be used.
    """
    try:
        if settings.kek_file is not None:
            return KeyRing.load(settings.kek_file, settings.kek_active)
        if settings.keks:
            return KeyRing.parse(settings.keks, settings.kek_active)
    except (ValueError, OSError) as exc:
        raise RuntimeError(f"key-encryption keys: {exc}") from None
    if not settings.embedded_etcd:
        log.warning(
            "no key-encryption key configured: key backups and snapshots are off "
            "(set BULWARK_KEK_FILE)",
            extra={"event": "backups.no_kek"},
        )
        return None
    path = settings.data_dir.resolve() / "keys" / "kek"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(KeyRing.generate_entry("local-1") + "\n")
        log.warning(
            "made a local key-encryption key in %s for the embedded etcd; "
            "production replicas take BULWARK_KEK_FILE",
            path,
            extra={"event": "backups.local_kek"},
        )
    try:
        return KeyRing.load(path, settings.kek_active)
    except (ValueError, OSError) as exc:
        raise RuntimeError(f"key-encryption keys: {exc}") from None


def backup_dirs(settings: Settings) -> list[BackupDir]:
    """Where key backups and snapshots are copied; with the embedded etcd and none
    configured, ``var/backups``."""
    dirs = list(settings.backup_dirs)
    if not dirs and settings.embedded_etcd:
        dirs = [settings.data_dir.resolve() / "backups"]
    return [BackupDir(d) for d in dirs]
