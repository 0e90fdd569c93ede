"""A replica's footprint with 100,000 limits and 10,000 breakers: memory, and idle CPU.

What it measures
    One Bulwark replica with its embedded etcd (so it leads). Once it leads, the resident
    memory (VmRSS of ``/proc/<pid>/status``) of its Python server process and, apart, of
    its embedded etcd is read ("empty"). Then it is loaded with ``--limits`` limits
    (default 100,000; the mix of ``limits_scale_bench.py``: 90 % exact ``user=u<N>``,
    5 % prefix ``user=g<N>-*``, 5 % two-entry ``tenant=t<N>, user=*``, one any-value
    ``user=*``; concurrent PutLimit calls, ``limits_scale_bench.load_limits``) and
    ``--breakers`` breakers (default 10,000, default configuration: CLOSED;
    concurrent PutBreaker calls, ``breaker_idle_bench.create_breakers``), with a
    progress line at every tenth. After ``--settle`` seconds with nothing sent, the
    memory is read again ("loaded"); then, still with nothing sent, the CPU time
    (utime + stime of ``/proc/<pid>/stat``) each process spends over ``--window``
    seconds is reported as a percentage of one core, and the memory read a last time
    ("after the window"). Before the settle, one Check of each kind of limit (exact,
    prefix, two-entry, any value) is sent, so whatever a decision builds is held
    (earlier versions built the limits' index at the first decision); the leader then
    holds four counters: this is the cost of the configuration.

    Printed beside the figures, the targets: the server process's RSS at most 300 MB
    when loaded, and the idle leader's server process under 2 % of a core.

    How Check latency and PutLimit throughput hold at 100k limits against 1k is
    ``limits_scale_bench.py --sizes 1000,100000``; this script does not repeat it.

How
    ``python benchmarks/footprint_bench.py [--limits N] [--breakers N] [--window S]
    [--server-rev REV]``; ``--quick`` is a smoke run (2,000 limits, 200 breakers, 2 s
    settle, 5 s window). With ``--server-rev`` the replica runs the server of that commit
    (``git archive`` into a temporary tree, ``bench_trees.py``). Loading 100,000 limits
    takes minutes (about 3 on 2 cores). Everything started is stopped and its temporary
    directory removed on exit, error or Ctrl-C.

Caveats
    Linux only (``/proc``). RSS counts shared pages (the interpreter, grpcio's library)
    once per process; MB here are 10^6 bytes. Clock ticks are 10 ms, so a 20 s window
    resolves 0.05 % of a core; whatever else runs on the machine is not counted, but its
    competition for the CPU shows.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    rss_mb,
)
from bench_trees import server_side
from breaker_idle_bench import create_breakers
from limits_scale_bench import check_requests, load_limits, time_checks

RSS_TARGET_MB = 300.0  # the server process, loaded
IDLE_CPU_TARGET_PCT = 2.0  # the idle leader's server process, % of one core

_progress = progress_to("footprint")


@dataclass
class Memory:
    """Resident memory of the server process and its etcd at one moment, in MB."""

    when: str
    server_mb: float
    etcd_mb: float


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    server: dict[str, str]
    limits_s: float = 0.0
    breakers_s: float = 0.0
    breaker_errors: dict[str, int] = field(default_factory=dict)
    memory: list[Memory] = field(default_factory=list)
    window_s: float = 0.0
    server_cpu_pct: float = 0.0
    etcd_cpu_pct: float = 0.0
    rss_target_mb: float = RSS_TARGET_MB
    idle_cpu_target_pct: float = IDLE_CPU_TARGET_PCT
    rss_met: bool = False
    idle_cpu_met: bool = False


def benchmark(args: argparse.Namespace) -> Report:
    with ProcessGroup("bulwark-footprint-", _progress) as group:
        side = server_side(args.server_rev, group.root)
        report = Report(
            started_utc=utc_now(),
            machine=machine_info(),
            settings={
                "limits": args.limits,
                "breakers": args.breakers,
                "concurrency": args.concurrency,
                "settle_s": args.settle,
                "window_s": args.window,
            },
            server=side.describe(),
        )
        replica = group.add(
            BulwarkProcess(
                str(group.root / "data"),
                name="replica",
                extra_args=["--replica-id=footprint"],
                env=side.server_env,
                cwd=str(side.run_dir),
            )
        )
        address = replica.wait_address()
        probe_getleader(address)
        pid = replica.proc.pid
        etcd = embedded_etcd_pid(pid)
        if etcd is None:
            raise RuntimeError("the replica's embedded etcd process was not found")

        def memory(when: str) -> Memory:
            m = Memory(when, rss_mb(pid), rss_mb(etcd))
            report.memory.append(m)
            _progress(f"RSS {when}: server {m.server_mb:.1f} MB, etcd {m.etcd_mb:.1f} MB")
            return m

        _progress(f"leads on {address} (server pid {pid}, etcd pid {etcd})")
        memory("empty")
        _progress(f"putting {args.limits} limits ({args.concurrency} in flight)...")
        report.limits_s = load_limits(address, args.limits, _progress, args.concurrency)
        _progress(f"{args.limits} limits in {report.limits_s:.0f}s")
        _progress(f"putting {args.breakers} breakers ({args.concurrency} in flight)...")
        started = time.monotonic()
        errors = asyncio.run(create_breakers(address, args.breakers, args.concurrency, _progress))
        report.breakers_s = time.monotonic() - started
        report.breaker_errors = dict(errors)
        _progress(f"{args.breakers} breakers in {report.breakers_s:.0f}s ({errors.total()} errors)")
        decided = time_checks(address, check_requests(args.limits, 4, random.Random(1)))
        _progress(f"4 Checks, one of each kind of limit: {max(decided) * 1000:.1f} ms at most")
        _progress(f"settling {args.settle:g}s with nothing sent...")
        time.sleep(args.settle)
        loaded = memory("loaded")
        _progress(f"measuring idle CPU over {args.window:g}s with nothing sent...")
        before = (cpu_seconds(pid), cpu_seconds(etcd), time.monotonic())
        time.sleep(args.window)
        after = (cpu_seconds(pid), cpu_seconds(etcd), time.monotonic())
        replica.check_alive()
        memory("after the window")
        report.window_s = after[2] - before[2]
        report.server_cpu_pct = (after[0] - before[0]) / report.window_s * 100
        report.etcd_cpu_pct = (after[1] - before[1]) / report.window_s * 100
        report.rss_met = loaded.server_mb <= RSS_TARGET_MB
        report.idle_cpu_met = report.server_cpu_pct < IDLE_CPU_TARGET_PCT
    return report


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def format_report(report: Report) -> str:
    s = report.settings
    lines = [
        f"Replica footprint with limits and breakers (started {report.started_utc})",
        machine_line(report.machine),
        f"Server: {report.server['commit']} ({report.server['rev']})",
        f"Setup: {s['limits']} limits in {report.limits_s:.0f}s, {s['breakers']} breakers in "
        f"{report.breakers_s:.0f}s (PutBreaker errors: {report.breaker_errors or 'none'}), "
        f"{s['concurrency']} calls in flight; settle {s['settle_s']:g}s, idle window "
        f"{report.window_s:.1f}s",
        "",
        f"{'RSS (VmRSS), MB':<22} {'server':>8} {'etcd':>8}",
    ]
    for m in report.memory:
        lines.append(f"{m.when:<22} {m.server_mb:>8.1f} {m.etcd_mb:>8.1f}")
    loaded = next((m for m in report.memory if m.when == "loaded"), None)
    if loaded is not None:
        lines.append(
            f"target: server RSS loaded <= {report.rss_target_mb:.0f} MB: "
            f"{loaded.server_mb:.1f} MB, {_verdict(report.rss_met)}"
        )
    lines += [
        "",
        f"idle CPU, % of one core: server {report.server_cpu_pct:.2f}, "
        f"etcd {report.etcd_cpu_pct:.2f}",
        f"target: idle leader's server < {report.idle_cpu_target_pct:g} % of a core: "
        f"{report.server_cpu_pct:.2f} %, {_verdict(report.idle_cpu_met)}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "footprint_bench.py",
        "A leader's RSS and idle CPU holding many limits and breakers, beside the targets.",
    )
    parser.add_argument("--limits", type=int, default=100_000, help="limits to put")
    parser.add_argument("--breakers", type=int, default=10_000, help="breakers to put")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="PutLimit and PutBreaker calls in flight while loading",
    )
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=20.0, help="idle CPU window, seconds")
    parser.add_argument(
        "--server-rev", default=None, help="run the replica from this commit's tree"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2,000 limits, 200 breakers, settle 2 s, window 5 s",
    )
    add_json_option(parser, "table")
    args = parser.parse_args(argv)
    if args.quick:
        args.limits, args.breakers, args.settle, args.window = 2_000, 200, 2.0, 5.0
    require_at_least_one(parser, args, "limits", "breakers", "concurrency")
    if args.window <= 0 or args.settle < 0:
        parser.error("--window must be positive and --settle not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(parse_args(argv), benchmark, format_report, _progress, "replica stopped")


if __name__ == "__main__":
    sys.exit(main())
