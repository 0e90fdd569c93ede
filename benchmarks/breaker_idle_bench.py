"""An idle leader's CPU with many circuit breakers, beside the same replica with none.

What it measures
    Two Bulwark replicas, each alone with its own embedded etcd, so each leads its own
    fleet: "empty" holds no breaker, "loaded" holds ``--breakers`` breakers (default
    10,000, the default configuration: CLOSED, so no timer is due). Once both lead and
    the loaded one's breakers are created (``PutBreaker``, ``--concurrency`` in flight
    over one ``grpc.aio`` channel) and ``--settle`` seconds have passed, nothing calls
    either replica: the CPU time each replica process (the Python server, all its
    threads; its etcd child apart) spends over ``--window`` seconds, sampled from
    ``/proc/<pid>/stat`` (utime + stime) at the start and end of the same window for
    both, is reported as a percentage of one core, and so is that of each one's etcd.
    The difference loaded - empty is what the breakers cost an idle leader.

How
    ``python benchmarks/breaker_idle_bench.py [--breakers N] [--window S] [--rev REV]``.
    With ``--rev``, both replicas run the server of that commit (``git archive`` into a
    temporary tree, ``bench_trees.py``); without it, this working tree's. Everything
    started is stopped and its temporary directory removed on exit, error or Ctrl-C.

Caveats
    Linux only (``/proc``). The replicas share the machine with whatever else runs; the
    two are measured over the same window so that background load hits both alike.
    Clock ticks are 10 ms, so a 20 s window resolves about 0.05 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from bench_report import (
    add_json_option,
    bench_parser,
    machine_info,
    machine_line,
    progress_to,
    require_at_least_one,
    run_and_print,
    utc_now,
)
from bench_servers import (
    BulwarkProcess,
    ProcessGroup,
    cpu_seconds,
    embedded_etcd_pid,
    probe_getleader,
)
from bench_trees import server_side

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc

BREAKER_PREFIX = "idle-"
PUT_TIMEOUT = 30.0  # deadline of one PutBreaker call

_progress = progress_to("breaker-idle")


@dataclass
class Usage:
    """CPU of one replica over the measured window."""

    label: str
    breakers: int
    replica_pct: float  # % of one core: the Python server process
    etcd_pct: float  # % of one core: its embedded etcd


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    server: dict[str, str]
    put_s: float = 0.0
    put_errors: dict[str, int] = field(default_factory=dict)
    usages: list[Usage] = field(default_factory=list)


async def create_breakers(
    address: str, n: int, concurrency: int, progress: Callable[[str], None] = _progress
) -> Counter[str]:
    """PutBreaker ``idle-00000`` ... with ``concurrency`` calls in flight; errors by code.

    ``progress`` hears how far it got at every tenth.
    """
    errors: Counter[str] = Counter()
    names = iter(range(n))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)

        async def worker() -> None:
            for i in names:
                request = breaker_pb2.PutBreakerRequest(name=f"{BREAKER_PREFIX}{i:05d}")
                try:
                    await stub.PutBreaker(request, timeout=PUT_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                if i and i % max(1, n // 10) == 0:
                    progress(f"PutBreaker: {i}/{n}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


def _sample(pids: Mapping[str, tuple[int, int | None]]) -> dict[str, tuple[float, float]]:
    return {
        label: (cpu_seconds(pid), cpu_seconds(etcd) if etcd else float("nan"))
        for label, (pid, etcd) in pids.items()
    }


def benchmark(args: argparse.Namespace) -> Report:
    with ProcessGroup("bulwark-breaker-idle-", _progress) as group:
        side = server_side(args.rev, group.root)
        env, cwd, server = side.server_env, str(side.run_dir), side.describe()
        report = Report(
            started_utc=utc_now(),
            machine=machine_info(),
            settings={
                "breakers": args.breakers,
                "concurrency": args.concurrency,
                "settle_s": args.settle,
                "window_s": args.window,
            },
            server=server,
        )
        replicas = {}
        for label in ("empty", "loaded"):
            data_dir = group.root / label
            replicas[label] = group.add(BulwarkProcess(str(data_dir), name=label, env=env, cwd=cwd))
        addresses = {label: r.wait_address() for label, r in replicas.items()}
        for label, address in addresses.items():
            probe_getleader(address)
            _progress(f"{label} leads, serving on {address}")
        _progress(f"creating {args.breakers} breakers on loaded...")
        started = time.monotonic()
        errors = asyncio.run(create_breakers(addresses["loaded"], args.breakers, args.concurrency))
        report.put_s = time.monotonic() - started
        report.put_errors = dict(errors)
        _progress(f"created in {report.put_s:.1f}s ({sum(errors.values())} errors)")
        _progress(f"settling {args.settle:g}s, then measuring {args.window:g}s...")
        time.sleep(args.settle)
        pids = {label: (r.proc.pid, embedded_etcd_pid(r.proc.pid)) for label, r in replicas.items()}
        before, t0 = _sample(pids), time.monotonic()
        time.sleep(args.window)
        after, t1 = _sample(pids), time.monotonic()
        for label, r in replicas.items():
            r.check_alive()
            replica = (after[label][0] - before[label][0]) / (t1 - t0) * 100
            etcd = (after[label][1] - before[label][1]) / (t1 - t0) * 100
            count = args.breakers if label == "loaded" else 0
            report.usages.append(Usage(label, count, replica, etcd))
    return report


def format_report(report: Report) -> str:
    s = report.settings
    lines = [
        f"Idle leader CPU with breakers ({report.started_utc})",
        machine_line(report.machine),
        f"Server: {report.server['commit']}",
        f"Setup: {s['breakers']} PutBreaker in {report.put_s:.1f}s "
        f"(errors: {report.put_errors or 'none'}); settle {s['settle_s']:g}s, "
        f"window {s['window_s']:g}s",
        "",
        f"{'replica':<8} {'breakers':>9} {'server % core':>14} {'etcd % core':>12}",
    ]
    for u in report.usages:
        lines.append(f"{u.label:<8} {u.breakers:>9} {u.replica_pct:>14.2f} {u.etcd_pct:>12.2f}")
    by = {u.label: u for u in report.usages}
    if "empty" in by and "loaded" in by:
        extra = by["loaded"].replica_pct - by["empty"].replica_pct
        lines.append(f"breakers' cost to the idle server: {extra:+.2f} % of a core")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "breaker_idle_bench.py", "An idle leader's CPU with many breakers, beside one with none."
    )
    parser.add_argument("--breakers", type=int, default=10_000, help="breakers on 'loaded'")
    parser.add_argument("--concurrency", type=int, default=64, help="PutBreaker calls in flight")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--rev", help="run the server of this commit (default: working tree)")
    add_json_option(parser, "table")
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "breakers", "concurrency")
    if args.window <= 0 or args.settle < 0:
        parser.error("--window must be positive and --settle not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(parse_args(argv), benchmark, format_report, _progress, "replicas stopped")


if __name__ == "__main__":
    sys.exit(main())
