"""Snapshots, drills and key backups as the metrics endpoint exports them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grpc import StatusCode as Code

from bulwark_server.backups.envelope import KeyRing
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, free_port
from tests.integration.conftest import get_leader, wait_for
from tests.integration.test_backups import connect, dirs_flag, flip_ciphertext, rpc_error, start
from tests.integration.test_metrics import samples, value


def test_the_last_drill_snapshot_age_and_damaged_backups_are_exported(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
) -> None:
    port = free_port()
    backups = tmp_path / "backup-1"
    replica = start(
        replica_factory,
        etcd,
        "m1",
        f"--keks={KeyRing.generate_entry('k1')}",
        dirs_flag(backups),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)
    before = samples(port)
    assert value(before, "bulwark_drill_succeeded") is None  # no drill yet: no series
    assert value(before, "bulwark_backups_damaged") is None  # no verification yet
    with connect(replica) as client:
        snap = client.snapshot()[-1].snapshot
        report = client.drill(snap.id)[-1].report
        assert report.mismatched == 0
        after = samples(port)
        assert value(after, "bulwark_drill_succeeded") == 1
        assert value(after, "bulwark_drill_rto_seconds") == report.rto.ToNanoseconds() / 1e9
        assert 0 <= (value(after, "bulwark_drill_age_seconds") or -1) < 30
        assert 0 <= (value(after, "bulwark_snapshot_age_seconds") or -1) < 30
        assert value(after, "bulwark_snapshot_interval_seconds") == 0  # as the test starts it

        client.backup("payments", b"k" * 32)
        key_copy = next((backups / "keys").rglob("*.bwk"))
        key_copy.write_bytes(flip_ciphertext(key_copy.read_bytes()))
        assert len(client.verify().problems) == 1
        sealed = backups / "snapshots" / f"{snap.id}.bws"
        sealed.write_bytes(flip_ciphertext(sealed.read_bytes()))
        assert rpc_error(lambda: client.drill(snap.id)).code() == Code.DATA_LOSS

    damaged = samples(port)
    assert value(damaged, "bulwark_drill_succeeded") == 0  # no intact copy: a failed drill
    assert value(damaged, "bulwark_backups_damaged") == 1
    assert value(damaged, "bulwark_backups_verified_total") == 1
