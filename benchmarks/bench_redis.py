"""``redis-server`` for the benchmarks that measure a Redis-backed peer beside Bulwark.

Holds how the binary is found (or installed with apt-get, as root), its version, the
server as a child process on 127.0.0.1 with no persistence, and the command-line options
that choose the binary.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from bench_servers import HOST, terminate

REDIS_READY_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600.0


def add_redis_options(group: argparse._ActionsContainer) -> None:
    """``--redis-server PATH`` and ``--no-install-redis`` (see ``find_redis_server``)."""
    group.add_argument(
        "--redis-server",
        metavar="PATH",
        default=None,
        help="redis-server binary; %(default)s finds it on PATH",
    )
    group.add_argument(
        "--no-install-redis",
        action="store_true",
        help="fail instead of running 'apt-get install -y redis-server' when it is missing",
    )


def find_redis_server(explicit: str | None, install: bool, progress: Callable[[str], None]) -> str:
    """Path of ``redis-server``: ``explicit``, PATH, or (as root) ``apt-get install``."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"--redis-server {explicit!r} is not an executable")
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    if not install or not shutil.which("apt-get") or os.geteuid() != 0:
        raise RuntimeError(
            "redis-server is not on PATH; install it (apt-get install -y redis-server) "
            "or pass --redis-server PATH"
        )
    install_cmd = ["apt-get", "install", "-y", "redis-server"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    progress("redis-server not on PATH: apt-get install -y redis-server")

    def run(cmd: list[str]) -> bool:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
        return done.returncode == 0

    if not run(install_cmd):
        progress("install failed; apt-get update, then install again")
        if not run(["apt-get", "update"]) or not run(install_cmd):
            raise RuntimeError("apt-get could not install redis-server")
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server installed but not found on PATH")
    return found


def redis_server_version(binary: str) -> str:
    """The ``v=`` field of ``redis-server --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def redis_versions(binary: str) -> dict[str, str]:
    """``redis_py`` and ``redis_server`` versions, for the machine line of a report."""
    return {
        "redis_py": importlib.metadata.version("redis"),
        "redis_server": redis_server_version(binary),
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """``redis-server`` on 127.0.0.1 with no persistence, as a child process."""

    name = "redis-server"

    def __init__(self, binary: str, workdir: str) -> None:
        self.port = free_port()
        self.log_path = Path(workdir) / "redis.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                HOST,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @classmethod
    def under(cls, binary: str, root: Path) -> RedisProcess:
        """Started with ``root/redis`` (created now) as its working directory."""
        workdir = root / "redis"
        workdir.mkdir()
        return cls(binary, str(workdir))

    def wait_ready(self, timeout: float = REDIS_READY_TIMEOUT) -> None:
        """Ping until Redis answers; raise if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.1)
        finally:
            client.close()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server on port {self.port} not ready; log:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL."""
        terminate(self.proc)
        self._log.close()
