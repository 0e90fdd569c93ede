"""Does ``bulwark loadtest`` measure what the benchmark harness measures?

What it compares
    On the same target, in alternating turns within one run (harness then loadtest,
    then loadtest then harness, ...):

    (a) closed loop at a fixed concurrency: QPS of the harness's load process
        (``bench_load.run_load``: one process, ``--concurrency`` calls in flight over
        one ``grpc.aio`` channel; no warm-up by default, as loadtest has none, the
        server being warmed by one uncounted turn) beside ``bulwark loadtest -c``
        with the same concurrency. Bound: the medians agree within ``--qps-bound``.
    (b) open loop at ``--rate-fraction`` of the harness's closed-loop QPS (below
        saturation): p50 and p99 of the harness's paced process beside ``bulwark
        loadtest --rps``. ``bench_load.run_paced`` counts Check answers but keeps no
        latencies, so the harness side here is ``bench_load.run_processes`` driving
        ``paced_latencies`` below: ``drive_paced``'s schedule (call n due n / rate
        after the start, sent without waiting for answers), each call's latency from
        its send. ``drive_paced`` sends the calls due every 2 ms together; in bursts
        of two or three a fast call waits behind the others at the server, which is
        a different arrival process from loadtest's even one, so by default each
        call goes at its own due time (``--harness-tick 2`` gives the bursts back).
        Bound: the medians agree within ``--latency-bound``.

Targets
    ``check``: ``bulwark.v1.RateLimitService/Check`` on a real replica (its own
    embedded etcd); ``echo``: an echo-like unary service (this script with
    ``--serve-echo``: a ``grpc.aio`` server that returns the request bytes, as
    ``bench_servers``' echo does, with reflection so ``loadtest`` can find
    ``bulwark.bench.ReflectedEcho/Echo`` and its ``google.protobuf.BytesValue``).
    ``checkout``: ``demo.checkout.v1.CheckoutService/Checkout``, the example checkout
    service (``clients/python/examples/checkout_server.py``, reflection on), on the
    same replica: each call reads a feature from its client's cache and charges a
    payment through a breaker-guarded gRPC call to its in-process provider.

Both sides send one fixed request (loadtest's templates are not what is compared).
``bulwark loadtest`` runs as a subprocess (``python -m bulwark_server loadtest ...
-O json``), as chaos experiments run it. Everything is on 127.0.0.1 and shares the
machine's CPUs, so the bounds hold only for the medians of several rounds; the CPU
steal over the run is printed beside the numbers. Exits 1 when a bound fails.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import csv
import io
import json
import math
import multiprocessing.synchronize
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from bench_load import CallSpec, percentile, run_load, run_processes
from bench_report import (
    bench_parser,
    cpu_times,
    machine_info,
    machine_line,
    progress_to,
    steal_share,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    SERVING_TIMEOUT,
    BulwarkProcess,
    ProcessGroup,
    ServerProcess,
    cpu_seconds,
    embedded_etcd_pid,
    probe_getleader,
    serve_until_stopped,
)
from google.protobuf import wrappers_pb2

from bulwark.v1 import ratelimit_pb2

ECHO_SERVICE = "bulwark.bench.ReflectedEcho"
ECHO_PATH = f"/{ECHO_SERVICE}/Echo"
CHECK_PATH = "/bulwark.v1.RateLimitService/Check"
CHECKOUT_PATH = "/demo.checkout.v1.CheckoutService/Checkout"
EXAMPLES = Path(__file__).resolve().parents[1] / "clients" / "python" / "examples"
TARGETS = ("check", "echo", "checkout")
LOADTEST_SLACK = 60.0  # seconds a loadtest subprocess may take beyond its duration


# --------------------------------------------------------------------------- the echo target


def echo_file() -> Any:
    """``bulwark/bench/reflected_echo.proto``: service ReflectedEcho, rpc Echo(BytesValue)."""
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(
        name="bulwark/bench/reflected_echo.proto",
        package="bulwark.bench",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    service = proto.service.add(name="ReflectedEcho")
    service.method.add(
        name="Echo",
        input_type=".google.protobuf.BytesValue",
        output_type=".google.protobuf.BytesValue",
    )
    return proto


async def serve_echo() -> None:
    """The echo target: request bytes back unchanged, and reflection describing it."""
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha import reflection

    descriptor_pool.Default().Add(echo_file())

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    reflection.enable_server_reflection((ECHO_SERVICE, reflection.SERVICE_NAME), server)
    await serve_until_stopped(server, "reflected-echo")


class CheckoutProcess(ServerProcess):
    """The example checkout server, against the replica at ``endpoint``; it says
    ``serving ... on HOST:PORT`` once it serves."""

    def __init__(self, endpoint: str) -> None:
        argv = [
            sys.executable,
            "-u",
            str(EXAMPLES / "checkout_server.py"),
            "--listen",
            "127.0.0.1:0",
            "--endpoint",
            endpoint,
            "--instance",
            "checkout-bench",
        ]
        super().__init__("checkout", argv, port_stream="stdout")

    def _parse_port(self, line: str) -> int | None:
        words = line.split()
        if "serving" in words and "on" in words:
            address = words[words.index("on") + 1]
            return int(address.rpartition(":")[2])
        return None


class EchoProcess(ServerProcess):
    """This script with ``--serve-echo``; prints its port first."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-echo"]
        super().__init__("reflected-echo", argv, port_stream="stdout")

    def _parse_port(self, line: str) -> int | None:
        text = line.strip()
        return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------- harness, paced side


@dataclass(frozen=True)
class PacedLatencySpec:
    """One paced load process: ``request`` to ``method`` at ``rate`` calls a second."""

    index: int
    address: str
    method: str
    request: bytes
    rate: float
    warmup: float
    duration: float
    tick: float = 0.0  # 0: each call at its own due time; > 0: drive_paced's ticks


async def _paced(spec: PacedLatencySpec, barrier: multiprocessing.synchronize.Barrier) -> Any:
    latencies = array.array("d")
    errors: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(spec.address) as channel:
        call = channel.unary_unary(spec.method)  # bytes in, bytes out
        await asyncio.wait_for(channel.channel_ready(), SERVING_TIMEOUT)
        await asyncio.to_thread(barrier.wait, 60.0)
        clock = time.perf_counter
        begin = clock()
        measure_from = begin + spec.warmup
        end = measure_from + spec.duration

        async def one(measured: bool) -> None:
            sent = clock()
            try:
                await call(spec.request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if measured:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                return
            if measured:
                latencies.append(clock() - sent)

        def send(measured: bool) -> None:
            task = asyncio.create_task(one(measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        sent = 0
        if spec.tick > 0:
            while (now := clock()) < end:
                # drive_paced's schedule: every tick, the calls due since the start.
                for _ in range(int((now - begin) * spec.rate) - sent):
                    sent += 1
                    send(now >= measure_from)
                await asyncio.sleep(spec.tick)
        else:
            # The same schedule (call n due n / rate after the start), each call sent
            # at its own due time, so the arrivals are as even as loadtest's.
            while (due := begin + sent / spec.rate) < end:
                if due > clock():
                    await asyncio.sleep(due - clock())
                sent += 1
                send(due >= measure_from)
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
    return {"latencies": latencies.tobytes(), "errors": errors}


def paced_latencies(
    spec: PacedLatencySpec, barrier: multiprocessing.synchronize.Barrier
) -> dict[str, Any]:
    """A paced load process for ``run_processes``: every latency and error it measured."""
    return asyncio.run(_paced(spec, barrier))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the loadtest side


def loadtest(
    address: str, method: str, data: str, extra: list[str], duration: float, as_json: bool = True
) -> Any:
    """``python -m bulwark_server loadtest`` as a subprocess: its JSON report (as read),
    or its output as text."""
    argv = [
        sys.executable,
        "-m",
        "bulwark_server",
        "loadtest",
        address,
        "--call",
        method.lstrip("/"),
        "-d",
        data,
        "-z",
        f"{duration}s",
        "--no-progress",
        *(["-O", "json"] if as_json else []),
        *extra,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + LOADTEST_SLACK, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadtest exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout) if as_json else done.stdout


# --------------------------------------------------------------------------- turns


@dataclass
class Target:
    name: str
    address: str
    method: str
    data: str  # the request as loadtest's JSON
    request: Any  # the same request as a message (the harness's side)
    response_type: Any
    check_alive: Callable[[], None]


def closed_turn(target: Target, side: str, args: argparse.Namespace) -> float:
    """QPS of one closed-loop turn on ``side``."""
    if side == "harness":
        spec = CallSpec(target.name, target.method, target.request, target.response_type)
        shape = argparse.Namespace(
            processes=1, concurrency=args.concurrency, warmup=args.warmup, duration=args.duration
        )
        result = run_load(target.name, target.address, spec, shape, _Alive(target))
        if result.errors:
            raise RuntimeError(f"harness saw errors: {result.errors_by_code}")
        return result.qps
    report = loadtest(
        target.address, target.method, target.data, ["-c", str(args.concurrency)], args.duration
    )
    if report["errors"]:
        raise RuntimeError(f"loadtest saw errors: {report['errorDistribution']}")
    return float(report["rps"])


def open_turn(target: Target, side: str, rate: float, args: argparse.Namespace) -> list[float]:
    """Every latency (seconds) of one open-loop turn at ``rate`` on ``side``."""
    if side == "harness":
        spec = PacedLatencySpec(
            0,
            target.address,
            target.method,
            target.request.SerializeToString(),
            rate,
            args.warmup,
            args.duration,
            args.harness_tick / 1e3,
        )
        latencies, errors = run_processes(
            f"paced-{target.name}", paced_latencies, [spec], args, target.check_alive
        )
        if errors:
            raise RuntimeError(f"harness saw errors: {dict(errors)}")
        return latencies
    extra = ["--rps", f"{rate:.0f}", "-c", str(args.open_concurrency), "-O", "csv"]
    rows = list(csv.DictReader(io.StringIO(loadtest(
        target.address, target.method, target.data, extra, args.duration, as_json=False
    ))))  # fmt: skip
    failed = [row for row in rows if row["status"] != "OK"]
    if failed:
        raise RuntimeError(f"loadtest saw errors: {failed[0]}")
    due = round(rate * args.duration)
    if len(rows) < due:  # a stall kept every worker busy when the turn ended
        print(f"  (loadtest: {due - len(rows)} of {due} calls due were not sent)", file=sys.stderr)
    return [float(row["latency_ms"]) / 1e3 for row in rows]


class _Alive:
    """What ``run_load`` needs of a server: ``check_alive``."""

    def __init__(self, target: Target) -> None:
        self.check_alive = target.check_alive


STEAL_RETRIES = 2  # times a round may be run again for the steal during it


def alternate(
    args: argparse.Namespace, measure: Callable[[str], Any], show: Callable[[str, Any], None]
) -> dict[str, list[Any]]:
    """``args.rounds`` rounds of both sides, the order reversed every other round.

    A round during whose turns the hypervisor gave more than ``args.max_steal`` of the
    CPU time to other machines is run again (at most ``STEAL_RETRIES`` times): a
    stolen stretch stalls the load generator and the server at random, and falls
    on one side of the round only."""
    seen: dict[str, list[Any]] = {"harness": [], "loadtest": []}
    for turn in range(args.rounds):
        order = ("harness", "loadtest") if turn % 2 == 0 else ("loadtest", "harness")
        for attempt in range(STEAL_RETRIES + 1):
            before = cpu_times()
            values = {side: measure(side) for side in order}
            steal = steal_share(before, cpu_times()) or 0.0
            if steal <= args.max_steal or attempt == STEAL_RETRIES:
                break
            show(f"round {turn + 1} again: {steal:.1%} steal during it", None)
        for side in order:
            seen[side].append(values[side])
            show(f"round {turn + 1} {side}", values[side])
    return seen


@dataclass
class Agreement:
    """One bound: the two sides' values, and their ratio (loadtest / harness)."""

    target: str
    measure: str
    harness: float
    loadtest: float
    bound: float
    paired: float | None = None  # the median of the rounds' own ratios, when judged so

    @property
    def ratio(self) -> float:
        if self.paired is not None:
            return self.paired
        return self.loadtest / self.harness if self.harness else math.nan

    @property
    def ok(self) -> bool:
        return abs(self.ratio - 1.0) <= self.bound

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILS"
        return (
            f"{self.target:<9} {self.measure:<15} harness {self.harness:9.2f}  "
            f"loadtest {self.loadtest:9.2f}  ratio {self.ratio:5.3f}  "
            f"(bound ±{self.bound:.0%}) {verdict}"
        )


def compare(
    target: Target, args: argparse.Namespace, say: Callable[[str], None]
) -> list[Agreement]:
    """Both comparisons on one target.

    Each measure is judged by the ratio of the two sides' medians over their turns.
    On a shared 2-core VM a turn's QPS moves by ±25 % and its p99 by 3-8x whichever
    side runs it (the harness against itself included): a stall falls in one turn,
    and the median of several turns sets it aside where any one pair, or the
    percentiles of all the calls pooled, would follow it. The pooled percentiles and
    each round's own QPS ratio are printed beside, for the record.
    """

    def show_qps(label: str, qps: float | None) -> None:
        value = "" if qps is None else f": {qps:.1f} QPS"
        say(f"[{target.name}] closed -c {args.concurrency} {label}{value}")

    # A new server's first calls are slow (connections, caches, the checkout
    # service's payments channel): one harness turn, not counted, before either side.
    show_qps("warm-up turn (not counted)", closed_turn(target, "harness", args))
    closed = alternate(args, lambda side: closed_turn(target, side, args), show_qps)
    paired = [t / h for t, h in zip(closed["loadtest"], closed["harness"], strict=True)]
    say(f"[{target.name}] closed: each round's ratio " + " ".join(f"{r:.3f}" for r in paired))
    harness_qps = statistics.median(closed["harness"])
    rate = max(1.0, round(harness_qps * args.rate_fraction))

    def show_latency(label: str, latencies: list[float] | None) -> None:
        if latencies is None:
            say(f"[{target.name}] open {rate:.0f}/s {label}")
            return
        ordered = sorted(latencies)
        p50, p99 = percentile(ordered, 50) * 1e3, percentile(ordered, 99) * 1e3
        say(
            f"[{target.name}] open {rate:.0f}/s {label}: {len(ordered)} calls, "
            f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        )

    opened = alternate(args, lambda side: open_turn(target, side, rate, args), show_latency)
    turns = {side: [sorted(turn) for turn in turns] for side, turns in opened.items()}
    for side, sorted_turns in turns.items():
        pooled = sorted(x for turn in sorted_turns for x in turn)
        say(
            f"[{target.name}] open {rate:.0f}/s {side}, all turns' calls pooled: "
            f"p50 {percentile(pooled, 50) * 1e3:.3f} ms, p99 {percentile(pooled, 99) * 1e3:.3f} ms"
        )

    def ms(side: str, pct: float) -> float:
        """The median over ``side``'s turns of each turn's percentile, in ms."""
        return statistics.median(percentile(turn, pct) for turn in turns[side]) * 1e3

    return [
        Agreement(
            target.name,
            f"QPS -c{args.concurrency}",
            harness_qps,
            statistics.median(closed["loadtest"]),
            args.qps_bound,
        ),
        Agreement(
            target.name, f"p50 {rate:.0f}/s", ms("harness", 50), ms("loadtest", 50),
            args.latency_bound,
        ),
        Agreement(
            target.name, f"p99 {rate:.0f}/s", ms("harness", 99), ms("loadtest", 99),
            args.latency_bound,
        ),
    ]  # fmt: skip


def start_targets(
    group: ProcessGroup, names: list[str], say: Callable[[str], None]
) -> list[Target]:
    targets = []
    bulwark = ""
    if {"check", "checkout"} & set(names):
        replica = group.add(BulwarkProcess(str(group.root / "bulwark")))
        bulwark = replica.wait_address()
        probe_getleader(bulwark)
        say(f"Bulwark replica on {bulwark}")
    if "check" in names:
        address = bulwark
        request = ratelimit_pb2.CheckRequest(domain="bench")
        request.descriptors.add().entries.add(key="user", value="alice")
        data = json.dumps(
            {"domain": "bench", "descriptors": [{"entries": [{"key": "user", "value": "alice"}]}]}
        )
        targets.append(
            Target(
                "check",
                address,
                CHECK_PATH,
                data,
                request,
                ratelimit_pb2.CheckResponse,
                replica.check_alive,
            )
        )
    if "echo" in names:
        echo = group.add(EchoProcess())
        address = echo.wait_address()
        payload = wrappers_pb2.BytesValue(value=b"x" * 64)
        data = json.dumps("eHh4" * 21 + "eA==")  # the same 64 bytes: a BytesValue in JSON
        targets.append(
            Target(
                "echo", address, ECHO_PATH, data, payload, wrappers_pb2.BytesValue, echo.check_alive
            )
        )
        say(f"reflected echo on {address}")
    if "checkout" in names:
        sys.path.insert(0, str(EXAMPLES))  # demo.checkout.v1, here and in the load processes
        from demo.checkout.v1 import checkout_pb2

        checkout = group.add(CheckoutProcess(bulwark))
        address = checkout.wait_address()
        order = checkout_pb2.CheckoutRequest(order_id="bench", user_id="alice", amount_cents=1299)
        data = json.dumps({"orderId": "bench", "userId": "alice", "amountCents": "1299"})
        targets.append(
            Target(
                "checkout",
                address,
                CHECKOUT_PATH,
                data,
                order,
                checkout_pb2.CheckoutResponse,
                checkout.check_alive,
            )
        )
        say(f"checkout service on {address}")
    return targets


def pin(group: ProcessGroup) -> str:
    """Servers on the first CPU, this process and every load process it starts (they
    inherit it) on the others: both sides then meet the same scheduling, instead of
    the kernel placing client and server anew each turn."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "one CPU: nothing pinned"
    for process in group.processes:
        pid = process.proc.pid  # type: ignore[attr-defined]
        for each in (pid, embedded_etcd_pid(pid)):
            if each is not None:
                for task in os.listdir(f"/proc/{each}/task"):  # every thread
                    os.sched_setaffinity(int(task), {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"servers pinned to CPU {cpus[0]}, load generators to CPU {cpus[1:]}"


def server_cpu(group: ProcessGroup) -> float:
    """CPU seconds the run's servers (and a replica's embedded etcd) have used."""
    pids = []
    for process in group.processes:
        pid = process.proc.pid  # type: ignore[attr-defined]
        pids += [pid, embedded_etcd_pid(pid)]
    return sum(cpu_seconds(pid) for pid in pids if pid is not None)


def other_load(
    before: list[int] | None, after: list[int] | None, servers: float, seconds: float
) -> float | None:
    """Cores' worth of CPU used on the machine by anything but this run (its servers,
    load processes and loadtest children), on average over ``seconds``: what shared
    the machine with the turns."""
    if before is None or after is None or seconds <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal: busy is all but idle, iowait, steal
    busy = sum(after[i] - before[i] for i in (0, 1, 2, 5, 6)) / ticks
    mine = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )
    return max(0.0, busy - mine - servers) / seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(
        "loadtest_agreement_bench.py",
        "Compare bulwark loadtest with the benchmark harness on the same targets, in "
        "alternating turns: closed-loop QPS at a fixed concurrency, and open-loop p50/p99 "
        "below saturation. Exits 1 when a bound fails.",
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated: {', '.join(TARGETS)}"
    )
    parser.add_argument("--rounds", type=int, default=9, help="turns of each side per comparison")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per turn")
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="harness warm-up per turn, s (loadtest has none: both measured from their "
        "first call by default)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: calls in flight")
    parser.add_argument(
        "--open-concurrency",
        type=int,
        default=256,
        help="open loop: loadtest's -c, a cap on calls in flight (drive_paced's MAX_IN_FLIGHT)",
    )
    parser.add_argument(
        "--rate-fraction", type=float, default=0.4, help="open-loop rate, share of closed QPS"
    )
    parser.add_argument(
        "--harness-tick",
        type=float,
        default=0.0,
        help="open loop, harness side: 0 sends each call at its due time; N sends the calls "
        "due every N ms as drive_paced does (2), in bursts",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="servers on one CPU, load generators on the others",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=0.05,
        help=f"run a round again (at most {STEAL_RETRIES} times) when CPU steal during it is "
        "above this share",
    )
    parser.add_argument("--qps-bound", type=float, default=0.10, help="QPS agreement bound")
    parser.add_argument("--latency-bound", type=float, default=0.20, help="p50/p99 bound")
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        return args
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(names) - set(TARGETS)
    if unknown or not names:
        parser.error(f"--targets: unknown {sorted(unknown)}; use {', '.join(TARGETS)}")
    if args.rounds < 1 or args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds and --concurrency at least 1, --duration positive, --warmup >= 0")
    if not 0 < args.rate_fraction < 1:
        parser.error("--rate-fraction must be between 0 and 1 (below saturation)")
    args.target_names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_echo:
        asyncio.run(serve_echo())
        return 0
    say = progress_to("agreement")
    machine = machine_info()  # before pinning narrows what this process sees
    started, before = utc_now(), cpu_times()
    clock = time.monotonic()
    agreements: list[Agreement] = []
    try:
        with ProcessGroup("loadtest-agreement-", say) as group:
            targets = start_targets(group, args.target_names, say)
            if args.pin:
                say(pin(group))
            for target in targets:
                agreements += compare(target, args, say)
            servers = server_cpu(group)
    except KeyboardInterrupt:
        say("interrupted; every process stopped")
        return 130
    after = cpu_times()
    steal = steal_share(before, after)
    others = other_load(before, after, servers, time.monotonic() - clock)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent,
    ).stdout.strip()
    print(
        f"Run {started}, commit {commit or 'unknown'}, {time.monotonic() - clock:.0f} s, "
        f"CPU steal over the run {'n/a' if steal is None else f'{steal:.1%}'}, "
        f"other work on the machine {'n/a' if others is None else f'{others:.2f} cores'}"
    )
    print(machine_line(machine))
    print(
        f"{args.rounds} alternating rounds per comparison, {args.duration:g} s turns "
        f"(harness warm-up {args.warmup:g} s); each value is the median over a side's turns."
    )
    for agreement in agreements:
        print(agreement.line())
    failed = [a for a in agreements if not a.ok]
    print("all bounds hold" if not failed else f"{len(failed)} bound(s) fail")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
