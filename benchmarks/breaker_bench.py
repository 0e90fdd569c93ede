"""Circuit breakers: Allow throughput, trip propagation to watchers, and pybreaker+Redis.

What it measures, in one run
    1. Allow under load. QPS and latency percentiles of
       ``bulwark.v1.CircuitBreakerService/Allow`` on one Bulwark replica, for a breaker
       ``bench`` created with the default configuration (so it stays CLOSED and every
       call is allowed), beside a plain ``grpc.aio`` echo server loaded the same way in
       the same run. The echo returns the serialized bytes of a real AllowResponse, so
       both targets move messages of the same size. The Allow/echo ratios show what the
       replica adds to a bare Python gRPC round trip.
    2. Trip propagation. ``--watchers`` WatchBreakers streams (``names=[breaker]``), spread
       round-robin over ``--replicas`` replicas sharing one etcd, then ``--trips`` rounds
       of: one ReportOutcomes call with 10 failures (reporter "bench"), sent to the
       leader, which trips the breaker (sliding_window_size=10,
       minimum_number_of_calls=10); for every watcher, the time from just before that
       call to the arrival of the first event whose ``breaker.status.state`` is
       ``BREAKER_STATE_OPEN``. Between rounds the breaker is reset with
       ``ForceState(BREAKER_STATE_CLOSED)`` and the next round starts once every watcher
       has seen CLOSED. One unrecorded warm-up round comes first.
    3. One caller, one decision per call. pybreaker with its Redis-shared state
       (``CircuitRedisStorage``) guarding a no-op function, called in a loop by one
       process; and Bulwark ``Allow`` called in a loop by one process over one
       synchronous gRPC channel; and, as the floor of that shape, the echo server called
       the same way. Each is warmed up for ``--peer-warmup`` seconds, then measured for
       ``--peer-duration`` seconds in total, in ``--peer-slices`` turns taken one after
       the other (A B C A B C ...), so that drifting background load hits all three
       alike. Reported: calls/s, p50/p99, round trips per decision (Redis commands
       counted with ``INFO stats``) and the Bulwark/pybreaker and Bulwark/echo ratios.

How
    Servers run as subprocesses on 127.0.0.1 with free ports, started and load-tested with
    the machinery of ``getleader_bench.py`` (replica with a private embedded etcd in a
    temporary data dir; the echo server; ``--processes`` spawned load processes keeping
    ``--concurrency`` calls in flight each, exact merged percentiles). A second replica,
    if any, joins the first replica's embedded etcd (``--etcd-endpoints``, from its
    ``"event": "etcd.embedded"`` log line) and runs only during part 2. ``redis-server``
    runs as a child process (``--save "" --appendonly no``) only during part 3; when it is
    not on PATH the script installs it with ``apt-get install -y redis-server`` (as root).
    Watchers, the reporter and the timing of part 2 share one asyncio loop in this process;
    times are taken with ``time.perf_counter`` when a stream message is handed to the
    client. Every subprocess and temporary directory is removed on exit, error or Ctrl-C.

Client and server share the machine's CPUs (2 cores where the numbers in RESULTS.md were
taken): absolute numbers are lower bounds; the ratios are the meaningful figures.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import datetime
import importlib.metadata
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pybreaker
import redis
from getleader_bench import (
    CALL_TIMEOUT,
    ECHO_METHOD,
    HOST,
    LEADER_TIMEOUT,
    SERVING_TIMEOUT,
    STOP_TIMEOUT,
    BulwarkProcess,
    CallSpec,
    EchoProcess,
    ServerProcess,
    TargetResult,
    echo_call,
    machine_info,
    percentile,
    probe_getleader,
    run_and_print,
    run_load,
)

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, cluster_pb2, cluster_pb2_grpc

ALLOW_BREAKER = "bench"
TRIP_BREAKER = "bench-trip"
TRIP_FAILURES = 10
REPORTER = "bench"
ROUND_TIMEOUT = 10.0  # seconds for every watcher to see one trip or one reset
SETTLE = 0.2  # seconds after a reset before the next trip (the leader ticks every 0.1 s)
REDIS_READY_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600.0
OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED


def _progress(message: str) -> None:
    print(f"[breaker-bench] {message}", file=sys.stderr, flush=True)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# --------------------------------------------------------------------------- part 1: Allow


def allow_call() -> CallSpec:
    """``CircuitBreakerService/Allow`` on the ``bench`` breaker."""
    return CallSpec(
        label="CircuitBreakerService/Allow",
        method="/bulwark.v1.CircuitBreakerService/Allow",
        request=breaker_pb2.AllowRequest(name=ALLOW_BREAKER, caller=REPORTER),
        response_type=breaker_pb2.AllowResponse,
    )


def prepare_allow_breaker(address: str) -> bytes:
    """Create the ``bench`` breaker (default config); return one Allow response's bytes."""
    with grpc.insecure_channel(address) as channel:
        stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        stub.PutBreaker(breaker_pb2.PutBreakerRequest(name=ALLOW_BREAKER), timeout=CALL_TIMEOUT)
        response = stub.Allow(allow_call().request, timeout=CALL_TIMEOUT)
    if not response.allowed or response.state != CLOSED:
        raise RuntimeError(f"breaker {ALLOW_BREAKER!r} is not CLOSED and allowing: {response}")
    return response.SerializeToString()


# --------------------------------------------------------------------------- part 2: trips


@dataclass
class LatencySummary:
    """Percentiles of a set of durations, in milliseconds."""

    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def latency_summary(seconds: Sequence[float]) -> LatencySummary:
    """Exact (nearest-rank) percentiles of ``seconds``, reported in milliseconds."""
    ordered = sorted(seconds)
    return LatencySummary(
        samples=len(ordered),
        p50_ms=percentile(ordered, 50) * 1000,
        p90_ms=percentile(ordered, 90) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else math.nan,
    )


@dataclass
class PropagationResult:
    """Trip → watcher latencies over every (watcher, trip) pair."""

    replicas: int
    watchers: int
    trips: int
    missed: int
    stream_errors: list[str]
    all: LatencySummary
    by_replica: dict[str, LatencySummary]
    report_rpc: LatencySummary


@dataclass
class _Watcher:
    index: int
    replica: str
    state: int = breaker_pb2.BREAKER_STATE_UNSPECIFIED


class _TripProbe:
    """Shared between the watcher tasks and the round driver (one asyncio loop)."""

    def __init__(self, watchers: list[_Watcher]) -> None:
        self.watchers = watchers
        self.changed = asyncio.Condition()
        self.t0: float | None = None  # perf_counter just before this round's ReportOutcomes
        self.arrivals: dict[int, float] = {}  # watcher index -> seconds since t0
        self.errors: list[str] = []

    async def watch(self, stub: breaker_pb2_grpc.CircuitBreakerServiceStub, w: _Watcher) -> None:
        request = breaker_pb2.WatchBreakersRequest(names=[TRIP_BREAKER])
        try:
            async for event in stub.WatchBreakers(request):
                now = time.perf_counter()
                if not event.HasField("breaker") or event.breaker.name != TRIP_BREAKER:
                    continue
                state = event.breaker.status.state
                async with self.changed:
                    if state == OPEN and self.t0 is not None and w.index not in self.arrivals:
                        self.arrivals[w.index] = now - self.t0
                    w.state = state
                    self.changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append(f"watcher {w.index} ({w.replica}): {type(exc).__name__}: {exc}")
            async with self.changed:
                self.changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> bool:
        """Wait up to ROUND_TIMEOUT for ``predicate``; False (and a note) on timeout."""
        try:
            async with asyncio.timeout(ROUND_TIMEOUT), self.changed:
                await self.changed.wait_for(predicate)
            return True
        except TimeoutError:
            _progress(f"timed out waiting for {what}")
            return False


async def _propagation(
    addresses: dict[str, str], leader: str, watchers: int, trips: int
) -> PropagationResult:
    labels = list(addresses)
    channels = {label: grpc.aio.insecure_channel(addresses[label]) for label in labels}
    # One channel (one connection) per watcher, as separate clients would have.
    watcher_channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        control = breaker_pb2_grpc.CircuitBreakerServiceStub(channels[leader])
        config = breaker_pb2.BreakerConfig(sliding_window_size=10, minimum_number_of_calls=10)
        await control.PutBreaker(
            breaker_pb2.PutBreakerRequest(name=TRIP_BREAKER, config=config), timeout=CALL_TIMEOUT
        )
        await control.ForceState(
            breaker_pb2.ForceStateRequest(
                name=TRIP_BREAKER, state=CLOSED, reason="benchmark start", actor=REPORTER
            ),
            timeout=CALL_TIMEOUT,
        )
        probe = _TripProbe([_Watcher(i, labels[i % len(labels)]) for i in range(watchers)])
        for w in probe.watchers:
            channel = grpc.aio.insecure_channel(addresses[w.replica])
            watcher_channels.append(channel)
            stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
            tasks.append(asyncio.create_task(probe.watch(stub, w), name=f"watch-{w.index}"))

        def all_closed() -> bool:
            return bool(probe.errors) or all(w.state == CLOSED for w in probe.watchers)

        def all_open() -> bool:
            return bool(probe.errors) or len(probe.arrivals) == len(probe.watchers)

        if not await probe.wait_until(all_closed, "the watchers' snapshots"):
            raise RuntimeError("watch streams did not deliver the breaker in CLOSED")
        report = breaker_pb2.ReportOutcomesRequest(
            reporter=REPORTER,
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name=TRIP_BREAKER, counts=breaker_pb2.OutcomeCounts(failures=TRIP_FAILURES)
                )
            ],
        )
        reset = breaker_pb2.ForceStateRequest(
            name=TRIP_BREAKER, state=CLOSED, reason="benchmark round", actor=REPORTER
        )
        samples: dict[str, list[float]] = {label: [] for label in labels}
        rpc_times: list[float] = []
        missed = 0
        for round_no in range(trips + 1):  # round 0 warms up and is not recorded
            if probe.errors:
                raise RuntimeError("a watch stream failed: " + "; ".join(probe.errors))
            probe.arrivals = {}
            probe.t0 = t0 = time.perf_counter()
            response = await control.ReportOutcomes(report, timeout=CALL_TIMEOUT)
            rpc_time = time.perf_counter() - t0
            if response.accepted != 1:
                raise RuntimeError(f"ReportOutcomes did not count the report: {response}")
            await probe.wait_until(all_open, f"trip {round_no} to reach every watcher")
            probe.t0 = None
            if round_no:
                rpc_times.append(rpc_time)
                missed += len(probe.watchers) - len(probe.arrivals)
                for w in probe.watchers:
                    if w.index in probe.arrivals:
                        samples[w.replica].append(probe.arrivals[w.index])
            await control.ForceState(reset, timeout=CALL_TIMEOUT)
            if not await probe.wait_until(all_closed, f"reset {round_no} to reach every watcher"):
                raise RuntimeError("the reset to CLOSED did not reach every watcher")
            await asyncio.sleep(SETTLE)
        if probe.errors:
            raise RuntimeError("a watch stream failed: " + "; ".join(probe.errors))
        return PropagationResult(
            replicas=len(labels),
            watchers=watchers,
            trips=trips,
            missed=missed,
            stream_errors=list(probe.errors),
            all=latency_summary([s for values in samples.values() for s in values]),
            by_replica={label: latency_summary(values) for label, values in samples.items()},
            report_rpc=latency_summary(rpc_times),
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in [*watcher_channels, *channels.values()]:
            await channel.close()


def leader_address(address: str) -> str:
    """The address of the replica that GetLeader on ``address`` names."""
    with grpc.insecure_channel(address) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        response = stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=CALL_TIMEOUT)
    return response.leader.address


def measure_propagation(
    replicas: list[BulwarkProcess], watchers: int, trips: int
) -> PropagationResult:
    """Run the trip rounds against ``replicas`` (all serving, one etcd)."""
    addresses = {f"replica-{i + 1}": f"{HOST}:{r.port}" for i, r in enumerate(replicas)}
    named = leader_address(addresses["replica-1"])
    by_address = {address: label for label, address in addresses.items()}
    if named not in by_address:
        raise RuntimeError(f"the leader {named!r} is none of the benchmark's replicas")
    leader = by_address[named]
    # Label each replica by its role: the leader takes the reports and writes the trip.
    roles = {label: ("leader" if label == leader else f"follower {label}") for label in addresses}
    result = asyncio.run(
        _propagation({roles[k]: v for k, v in addresses.items()}, roles[leader], watchers, trips)
    )
    for replica in replicas:
        replica.check_alive()
    return result


# --------------------------------------------------------------------------- part 3: peers


@dataclass
class PeerResult:
    """One caller making one decision per call, in a loop, for a fixed time."""

    peer: str
    calls: int
    denied: int
    errors: int
    duration_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    round_trips_per_call: float
    round_trips: str


class _Peer:
    """One contender of part 3: a decision function and its accumulated measurements."""

    def __init__(self, key: str, label: str, decide: Callable[[], bool], round_trips: str) -> None:
        self.key = key
        self.label = label
        self.decide = decide
        self.round_trips = round_trips
        self.allowed = self.denied = self.errors = 0
        self.seconds = 0.0
        self.latencies = array.array("d")
        self.backend_ops = 0  # counted round trips, when the peer can count them

    def before_slice(self) -> None:
        """Hook: called just before each measured slice."""

    def after_slice(self) -> None:
        """Hook: called just after each measured slice."""

    def warm_up(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.decide()

    def run_slice(self, seconds: float) -> None:
        """Call ``decide`` back to back for ``seconds``; add the outcomes and latencies."""
        clock, decide, latencies = time.perf_counter, self.decide, self.latencies
        self.before_slice()
        begin = clock()
        end = begin + seconds
        while (started := clock()) < end:
            try:
                ok = decide()
            except Exception:
                self.errors += 1
                continue
            latencies.append(clock() - started)
            if ok:
                self.allowed += 1
            else:
                self.denied += 1
        self.seconds += clock() - begin
        self.after_slice()

    def ops_per_call(self) -> float:
        calls = self.allowed + self.denied + self.errors
        return self.backend_ops / calls if calls else math.nan

    def result(self) -> PeerResult:
        ordered = sorted(self.latencies)
        return PeerResult(
            peer=self.label,
            calls=self.allowed,
            denied=self.denied,
            errors=self.errors,
            duration_s=self.seconds,
            calls_per_s=self.allowed / self.seconds if self.seconds else math.nan,
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            round_trips_per_call=self.ops_per_call(),
            round_trips=self.round_trips,
        )


class _PybreakerPeer(_Peer):
    """pybreaker with ``CircuitRedisStorage`` guarding a no-op; counts Redis commands."""

    def __init__(self, client: redis.Redis) -> None:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"bulwark-bench-{os.getpid()}"
        )
        self.breaker = pybreaker.CircuitBreaker(state_storage=storage, name="bench")
        self._client = client
        self._before = 0
        breaker = self.breaker

        def noop() -> None:
            return None

        def decide() -> bool:
            try:
                breaker.call(noop)
            except pybreaker.CircuitBreakerError:
                return False
            return True

        super().__init__(
            "pybreaker_redis",
            f"pybreaker {pybreaker_version()} + Redis (CircuitRedisStorage)",
            decide,
            "Redis commands (one round trip each), counted with INFO stats",
        )

    def _commands(self) -> int:
        return int(self._client.info("stats")["total_commands_processed"])

    def before_slice(self) -> None:
        self._before = self._commands()

    def after_slice(self) -> None:
        # The INFO of before_slice is counted by this one.
        self.backend_ops += self._commands() - self._before - 1


def measure_peers(
    redis_port: int,
    allow_address: str,
    echo_address: str,
    echo_payload: bytes,
    warmup: float,
    duration: float,
    slices: int,
) -> dict[str, PeerResult]:
    """One caller, one decision per call: pybreaker + Redis, Bulwark Allow, and the echo floor.

    Each peer is warmed up for ``warmup`` seconds, then the peers take turns in ``slices``
    slices of ``duration / slices`` seconds each, so that every peer is measured for
    ``duration`` seconds under the same (drifting) conditions of a shared machine.
    """
    allow_request = allow_call().request
    with contextlib.ExitStack() as stack:
        client = redis.Redis(host=HOST, port=redis_port)
        stack.callback(client.close)
        allow_channel = stack.enter_context(grpc.insecure_channel(allow_address))
        echo_channel = stack.enter_context(grpc.insecure_channel(echo_address))
        allow_stub = breaker_pb2_grpc.CircuitBreakerServiceStub(allow_channel)
        echo = echo_channel.unary_unary(ECHO_METHOD)

        def allow() -> bool:
            return allow_stub.Allow(allow_request, timeout=CALL_TIMEOUT).allowed

        def echo_once() -> bool:
            echo(echo_payload, timeout=CALL_TIMEOUT)
            return True

        pybreaker_peer = _PybreakerPeer(client)
        allow_peer = _Peer(
            "bulwark_allow_sequential",
            "Bulwark Allow (sync gRPC, 1 channel)",
            allow,
            "gRPC round trips (Allow reads the replica's cache; no etcd access)",
        )
        echo_peer = _Peer(
            "echo_sequential",
            "bare grpc.aio echo (sync gRPC, 1 channel; the floor)",
            echo_once,
            "gRPC round trips",
        )
        peers = [pybreaker_peer, allow_peer, echo_peer]
        for peer in peers:
            peer.warm_up(warmup)
        for _ in range(slices):
            for peer in peers:
                peer.run_slice(duration / slices)
        state = pybreaker_peer.breaker.current_state
    if state != pybreaker.STATE_CLOSED:
        raise RuntimeError(f"pybreaker left CLOSED during the benchmark ({state})")
    for peer in (allow_peer, echo_peer):  # one unary call per decision, by construction
        peer.backend_ops = peer.allowed + peer.denied + peer.errors
    return {peer.key: peer.result() for peer in peers}


# --------------------------------------------------------------------------- redis-server


def find_redis_server(explicit: str | None, install: bool) -> str:
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
    _progress("redis-server not on PATH: apt-get install -y redis-server")

    def run(cmd: list[str]) -> bool:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
        return done.returncode == 0

    if not run(install_cmd):
        _progress("install failed; apt-get update, then install again")
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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """``redis-server`` on 127.0.0.1 with no persistence, as a child process."""

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

    def wait_ready(self, timeout: float) -> None:
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
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._log.close()


# --------------------------------------------------------------------------- report


def pybreaker_version() -> str:
    """pybreaker's installed version."""
    return importlib.metadata.version("pybreaker")


@dataclass
class Report:
    """Everything printed."""

    started_utc: str
    machine: dict[str, Any]
    note: str
    load: dict[str, Any]
    allow: dict[str, TargetResult] = field(default_factory=dict)
    allow_vs_echo: dict[str, float] = field(default_factory=dict)
    propagation: PropagationResult | None = None
    peers: dict[str, PeerResult] = field(default_factory=dict)
    bulwark_vs_pybreaker: dict[str, float] = field(default_factory=dict)
    sequential_allow_vs_echo: dict[str, float] = field(default_factory=dict)


def _fmt_summary(label: str, s: LatencySummary) -> str:
    return (
        f"{label:<24} {s.samples:>8} {s.p50_ms:>8.2f} {s.p90_ms:>8.2f} "
        f"{s.p99_ms:>8.2f} {s.max_ms:>8.2f}"
    )


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, load = report.machine, report.load
    lines = [
        f"Bulwark circuit-breaker benchmark, started {report.started_utc}",
        f"Machine: {m['cpus']} CPUs ({m['machine']}), Python {m['python']}, grpcio "
        f"{m['grpcio']}, etcd {m['etcd']}, pybreaker {m['pybreaker']}, redis-py "
        f"{m['redis_py']}, redis-server {m['redis_server']}",
        f"Note: {report.note}",
        "",
        f"1. Allow under load: {load['processes']} processes x {load['concurrency']} in-flight "
        f"calls, {load['warmup_s']:g}s warm-up + {load['duration_s']:g}s per target, one "
        f"target after the other; echo payload {load['echo_payload_bytes']} bytes",
        f"{'target':<8} {'calls':>9} {'errors':>7} {'QPS':>10} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}",
    ]
    for r in report.allow.values():
        lines.append(
            f"{r.target:<8} {r.calls:>9} {r.errors:>7} {r.qps:>10.1f} {r.p50_ms:>8.2f} "
            f"{r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
        if r.errors_by_code:
            codes = ", ".join(f"{code}={n}" for code, n in sorted(r.errors_by_code.items()))
            lines.append(f"{'':<8} errors by code: {codes}")
    if report.allow_vs_echo:
        ratio = report.allow_vs_echo
        lines.append(
            f"Allow/echo: QPS {ratio['qps']:.2f}x, p99 {ratio['p99']:.2f}x "
            f"(p50 {ratio['p50']:.2f}x)"
        )
    p = report.propagation
    if p is not None:
        lines += [
            "",
            f"2. Trip -> watcher propagation: {p.trips} trips x {p.watchers} WatchBreakers "
            f"streams on {p.replicas} replica(s) sharing one etcd; ReportOutcomes "
            f"({TRIP_FAILURES} failures) sent to the leader; time from just before the call "
            "to each watcher's OPEN event",
            f"{'watchers on':<24} {'samples':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8}",
            _fmt_summary("all", p.all),
        ]
        if len(p.by_replica) > 1:
            lines += [_fmt_summary(label, s) for label, s in p.by_replica.items()]
        lines.append(_fmt_summary("(ReportOutcomes RPC)", p.report_rpc))
        if p.missed:
            lines.append(f"missed: {p.missed} (watcher, trip) pairs saw no OPEN in time")
    if report.peers:
        lines += [
            "",
            f"3. One caller in one process, one decision per call (pybreaker guards a no-op): "
            f"{load['peer_warmup_s']:g}s warm-up, then {load['peer_duration_s']:g}s each, "
            f"measured in {load['peer_slices']} alternating turns",
            f"{'peer':<54} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}  round trips per call",
        ]
        for r in report.peers.values():
            lines.append(
                f"{r.peer:<54} {r.calls_per_s:>9.1f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f}  "
                f"{r.round_trips_per_call:.2f} {r.round_trips}"
            )
            if r.denied or r.errors:
                lines.append(f"{'':<54} denied {r.denied}, errors {r.errors}")
        if report.bulwark_vs_pybreaker:
            ratio = report.bulwark_vs_pybreaker
            lines.append(
                f"Bulwark sequential Allow / pybreaker+Redis: calls/s {ratio['calls_per_s']:.2f}x,"
                f" p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x"
            )
        if report.sequential_allow_vs_echo:
            ratio = report.sequential_allow_vs_echo
            lines.append(
                f"Bulwark sequential Allow / sequential echo: calls/s "
                f"{ratio['calls_per_s']:.2f}x, p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = argparse.ArgumentParser(
        prog="breaker_bench.py",
        description=(
            "Measure Bulwark's circuit breakers in one run: (1) QPS and p50/p99 of "
            "CircuitBreakerService/Allow on one replica beside a bare grpc.aio echo server "
            "under the same load; (2) the time from a tripping ReportOutcomes call to the "
            "OPEN event on WatchBreakers streams; (3) one caller's decisions per second with "
            "pybreaker + Redis-shared state versus sequential Bulwark Allow calls. "
            "Everything runs on 127.0.0.1; clients and servers share the same CPUs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load = parser.add_argument_group("part 1: Allow under load (same load as getleader_bench)")
    load.add_argument("--processes", type=int, default=2, help="load processes per target")
    load.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="calls kept in flight by each load process (over one grpc.aio channel)",
    )
    load.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    load.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of discarded load before measuring"
    )
    load.add_argument(
        "--echo-bytes",
        type=int,
        default=0,
        help="echo payload size; 0 sends the bytes of a real AllowResponse instead",
    )
    trips = parser.add_argument_group("part 2: trip propagation")
    trips.add_argument(
        "--watchers", type=int, default=20, help="WatchBreakers streams, round-robin on replicas"
    )
    trips.add_argument("--trips", type=int, default=30, help="recorded trips (after 1 warm-up)")
    trips.add_argument(
        "--replicas",
        type=int,
        default=2,
        choices=(1, 2),
        help="replicas carrying watchers; the second shares the first one's embedded etcd",
    )
    peers = parser.add_argument_group("part 3: one caller, pybreaker + Redis vs Bulwark")
    peers.add_argument("--peer-duration", type=float, default=5.0, help="measured seconds per peer")
    peers.add_argument(
        "--peer-warmup", type=float, default=1.0, help="discarded seconds per peer first"
    )
    peers.add_argument(
        "--peer-slices",
        type=int,
        default=5,
        help="turns the peers take (each measured for --peer-duration in total), so that "
        "drifting background load on a shared machine hits all of them alike",
    )
    peers.add_argument(
        "--redis-server",
        metavar="PATH",
        default=None,
        help="redis-server binary; %(default)s finds it on PATH",
    )
    peers.add_argument(
        "--no-install-redis",
        action="store_true",
        help="fail instead of running 'apt-get install -y redis-server' when it is missing",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of the tables"
    )
    args = parser.parse_args(argv)
    if args.processes < 1 or args.concurrency < 1:
        parser.error("--processes and --concurrency must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if args.peer_duration <= 0 or args.peer_warmup < 0:
        parser.error("--peer-duration must be positive and --peer-warmup not negative")
    if args.peer_slices < 1:
        parser.error("--peer-slices must be at least 1")
    if args.echo_bytes < 0:
        parser.error("--echo-bytes must not be negative")
    if args.watchers < 1 or args.trips < 1:
        parser.error("--watchers and --trips must be at least 1")
    return args


def benchmark(args: argparse.Namespace) -> Report:
    """Start the servers, run the three parts, stop everything; return the report."""
    redis_binary = find_redis_server(args.redis_server, install=not args.no_install_redis)
    machine = machine_info()
    machine["pybreaker"] = pybreaker_version()
    machine["redis_py"] = importlib.metadata.version("redis")
    machine["redis_server"] = redis_server_version(redis_binary)
    report = Report(
        started_utc=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        machine=machine,
        note=(
            f"clients and servers share this {machine['cpus']}-core machine on 127.0.0.1, so "
            "they compete for CPU: absolute figures are lower bounds; read the ratios."
        ),
        load={
            "processes": args.processes,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "peer_warmup_s": args.peer_warmup,
            "peer_duration_s": args.peer_duration,
            "peer_slices": args.peer_slices,
        },
    )
    root = tempfile.mkdtemp(prefix="bulwark-breaker-bench-")
    servers: list[ServerProcess] = []
    redis_proc: RedisProcess | None = None
    try:
        # Part 1: one replica (embedded etcd) and the echo server.
        _progress("starting Bulwark replica 1 (embedded etcd) and the echo server...")
        first = BulwarkProcess(
            str(Path(root) / "replica-1"), name="replica-1", extra_args=["--replica-id=bench-1"]
        )
        servers.append(first)
        echo = EchoProcess()
        servers.append(echo)
        address = f"{HOST}:{first.wait_port(SERVING_TIMEOUT)}"
        echo_address = f"{HOST}:{echo.wait_port(SERVING_TIMEOUT)}"
        probe_getleader(address, LEADER_TIMEOUT)
        allow_bytes = prepare_allow_breaker(address)
        payload = b"x" * args.echo_bytes if args.echo_bytes else allow_bytes
        report.load["allow_response_bytes"] = len(allow_bytes)
        report.load["echo_payload_bytes"] = len(payload)
        for target, target_address, call, server in (
            ("allow", address, allow_call(), first),
            ("echo", echo_address, echo_call(payload), echo),
        ):
            _progress(
                f"loading {target}: {args.processes} x {args.concurrency} in flight, "
                f"{args.warmup:g}s warm-up + {args.duration:g}s"
            )
            result = run_load(target, target_address, call, args, server)
            report.allow[target] = result
            _progress(f"{target}: {result.calls} calls, {result.qps:.1f} QPS")
        a, e = report.allow["allow"], report.allow["echo"]
        report.allow_vs_echo = {
            "qps": _ratio(a.qps, e.qps),
            "p50": _ratio(a.p50_ms, e.p50_ms),
            "p99": _ratio(a.p99_ms, e.p99_ms),
        }

        # Part 2: watchers on one or two replicas sharing replica 1's etcd.
        replicas = [first]
        if args.replicas == 2:
            if first.etcd_endpoint is None:
                raise RuntimeError("replica 1 did not log its embedded etcd endpoint")
            _progress(f"starting Bulwark replica 2 on replica 1's etcd ({first.etcd_endpoint})")
            second = BulwarkProcess(
                str(Path(root) / "replica-2"),
                name="replica-2",
                extra_args=[f"--etcd-endpoints={first.etcd_endpoint}", "--replica-id=bench-2"],
            )
            servers.append(second)
            second.wait_port(SERVING_TIMEOUT)
            probe_getleader(f"{HOST}:{second.port}", LEADER_TIMEOUT)
            replicas.append(second)
        _progress(
            f"trip propagation: {args.watchers} watchers on {len(replicas)} replica(s), "
            f"1 + {args.trips} trips"
        )
        report.propagation = measure_propagation(replicas, args.watchers, args.trips)
        _progress(
            f"propagation p50 {report.propagation.all.p50_ms:.2f} ms, "
            f"p99 {report.propagation.all.p99_ms:.2f} ms"
        )
        for replica in replicas[1:]:
            replica.stop()

        # Part 3: one caller; pybreaker + Redis, Bulwark Allow and the echo take turns.
        _progress(f"starting redis-server ({redis_binary})...")
        redis_dir = Path(root) / "redis"
        redis_dir.mkdir()
        redis_proc = RedisProcess(redis_binary, str(redis_dir))
        redis_proc.wait_ready(REDIS_READY_TIMEOUT)
        _progress(
            f"one caller: pybreaker + Redis, Bulwark Allow and echo, {args.peer_warmup:g}s "
            f"warm-up each, then {args.peer_slices} turns of "
            f"{args.peer_duration / args.peer_slices:g}s each"
        )
        report.peers = measure_peers(
            redis_proc.port,
            address,
            echo_address,
            payload,
            args.peer_warmup,
            args.peer_duration,
            args.peer_slices,
        )
        first.check_alive()
        echo.check_alive()
        py = report.peers["pybreaker_redis"]
        seq = report.peers["bulwark_allow_sequential"]
        floor = report.peers["echo_sequential"]
        for peer in report.peers.values():
            _progress(f"{peer.peer}: {peer.calls_per_s:.1f} calls/s")
        report.bulwark_vs_pybreaker = {
            "calls_per_s": _ratio(seq.calls_per_s, py.calls_per_s),
            "p50": _ratio(seq.p50_ms, py.p50_ms),
            "p99": _ratio(seq.p99_ms, py.p99_ms),
        }
        report.sequential_allow_vs_echo = {
            "calls_per_s": _ratio(seq.calls_per_s, floor.calls_per_s),
            "p50": _ratio(seq.p50_ms, floor.p50_ms),
            "p99": _ratio(seq.p99_ms, floor.p99_ms),
        }
    finally:
        if redis_proc is not None:
            try:
                redis_proc.stop()
            except Exception as exc:
                _progress(f"stopping redis-server failed: {exc}")
        for server in reversed(servers):  # replica 2 before replica 1, which holds the etcd
            try:
                server.stop()
            except Exception as exc:
                _progress(f"stopping {server.name} failed: {exc}")
        shutil.rmtree(root, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON)."""
    return run_and_print(
        parse_args(argv),
        benchmark,
        format_report,
        _progress,
        "servers, load processes and redis-server stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
