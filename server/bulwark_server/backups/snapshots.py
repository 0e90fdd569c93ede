"""RecoveryManager: snapshots of every Bulwark key, restores, drills, and the schedule.

Layout in each backup directory: ``snapshots/<id>.bws`` (a ``StoredSnapshot``:
the manifest and the sealed ``SnapshotContents``) and ``snapshots/<id>.json``
(the same manifest as JSON, for people and scripts).

Guarantees:

* A snapshot holds every key under ``/bulwark/v1/`` read at ONE etcd revision,
  except keys held on leases (the leader, replicas, permits, instances): they
  live only as long as their holders, and a restore must not resurrect them.
* It is sealed like a key backup (the snapshot id bound as associated data)
  before it is written; a restore or drill first finds a copy whose checksum
  and authentication tag both verify, trying each directory, and refuses with
  ``DataLoss`` when none does. Nothing is written from a bad snapshot.
* A restore writes into an empty prefix (leased keys aside), or wipes it first
  when asked, in dependency order: configuration, then state, then key backups.
  The audit trail and revoked-token tombstones are never wiped (a restore adds
  the snapshot's to them), and a token revoked since the snapshot stays revoked.
* A drill restores into a scratch prefix outside ``/bulwark/v1/`` (replicas
  never see it), reads it back, compares, and deletes it, even when it fails.
* The leader takes a snapshot every ``interval`` (when the newest is older) and
  keeps the newest ``retention`` scheduled ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from bulwark.v1 import keybackup_pb2, recovery_pb2
from bulwark_server import timestamps
from bulwark_server.backups import envelope
from bulwark_server.backups.locations import BackupDir
from bulwark_server.cluster.election import Election, LeaderTask
from bulwark_server.errors import (
    DataLoss,
    FailedPrecondition,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from bulwark_server.store import MAX_TXN_OPS, Entry, EtcdStore
from bulwark_server.store.keys import (
    ALERT_KIND,
    AUDIT_KIND,
    DRILL_KIND,
    LAST_DRILL_NAME,
    LAST_RESTORE_NAME,
    PREFIX,
    RESTORE_KIND,
    TOKEN_REVOCATION_KIND,
    split_key,
)

log = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
SCRATCH = b"/bulwark-drill/"
SCHEDULED_BY = "schedule"
# Restore order: what others refer to first, key material last.
CONFIGURATION = ("tokens", "breakers", "bulkheads", "limits", "features", "primaries")
KEY_MATERIAL = ("keybackups",)
MAX_DIFFERENCES = 20
# History a restore adds to but never replaces: the audit trail, and the tombstones of
# revoked tokens (restoring an older snapshot must not bring a revoked token back).
KEPT_ON_WIPE = (AUDIT_KIND, TOKEN_REVOCATION_KIND, DRILL_KIND, RESTORE_KIND)
# The leader's view of now: a restore neither deletes nor brings back older versions
# of alerts; the leader raises and resolves what the restored state calls for.
LIVE = (ALERT_KIND,)
NOT_WIPED = (*KEPT_ON_WIPE, *LIVE)

Progress = recovery_pb2.Progress


def associated_data(snapshot_id: str) -> bytes:
    return f"bulwark/snapshot/v1\x00{snapshot_id}".encode()


def _kind(key: bytes) -> str:
    try:
        return split_key(key)[0]
    except (ValueError, UnicodeDecodeError):
        return "?"


def restore_order(
    entries: Sequence[recovery_pb2.SnapshotEntry],
) -> list[recovery_pb2.SnapshotEntry]:
    """Entries sorted for a restore: configuration kinds, then state, then key material."""

    def rank(entry: recovery_pb2.SnapshotEntry) -> tuple[int, int, bytes]:
        kind = _kind(entry.key)
        if kind in CONFIGURATION:
            return (0, CONFIGURATION.index(kind), entry.key)
        if kind in KEY_MATERIAL:
            return (2, 0, entry.key)
        return (1, 0, entry.key)

    return sorted(entries, key=rank)


def _seal(
    ring: envelope.KeyRing, revision: int, kept: Sequence[Entry], snapshot_id: str
) -> tuple[keybackup_pb2.SealedData, collections.Counter[str]]:
    """A snapshot's sealed contents, and its keys counted by kind."""
    contents = recovery_pb2.SnapshotContents(
        revision=revision,
        entries=[recovery_pb2.SnapshotEntry(key=e.key, value=e.value) for e in kept],
    )
    counts = collections.Counter(_kind(e.key) for e in kept)
    return envelope.seal(ring, contents.SerializeToString(), associated_data(snapshot_id)), counts


def _differences(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> list[bytes]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class RecoveryManager:
    """Snapshots, restores and drills; see the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        ring: envelope.KeyRing | None,
        dirs: Sequence[BackupDir],
        *,
        interval: float = 3600.0,
        retention: int = 24,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._election = election
        self._ring = ring
        self._dirs = list(dirs)
        self.interval = interval
        self._retention = retention
        self._clock = clock
        self._lock = asyncio.Lock()
        # The newest snapshot this replica took or found (its schedule lists them while
        # it leads); 0 when none is known yet.
        self.newest_snapshot_at = 0.0
        self._scheduler = LeaderTask(
            election,
            self._schedule,
            "snapshot-schedule",
            enabled=interval > 0 and bool(self._dirs) and ring is not None,
        )

    def _require(self) -> envelope.KeyRing:
        if not self._dirs:
            raise FailedPrecondition("no backup directory is configured: set BULWARK_BACKUP_DIRS")
        if self._ring is None:
            raise FailedPrecondition(
                "no key-encryption key is configured: set BULWARK_KEK_FILE or BULWARK_KEKS"
            )
        return self._ring

    # -- create -----------------------------------------------------------------

    async def create(
        self, created_by: str
    ) -> AsyncIterator[tuple[Progress, recovery_pb2.Snapshot | None]]:
        """Take a snapshot; yield progress, then (final progress, the snapshot)."""
        ring = self._require()
        async with self._lock:
            yield Progress(phase="reading"), None
            revision, entries = await self._store.read_all(PREFIX.encode())
            kept = [e for e in entries if not e.lease]
            yield Progress(phase="reading", done=len(kept), total=len(kept)), None
            now = self._clock()
            stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%S")
            snapshot_id = f"{stamp}{int(now * 1000) % 1000:03d}Z-{revision}"
            yield Progress(phase="sealing", total=len(kept)), None
            # Built, serialized and sealed in a thread: at 300,000 keys that is seconds
            # of work, which on the event loop would hold every RPC (and the leader's
            # lease renewals) for as long.
            sealed, counts = await asyncio.to_thread(_seal, ring, revision, kept, snapshot_id)
            manifest = recovery_pb2.Snapshot(
                id=snapshot_id,
                revision=revision,
                created_at=timestamps.at(now),
                keys=len(kept),
                sha256=envelope.sha256_hex(sealed.ciphertext),
                kek_id=sealed.kek_id,
                created_by=created_by,
            )
            manifest.counts.update(counts)
            stored = recovery_pb2.StoredSnapshot(manifest=manifest, sealed=sealed)
            data = stored.SerializeToString()
            text = json_format.MessageToJson(manifest, preserving_proto_field_name=True)
            written = []
            for i, directory in enumerate(self._dirs):
                yield Progress(phase="writing", done=i, total=len(self._dirs)), None
                try:
                    await asyncio.to_thread(
                        directory.write, f"{SNAPSHOT_DIR}/{snapshot_id}.bws", data
                    )
                    await asyncio.to_thread(
                        directory.write, f"{SNAPSHOT_DIR}/{snapshot_id}.json", text.encode()
                    )
                    written.append(directory.name)
                except OSError as exc:
                    log.warning(
                        "snapshot %s not written to %s: %s", snapshot_id, directory.name, exc
                    )
            if not written:
                raise StoreUnavailable(f"snapshot {snapshot_id} could not be written anywhere")
            manifest.locations.extend(written)
            self.newest_snapshot_at = max(self.newest_snapshot_at, now)
            log.info(
                "snapshot %s taken at revision %d: %d keys, %d locations",
                snapshot_id,
                revision,
                len(kept),
                len(written),
                extra={"event": "snapshot.created", "snapshot": snapshot_id, "keys": len(kept)},
            )
            yield Progress(phase="done", done=len(kept), total=len(kept)), manifest

    # -- list and load ----------------------------------------------------------

    async def list(self) -> list[recovery_pb2.Snapshot]:
        """Every snapshot found in any directory, newest first, with where it is."""
        found: dict[str, recovery_pb2.Snapshot] = {}
        for directory in self._dirs:
            for snapshot_id in await asyncio.to_thread(directory.list, SNAPSHOT_DIR, ".json"):
                manifest = found.get(snapshot_id)
                if manifest is None:
                    text = await asyncio.to_thread(
                        directory.read, f"{SNAPSHOT_DIR}/{snapshot_id}.json"
                    )
                    try:
                        manifest = json_format.Parse(text or b"", recovery_pb2.Snapshot())
                    except json_format.ParseError:
                        continue
                    found[snapshot_id] = manifest
                manifest.locations.append(directory.name)
        return sorted(found.values(), key=lambda m: (m.created_at.seconds, m.id), reverse=True)

    async def load(
        self, snapshot_id: str
    ) -> tuple[recovery_pb2.Snapshot, recovery_pb2.SnapshotContents]:
        """The manifest and contents of the first intact copy; DataLoss if none is."""
        ring = self._require()
        if not snapshot_id:
            snapshots = await self.list()
            if not snapshots:
                raise NotFound("there is no snapshot yet")
            snapshot_id = snapshots[0].id
        problems = []
        for directory in self._dirs:
            data = await asyncio.to_thread(directory.read, f"{SNAPSHOT_DIR}/{snapshot_id}.bws")
            if data is None:
                problems.append(f"{directory.name}: missing")
                continue
            try:
                stored = recovery_pb2.StoredSnapshot.FromString(data)
                if stored.manifest.id != snapshot_id:
                    raise envelope.Corrupt("holds another snapshot")
                if envelope.sha256_hex(stored.sealed.ciphertext) != stored.manifest.sha256:
                    raise envelope.Corrupt("checksum mismatch")
                plain = await asyncio.to_thread(
                    envelope.open_sealed, ring, stored.sealed, associated_data(snapshot_id)
                )
                contents = recovery_pb2.SnapshotContents.FromString(plain)
            except (DecodeError, envelope.Corrupt, envelope.UnknownKek) as exc:
                problems.append(f"{directory.name}: corrupt ({exc})")
                continue
            if problems:
                log.warning("snapshot %s: damaged copies: %s", snapshot_id, "; ".join(problems))
            manifest = stored.manifest
            manifest.locations.append(directory.name)
            return manifest, contents
        if all(p.endswith(": missing") for p in problems):
            raise NotFound(f"snapshot {snapshot_id!r} does not exist")
        raise DataLoss(f"no intact copy of snapshot {snapshot_id!r}: " + "; ".join(problems))

    # -- restore ----------------------------------------------------------------

    async def restore(
        self, snapshot_id: str, wipe: bool
    ) -> AsyncIterator[tuple[Progress, recovery_pb2.RestoreSnapshotResponse | None]]:
        """Restore a verified snapshot; yield progress, then the result."""
        yield Progress(phase="verifying"), None
        manifest, contents = await self.load(snapshot_id)
        async with self._lock:
            _, current = await self._store.read_all(PREFIX.encode())
            present = [e for e in current if not e.lease and _kind(e.key) not in NOT_WIPED]
            revoked = {split_key(e.key)[1] for e in current if _kind(e.key) == "token-revocations"}
            if present and not wipe:
                raise FailedPrecondition(
                    f"{len(present)} Bulwark keys exist: restore into an empty prefix, or "
                    "pass wipe to delete them first"
                )
            wiped = 0
            if present:
                async for progress in self._batched("wiping", present, self._delete_batch):
                    yield progress, None
                wiped = len(present)
            kept = {e.key: e.value for e in current if _kind(e.key) in KEPT_ON_WIPE}
            ordered = [
                e
                for e in restore_order(contents.entries)
                if not (_kind(e.key) == "tokens" and split_key(e.key)[1] in revoked)
                and _kind(e.key) not in LIVE
                # History that was kept needs no rewrite where it is unchanged.
                and kept.get(e.key) != e.value
            ]
            async for progress in self._batched("restoring", ordered, self._put_batch(b"")):
                yield progress, None
        log.info(
            "snapshot %s restored: %d keys written, %d wiped",
            manifest.id,
            len(ordered),
            wiped,
            extra={"event": "snapshot.restored", "snapshot": manifest.id},
        )
        record = recovery_pb2.RestoreRecord(
            finished_at=timestamps.at(self._clock()),
            snapshot_id=manifest.id,
            restored=len(ordered),
            wiped=wiped,
        )
        try:
            await self._store.put(RESTORE_KIND, LAST_RESTORE_NAME, record.SerializeToString())
        except StoreUnavailable as exc:  # the restore itself went through
            log.warning("the record of a restore was not kept: %s", exc)
        result = recovery_pb2.RestoreSnapshotResponse(
            snapshot=manifest, restored=len(ordered), wiped=wiped
        )
        yield Progress(phase="done", done=len(ordered), total=len(ordered)), result

    async def _delete_batch(self, batch: Sequence[Entry]) -> None:
        await self._store.delete_raw([e.key for e in batch])

    def _put_batch(
        self, prefix: bytes
    ) -> Callable[[Sequence[recovery_pb2.SnapshotEntry]], AsyncIterator[None] | object]:
        async def put(batch: Sequence[recovery_pb2.SnapshotEntry]) -> None:
            await self._store.put_raw([(prefix + e.key, e.value) for e in batch])

        return put

    async def _batched(
        self, phase: str, items: Sequence[object], write: Callable[..., object]
    ) -> AsyncIterator[Progress]:
        total = len(items)
        yield Progress(phase=phase, total=total)
        for start in range(0, total, MAX_TXN_OPS):
            await write(items[start : start + MAX_TXN_OPS])  # type: ignore[misc]
            yield Progress(phase=phase, done=min(total, start + MAX_TXN_OPS), total=total)

    # -- drill ------------------------------------------------------------------

    async def drill(
        self, snapshot_id: str
    ) -> AsyncIterator[tuple[Progress, recovery_pb2.DrillReport | None]]:
        """Restore into scratch space, compare, clean up; yield progress, then the report.
        The outcome is kept as the last drill (``last_drill``): a report, or no intact
        copy of the snapshot to restore."""
        try:
            async for progress, report in self._drill(snapshot_id):
                if report is not None:
                    await self._keep_drill(report.mismatched == 0, report, "")
                yield progress, report
        except DataLoss as exc:
            await self._keep_drill(False, None, str(exc))
            raise

    def last_drill(self) -> recovery_pb2.DrillRecord | None:
        """The latest drill's outcome, whichever replica ran it (from the cache)."""
        entry = self._store.get(DRILL_KIND, LAST_DRILL_NAME)
        return None if entry is None else recovery_pb2.DrillRecord.FromString(entry.value)

    def last_restore(self) -> recovery_pb2.RestoreRecord | None:
        """The latest restore, whichever replica ran it (from the cache)."""
        entry = self._store.get(RESTORE_KIND, LAST_RESTORE_NAME)
        return None if entry is None else recovery_pb2.RestoreRecord.FromString(entry.value)

    async def _keep_drill(
        self, succeeded: bool, report: recovery_pb2.DrillReport | None, error: str
    ) -> None:
        record = recovery_pb2.DrillRecord(
            finished_at=timestamps.at(self._clock()), succeeded=succeeded, error=error
        )
        if report is not None:
            record.report.CopyFrom(report)
        try:
            await self._store.put(DRILL_KIND, LAST_DRILL_NAME, record.SerializeToString())
        except StoreUnavailable as exc:  # the drill's own answer matters more
            log.warning("the outcome of a drill was not kept: %s", exc)

    async def _drill(
        self, snapshot_id: str
    ) -> AsyncIterator[tuple[Progress, recovery_pb2.DrillReport | None]]:
        began = self._clock()
        scratch = SCRATCH + f"{int(began * 1000)}/".encode()
        started = time.monotonic()
        yield Progress(phase="verifying"), None
        manifest, contents = await self.load(snapshot_id)
        try:
            async for progress in self._batched(
                "restoring", restore_order(contents.entries), self._put_batch(scratch)
            ):
                yield progress, None
            rto = time.monotonic() - started
            yield Progress(phase="comparing", total=len(contents.entries)), None
            _, restored = await self._store.read_all(scratch)
            expected = {e.key: e.value for e in contents.entries}
            got = {e.key[len(scratch) :]: e.value for e in restored}
            mismatched = _differences(expected, got)
            _, live_entries = await self._store.read_all(PREFIX.encode())
            # History a restore keeps rather than replaces is no difference.
            changed = _differences(
                {k: v for k, v in expected.items() if _kind(k) not in NOT_WIPED},
                {
                    e.key: e.value
                    for e in live_entries
                    if not e.lease and _kind(e.key) not in NOT_WIPED
                },
            )
        finally:
            # No progress message here: a stream the caller closed cannot send one.
            with contextlib.suppress(StoreUnavailable):
                await self._store.delete_prefix(scratch)
        report = recovery_pb2.DrillReport(
            snapshot_id=manifest.id,
            keys=len(expected),
            mismatched=len(mismatched),
            changed_since=len(changed),
            differences=[
                k.decode(errors="replace") for k in (mismatched or changed)[:MAX_DIFFERENCES]
            ],
        )
        report.rto.FromNanoseconds(int(rto * 1e9))
        report.rpo.FromNanoseconds(
            int(max(0.0, began - timestamps.unix(manifest.created_at)) * 1e9)
        )
        log.info(
            "drill on snapshot %s: RTO %.3fs, RPO %.1fs, %d mismatched, %d changed since",
            manifest.id,
            rto,
            report.rpo.ToNanoseconds() / 1e9,
            len(mismatched),
            len(changed),
            extra={"event": "snapshot.drill", "snapshot": manifest.id},
        )
        yield Progress(phase="done", done=len(expected), total=len(expected)), report

    # -- the schedule (leader) --------------------------------------------------

    async def stop(self) -> None:
        await self._scheduler.stop()

    async def _schedule(self) -> None:
        while True:
            try:
                snapshots = await self.list()
                newest = timestamps.unix(snapshots[0].created_at) if snapshots else 0.0
                self.newest_snapshot_at = max(self.newest_snapshot_at, newest)
                wait = newest + self.interval - self._clock()
                if wait <= 0 and self._election.is_leader:
                    async for _ in self.create(SCHEDULED_BY):
                        pass
                    await self.prune()
                    wait = self.interval
            except (StoreUnavailable, NotLeader, FailedPrecondition) as exc:
                log.warning("scheduled snapshot failed: %s", exc)
                wait = min(self.interval, 60.0)
            except Exception:
                log.exception("scheduled snapshot failed")
                wait = min(self.interval, 60.0)
            await asyncio.sleep(max(1.0, wait))

    async def prune(self) -> int:
        """Delete the scheduled snapshots beyond the newest ``retention``."""
        scheduled = [s for s in await self.list() if s.created_by == SCHEDULED_BY]
        doomed = scheduled[self._retention :]
        for snapshot in doomed:
            for directory in self._dirs:
                for suffix in (".bws", ".json"):
                    await asyncio.to_thread(
                        directory.delete, f"{SNAPSHOT_DIR}/{snapshot.id}{suffix}"
                    )
        return len(doomed)
