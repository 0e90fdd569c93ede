"""Backpressure: a downstream whose latency rises tenfold, a fixed and two adaptive clients.

What it measures, in one run
    A downstream gRPC server (this file run with ``--serve``: a ``grpc.aio`` subprocess on
    127.0.0.1, so it has a core of its own) answers a raw-bytes unary ``Call`` after
    holding one of ``--workers`` workers for ``--latency`` seconds; calls beyond
    ``--workers`` wait for a worker, as in a thread-pool server (``--workers 0``: no
    pool, every call only sleeps). Every 10 ms it samples the calls inside its handler
    (waiting for a worker or served): that is its in-flight.

    ``--callers`` coroutines call it, each once every ``--period`` seconds (staggered;
    a caller still busy at its tick waits for the next one), with a ``--deadline``:

    * ``fixed``: a plain channel, so at most ``--callers`` calls in flight, whatever
      the downstream does;
    * ``gradient2``: the same channel through ``AsyncBulwarkInterceptor(None, {...:
      Guard(adaptive=NETFLIX_GRADIENT2, throttle=True)})``: Netflix's Gradient2 limit
      with all its defaults (initial and minimum limit 20, maximum 200, smoothing 0.2,
      RTT tolerance 1.5, long window 600 samples, queue size 4) and the SRE book's
      throttle (K = 2, two minutes);
    * ``adaptive``: the same with ``adaptive=True``, Bulwark's client defaults
      (``Gradient2Settings()``: Gradient2's but minimum limit 1 and long window 6,000
      samples; ``bulwark._adaptive`` says why). ``--initial-limit``, ``--min-limit`` and
      ``--long-window`` change those three for this contender.

    A call the interceptor refuses fails at once; its caller waits for its next tick.

    Each contender gets ``--warmup`` s at ``--latency``, then three phases of ``--phase``
    s: ``before`` (``--latency``), ``during`` (``--factor`` x ``--latency``) and
    ``after`` (``--latency`` again). Per phase: the server's in-flight (mean and max of
    its samples, and the mean of each second), the goodput (successful calls/s), the
    calls refused in the process and failed otherwise, the p50/p99 of successful calls,
    and the adaptive limit. Then the in-flight and goodput ratios during/before, and the
    recovery: the end of the first 0.5 s window after the latency returns whose goodput
    is at least 90% of the ``before`` phase's.

The load generator and the downstream share this machine's cores on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from bench_load import percentile
from bench_report import (
    add_json_option,
    bench_parser,
    machine_info,
    machine_line,
    progress_to,
    run_and_print,
    shared_cpus_note,
    utc_now,
)
from bench_servers import ProcessGroup, ServerProcess, serve_until_stopped

from bulwark._adaptive import NETFLIX_GRADIENT2
from bulwark.interceptors import REJECTED_BY_KEY, AsyncBulwarkInterceptor, Gradient2Settings, Guard

_progress = progress_to("backpressure-bench")

SERVICE = "bulwark.bench.Downstream"
CALL = f"/{SERVICE}/Call"
CONTROL = f"/{SERVICE}/Control"
PAYLOAD = b"x" * 16
SAMPLE_S = 0.010  # the server samples its in-flight this often
LIMIT_SAMPLE_S = 0.050  # the load generator samples the adaptive limit this often
RECOVERY_WINDOW_S = 0.5
RECOVERY_STEP_S = 0.1
RECOVERED = 0.9  # of the before phase's goodput
# The options a report records.
SETTINGS = (
    "callers period latency factor workers phase warmup deadline initial_limit min_limit "
    "long_window"
).split()


# --------------------------------------------------------------------------- downstream


class Downstream:
    """The downstream's handlers and its in-flight gauge, on the server's event loop."""

    def __init__(self, workers: int) -> None:
        self.latency = 0.010
        # No pool: a context that never waits.
        self.pool = asyncio.Semaphore(workers) if workers > 0 else contextlib.nullcontext()
        self.in_flight = 0
        self.samples: list[int] = []

    async def call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.in_flight += 1
        try:
            async with self.pool:
                await asyncio.sleep(self.latency)
            return request
        finally:
            self.in_flight -= 1

    async def control(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Return the in-flight samples since the last control call; set ``latency``."""
        command = json.loads(request or b"{}")
        samples, self.samples = self.samples, []
        if "latency" in command:
            self.latency = float(command["latency"])
        n = max(1, round(1.0 / SAMPLE_S))  # samples a second
        seconds = [samples[i : i + n] for i in range(0, len(samples), n)]
        return json.dumps(
            {
                "mean": sum(samples) / len(samples) if samples else math.nan,
                "max": max(samples, default=0),
                "per_second": [sum(chunk) / len(chunk) for chunk in seconds],
            }
        ).encode()

    async def sample(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.samples.append(self.in_flight)
            next_at += SAMPLE_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))


async def serve(workers: int) -> None:
    """The downstream: print the port, serve until SIGTERM, SIGINT or our stdin closes."""
    downstream = Downstream(workers)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Call": grpc.unary_unary_rpc_method_handler(downstream.call),
                    "Control": grpc.unary_unary_rpc_method_handler(downstream.control),
                },
            ),
        )
    )
    sampler = asyncio.ensure_future(downstream.sample())
    try:
        await serve_until_stopped(server, "downstream", grace=0.5)
    finally:
        sampler.cancel()


class DownstreamProcess(ServerProcess):
    def __init__(self, workers: int) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--workers", str(workers)]
        super().__init__("downstream", argv, port_stream="stdout")

    def _parse_port(self, line: str) -> int | None:
        text = line.strip()
        return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------- load


@dataclass
class Phase:
    name: str
    latency_ms: float
    seconds: float
    server_in_flight_mean: float
    server_in_flight_max: int
    server_in_flight_per_s: list[float]
    goodput: float  # successful calls/s
    ok: int
    refused: dict[str, int]  # by bulwark-rejected-by
    failed: dict[str, int]  # by status code
    p50_ms: float
    p99_ms: float
    limit_mean: float | None = None
    limit_min: int | None = None
    limit_max: int | None = None


@dataclass
class Contender:
    name: str
    phases: list[Phase] = field(default_factory=list)
    in_flight_ratio: float = math.nan  # during / before, server-side means
    goodput_ratio: float = math.nan  # during / before
    recovery_s: float | None = None  # None: not within the after phase
    client_cpu: float = math.nan  # the load generator's CPU over the phases, share of a core


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    contenders: list[Contender] = field(default_factory=list)


def _rejected_by(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(REJECTED_BY_KEY)


class Load:
    """``--callers`` paced callers over one channel; every answer logged with its time."""

    def __init__(self, channel: grpc.aio.Channel, args: argparse.Namespace) -> None:
        self.call = channel.unary_unary(CALL)
        self.args = args
        self.log: list[tuple[float, str, float]] = []  # (end, outcome, seconds)
        self.stopping = False

    async def caller(self, index: int, start: float) -> None:
        args = self.args
        next_at = start + index * args.period / args.callers
        while not self.stopping:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            began = time.monotonic()
            try:
                await self.call(PAYLOAD, timeout=args.deadline)
                outcome = "ok"
            except grpc.aio.AioRpcError as error:
                by = _rejected_by(error)
                outcome = f"refused:{by}" if by else error.code().name
            ended = time.monotonic()
            self.log.append((ended, outcome, ended - began))
            next_at += args.period
            if next_at < ended:  # still busy at its tick: wait for the next one
                next_at += math.ceil((ended - next_at) / args.period) * args.period


def _phase(
    name: str,
    latency: float,
    window: tuple[float, float],
    log: Sequence[tuple[float, str, float]],
    server: dict[str, Any],
    limits: Sequence[tuple[float, int]],
) -> Phase:
    start, end = window
    seconds = end - start
    answers = [(outcome, took) for at, outcome, took in log if start <= at < end]
    ok = sorted(took for outcome, took in answers if outcome == "ok")
    outcomes = Counter(outcome for outcome, _ in answers)
    in_phase = [limit for at, limit in limits if start <= at < end]
    return Phase(
        name=name,
        latency_ms=latency * 1000,
        seconds=seconds,
        server_in_flight_mean=server["mean"],
        server_in_flight_max=server["max"],
        server_in_flight_per_s=[round(v, 1) for v in server["per_second"]],
        goodput=len(ok) / seconds,
        ok=len(ok),
        refused={k.split(":", 1)[1]: v for k, v in outcomes.items() if k.startswith("refused:")},
        failed={k: v for k, v in outcomes.items() if k != "ok" and not k.startswith("refused:")},
        p50_ms=percentile(ok, 50) * 1000,
        p99_ms=percentile(ok, 99) * 1000,
        limit_mean=sum(in_phase) / len(in_phase) if in_phase else None,
        limit_min=min(in_phase) if in_phase else None,
        limit_max=max(in_phase) if in_phase else None,
    )


def _recovery(
    log: Sequence[tuple[float, str, float]], start: float, end: float, target: float
) -> float | None:
    """Seconds from ``start`` to the end of the first 0.5 s window with goodput >= target."""
    ok = sorted(at for at, outcome, _ in log if outcome == "ok" and start <= at < end)
    steps = int((end - start - RECOVERY_WINDOW_S) / RECOVERY_STEP_S) + 1
    for step in range(max(0, steps)):
        low = start + step * RECOVERY_STEP_S
        high = low + RECOVERY_WINDOW_S
        count = sum(1 for at in ok if low <= at < high)
        if count / RECOVERY_WINDOW_S >= target:
            return round(high - start, 2)
    return None


async def run_contender(name: str, address: str, args: argparse.Namespace) -> Contender:
    interceptor: AsyncBulwarkInterceptor | None = None
    interceptors: list[Any] = []
    if name != "fixed":
        settings = NETFLIX_GRADIENT2
        if name == "adaptive":  # the client defaults unless the flags change them
            settings = Gradient2Settings(
                initial_limit=args.initial_limit,
                min_limit=args.min_limit,
                long_window=args.long_window,
            )
        rule = f"/{SERVICE}/"
        interceptor = AsyncBulwarkInterceptor(None, {rule: Guard(adaptive=settings, throttle=True)})
        interceptors.append(interceptor)
    control_channel = grpc.aio.insecure_channel(address)
    control = control_channel.unary_unary(CONTROL)
    channel = grpc.aio.insecure_channel(address, interceptors=interceptors)
    load = Load(channel, args)
    limits: list[tuple[float, int]] = []

    async def sample_limit() -> None:
        while interceptor is not None:
            limit = interceptor.backpressure()[f"/{SERVICE}/"].limit
            limits.append((time.monotonic(), limit or 0))
            await asyncio.sleep(LIMIT_SAMPLE_S)

    async def set_latency(latency: float | None) -> dict[str, Any]:
        command = {} if latency is None else {"latency": latency}
        return json.loads(await control(json.dumps(command).encode(), timeout=5))

    result = Contender(name)
    await set_latency(args.latency)
    start = time.monotonic()
    callers = [asyncio.ensure_future(load.caller(i, start)) for i in range(args.callers)]
    sampler = asyncio.ensure_future(sample_limit())
    try:
        _progress(f"{name}: warm-up {args.warmup:g}s")
        await asyncio.sleep(args.warmup)
        plan = [
            ("before", args.latency),
            ("during", args.latency * args.factor),
            ("after", args.latency),
        ]
        await set_latency(plan[0][1])
        began = time.monotonic()
        cpu_began, first = time.process_time(), began
        windows: list[tuple[float, float]] = []
        stats: list[dict[str, Any]] = []
        for index, (phase, latency) in enumerate(plan):
            _progress(f"{name}: {phase} ({latency * 1000:g} ms) {args.phase:g}s")
            await asyncio.sleep(args.phase)
            following = plan[index + 1][1] if index + 1 < len(plan) else None
            stats.append(await set_latency(following))
            ended = time.monotonic()
            windows.append((began, ended))
            began = ended
        result.client_cpu = (time.process_time() - cpu_began) / (began - first)
    finally:
        load.stopping = True
        sampler.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await channel.close()
        await control_channel.close()
    for (phase, latency), window, server in zip(plan, windows, stats, strict=True):
        result.phases.append(_phase(phase, latency, window, load.log, server, limits))
    before, during, _after = result.phases
    result.in_flight_ratio = during.server_in_flight_mean / before.server_in_flight_mean
    result.goodput_ratio = during.goodput / before.goodput if before.goodput else math.nan
    result.recovery_s = _recovery(load.log, *windows[2], RECOVERED * before.goodput)
    return result


def benchmark(args: argparse.Namespace) -> Report:
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        settings={key: getattr(args, key) for key in SETTINGS},
    )
    with ProcessGroup("bulwark-backpressure-", _progress) as group:
        for name in args.contenders:
            # A fresh downstream per contender: no queue or state carried over.
            server = group.add(DownstreamProcess(args.workers))
            address = server.wait_address()
            _progress(f"{name}: downstream on {address} ({args.workers or 'no'} workers)")
            report.contenders.append(asyncio.run(run_contender(name, address, args)))
            server.check_alive()
            server.stop()
    return report


# --------------------------------------------------------------------------- printing


def _counts(counts: dict[str, int], seconds: float) -> str:
    return ", ".join(f"{k} {v / seconds:.0f}/s" for k, v in sorted(counts.items())) or "-"


def format_report(report: Report) -> str:
    s = report.settings
    pool = f"{s['workers']} workers" if s["workers"] else "no worker pool"
    lines = [
        f"Backpressure: downstream latency x{s['factor']:g} ({report.started_utc})",
        machine_line(report.machine),
        f"Load: {s['callers']} callers, one call each per {s['period']:g}s "
        f"({s['callers'] / s['period']:.0f} calls/s offered), deadline {s['deadline']:g}s; "
        f"downstream {s['latency'] * 1000:g} ms, {pool}; phases {s['phase']:g}s "
        f"after {s['warmup']:g}s warm-up",
        "gradient2: Netflix's Gradient2 defaults (limit 20..200, long window 600); "
        f"adaptive: initial limit {s['initial_limit']}, min {s['min_limit']}, long window "
        f"{s['long_window']} samples, the rest Gradient2's defaults; both with the SRE "
        "throttle (K=2)",
        "",
        f"{'client':<10} {'phase':<7} {'lat ms':>6} {'inflight':>8} {'max':>4} "
        f"{'goodput/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'limit':>11}  refused / failed",
    ]
    for c in report.contenders:
        for p in c.phases:
            limit = (
                f"{p.limit_mean:.0f} ({p.limit_min}-{p.limit_max})"
                if p.limit_mean is not None
                else "-"
            )
            lines.append(
                f"{c.name:<10} {p.name:<7} {p.latency_ms:>6g} {p.server_in_flight_mean:>8.1f} "
                f"{p.server_in_flight_max:>4} {p.goodput:>9.0f} {p.p50_ms:>7.1f} "
                f"{p.p99_ms:>7.1f} {limit:>11}  {_counts(p.refused, p.seconds)} / "
                f"{_counts(p.failed, p.seconds)}"
            )
    lines.append("")
    lines.append("server in-flight, mean of each second (before | during | after):")
    for c in report.contenders:
        series = " | ".join(
            " ".join(f"{v:.0f}" for v in p.server_in_flight_per_s) for p in c.phases
        )
        lines.append(f"  {c.name:<10} {series}")
    lines.append("")
    for c in report.contenders:
        recovery = f"{c.recovery_s:.1f}s" if c.recovery_s is not None else "not within the phase"
        lines.append(
            f"{c.name:<10} in-flight during/before {c.in_flight_ratio:.2f}x, "
            f"goodput during/before {c.goodput_ratio:.2f}x, goodput back to "
            f"{RECOVERED:.0%} of before in {recovery}; load generator CPU "
            f"{c.client_cpu:.0%} of a core"
        )
    lines.append("")
    lines.append(shared_cpus_note(report.machine["cpus"]))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "backpressure_bench.py",
        "A downstream whose latency rises tenfold, loaded through fixed and adaptive clients.",
    )
    parser.add_argument("--callers", type=int, default=200, help="calling coroutines")
    parser.add_argument(
        "--period", type=float, default=0.4, help="seconds between a caller's calls"
    )
    parser.add_argument("--latency", type=float, default=0.020, help="normal latency, seconds")
    parser.add_argument("--factor", type=float, default=10.0, help="latency multiplier, during")
    parser.add_argument(
        "--workers", type=int, default=64, help="the downstream's worker pool (0: none)"
    )
    parser.add_argument("--phase", type=float, default=5.0, help="seconds of each phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before 'before'")
    parser.add_argument("--deadline", type=float, default=2.0, help="deadline of each call")
    client = Gradient2Settings()
    parser.add_argument(
        "--initial-limit", type=int, default=client.initial_limit, help="adaptive: initial limit"
    )
    parser.add_argument(
        "--min-limit", type=int, default=client.min_limit, help="adaptive: its minimum limit"
    )
    parser.add_argument(
        "--long-window",
        type=int,
        default=client.long_window,
        help="adaptive: its long RTT window, samples",
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=("fixed", "gradient2", "adaptive"),
        default=["fixed", "gradient2", "adaptive"],
        help="which clients to run, in order",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_json_option(parser, "tables")
    args = parser.parse_args(argv)
    if args.serve:
        return args
    if min(args.callers, args.min_limit, args.long_window) < 1:
        parser.error("--callers, --min-limit and --long-window must be at least 1")
    if not args.min_limit <= args.initial_limit <= 200:
        parser.error("--initial-limit must be between --min-limit and 200 (the max limit)")
    if min(args.period, args.latency, args.phase, args.deadline) <= 0 or args.factor < 1:
        parser.error("--period, --latency, --phase, --deadline must be positive, --factor >= 1")
    if args.phase <= RECOVERY_WINDOW_S or args.warmup < 0 or args.workers < 0:
        parser.error("--phase must exceed 0.5 s; --warmup and --workers not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.workers))
        return 0
    return run_and_print(args, benchmark, format_report, _progress, "downstreams stopped")


if __name__ == "__main__":
    sys.exit(main())
