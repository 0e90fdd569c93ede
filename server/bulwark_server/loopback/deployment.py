"""A whole Bulwark deployment on loopback: N etcd members and M replicas as real processes.

``bulwark local-cluster`` runs one until Ctrl-C; the failover tests use the
same classes to start, signal and observe replicas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_server.loopback.etcd import EtcdCluster, stop_process, tail_lines


@dataclass
class ReplicaProcess:
    """One ``bulwark serve`` child bound to a free port on 127.0.0.1, logging JSON to a file."""

    replica_id: str
    etcd_endpoints: list[str]
    log_path: Path
    lease_ttl: int = 2
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.port = 0
        args = [
            sys.executable,
            "-m",
            "bulwark_server",
            "serve",
            "--listen=127.0.0.1:0",
            f"--replica-id={self.replica_id}",
            f"--etcd-endpoints={','.join(self.etcd_endpoints)}",
            f"--lease-ttl={self.lease_ttl}",
            "--log-level=DEBUG",
            # A loopback development cluster: callers need no credentials unless the
            # extra arguments say otherwise (a later --auth wins).
            "--auth=off",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )

    def events(self, since_start: bool = True) -> list[dict[str, Any]]:
        """The JSON log records this replica wrote (since its last start by default)."""
        try:
            with self.log_path.open("rb") as fh:
                if since_start:
                    fh.seek(self._log_offset)
                data = fh.read().decode(errors="replace")
        except OSError:
            return []
        out = []
        for line in data.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def wait_serving(self, timeout: float = 30.0) -> int:
        """Block until the replica logs that it serves; return its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "serving":
                    self.port = int(event["port"])
                    return self.port
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"replica {self.replica_id} exited: {self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.replica_id} not serving after {timeout}s: {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        return "\n".join(tail_lines(self.log_path, lines))

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT (in case it is paused), SIGTERM, then SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_process(self.process, timeout)


class LocalCluster:
    """etcd members and Bulwark replicas under one folder on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        *,
        replicas: int = 3,
        etcd_members: int = 3,
        lease_ttl: int = 2,
        unsafe_no_fsync: bool = False,
    ) -> None:
        self.root = root
        self.etcd = EtcdCluster(root, etcd_members, unsafe_no_fsync=unsafe_no_fsync)
        self.replicas = [
            ReplicaProcess(f"replica{i}", [], root / f"replica{i}.log", lease_ttl=lease_ttl)
            for i in range(replicas)
        ]

    def start(self, timeout: float = 60.0) -> None:
        try:
            self.etcd.start(timeout)
            for replica in self.replicas:
                replica.etcd_endpoints = self.etcd.endpoints
                replica.start()
            for replica in self.replicas:
                replica.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.etcd.stop()


def run_local_cluster(replicas: int, etcd_members: int, root: str, lease_ttl: int) -> int:
    """Run a local cluster until SIGINT/SIGTERM; print where everything listens."""
    cluster = LocalCluster(
        Path(root).resolve(), replicas=replicas, etcd_members=etcd_members, lease_ttl=lease_ttl
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting {etcd_members} etcd members and {replicas} replicas under {root} ...")
    try:
        cluster.start()
        print("etcd:     " + ",".join(cluster.etcd.endpoints))
        for replica in cluster.replicas:
            print(f"{replica.replica_id}: {replica.address}  (log {replica.log_path})")
        print(
            "try: grpcurl -plaintext "
            f"{cluster.replicas[0].address} bulwark.v1.ClusterService/GetClusterStatus"
        )
        print("Ctrl-C stops everything.")
        while not stop:
            time.sleep(0.2)
    finally:
        print("stopping ...")
        cluster.stop()
    return 0
