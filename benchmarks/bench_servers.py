"""The servers a benchmark runs as subprocesses, and how they are started and stopped.

Holds the Bulwark replica (``python -m bulwark_server serve`` with a private embedded etcd),
the bare ``grpc.aio`` echo server that is every benchmark's floor (run as this module),
the base class that drains a server's output and reads its port from it, what /proc and
etcd's /metrics say about a running server (CPU seconds, resident memory, its embedded
etcd, committed proposals), and ``ProcessGroup``, which stops every process of a run and
removes its temporary directory whatever happens. Run as a script, this module is the echo
server: it prints its port on stdout and serves until SIGTERM, SIGINT or the end of its
stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar

import grpc
import grpc.aio

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc, ratelimit_pb2

HOST = "127.0.0.1"
ECHO_SERVICE = "bulwark.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
READ_CHECK_METHOD = f"/{ECHO_SERVICE}/ReadCheck"
SERVING_TIMEOUT = 60.0  # seconds to wait for each server to report its port
LEADER_TIMEOUT = 15.0  # seconds to wait for GetLeader to name a leader
CALL_TIMEOUT = 5.0  # deadline of one benchmark call
STOP_TIMEOUT = 15.0  # seconds a server gets after SIGTERM before SIGKILL
PROPOSALS_METRIC = "etcd_server_proposals_committed_total"
MAX_WATCHED = 200  # output lines ServerProcess keeps of those it watches for


# --------------------------------------------------------------------------- echo server


def watch_stdin(on_eof: Callable[[], None], name: str = "stdin-eof") -> None:
    """Call ``on_eof`` (in a daemon thread) when the parent closes our stdin."""

    def run() -> None:
        # Raw reads: a daemon thread blocked in a buffered reader aborts interpreter exit.
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        on_eof()

    threading.Thread(target=run, name=name, daemon=True).start()


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


_answers: dict[int, bytes] = {}


def ok_answer(results: int) -> bytes:
    """The bytes of a CheckResponse: OK, with ``results`` OK results of a large limit."""
    answer = _answers.get(results)
    if answer is None:
        rate = ratelimit_pb2.Rate(requests_per_unit=1_000_000, unit=ratelimit_pb2.RATE_UNIT_SECOND)
        response = ratelimit_pb2.CheckResponse(overall_code=ratelimit_pb2.CHECK_CODE_OK)
        for _ in range(results):
            response.results.add(
                code=ratelimit_pb2.CHECK_CODE_OK,
                limit_name="per-user",
                current_limit=rate,
                remaining=999_999,
            )
        answer = _answers[results] = response.SerializeToString()
    return answer


async def _read_check(request: ratelimit_pb2.CheckRequest, context: Any) -> bytes:
    # The least a Python server does with a Check: the message parsed (by gRPC, as
    # for any servicer), every descriptor's entries read once, a ready answer sent.
    results = 0
    for descriptor in request.descriptors:
        for entry in descriptor.entries:
            entry.key, entry.value  # noqa: B018 -- read, as a decision must
        results += 1
    return ok_answer(results)


async def run_echo_server() -> None:
    """Serve the raw-bytes echo method, and ``ReadCheck`` (a CheckRequest read, a ready
    CheckResponse sent: the floor of any Python Check), on 127.0.0.1:0; print the
    port; stop on signal/EOF."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "ReadCheck": grpc.unary_unary_rpc_method_handler(
                _read_check, request_deserializer=ratelimit_pb2.CheckRequest.FromString
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    await serve_until_stopped(server, "echo")


async def serve_until_stopped(server: grpc.aio.Server, name: str, grace: float = 1.0) -> None:
    """Start ``server`` on 127.0.0.1:0, print its port, and stop it (``grace`` seconds)
    on SIGTERM, SIGINT or the end of our stdin."""
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The parent holds our stdin open; EOF means it is gone, so do not outlive it.
    watch_stdin(lambda: loop.call_soon_threadsafe(stop.set), name=f"{name}-stdin")
    print(port, flush=True)
    await stop.wait()
    await server.stop(grace)


# --------------------------------------------------------------------------- subprocesses


class ServerProcess:
    """A server subprocess whose output is drained by a thread; reports its port once.

    Output lines containing any of ``watch_for`` (case-insensitive) are counted in
    ``watched_count`` and the last ``MAX_WATCHED`` of them kept in ``watched``, so a
    benchmark can tell whether the server logged, say, failed checkpoints.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        port_stream: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        watch_for: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.tail: deque[str] = deque(maxlen=40)
        self.watch_for = tuple(word.lower() for word in watch_for)
        self.watched: deque[str] = deque(maxlen=MAX_WATCHED)
        self.watched_count = 0
        self.port: int | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if port_stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE if port_stream == "stderr" else None,
            text=True,
            bufsize=1,
            env=env,
            cwd=cwd,
        )
        stream = self.proc.stdout if port_stream == "stdout" else self.proc.stderr
        assert stream is not None
        self._thread = threading.Thread(
            target=self._drain, args=(stream,), name=f"{name}-drain", daemon=True
        )
        self._thread.start()

    def _parse_port(self, line: str) -> int | None:
        raise NotImplementedError

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.tail.append(line.rstrip("\n"))
            if self.watch_for and any(word in line.lower() for word in self.watch_for):
                self.watched.append(line.rstrip("\n"))
                self.watched_count += 1
            if self.port is None:
                port = self._parse_port(line)
                if port is not None:
                    self.port = port
                    self._ready.set()
        self._ready.set()  # EOF: wake a waiter so it sees the process died

    def wait_port(self, timeout: float) -> int:
        """Block until the server reports its port; raise if it dies or takes too long."""
        if not self._ready.wait(timeout) or self.port is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)  # output ended: let the exit code arrive
            code = self.proc.poll()
            state = f"exited with code {code}" if code is not None else "did not report a port"
            raise RuntimeError(
                f"{self.name} {state} within {timeout:.0f}s; last output:\n  "
                + "\n  ".join(self.tail)
            )
        return self.port

    def wait_address(self, timeout: float = SERVING_TIMEOUT) -> str:
        """``HOST:port`` once the server reports its port (see ``wait_port``)."""
        return f"{HOST}:{self.wait_port(timeout)}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; last output:\n  "
                + "\n  ".join(self.tail)
            )

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; close our end of its pipes."""
        terminate(self.proc)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._thread.join(5.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc (NaN when unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def rss_mb(pid: int | None) -> float:
    """Resident memory of a process now (VmRSS of /proc/<pid>/status), in MB of 10^6 bytes;
    NaN when unreadable (no such process, not Linux)."""
    if pid is None:
        return math.nan
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6  # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def embedded_etcd_pid(pid: int) -> int | None:
    """The pid of the etcd child of process ``pid`` (a replica's embedded etcd), or None."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            children = [int(child) for child in handle.read().split()]
    except (OSError, ValueError):
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "etcd":
                return child
        except OSError:
            continue
    return None


def proposals_committed(etcd_endpoint: str) -> int:
    """etcd's ``etcd_server_proposals_committed_total`` from its /metrics endpoint: every
    write (put, delete, transaction, lease grant or revoke) that went through consensus."""
    base = etcd_endpoint if "://" in etcd_endpoint else f"http://{etcd_endpoint}"
    url = base.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(PROPOSALS_METRIC + " "):
                return int(float(line.split()[1]))
    raise RuntimeError(f"{PROPOSALS_METRIC} not found at {url}")


def compact_history(etcd_endpoint: str) -> int:
    """Compact etcd's history up to its current revision, and return once the compaction
    is applied to its storage (``physical``); the revision compacted.

    A setup that writes hundreds of thousands of keys calls this before measuring, so
    etcd's own compaction of them (every five minutes for an embedded etcd) does not
    fall inside a measured turn and take the CPU the measured processes share.
    """
    base = etcd_endpoint if "://" in etcd_endpoint else f"http://{etcd_endpoint}"

    def post(path: str, body: dict[str, object]) -> dict[str, Any]:
        request = urllib.request.Request(
            base.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    # A range of one key that need not exist: its header carries the current revision.
    revision = int(post("/v3/kv/range", {"key": "AA==", "limit": 1})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def terminate(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` if it runs, wait STOP_TIMEOUT, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


class BulwarkProcess(ServerProcess):
    """``python -m bulwark_server serve`` with an embedded etcd under ``data_dir``.

    ``extra_args`` are appended to the command line (e.g. ``--etcd-endpoints`` to share
    another replica's etcd, ``--replica-id``). When the replica starts an embedded etcd,
    ``etcd_endpoint`` is set from its ``"event": "etcd.embedded"`` log line. ``env`` and
    ``cwd`` are those of the subprocess (default: this process's), e.g. a ``PYTHONPATH``
    naming another source tree. ``watch_for``: see ``ServerProcess``. ``wrapper`` is put
    before the command (e.g. ``valgrind --tool=callgrind``).
    """

    def __init__(
        self,
        data_dir: str,
        *,
        name: str = "bulwark",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        watch_for: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        self.etcd_endpoint: str | None = None
        argv = [
            *wrapper,
            sys.executable,
            "-m",
            "bulwark_server",
            "serve",
            "--listen",
            f"{HOST}:0",
            "--data-dir",
            data_dir,
            "--log-level",
            "INFO",
            *extra_args,
        ]
        super().__init__(name, argv, port_stream="stderr", env=env, cwd=cwd, watch_for=watch_for)

    def _parse_port(self, line: str) -> int | None:
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if record.get("event") == "etcd.embedded":
            self.etcd_endpoint = str(record["endpoint"])
        if record.get("event") == "serving":
            return int(record["port"])
        return None


class EchoProcess(ServerProcess):
    """This module run as a script: the echo server, printing its port as the first line."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve())]
        super().__init__("echo", argv, port_stream="stdout")

    def _parse_port(self, line: str) -> int | None:
        text = line.strip()
        return int(text) if text.isdigit() else None


def probe_getleader(address: str, timeout: float = LEADER_TIMEOUT) -> bytes:
    """Call GetLeader until it names a leader; return that response's serialized bytes."""
    deadline = time.monotonic() + timeout
    last_error = "no response"
    with grpc.insecure_channel(address) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                response = stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=2.0)
            except grpc.RpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"
            else:
                if response.HasField("leader"):
                    return response.SerializeToString()
                last_error = "response names no leader yet"
            time.sleep(0.2)
    raise RuntimeError(f"GetLeader on {address} gave no leader in {timeout:.0f}s ({last_error})")


# --------------------------------------------------------------------------- clean-up


class Stoppable(Protocol):
    name: str

    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def stop_all(processes: Iterable[Stoppable], progress: Callable[[str], None]) -> None:
    """Stop each process in turn; a failure is reported and does not stop the others."""
    for process in processes:
        try:
            process.stop()
        except Exception as exc:
            progress(f"stopping {process.name} failed: {exc}")


class ProcessGroup:
    """The processes of one run and its temporary directory ``root``.

    On exit, however the block ends, every process added is stopped, last added first
    (so a replica that joined another's etcd stops before it), then ``root`` is removed.
    """

    def __init__(self, prefix: str, progress: Callable[[str], None]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.progress = progress
        self.processes: list[Stoppable] = []

    def add(self, process: S) -> S:
        self.processes.append(process)
        return process

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            stop_all(reversed(self.processes), self.progress)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(run_echo_server())
