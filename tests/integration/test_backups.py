"""Key backups, snapshots, restores and drills against a real etcd and real `bulwark serve`.

* Key backups survive a key-encryption-key rotation: ciphertexts stay byte-equal,
  only the wrapping changes, a second run re-wraps nothing, and a replica holding
  only the new KEK restores every version.
* Each copy (etcd, each backup directory) is checked on its own: a flipped byte, a
  truncated or a deleted copy is reported, and a restore falls back to another
  intact copy; with none left, DATA_LOSS and no material.
* Key material never reaches etcd, a file or a log line in plaintext (nor in hex
  or base64).
* A snapshot restores every non-leased key byte-equal after a wipe or a loss; a
  corrupt snapshot writes nothing; a revoked token stays revoked.
* A drill reports RTO, RPO and the changes since the snapshot, and leaves no
  scratch keys behind. Scheduled snapshots are pruned to the retention.
* Roles: data planes back up (only their own keys), operators list and verify,
  admins restore, rotate and drill.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from bulwark.v1 import (
    alert_pb2,
    alert_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    keybackup_pb2,
    keybackup_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
)
from bulwark_server.backups.envelope import KeyRing
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store import _etcd_client as ec
from tests.integration.conftest import wait_for

Code = grpc.StatusCode
Factory = Callable[..., ReplicaProcess]
COPY_OK = keybackup_pb2.COPY_STATE_OK
MISSING = keybackup_pb2.COPY_STATE_MISSING
CORRUPT = keybackup_pb2.COPY_STATE_CORRUPT
PREFIX = b"/bulwark/v1/"
KEYBACKUPS = PREFIX + b"keybackups/"
AUDIT = PREFIX + b"audit/"
REVOCATIONS = PREFIX + b"token-revocations/"
DRILLS = PREFIX + b"drills/last"
RESTORES = PREFIX + b"restores/last"
ALERTS = PREFIX + b"alerts/"
TOKENS = PREFIX + b"tokens/"
SCRATCH = b"/bulwark-drill/"
TIMEOUT = 10.0


# -- etcd, read and written directly ----------------------------------------------------


class EtcdKV:
    """A plain gRPC client of etcd's KV API, to read and damage what Bulwark stored."""

    def __init__(self, endpoint: str) -> None:
        self._channel = grpc.insecure_channel(endpoint)
        self._kv = ec.rpc_grpc.KVStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def range(self, prefix: bytes = b"", revision: int = 0) -> dict[bytes, Any]:
        """Every key under ``prefix`` (everything for b"") -> its KeyValue."""
        key, end = (b"\0", b"\0") if not prefix else (prefix, ec.prefix_range_end(prefix))
        response = self._kv.Range(
            ec.rpc_pb2.RangeRequest(key=key, range_end=end, revision=revision), timeout=TIMEOUT
        )
        return {kv.key: kv for kv in response.kvs}

    def get(self, key: bytes) -> bytes | None:
        kvs = self._kv.Range(ec.rpc_pb2.RangeRequest(key=key), timeout=TIMEOUT).kvs
        return bytes(kvs[0].value) if kvs else None

    def put(self, key: bytes, value: bytes) -> None:
        self._kv.Put(ec.rpc_pb2.PutRequest(key=key, value=value), timeout=TIMEOUT)

    def delete(self, key: bytes) -> int:
        response = self._kv.DeleteRange(ec.rpc_pb2.DeleteRangeRequest(key=key), timeout=TIMEOUT)
        return int(response.deleted)

    def durable(self, revision: int = 0) -> dict[bytes, Any]:
        """Bulwark's keys a snapshot holds and a restore compares: not leased, not the
        history a restore keeps (the audit trail, the last drill)."""
        return {
            k: kv
            for k, kv in self.range(PREFIX, revision).items()
            if not kv.lease and not k.startswith(AUDIT) and k != DRILLS
        }


@pytest.fixture
def kv(etcd: EtcdMember) -> Iterator[EtcdKV]:
    client = EtcdKV(etcd.endpoint)
    try:
        yield client
    finally:
        client.close()


# -- Bulwark clients --------------------------------------------------------------------


@dataclass
class Client:
    """Stubs of one replica, calling with one bearer token (or none)."""

    channel: grpc.Channel
    token: str = ""

    def __post_init__(self) -> None:
        self.keys = keybackup_pb2_grpc.KeyBackupServiceStub(self.channel)
        self.recovery = recovery_pb2_grpc.RecoveryServiceStub(self.channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(self.channel)
        self.limits = ratelimit_pb2_grpc.RateLimitServiceStub(self.channel)
        self.features = feature_pb2_grpc.FeatureServiceStub(self.channel)
        self.bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(self.channel)

    @property
    def opts(self) -> dict[str, Any]:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return {"timeout": TIMEOUT, "metadata": metadata}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def backup(self, key_id: str, material: bytes, **labels: str) -> keybackup_pb2.KeyBackup:
        request = keybackup_pb2.BackupKeyRequest(key_id=key_id, material=material, labels=labels)
        return self.keys.BackupKey(request, **self.opts).backup

    def restore(self, key_id: str, version: int = 0) -> keybackup_pb2.RestoreKeyResponse:
        request = keybackup_pb2.RestoreKeyRequest(key_id=key_id, version=version)
        return self.keys.RestoreKey(request, **self.opts)

    def list(self, key_id: str = "") -> list[keybackup_pb2.KeyBackup]:
        out, token = [], ""
        while True:
            page = self.keys.ListKeyBackups(
                keybackup_pb2.ListKeyBackupsRequest(key_id=key_id, page_size=3, page_token=token),
                **self.opts,
            )
            out.extend(page.backups)
            token = page.next_page_token
            if not token:
                return out

    def verify(self, key_id: str = "") -> keybackup_pb2.VerifyKeyBackupsResponse:
        request = keybackup_pb2.VerifyKeyBackupsRequest(key_id=key_id)
        return self.keys.VerifyKeyBackups(request, **self.opts)

    def rotate(self, kek_id: str) -> list[keybackup_pb2.RotateKeyEncryptionKeyResponse]:
        request = keybackup_pb2.RotateKeyEncryptionKeyRequest(kek_id=kek_id)
        return list(self.keys.RotateKeyEncryptionKey(request, **self.opts))

    def snapshot(self) -> list[recovery_pb2.CreateSnapshotResponse]:
        request = recovery_pb2.CreateSnapshotRequest()
        return list(self.recovery.CreateSnapshot(request, **self.opts))

    def snapshots(self) -> list[recovery_pb2.Snapshot]:
        request = recovery_pb2.ListSnapshotsRequest()
        return list(self.recovery.ListSnapshots(request, **self.opts).snapshots)

    def restore_snapshot(
        self, snapshot_id: str = "", wipe: bool = False
    ) -> list[recovery_pb2.RestoreSnapshotResponse]:
        request = recovery_pb2.RestoreSnapshotRequest(snapshot_id=snapshot_id, wipe=wipe)
        return list(self.recovery.RestoreSnapshot(request, **self.opts))

    def drill(self, snapshot_id: str = "") -> list[recovery_pb2.RunDrillResponse]:
        request = recovery_pb2.RunDrillRequest(snapshot_id=snapshot_id)
        return list(self.recovery.RunDrill(request, **self.opts))

    def create_token(self, name: str, role: int) -> auth_pb2.CreateTokenResponse:
        request = auth_pb2.CreateTokenRequest(name=name, role=role)
        return self.auth.CreateToken(request, **self.opts)

    def whoami(self) -> auth_pb2.WhoAmIResponse:
        return self.auth.WhoAmI(auth_pb2.WhoAmIRequest(), **self.opts)


def connect(replica: ReplicaProcess, token: str = "") -> Client:
    return Client(grpc.insecure_channel(replica.address), token)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The error a call (or the whole stream it returns) ends with; fails if it succeeds."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return caught.value


def code_of(call: Callable[[], object]) -> Code:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]
    return Code.OK


# -- replicas and their files -----------------------------------------------------------


def start(factory: Factory, etcd: EtcdMember, name: str, *extra: str) -> ReplicaProcess:
    """A replica of ``etcd`` with scheduled snapshots off (a later flag in ``extra`` wins)."""
    return factory(name, [etcd.endpoint], "--snapshot-interval=0", *extra)


def dirs_flag(*dirs: Path) -> str:
    return "--backup-dirs=" + ",".join(str(d) for d in dirs)


def key_file(directory: Path, key_id: str, version: int) -> Path:
    return directory / "keys" / key_id / f"{version:010d}.bwk"


def etcd_key(key_id: str, version: int) -> bytes:
    return KEYBACKUPS + f"{key_id}/{version:010d}".encode()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def flip_ciphertext(data: bytes) -> bytes:
    """A StoredKeyBackup/StoredSnapshot's bytes with one byte of its ciphertext flipped."""
    for kind in (keybackup_pb2.StoredKeyBackup, recovery_pb2.StoredSnapshot):
        try:
            ciphertext = kind.FromString(data).sealed.ciphertext
        except DecodeError:
            continue
        if ciphertext and data.count(ciphertext) == 1:
            return flip(data, data.index(ciphertext) + len(ciphertext) // 2)
    raise AssertionError("no ciphertext found to flip")


def write_kek_file(path: Path, *entries: str) -> Path:
    path.write_text("".join(e + "\n" for e in entries))
    path.chmod(0o600)
    return path


def phases(messages: list[Any]) -> list[str]:
    out: list[str] = []
    for message in messages:
        if not out or out[-1] != message.progress.phase:
            out.append(message.progress.phase)
    return out


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulwark_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- 1. KEK rotation ------------------------------------------------------------------


def stored_copies(
    kv: EtcdKV, dirs: list[Path], versions: list[tuple[str, int]]
) -> dict[tuple[str, int, str], keybackup_pb2.StoredKeyBackup]:
    """Every copy of every version, parsed: (key id, version, location) -> record."""
    out = {}
    for key_id, version in versions:
        value = kv.get(etcd_key(key_id, version))
        assert value is not None, (key_id, version)
        out[(key_id, version, "etcd")] = keybackup_pb2.StoredKeyBackup.FromString(value)
        for d in dirs:
            data = key_file(d, key_id, version).read_bytes()
            out[(key_id, version, str(d))] = keybackup_pb2.StoredKeyBackup.FromString(data)
    return out


def test_round_trip_across_kek_rotation(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    k1, k2 = KeyRing.generate_entry("k1"), KeyRing.generate_entry("k2")
    dirs = [tmp_path / "backup-a", tmp_path / "backup-b"]
    replica = start(
        replica_factory, etcd, "rot1", f"--keks={k1},{k2}", "--kek-active=k1", dirs_flag(*dirs)
    )
    materials: dict[tuple[str, int], bytes] = {}
    with connect(replica) as c:
        for i in range(5):
            for version in (1, 2):
                material = secrets.token_bytes(16 + 8 * i + version)
                backup = c.backup(f"svc-{i}.signing", material, purpose="test")
                assert backup.version == version
                assert backup.kek_id == "k1"
                assert backup.size == len(material)
                assert list(backup.locations) == ["etcd", *map(str, dirs)]
                materials[(f"svc-{i}.signing", version)] = material
        before = stored_copies(kv, dirs, list(materials))
        assert {s.sealed.kek_id for s in before.values()} == {"k1"}

        first = c.rotate("k2")
        assert first[-1] == keybackup_pb2.RotateKeyEncryptionKeyResponse(
            done=10, total=10, rewrapped=10, finished=True, kek_id="k2"
        )
        assert not any(m.finished for m in first[:-1])
        assert all(m.total == 10 and m.kek_id == "k2" for m in first)
        dones = [m.done for m in first]
        assert dones == sorted(dones)

        second = c.rotate("k2")
        assert second[-1] == keybackup_pb2.RotateKeyEncryptionKeyResponse(
            done=10, total=10, rewrapped=0, finished=True, kek_id="k2"
        )

        after = stored_copies(kv, dirs, list(materials))
        assert after.keys() == before.keys()
        for where, old in before.items():
            new = after[where]
            assert new.sealed.ciphertext == old.sealed.ciphertext, where
            assert new.sealed.nonce == old.sealed.nonce, where
            assert new.sealed.kek_id == "k2" and new.backup.kek_id == "k2", where
            assert new.sealed.wrapped_key != old.sealed.wrapped_key, where
            assert new.backup.ciphertext_sha256 == old.backup.ciphertext_sha256, where
        assert {b.kek_id for b in c.list()} == {"k2"}
    replica.stop()

    # Only k2 now: every version must still open.
    kek_file = write_kek_file(tmp_path / "kek-k2", k2)
    replica = start(replica_factory, etcd, "rot2", f"--kek-file={kek_file}", dirs_flag(*dirs))
    with connect(replica) as c:
        for (key_id, version), material in materials.items():
            restored = c.restore(key_id, version)
            assert restored.material == material, (key_id, version)
            assert restored.location == "etcd" and not restored.damaged
            assert restored.backup.kek_id == "k2"
            assert restored.backup.labels == {"purpose": "test"}
        assert c.restore("svc-3.signing").backup.version == 2  # 0: the latest
        verified = c.verify()
        assert (verified.versions, verified.ok, verified.lost) == (10, 30, 0)
        assert not verified.problems
        err = rpc_error(lambda: c.rotate("k1"))
        assert err.code() == Code.FAILED_PRECONDITION
        assert "k1" in (err.details() or "")


# -- 2. damaged copies ----------------------------------------------------------------


def test_damaged_copies_are_reported_and_skipped(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    d1, d2 = tmp_path / "backup-1", tmp_path / "backup-2"
    replica = start(
        replica_factory, etcd, "tamper", f"--keks={KeyRing.generate_entry('k1')}", dirs_flag(d1, d2)
    )
    material = secrets.token_bytes(48)
    locations = ["etcd", str(d1), str(d2)]
    key = etcd_key("tampered", 1)
    files = {str(d1): key_file(d1, "tampered", 1), str(d2): key_file(d2, "tampered", 1)}
    with connect(replica) as c:
        c.backup("tampered", material)
        originals = {"etcd": kv.get(key), **{loc: f.read_bytes() for loc, f in files.items()}}

        def damage(location: str) -> None:
            original = originals[location]
            assert original is not None
            if location == "etcd":
                kv.put(key, flip_ciphertext(original))
            else:
                files[location].write_bytes(flip_ciphertext(original))

        def repair() -> None:
            kv.put(key, originals["etcd"] or b"")
            for loc, f in files.items():
                f.write_bytes(originals[loc] or b"")

        def problems() -> set[tuple[str, int]]:
            verified = c.verify("tampered")
            assert verified.versions == 1
            assert verified.ok == 3 - len(verified.problems)
            assert verified.lost == (1 if len(verified.problems) == 3 else 0)
            assert all(p.key_id == "tampered" and p.version == 1 for p in verified.problems)
            return {(p.location, p.state) for p in verified.problems}

        assert problems() == set()
        for location in locations:
            damage(location)
            restored = c.restore("tampered", 1)
            assert restored.material == material, location
            # Copies are tried in order (etcd first): only those met on the way are listed.
            assert restored.location == next(loc for loc in locations if loc != location)
            damaged = [f"{location}: corrupt"] if location == "etcd" else []
            assert [d[: d.index(" (")] for d in restored.damaged] == damaged, restored.damaged
            assert problems() == {(location, CORRUPT)}
            repair()

        # Two damaged: the third serves, and both are listed.
        damage("etcd")
        damage(str(d1))
        restored = c.restore("tampered", 1)
        assert (restored.material, restored.location) == (material, str(d2))
        assert [d[: d.index(" (")] for d in restored.damaged] == [
            "etcd: corrupt",
            f"{d1}: corrupt",
        ]
        assert problems() == {("etcd", CORRUPT), (str(d1), CORRUPT)}
        repair()

        for location in locations:
            damage(location)
        err = rpc_error(lambda: c.restore("tampered", 1))
        assert err.code() == Code.DATA_LOSS
        assert all(loc in (err.details() or "") for loc in locations), err.details()
        assert material.hex() not in (err.details() or "")
        assert problems() == {(loc, CORRUPT) for loc in locations}
        repair()
        assert problems() == set()

        # A truncated file.
        original = originals[str(d1)] or b""
        files[str(d1)].write_bytes(original[: len(original) // 2])
        assert problems() == {(str(d1), CORRUPT)}
        assert c.restore("tampered", 1).material == material
        repair()

        # Deleted files: etcd's copy still serves.
        for f in files.values():
            f.unlink()
        assert problems() == {(str(d1), MISSING), (str(d2), MISSING)}
        restored = c.restore("tampered", 1)
        assert (restored.material, restored.location, restored.damaged) == (material, "etcd", [])
        damage("etcd")  # and no file left to fall back to
        err = rpc_error(lambda: c.restore("tampered", 1))
        assert err.code() == Code.DATA_LOSS
        details = err.details() or ""
        assert f"{d1}: missing" in details and "etcd: corrupt" in details, details
        repair()

        # etcd's copy deleted: the first directory serves, the latest version included.
        assert kv.delete(key) == 1
        assert problems() == {("etcd", MISSING)}
        for version in (1, 0):
            restored = c.restore("tampered", version)
            assert (restored.material, restored.location) == (material, str(d1))
            assert restored.backup.version == 1
            assert list(restored.damaged) == ["etcd: missing"]


def test_a_version_lost_from_etcd_is_not_overwritten(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    """A version whose etcd copy is gone (etcd lost it, or a snapshot older than it was
    restored) still has its directory copies; a new backup must not take its number
    and overwrite them."""
    d1 = tmp_path / "backup-1"
    replica = start(
        replica_factory, etcd, "renumber", f"--keks={KeyRing.generate_entry('k1')}", dirs_flag(d1)
    )
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    with connect(replica) as c:
        c.backup("renumbered", secrets.token_bytes(32))
        assert c.backup("renumbered", old).version == 2
        assert kv.delete(etcd_key("renumbered", 2)) == 1
        assert c.restore("renumbered", 2).material == old  # from the directory
        taken = c.backup("renumbered", new).version
        assert c.restore("renumbered", 2).material == old, (
            f"the new backup took version {taken} and overwrote the only copy of version 2"
        )
        assert taken == 3


def test_an_altered_description_is_reported(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    """Any byte flipped in a copy makes it CORRUPT, its description's included.

    The contract: CORRUPT is "present but altered, truncated or undecryptable", and
    a restore returns the description (labels, size, creator, KEK) of the copy it used.
    """
    d1 = tmp_path / "backup-1"
    replica = start(
        replica_factory, etcd, "desc", f"--keks={KeyRing.generate_entry('k1')}", dirs_flag(d1)
    )
    path = key_file(d1, "described", 1)
    with connect(replica) as c:
        c.backup("described", secrets.token_bytes(40), owner="payments")
        original = path.read_bytes()
        record = keybackup_pb2.StoredKeyBackup.FromString(original)
        undetected: set[str] = set()
        for at in range(len(original)):
            altered = flip(original, at)
            path.write_bytes(altered)
            if c.verify("described").problems:
                continue
            try:
                changed = keybackup_pb2.StoredKeyBackup.FromString(altered)
            except DecodeError:
                undetected.add(f"byte {at}")
                continue
            for field in keybackup_pb2.KeyBackup.DESCRIPTOR.fields:
                if getattr(changed.backup, field.name) != getattr(record.backup, field.name):
                    undetected.add(f"backup.{field.name}")
            if changed.sealed != record.sealed:
                undetected.add("sealed")
        path.write_bytes(original)
    assert not undetected, f"altered copies verified OK; altered fields: {sorted(undetected)}"


# -- 3. no plaintext anywhere -------------------------------------------------------


def encodings(secret: bytes) -> set[bytes]:
    """The secret raw, in hex, and in base64 at each of the three alignments."""
    out = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for shift in range(3):
        part = secret[shift:]
        part = part[: len(part) - len(part) % 3]
        out |= {base64.b64encode(part), base64.urlsafe_b64encode(part)}
    return out


def plaintext_hits(needles: set[bytes], kv: EtcdKV, root: Path) -> list[str]:
    """Where any needle occurs: every etcd key and value, every file under ``root``."""
    hits = []
    for key, item in kv.range().items():
        for where, data in ((f"etcd key {key!r}", key), (f"etcd value of {key!r}", item.value)):
            if any(n in data for n in needles):
                hits.append(where)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(str(path))
    return hits


def test_key_material_is_never_stored_or_logged_in_plaintext(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    marker = b"BULWARK-PLAINTEXT-MARKER-" + secrets.token_hex(12).encode()
    material = secrets.token_bytes(32) + marker
    needles = encodings(material) | encodings(marker) | encodings(material[:32])
    k1, k2 = KeyRing.generate_entry("k1"), KeyRing.generate_entry("k2")
    dirs = [tmp_path / "backup-1", tmp_path / "backup-2"]
    replica = start(
        replica_factory, etcd, "plain", f"--keks={k1},{k2}", "--kek-active=k1", dirs_flag(*dirs)
    )
    with connect(replica) as c:
        c.backup("scanned", material, purpose="scan")
        c.backup("scanned", material)  # a second version of the same material
        assert not c.verify().problems
        assert c.rotate("k2")[-1].rewrapped == 2
        assert c.snapshot()[-1].snapshot.keys > 0
        assert c.drill()[-1].report.mismatched == 0
        time.sleep(0.3)  # let the audit trail and the log catch up
        # The etcd data directory, the backup directories and the replica's log.
        assert (tmp_path / "etcd").is_dir() and replica.log_path.parent == tmp_path
        assert plaintext_hits(needles, kv, tmp_path) == []

        restored = c.restore("scanned", 2)
        assert restored.material == material
        time.sleep(0.3)
        assert plaintext_hits(needles, kv, tmp_path) == []
        assert any(e.get("event") == "serving" for e in replica.events())  # the log is read

    # The scan finds what it looks for (last: etcd's WAL keeps what is planted in etcd).
    planted = tmp_path / "backup-1" / "planted"
    planted.write_bytes(b"..." + base64.b64encode(b"?" + marker) + b"...")
    kv.put(b"/planted", material.hex().encode())
    hits = plaintext_hits(needles, kv, tmp_path)
    assert {"etcd value of b'/planted'", str(planted)} <= set(hits), hits


# -- 4. snapshots ---------------------------------------------------------------------


def make_state(c: Client, tag: str) -> None:
    """Two of each kind of configuration, and two key backups."""
    for i in range(2):
        c.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=f"{tag}-breaker-{i}"), **c.opts)
        limit = ratelimit_pb2.Limit(
            domain="edge",
            name=f"{tag}-limit-{i}",
            descriptor=[ratelimit_pb2.DescriptorEntry(key="remote_address")],
            rate=ratelimit_pb2.Rate(requests_per_unit=5 + i, unit=ratelimit_pb2.RATE_UNIT_SECOND),
        )
        c.limits.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), **c.opts)
        feature = feature_pb2.Feature(
            name=f"{tag}-feature-{i}", status=feature_pb2.FEATURE_STATUS_AVAILABLE
        )
        c.features.PutFeature(feature_pb2.PutFeatureRequest(feature=feature), **c.opts)
        bulkhead = bulkhead_pb2.Bulkhead(name=f"{tag}-bulkhead-{i}", max_concurrent=3 + i)
        c.bulkheads.PutBulkhead(bulkhead_pb2.PutBulkheadRequest(bulkhead=bulkhead), **c.opts)
        c.backup(f"{tag}-key-{i}", secrets.token_bytes(32))


def values(entries: dict[bytes, Any]) -> dict[bytes, bytes]:
    return {k: bytes(item.value) for k, item in entries.items()}


def state(entries: dict[bytes, Any]) -> dict[bytes, bytes]:
    """``values`` without what the leader writes of its own: alerts, and the record of
    the last restore."""
    return {k: v for k, v in values(entries).items() if not k.startswith((ALERTS, RESTORES))}


def test_snapshot_restores_every_key_byte_equal(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    k1 = KeyRing.generate_entry("k1")
    dirs = [tmp_path / "backup-1", tmp_path / "backup-2"]
    # One replica without authentication does the work; one with it checks tokens.
    a = start(replica_factory, etcd, "snap-a", f"--keks={k1}", dirs_flag(*dirs))
    b = start(replica_factory, etcd, "snap-b", f"--keks={k1}", dirs_flag(*dirs), "--auth=on")
    with connect(a) as c:
        make_state(c, "s")
        admin = c.create_token("restorer", auth_pb2.ACCESS_ROLE_ADMIN).token
        doomed = c.create_token("doomed", auth_pb2.ACCESS_ROLE_DATAPLANE)
        with connect(b, doomed.token) as doomed_client:
            assert doomed_client.whoami().name == "doomed"

        created = c.snapshot()
        snap = created[-1].snapshot
        assert phases(created)[0] == "reading" and phases(created)[-1] == "done"
        assert all(not m.HasField("snapshot") for m in created[:-1])
        assert list(snap.locations) == [str(d) for d in dirs]
        assert snap.kek_id == "k1" and snap.created_by == "anonymous"
        at_snapshot = {k: v for k, v in kv.range(PREFIX, snap.revision).items() if not v.lease}
        assert snap.keys == len(at_snapshot) == sum(snap.counts.values())
        for kind in ("breakers", "limits", "features", "bulkheads", "keybackups"):
            assert snap.counts[kind] == 2, (kind, dict(snap.counts))
        assert snap.counts["tokens"] == 2
        for d in dirs:
            manifest = json.loads((d / "snapshots" / f"{snap.id}.json").read_text())
            assert manifest["id"] == snap.id and int(manifest["revision"]) == snap.revision
            assert (d / "snapshots" / f"{snap.id}.bws").is_file()
        listed = c.snapshots()
        assert [s.id for s in listed] == [snap.id]
        assert list(listed[0].locations) == [str(d) for d in dirs]
        recorded = state(kv.durable(snap.revision))
        assert TOKENS + doomed.record.id.encode() in recorded

        err = rpc_error(lambda: c.restore_snapshot(snap.id))
        assert err.code() == Code.FAILED_PRECONDITION
        assert "wipe" in (err.details() or "")
        assert state(kv.durable()) == recorded  # nothing written

        # Changes after the snapshot, a revocation among them.
        c.auth.RevokeToken(auth_pb2.RevokeTokenRequest(id=doomed.record.id), **c.opts)
        c.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="s-breaker-late"), **c.opts)
        c.limits.DeleteLimit(
            ratelimit_pb2.DeleteLimitRequest(domain="edge", name="s-limit-0"), **c.opts
        )
        c.features.SetFeatureStatus(
            feature_pb2.SetFeatureStatusRequest(
                name="s-feature-1", status=feature_pb2.FEATURE_STATUS_DISABLED, reason="late"
            ),
            **c.opts,
        )
        c.backup("s-key-0", secrets.token_bytes(32))
        assert state(kv.durable()) != recorded

        restored = c.restore_snapshot(snap.id, wipe=True)
        assert phases(restored) == ["verifying", "wiping", "restoring", "done"]
        last = restored[-1]
        assert last.snapshot.id == snap.id and last.wiped > 0
        # Everything but the revoked token; its tombstone and the audit trail are kept.
        expected = {k: v for k, v in recorded.items() if k != TOKENS + doomed.record.id.encode()}
        # The kept audit trail already holds the snapshot's events: only the rest is written.
        assert last.restored == len(expected)
        now = state(kv.durable())
        assert {k: v for k, v in now.items() if not k.startswith(REVOCATIONS)} == expected
        assert REVOCATIONS + doomed.record.id.encode() in now
        # The restore is recorded, and the leader raises an alert about it.
        record = recovery_pb2.RestoreRecord.FromString(kv.range(RESTORES)[RESTORES].value)
        assert (record.snapshot_id, record.restored) == (snap.id, last.restored)
        with grpc.insecure_channel(a.address) as channel:
            alerts = alert_pb2_grpc.AlertServiceStub(channel)
            request = alert_pb2.ListAlertsRequest(
                matchers=[alert_pb2.Matcher(name="alertname", value="BulwarkSnapshotRestored")]
            )
            raised = wait_for(lambda: alerts.ListAlerts(request, timeout=5).alerts, TIMEOUT)
        assert snap.id in raised[0].annotations["summary"]
        with connect(b, doomed.token) as doomed_client:
            assert code_of(doomed_client.whoami) == Code.UNAUTHENTICATED
        with connect(b, admin) as admin_client:
            assert admin_client.whoami().name == "restorer"

        # Loss: every key deleted behind Bulwark's back (the audit trail and tombstones aside).
        for key in now:
            if not key.startswith(REVOCATIONS):
                kv.delete(key)
        restored = c.restore_snapshot()  # the latest, into an empty prefix
        assert phases(restored) == ["verifying", "restoring", "done"]
        assert restored[-1].wiped == 0 and restored[-1].snapshot.id == snap.id
        assert state(kv.durable()) == now

        # The replica serves what was restored.
        def restored_feature() -> bool:
            got = c.features.GetFeature(
                feature_pb2.GetFeatureRequest(name="s-feature-1"), **c.opts
            ).feature.feature
            return got.status == feature_pb2.FEATURE_STATUS_AVAILABLE

        wait_for(restored_feature, timeout=5)
        restored_key = c.restore("s-key-0", 1)
        assert restored_key.location == "etcd" and not restored_key.damaged
        # The version backed up after the snapshot lives on in the backup directories.
        later = c.restore("s-key-0", 2)
        assert later.location == str(dirs[0]) and list(later.damaged) == ["etcd: missing"]
        with connect(b, doomed.token) as doomed_client:
            assert code_of(doomed_client.whoami) == Code.UNAUTHENTICATED


def test_corrupt_snapshot_writes_nothing_and_another_copy_serves(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    k1 = KeyRing.generate_entry("k1")
    d1, d2 = tmp_path / "backup-1", tmp_path / "backup-2"
    only = start(replica_factory, etcd, "one-dir", f"--keks={k1}", dirs_flag(d1))
    both = start(replica_factory, etcd, "two-dirs", f"--keks={k1}", dirs_flag(d1, d2))
    with connect(only) as c1, connect(both) as c2:
        make_state(c2, "c")
        snap = c2.snapshot()[-1].snapshot
        assert list(snap.locations) == [str(d1), str(d2)]
        c2.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="c-breaker-late"), **c2.opts)
        sealed = d1 / "snapshots" / f"{snap.id}.bws"
        sealed.write_bytes(flip_ciphertext(sealed.read_bytes()))

        before = {k: item.mod_revision for k, item in kv.durable().items()}
        for call in (
            lambda: c1.restore_snapshot(snap.id, wipe=True),
            lambda: c1.restore_snapshot("", wipe=True),
            lambda: c1.drill(snap.id),
        ):
            err = rpc_error(call)
            assert err.code() == Code.DATA_LOSS, err
            assert str(d1) in (err.details() or "")
        # Nothing restored; the failed drill is kept as the last drill (for the alerts).
        last_drill = recovery_pb2.DrillRecord.FromString(kv.range(DRILLS)[DRILLS].value)
        assert not last_drill.succeeded and str(d1) in last_drill.error
        assert {k: item.mod_revision for k, item in kv.durable().items()} == before
        assert kv.range(SCRATCH) == {}
        err = rpc_error(lambda: c1.restore_snapshot("20200101T000000000Z-1", wipe=True))
        assert err.code() == Code.NOT_FOUND

        restored = c2.restore_snapshot(snap.id, wipe=True)[-1]
        assert list(restored.snapshot.locations) == [str(d2)]
        assert restored.wiped > 0
        assert PREFIX + b"breakers/c-breaker-late" not in kv.durable()
        assert state(kv.durable()) == state(kv.durable(snap.revision))


# -- 5. drills ------------------------------------------------------------------------


def test_drill_reports_rto_rpo_and_changes_and_cleans_up(
    etcd: EtcdMember, replica_factory: Factory, kv: EtcdKV, tmp_path: Path
) -> None:
    replica = start(
        replica_factory,
        etcd,
        "drill",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(tmp_path / "backup-1"),
    )
    with connect(replica) as c:
        make_state(c, "d")
        snap = c.snapshot()[-1].snapshot
        pause = 1.5
        time.sleep(pause)
        c.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="d-breaker-late"), **c.opts)
        c.features.SetFeatureStatus(
            feature_pb2.SetFeatureStatusRequest(
                name="d-feature-0", status=feature_pb2.FEATURE_STATUS_DEGRADED, reason="late"
            ),
            **c.opts,
        )
        messages = c.drill()
        assert phases(messages) == ["verifying", "restoring", "comparing", "done"]
        assert all(not m.HasField("report") for m in messages[:-1])
        report = messages[-1].report
        assert report.snapshot_id == snap.id
        assert report.rto.ToNanoseconds() > 0
        assert report.rpo.ToNanoseconds() >= pause * 1e9
        assert report.keys == snap.keys
        assert report.mismatched == 0
        assert kv.range(SCRATCH) == {}
        # The keys changed since: the two changes made (the audit trail, which a
        # restore keeps rather than replaces, is not a change the restore would lose).
        changes = [
            "/bulwark/v1/breakers/d-breaker-late",
            "/bulwark/v1/features/d-feature-0",
        ]
        assert (report.changed_since, sorted(report.differences)) == (2, changes)


# -- 6. roles -------------------------------------------------------------------------


def bootstrap_token(etcd: EtcdMember, name: str, role: str) -> str:
    """`bulwark token create`: the first admin token, straight into etcd."""
    done = run_cli(
        "token", "create", "--name", name, "--role", role, "--etcd-endpoints", etcd.endpoint
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_roles_of_key_backups_and_recovery(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    admin_token = bootstrap_token(etcd, "root", "admin")
    replica = start(
        replica_factory,
        etcd,
        "roles",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(tmp_path / "backup-1"),
        "--auth=on",
    )
    with connect(replica, admin_token) as admin:
        tokens = {
            name: admin.create_token(name, role).token
            for name, role in (
                ("dp-one", auth_pb2.ACCESS_ROLE_DATAPLANE),
                ("dp-two", auth_pb2.ACCESS_ROLE_DATAPLANE),
                ("ops", auth_pb2.ACCESS_ROLE_OPERATOR),
            )
        }
    with (
        connect(replica, admin_token) as admin,
        connect(replica, tokens["dp-one"]) as one,
        connect(replica, tokens["dp-two"]) as two,
        connect(replica, tokens["ops"]) as ops,
        connect(replica) as nobody,
    ):
        first = one.backup("svc.signing", b"v1-material")
        assert (first.version, first.created_by) == (1, "dp-one")
        assert one.backup("svc.signing", b"v2-material").version == 2
        err = rpc_error(lambda: two.backup("svc.signing", b"stolen"))
        assert err.code() == Code.PERMISSION_DENIED
        assert two.backup("other.signing", b"theirs").created_by == "dp-two"
        assert code_of(lambda: nobody.backup("anon.key", b"x")) == Code.UNAUTHENTICATED
        for client in (one, ops):
            assert code_of(lambda c=client: c.restore("svc.signing")) == Code.PERMISSION_DENIED
        assert code_of(one.list) == Code.PERMISSION_DENIED
        assert code_of(one.verify) == Code.PERMISSION_DENIED

        assert [(b.key_id, b.version) for b in ops.list()] == [
            ("other.signing", 1),
            ("svc.signing", 1),
            ("svc.signing", 2),
        ]
        assert ops.verify().ok == 6
        # Operators may add versions to anyone's keys.
        assert ops.backup("svc.signing", b"v3-material").version == 3
        restored = admin.restore("svc.signing", 2)
        assert restored.material == b"v2-material"
        assert admin.restore("svc.signing").material == b"v3-material"

        assert code_of(ops.snapshot) == Code.OK
        assert code_of(ops.snapshots) == Code.OK
        assert code_of(one.snapshot) == Code.PERMISSION_DENIED
        for client in (one, ops):
            assert code_of(lambda c=client: c.rotate("k1")) == Code.PERMISSION_DENIED
            assert code_of(lambda c=client: c.drill()) == Code.PERMISSION_DENIED
            assert code_of(lambda c=client: c.restore_snapshot(wipe=True)) == (
                Code.PERMISSION_DENIED
            )
        assert admin.drill()[-1].report.mismatched == 0
        assert admin.rotate("k1")[-1].rewrapped == 0
        # Past authorization, a restore into a non-empty prefix is refused as such.
        assert code_of(lambda: admin.restore_snapshot()) == Code.FAILED_PRECONDITION


# -- 7. the schedule ------------------------------------------------------------------


def test_scheduled_snapshots_are_pruned_to_the_retention(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    dirs = [tmp_path / "backup-1", tmp_path / "backup-2"]
    replica = start(
        replica_factory,
        etcd,
        "sched",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(*dirs),
        "--snapshot-interval=2",
        "--snapshot-retention=2",
    )

    def taken() -> list[str]:
        return [e["snapshot"] for e in replica.events() if e.get("event") == "snapshot.created"]

    with connect(replica) as c:
        wait_for(lambda: len(taken()) >= 4, timeout=12, interval=0.2)

        def consistent() -> list[recovery_pb2.Snapshot] | None:
            listed = c.snapshots()
            on_disk = [
                sorted(p.stem for p in (d / "snapshots").glob(f"*{suffix}"))
                for d in dirs
                for suffix in (".bws", ".json")
            ]
            ids = sorted(s.id for s in listed)
            return listed if all(found == ids for found in on_disk) and len(ids) == 2 else None

        listed = wait_for(consistent, timeout=5, interval=0.1)
        assert isinstance(listed, list)
        assert [s.created_by for s in listed] == ["schedule", "schedule"]
        assert all(list(s.locations) == [str(d) for d in dirs] for s in listed)
        history = taken()
        assert {s.id for s in listed} <= set(history[-3:])
        assert history[0] not in {s.id for s in listed}  # the oldest were pruned
        assert listed[0].created_at.ToNanoseconds() > listed[1].created_at.ToNanoseconds()


# -- 8. the CLI -----------------------------------------------------------------------


def test_snapshot_and_drill_commands(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    replica = start(
        replica_factory,
        etcd,
        "cli",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(tmp_path / "backup-1"),
    )
    with connect(replica) as c:
        make_state(c, "cli")
    created = run_cli("snapshot", "create", "--server", replica.address)
    assert created.returncode == 0, created.stderr
    snapshot = json.loads(created.stdout)["snapshot"]
    assert snapshot["id"] and int(snapshot["keys"]) > 0
    assert "writing..." in created.stderr

    listed = run_cli("snapshot", "list", "--server", replica.address)
    assert listed.returncode == 0 and snapshot["id"] in listed.stdout

    drilled = run_cli("drill", "--server", replica.address)
    assert drilled.returncode == 0, drilled.stderr
    report = json.loads(drilled.stdout)
    assert report["snapshot_id"] == snapshot["id"]
    assert report["rto"].endswith("s") and float(report["rto"][:-1]) > 0
    assert int(report.get("mismatched", 0)) == 0

    refused = run_cli("snapshot", "restore", "--server", replica.address)
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr

    bad = run_cli("snapshot", "create", "--server", "no-port-here")
    assert bad.returncode == 2 and "--server" in bad.stderr
    bad = run_cli("drill", "--server", "127.0.0.1:notaport")
    assert bad.returncode == 2 and "--server" in bad.stderr


# -- validation -----------------------------------------------------------------------


def test_requests_are_validated_and_a_replica_without_kek_refuses(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    with_kek = start(
        replica_factory,
        etcd,
        "valid",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(tmp_path / "backup-1"),
    )
    without = start(replica_factory, etcd, "no-kek")
    with connect(with_kek) as c:
        for key_id, material, field in (
            ("empty", b"", "material"),
            ("huge", b"x" * (70 * 1024), "material"),
            ("bad/key", b"x", "key_id"),
            ("", b"x", "key_id"),
        ):
            err = rpc_error(lambda k=key_id, m=material: c.backup(k, m))
            assert err.code() == Code.INVALID_ARGUMENT, (key_id, err)
            assert field in (err.details() or ""), err.details()
        assert c.backup("limit", b"x" * (64 * 1024)).size == 64 * 1024
        assert c.list() and [b.key_id for b in c.list()] == ["limit"]
        err = rpc_error(lambda: c.restore("unknown-key"))
        assert err.code() == Code.NOT_FOUND
        err = rpc_error(lambda: c.restore("limit", 7))
        assert err.code() == Code.NOT_FOUND
        err = rpc_error(lambda: c.restore("limit", -1))
        assert err.code() == Code.INVALID_ARGUMENT and "version" in (err.details() or "")
        err = rpc_error(lambda: c.rotate("not-loaded"))
        assert err.code() == Code.FAILED_PRECONDITION

    assert any(e.get("event") == "backups.no_kek" for e in without.events())
    with connect(without) as c:
        for call in (
            lambda: c.backup("svc.key", b"material"),
            lambda: c.restore("limit"),
            lambda: c.verify(),
            lambda: c.rotate(""),
        ):
            err = rpc_error(call)
            assert err.code() == Code.FAILED_PRECONDITION, err
            assert "BULWARK_KEK_FILE" in (err.details() or "")
        assert code_of(c.snapshot) == Code.FAILED_PRECONDITION
