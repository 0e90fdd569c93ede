"""KeyBackupManager: versions of data-plane key material, sealed, copied to several places.

Layout: ``/bulwark/v1/keybackups/<key id>/<version, 10 digits>`` in etcd and
``<dir>/keys/<key id>/<version>.bwk`` in each backup directory, each a
``StoredKeyBackup`` (the description and the sealed material).

Guarantees:

* Key material is sealed (``envelope.seal``) before it leaves this module: the
  associated data binds the key id and version, so a copy cannot be passed
  off as another key's or another version's. Material is never logged.
* A version number is taken with a compare-and-swap create in etcd: two
  concurrent backups of one key get different versions, never one overwritten.
* A restore tries etcd, then each directory, and returns the first copy that
  decrypts and verifies; damaged copies met on the way are reported. With no
  intact copy: ``DataLoss``, and nothing returned.
* KEK rotation re-wraps the data key of every copy whose KEK is not the
  target, leaving ciphertexts untouched; copies already under the target are
  skipped, so an interrupted rotation resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from bulwark.v1 import keybackup_pb2
from bulwark_server import timestamps
from bulwark_server.backups import envelope
from bulwark_server.backups.locations import ETCD, BackupDir
from bulwark_server.errors import (
    AlreadyExists,
    Conflict,
    DataLoss,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from bulwark_server.security.identity import caller_name, current_caller
from bulwark_server.security.roles import Role
from bulwark_server.store import Entry, EtcdStore, Page, scan_page
from bulwark_server.store.keys import KEY_BACKUP_KIND, kind_prefix

log = logging.getLogger(__name__)

VERSION_DIGITS = 10
CREATE_ATTEMPTS = 10
PROGRESS_EVERY = 100


def record_name(key_id: str, version: int) -> str:
    return f"{key_id}/{version:0{VERSION_DIGITS}d}"


def file_name(key_id: str, version: int) -> str:
    return f"keys/{key_id}/{version:0{VERSION_DIGITS}d}.bwk"


def associated_data(backup: keybackup_pb2.KeyBackup) -> bytes:
    """What a version's seal binds: its whole description (key id, version, labels,
    creation, size), so an altered description fails like altered material. The KEK
    id is bound by the key's wrapping, the checksum by the ciphertext itself."""
    description = keybackup_pb2.KeyBackup()
    description.CopyFrom(backup)
    for derived in ("kek_id", "ciphertext_sha256", "locations"):
        description.ClearField(derived)
    digest = hashlib.sha256(description.SerializeToString(deterministic=True)).digest()
    return b"bulwark/key-backup/v1\x00" + digest


@dataclass(frozen=True)
class Caller:
    """Who asks, and whether they may act on keys backed up by others."""

    name: str
    privileged: bool

    @classmethod
    def current(cls) -> Caller:
        """The caller of the call being served: operators and admins (and everyone, with
        authentication off) may add versions to anyone's keys; others to their own."""
        caller = current_caller()
        privileged = caller is None or (caller.role is not None and caller.role >= Role.OPERATOR)
        return cls(caller_name(), privileged)


@dataclass
class CopyResult:
    location: str
    state: int
    problem: str = ""
    material: bytes | None = None
    stored: keybackup_pb2.StoredKeyBackup | None = None


class KeyBackupManager:
    """Back up, restore, list, verify and re-wrap key material; see the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        ring: envelope.KeyRing | None,
        dirs: Sequence[BackupDir],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ring = ring
        self._dirs = list(dirs)
        self._clock = clock
        # Key versions this replica verified, and the damaged or missing copies the
        # latest verification found (None: it has verified none).
        self.verified = 0
        self.damaged: int | None = None

    def ring(self) -> envelope.KeyRing:
        if self._ring is None:
            raise FailedPrecondition(
                "no key-encryption key is configured: set BULWARK_KEK_FILE or BULWARK_KEKS"
            )
        return self._ring

    # -- backup -----------------------------------------------------------------

    async def backup(
        self, key_id: str, material: bytes, labels: Mapping[str, str], caller: Caller
    ) -> keybackup_pb2.KeyBackup:
        ring = self.ring()
        # Directories count too: a version etcd lost must never be taken again.
        versions = await self._all_versions(key_id)
        if versions and not caller.privileged:
            owner = self._read_etcd(key_id, versions[-1]) or await self._read_dirs(
                key_id, versions[-1]
            )
            if owner is not None and owner.backup.created_by != caller.name:
                raise PermissionDenied(
                    f"key {key_id!r} was backed up by {owner.backup.created_by!r}; "
                    f"{caller.name!r} may back up only its own keys"
                )
        version = (versions[-1] if versions else 0) + 1
        for _ in range(CREATE_ATTEMPTS):
            stored = self._seal(ring, key_id, version, material, labels, caller.name)
            try:
                await self._store.create(
                    KEY_BACKUP_KIND, record_name(key_id, version), stored.SerializeToString()
                )
                break
            except AlreadyExists:
                version += 1  # another backup of this key took the version first
        else:
            raise Conflict(f"key {key_id!r} is being backed up concurrently; retry")
        locations = [ETCD]
        data = stored.SerializeToString()
        for directory in self._dirs:
            try:
                await asyncio.to_thread(
                    directory.write, file_name(key_id, version), data, exclusive=True
                )
                locations.append(directory.name)
            except OSError as exc:
                log.warning(
                    "key backup %s v%d not copied to %s: %s",
                    key_id,
                    version,
                    directory.name,
                    exc,
                    extra={"event": "keybackup.copy_failed", "location": directory.name},
                )
        out = keybackup_pb2.KeyBackup()
        out.CopyFrom(stored.backup)
        out.locations.extend(locations)
        log.info(
            "key %s version %d backed up by %s to %d locations",
            key_id,
            version,
            caller.name,
            len(locations),
            extra={"event": "keybackup.created", "key_id": key_id, "version": version},
        )
        return out

    def _seal(
        self,
        ring: envelope.KeyRing,
        key_id: str,
        version: int,
        material: bytes,
        labels: Mapping[str, str],
        created_by: str,
    ) -> keybackup_pb2.StoredKeyBackup:
        backup = keybackup_pb2.KeyBackup(
            key_id=key_id,
            version=version,
            labels=dict(labels),
            created_at=timestamps.at(self._clock()),
            created_by=created_by,
            size=len(material),
        )
        sealed = envelope.seal(ring, material, associated_data(backup))
        backup.kek_id = sealed.kek_id
        backup.ciphertext_sha256 = envelope.sha256_hex(sealed.ciphertext)
        return keybackup_pb2.StoredKeyBackup(backup=backup, sealed=sealed)

    # -- restore and verify -----------------------------------------------------

    async def restore(
        self, key_id: str, version: int
    ) -> tuple[keybackup_pb2.KeyBackup, bytes, str, list[str]]:
        """(description, material, location used, damaged copies met)."""
        ring = self.ring()
        if version == 0:
            versions = await self._all_versions(key_id)
            if not versions:
                raise NotFound(f"key {key_id!r} has no backups")
            version = versions[-1]
        damaged: list[str] = []
        for result in await self._copies(ring, key_id, version):
            if result.state == keybackup_pb2.COPY_STATE_OK:
                assert result.material is not None and result.stored is not None
                if damaged:
                    log.warning(
                        "key %s v%d restored from %s; damaged copies: %s",
                        key_id,
                        version,
                        result.location,
                        "; ".join(damaged),
                        extra={"event": "keybackup.damaged", "key_id": key_id},
                    )
                return result.stored.backup, result.material, result.location, damaged
            damaged.append(f"{result.location}: {result.problem}")
        if all(p.endswith(": missing") for p in damaged):
            raise NotFound(f"key {key_id!r} has no version {version}")
        raise DataLoss(f"no intact copy of key {key_id!r} version {version}: " + "; ".join(damaged))

    async def verify(self, key_id: str = "") -> keybackup_pb2.VerifyKeyBackupsResponse:
        ring = self.ring()
        out = keybackup_pb2.VerifyKeyBackupsResponse()
        for kid, version in await self._all_records(key_id):
            out.versions += 1
            results = await self._copies(ring, kid, version)
            good = 0
            for result in results:
                if result.state == keybackup_pb2.COPY_STATE_OK:
                    good += 1
                    continue
                out.problems.add(
                    key_id=kid,
                    version=version,
                    location=result.location,
                    state=result.state,
                    problem=result.problem,
                )
            out.ok += good
            if not good:
                out.lost += 1
        self.verified += out.versions
        self.damaged = len(out.problems)
        return out

    async def _copies(self, ring: envelope.KeyRing, key_id: str, version: int) -> list[CopyResult]:
        """Every copy of one version, each checked: etcd first, then each directory."""
        sources: list[tuple[str, bytes | None]] = []
        entry = await self._store.read(KEY_BACKUP_KIND, record_name(key_id, version))
        sources.append((ETCD, entry.value if entry is not None else None))
        for directory in self._dirs:
            try:
                data = await asyncio.to_thread(directory.read, file_name(key_id, version))
            except OSError as exc:
                sources.append((directory.name, None))
                log.warning("cannot read %s: %s", directory.name, exc)
                continue
            sources.append((directory.name, data))
        return [self._check(ring, key_id, version, name, data) for name, data in sources]

    def _check(
        self, ring: envelope.KeyRing, key_id: str, version: int, location: str, data: bytes | None
    ) -> CopyResult:
        if data is None:
            return CopyResult(location, keybackup_pb2.COPY_STATE_MISSING, "missing")
        corrupt = keybackup_pb2.COPY_STATE_CORRUPT
        try:
            stored = keybackup_pb2.StoredKeyBackup.FromString(data)
        except DecodeError:
            return CopyResult(location, corrupt, "corrupt (not a key backup record)")
        if stored.backup.key_id != key_id or stored.backup.version != version:
            return CopyResult(location, corrupt, "corrupt (holds another key or version)")
        if envelope.sha256_hex(stored.sealed.ciphertext) != stored.backup.ciphertext_sha256:
            return CopyResult(location, corrupt, "corrupt (checksum mismatch)")
        if stored.backup.kek_id != stored.sealed.kek_id:
            return CopyResult(location, corrupt, "corrupt (description names another KEK)")
        try:
            material = envelope.open_sealed(ring, stored.sealed, associated_data(stored.backup))
        except envelope.UnknownKek as exc:
            return CopyResult(location, corrupt, f"unreadable ({exc})")
        except envelope.Corrupt as exc:
            return CopyResult(location, corrupt, f"corrupt ({exc})")
        return CopyResult(location, keybackup_pb2.COPY_STATE_OK, material=material, stored=stored)

    # -- listing ----------------------------------------------------------------

    def list(self, key_id: str, size: int, start_after: str) -> Page[keybackup_pb2.KeyBackup]:
        """One page of the backups in etcd (of one key, or all), and the next page's token.

        Names (tokens) are whole record names, "<key_id>/<version>", either way.
        """
        backups = kind_prefix(KEY_BACKUP_KIND)
        prefix = backups + (f"{key_id}/".encode() if key_id else b"")
        page = scan_page(self._store.cache, prefix, size, start_after, names_under=backups)
        return page.map(_listed)

    def _etcd_versions(self, key_id: str) -> list[int]:
        prefix = kind_prefix(KEY_BACKUP_KIND) + f"{key_id}/".encode()
        return [int(e.key[len(prefix) :]) for e in self._store.cache.scan(prefix)]

    def _read_etcd(self, key_id: str, version: int) -> keybackup_pb2.StoredKeyBackup | None:
        entry = self._store.get(KEY_BACKUP_KIND, record_name(key_id, version))
        if entry is None:
            return None
        try:
            return keybackup_pb2.StoredKeyBackup.FromString(entry.value)
        except DecodeError:
            return None

    async def _read_dirs(self, key_id: str, version: int) -> keybackup_pb2.StoredKeyBackup | None:
        for directory in self._dirs:
            data = await asyncio.to_thread(directory.read, file_name(key_id, version))
            if data is None:
                continue
            try:
                return keybackup_pb2.StoredKeyBackup.FromString(data)
            except DecodeError:
                continue
        return None

    async def _all_versions(self, key_id: str) -> list[int]:
        """Versions of a key in etcd or in any directory (etcd may have lost some)."""
        versions = set(self._etcd_versions(key_id))
        for directory in self._dirs:
            names = await asyncio.to_thread(directory.list, f"keys/{key_id}", ".bwk")
            versions.update(int(n) for n in names if n.isdigit())
        return sorted(versions)

    async def _all_records(self, key_id: str) -> list[tuple[str, int]]:
        prefix = kind_prefix(KEY_BACKUP_KIND)
        found = set()
        for entry in self._store.cache.scan(prefix + (f"{key_id}/".encode() if key_id else b"")):
            kid, _, version = entry.key[len(prefix) :].decode().rpartition("/")
            found.add((kid, int(version)))
        for directory in self._dirs:
            kids = [key_id] if key_id else await asyncio.to_thread(_subdirs, directory.root)
            for kid in kids:
                names = await asyncio.to_thread(directory.list, f"keys/{kid}", ".bwk")
                found.update((kid, int(n)) for n in names if n.isdigit())
        return sorted(found)

    # -- KEK rotation -----------------------------------------------------------

    async def rotate(
        self, target: str
    ) -> AsyncIterator[keybackup_pb2.RotateKeyEncryptionKeyResponse]:
        """Re-wrap every copy under ``target`` (the active KEK if empty), yielding progress."""
        ring = self.ring()
        target = target or ring.active_id
        if target not in ring:
            raise FailedPrecondition(
                f"kek_id: {target!r} is not loaded on this replica (loaded: "
                f"{', '.join(ring.ids())})"
            )
        records = await self._all_records("")
        total = len(records)
        rewrapped = 0
        yield keybackup_pb2.RotateKeyEncryptionKeyResponse(total=total, kek_id=target)
        for done, (key_id, version) in enumerate(records, start=1):
            rewrapped += await self._rewrap_version(ring, key_id, version, target)
            if done % PROGRESS_EVERY == 0 or done == total:
                yield keybackup_pb2.RotateKeyEncryptionKeyResponse(
                    done=done, total=total, rewrapped=rewrapped, kek_id=target
                )
        log.info(
            "key-encryption key rotation to %s: %d of %d versions re-wrapped",
            target,
            rewrapped,
            total,
            extra={"event": "keybackup.rotated", "kek_id": target, "rewrapped": rewrapped},
        )
        yield keybackup_pb2.RotateKeyEncryptionKeyResponse(
            done=total, total=total, rewrapped=rewrapped, finished=True, kek_id=target
        )

    async def _rewrap_version(
        self, ring: envelope.KeyRing, key_id: str, version: int, target: str
    ) -> int:
        """Re-wrap each copy of one version not yet under ``target``; 1 if any was."""
        changed = 0

        def rewrapped(data: bytes) -> bytes | None:
            stored = keybackup_pb2.StoredKeyBackup.FromString(data)
            if stored.sealed.kek_id == target:
                return None
            aad = associated_data(stored.backup)
            stored.sealed.CopyFrom(envelope.rewrap(ring, stored.sealed, aad, target))
            stored.backup.kek_id = target
            return stored.SerializeToString()

        name = record_name(key_id, version)
        try:
            _, written = await self._store.modify(
                KEY_BACKUP_KIND, name, lambda entry: _or_none(rewrapped, entry.value)
            )
            changed |= written
        except NotFound:
            pass  # only in directories: they are handled below
        for directory in self._dirs:
            rel = file_name(key_id, version)
            data = await asyncio.to_thread(directory.read, rel)
            if data is None:
                continue
            new = _or_none(rewrapped, data)
            if new is not None:
                await asyncio.to_thread(directory.write, rel, new)
                changed = 1
        return int(changed)


def _or_none(rewrapped: Callable[[bytes], bytes | None], data: bytes) -> bytes | None:
    """Re-wrapped bytes; None for a copy already done, or one too damaged to re-wrap
    (verification reports those; rotation must not stop on them)."""
    try:
        return rewrapped(data)
    except (DecodeError, envelope.Corrupt, envelope.UnknownKek) as exc:
        log.warning("copy left as it is during rotation: %s", exc)
        return None


def _subdirs(root: Path) -> list[str]:
    keys = root / "keys"
    try:
        return sorted(p.name for p in keys.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def _listed(entry: Entry) -> keybackup_pb2.KeyBackup:
    """A stored backup as listed: its metadata, and etcd among its locations."""
    backup = keybackup_pb2.StoredKeyBackup.FromString(entry.value).backup
    backup.locations.append(ETCD)
    return backup
