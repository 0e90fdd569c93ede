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
    the machinery of ``bench_servers.py`` and ``bench_load.py`` (replica with a private
    embedded etcd in a temporary data dir; the echo server; ``--processes`` spawned load
    processes keeping ``--concurrency`` calls in flight each, exact merged percentiles). A
    second replica, if any, joins the first replica's embedded etcd (``--etcd-endpoints``,
    from its ``"event": "etcd.embedded"`` log line) and runs only during part 2. ``redis-server``
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
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pybreaker
import redis
from bench_load import (
    CallSpec,
    LatencySummary,
    TargetResult,
    echo_call,
    latency_summary,
    load_target,
)
from bench_peers import (
    PEER_RATIOS,
    Peer,
    PeerResult,
    PybreakerPeer,
    echo_peer,
    peer_table,
    pybreaker_version,
    take_turns,
)
from bench_redis import RedisProcess, add_redis_options, find_redis_server, redis_versions
from bench_report import (
    TARGET_RATIOS,
    add_json_option,
    add_load_options,
    bench_parser,
    latency_header,
    latency_row,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    ratios,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    shared_cpus_note,
    target_table,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    HOST,
    BulwarkProcess,
    EchoProcess,
    ProcessGroup,
    probe_getleader,
)

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, cluster_pb2, cluster_pb2_grpc

ALLOW_BREAKER = "bench"
TRIP_BREAKER = "bench-trip"
TRIP_FAILURES = 10
REPORTER = "bench"
ROUND_TIMEOUT = 10.0  # seconds for every watcher to see one trip or one reset
SETTLE = 0.2  # seconds after a reset before the next trip (the leader ticks every 0.1 s)
OPEN = breaker_pb2.BREAKER_STATE_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED


_progress = progress_to("breaker-bench")


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
        allow_stub = breaker_pb2_grpc.CircuitBreakerServiceStub(allow_channel)

        def allow() -> bool:
            return allow_stub.Allow(allow_request, timeout=CALL_TIMEOUT).allowed

        pybreaker_peer = PybreakerPeer(client)
        allow_peer = Peer(
            "bulwark_allow_sequential",
            "Bulwark Allow (sync gRPC, 1 channel)",
            allow,
            "gRPC round trips (Allow reads the replica's cache; no etcd access)",
        )
        echo = echo_peer(stack, echo_address, echo_payload)
        peers = [pybreaker_peer, allow_peer, echo]
        take_turns(peers, warmup, duration, slices)
        state = pybreaker_peer.breaker.current_state
    if state != pybreaker.STATE_CLOSED:
        raise RuntimeError(f"pybreaker left CLOSED during the benchmark ({state})")
    for peer in (allow_peer, echo):  # one unary call per decision, by construction
        peer.one_round_trip_each()
    return {peer.key: peer.result() for peer in peers}


# --------------------------------------------------------------------------- report


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
    return latency_row(label, s, 24)


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, load = report.machine, report.load
    lines = [
        f"Bulwark circuit-breaker benchmark, started {report.started_utc}",
        machine_line(m),
        f"Note: {report.note}",
        "",
        f"1. Allow under load: {load['processes']} processes x {load['concurrency']} in-flight "
        f"calls, {load['warmup_s']:g}s warm-up + {load['duration_s']:g}s per target, one "
        f"target after the other; echo payload {load['echo_payload_bytes']} bytes",
        *target_table(((r.target, r) for r in report.allow.values()), 8),
    ]
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
            latency_header("watchers on", 24),
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
            *peer_table(report.peers.values(), 54),
        ]
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
    parser = bench_parser(
        "breaker_bench.py",
        "Measure Bulwark's circuit breakers in one run: (1) QPS and p50/p99 of "
        "CircuitBreakerService/Allow on one replica beside a bare grpc.aio echo server "
        "under the same load; (2) the time from a tripping ReportOutcomes call to the "
        "OPEN event on WatchBreakers streams; (3) one caller's decisions per second with "
        "pybreaker + Redis-shared state versus sequential Bulwark Allow calls. "
        "Everything runs on 127.0.0.1; clients and servers share the same CPUs.",
    )
    load = parser.add_argument_group("part 1: Allow under load (same load as getleader_bench)")
    add_load_options(load)
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
    add_redis_options(peers)
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "processes", "concurrency")
    require_duration_warmup(parser, args)
    if args.peer_duration <= 0 or args.peer_warmup < 0:
        parser.error("--peer-duration must be positive and --peer-warmup not negative")
    require_at_least_one(parser, args, "peer_slices")
    if args.echo_bytes < 0:
        parser.error("--echo-bytes must not be negative")
    require_at_least_one(parser, args, "watchers", "trips")
    return args


def benchmark(args: argparse.Namespace) -> Report:
    """Start the servers, run the three parts, stop everything; return the report."""
    redis_binary = find_redis_server(
        args.redis_server, install=not args.no_install_redis, progress=_progress
    )
    machine = {**machine_info(), "pybreaker": pybreaker_version(), **redis_versions(redis_binary)}
    report = Report(
        started_utc=utc_now(),
        machine=machine,
        note=shared_cpus_note(machine["cpus"]),
        load={
            **load_settings(args),
            "peer_warmup_s": args.peer_warmup,
            "peer_duration_s": args.peer_duration,
            "peer_slices": args.peer_slices,
        },
    )
    # Stopped in reverse: redis-server, then replica 2 before replica 1, which holds the etcd.
    with ProcessGroup("bulwark-breaker-bench-", _progress) as group:
        # Part 1: one replica (embedded etcd) and the echo server.
        _progress("starting Bulwark replica 1 (embedded etcd) and the echo server...")
        first = group.add(
            BulwarkProcess(
                str(group.root / "replica-1"), name="replica-1", extra_args=["--replica-id=bench-1"]
            )
        )
        echo = group.add(EchoProcess())
        address = first.wait_address()
        echo_address = echo.wait_address()
        probe_getleader(address)
        allow_bytes = prepare_allow_breaker(address)
        payload = b"x" * args.echo_bytes if args.echo_bytes else allow_bytes
        report.load["allow_response_bytes"] = len(allow_bytes)
        report.load["echo_payload_bytes"] = len(payload)
        for target, target_address, call, server in (
            ("allow", address, allow_call(), first),
            ("echo", echo_address, echo_call(payload), echo),
        ):
            report.allow[target] = load_target(
                target, target_address, call, args, server, _progress
            )
        report.allow_vs_echo = ratios(report.allow["allow"], report.allow["echo"], TARGET_RATIOS)

        # Part 2: watchers on one or two replicas sharing replica 1's etcd.
        replicas = [first]
        if args.replicas == 2:
            if first.etcd_endpoint is None:
                raise RuntimeError("replica 1 did not log its embedded etcd endpoint")
            _progress(f"starting Bulwark replica 2 on replica 1's etcd ({first.etcd_endpoint})")
            second = group.add(
                BulwarkProcess(
                    str(group.root / "replica-2"),
                    name="replica-2",
                    extra_args=[
                        f"--etcd-endpoints={first.etcd_endpoint}",
                        "--replica-id=bench-2",
                        # A replica of an external etcd requires callers to authenticate
                        # by default; the benchmark measures decisions, not identities.
                        "--auth=off",
                    ],
                )
            )
            probe_getleader(second.wait_address())
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
        redis_proc = group.add(RedisProcess.under(redis_binary, group.root))
        redis_proc.wait_ready()
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
        report.bulwark_vs_pybreaker = ratios(seq, py, PEER_RATIOS)
        report.sequential_allow_vs_echo = ratios(seq, floor, PEER_RATIOS)
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
