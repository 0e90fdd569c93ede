"""Backup directories: where copies of key backups and snapshots are kept besides etcd.

* Writes are atomic: the data goes to a temporary file in the same directory,
  is flushed to disk, then renamed over the final name (and the directory is
  flushed), so a reader sees the old copy or the new one, never half of one.
* Files are created mode 0600 in directories of mode 0700: they hold only
  ciphertext, but nobody else has business reading them.
* Every method blocks (file I/O): call them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

ETCD = "etcd"


class BackupDir:
    """One backup directory (a mounted volume per region, in production)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def _path(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"{rel!r} is outside {self.root}")
        return path

    def write(self, rel: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write a file atomically; with ``exclusive``, FileExistsError if it exists."""
        path = self._path(rel)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if exclusive:
                # link() refuses an existing name, unlike rename(): a copy is never replaced.
                os.link(tmp, path)
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return self._path(rel).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, rel_dir: str, suffix: str) -> list[str]:
        """Names (without the suffix) of the files ending in ``suffix`` in a subdirectory."""
        try:
            names = os.listdir(self._path(rel_dir))
        except FileNotFoundError:
            return []
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(rel).unlink()
