"""What the Prometheus metrics cost a replica, in instructions executed per call.

Why instructions
    ``metrics_bench.py`` measures server CPU time per call. On a small shared machine
    that time swings by ±15 % from one turn to the next, whatever the load, which is
    more than the few per cent to be measured (RESULTS.md). The number of instructions
    a replica executes for a call does not depend on what else runs, so it can tell
    a few per cent apart. Hardware counters (``perf stat``) are often not available
    in a VM; valgrind's callgrind counts instructions in software, about 50 times
    slower, which is why this benchmark makes few, sequential calls.

What it measures, in one run
    Two replicas, each with its own embedded etcd (run natively), each under
    ``valgrind --tool=callgrind``: one serving metrics (``--metrics-listen``), one
    without. In ``--rounds`` rounds, the order of the replicas reversed every other
    round, each replica takes a turn per call (``CircuitBreakerService/Allow`` on a
    CLOSED breaker, ``RateLimitService/Check`` with one descriptor under a limit that
    never refuses): ``--calls`` calls, one at a time, between zeroing its counters
    (``callgrind_control -z``) and dumping them (``-d``). What the replica does
    meanwhile on its own (its timers) is measured in an idle window of the same
    length before the turn and taken off. Then one scrape of ``/metrics`` on the
    replica serving them, counted the same way, and said in calls' worth at
    ``--rate`` calls per second with a scrape every second.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from bench_load import CallSpec
from bench_report import (
    add_json_option,
    alternate_on_off,
    bench_parser,
    machine_info,
    machine_line,
    progress_to,
    run_and_print,
    spread_table,
    utc_now,
)
from bench_servers import BulwarkProcess, ProcessGroup, probe_getleader
from breaker_bench import allow_call, prepare_allow_breaker
from ratelimit_bench import check_call, check_requests, probe_check, put_limit

from bulwark_server.loopback.etcd import free_port

_progress = progress_to("metrics-instructions")
START_TIMEOUT_S = 600.0  # a replica under callgrind starts some 50 times slower
CALL_TIMEOUT_S = 30.0


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    # "allow on", "allow off", ... -> instructions per call, per round
    per_call: dict[str, list[float]] = field(default_factory=dict)
    # "allow", "check" -> on/off per round
    ratios: dict[str, list[float]] = field(default_factory=dict)
    per_scrape: list[float] = field(default_factory=list)


class Counted:
    """A replica under callgrind, whose counters can be zeroed and read."""

    def __init__(self, group: ProcessGroup, name: str, extra: Sequence[str]) -> None:
        self.out = group.root / f"{name}.cg"
        self.server = group.add(
            BulwarkProcess(
                str(group.root / name),
                name=name,
                extra_args=list(extra),
                wrapper=[
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={self.out}.%p",
                    "--trace-children=no",
                ],
            )
        )
        self.address = self.server.wait_address(START_TIMEOUT_S)
        assert self.server.proc.pid is not None
        self.pid = self.server.proc.pid

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.pid)], check=True, capture_output=True)

    def read(self) -> int:
        """Instructions since ``zero``, from a dump of the counters."""
        before = set(self.out.parent.glob(f"{self.out.name}.{self.pid}*"))
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True)
        (dump,) = set(self.out.parent.glob(f"{self.out.name}.{self.pid}*")) - before
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dump}")

    def idle_rate(self, seconds: float) -> float:
        """Instructions per second the replica executes with nothing asked of it."""
        self.zero()
        began = time.monotonic()
        time.sleep(seconds)
        counted = self.read()
        return counted / (time.monotonic() - began)


def per_call(replica: Counted, call: CallSpec, calls: int, idle_s: float) -> float:
    """Instructions per call over ``calls`` sequential calls, the replica's own timers off."""
    idle = replica.idle_rate(idle_s)
    requests = call.requests or (call.request,)
    with grpc.insecure_channel(replica.address) as channel:
        method = channel.unary_unary(
            call.method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=call.response_type.FromString,
        )
        for n in range(10):  # warm: the first calls of a channel cost more
            method(requests[n % len(requests)], timeout=CALL_TIMEOUT_S)
        replica.zero()
        began = time.monotonic()
        for n in range(calls):
            method(requests[n % len(requests)], timeout=CALL_TIMEOUT_S)
        elapsed = time.monotonic() - began
        counted = replica.read()
    return max(0.0, counted - idle * elapsed) / calls


def per_scrape(replica: Counted, port: int) -> float:
    replica.zero()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        response.read()
    return float(replica.read())


def _need_valgrind() -> None:
    """valgrind and callgrind_control on PATH, installed from Debian when missing (as
    the tests' tools are: ``tools/install-debian-tools``, which needs root)."""
    programs = ("valgrind", "callgrind_control")
    if all(shutil.which(p) for p in programs):
        return
    installer = Path(__file__).resolve().parents[1] / "tools" / "install-debian-tools"
    subprocess.run([str(installer), f"valgrind:{','.join(programs)}"], check=False)
    if not all(shutil.which(p) for p in programs):
        raise SystemExit(f"valgrind is needed: run {installer} valgrind:valgrind as root")


def benchmark(args: argparse.Namespace) -> Report:
    _need_valgrind()
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        settings={"rounds": args.rounds, "calls": args.calls, "rate": args.rate},
    )
    with ProcessGroup("bulwark-metrics-instructions-", _progress) as group:
        _progress("starting two replicas under callgrind (a minute or two)...")
        port = free_port()
        replicas = {
            "on": Counted(group, "on", ["--metrics-listen", f"127.0.0.1:{port}"]),
            "off": Counted(group, "off", []),
        }
        users = check_requests(100, 1)
        for replica in replicas.values():
            probe_getleader(replica.address)
            prepare_allow_breaker(replica.address)
            put_limit(replica.address)
            probe_check(replica.address, users[0])
        calls: dict[str, Callable[[], CallSpec]] = {
            "allow": allow_call,
            "check": lambda: check_call(users, "Check"),
        }

        def measure(name: str, side: str) -> float:
            return per_call(replicas[side], calls[name](), args.calls, args.idle)

        def after_round(turn: int) -> None:
            # Once the round's turns are counted: what a scrape leaves behind (garbage
            # to collect) must not land in a turn's count.
            report.per_scrape.append(per_scrape(replicas["on"], port))
            _progress(
                f"round {turn + 1}/{args.rounds}: "
                + ", ".join(f"{k} on/off {v[-1]:.4f}" for k, v in report.ratios.items())
            )

        alternate_on_off(
            args.rounds, list(calls), measure, report.per_call, report.ratios, after_round
        )
    return report


def format_report(report: Report) -> str:
    settings = report.settings
    scrape = statistics.median(report.per_scrape)
    lines = [
        f"Metrics on/off in instructions (callgrind), {report.started_utc}",
        machine_line(report.machine),
        f"{settings['calls']} sequential calls per turn, {settings['rounds']} rounds; "
        "the replicas' idle instructions over each turn taken off",
        "",
        *spread_table("instructions per call", report.per_call, 0),
        "",
        *spread_table("on/off (per round)", report.ratios, 4),
    ]
    rate = settings["rate"]
    lines += [
        "",
        f"one scrape of /metrics: {scrape:,.0f} instructions (median of "
        f"{len(report.per_scrape)}); scraped every second at {rate:g} calls/s, "
        f"{scrape / rate:,.0f} instructions per call",
    ]
    for name in report.ratios:
        on = statistics.median(report.per_call[f"{name} on"]) + scrape / rate
        off = statistics.median(report.per_call[f"{name} off"])
        lines.append(f"{name}: on (with the scrapes' share) / off = {on / off:.4f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "metrics_instructions.py",
        "Count the instructions a replica executes per Allow and per Check call with the "
        "Prometheus endpoint on beside a replica without it, under valgrind's callgrind, "
        "in alternating turns, on 127.0.0.1.",
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns each side takes per call")
    parser.add_argument("--calls", type=int, default=200, help="calls per turn")
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of the idle window before each turn"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="calls per second a replica is taken to serve, for the scrapes' share",
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    for name in ("rounds", "calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.idle <= 0 or args.rate <= 0:
        parser.error("--idle and --rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(parse_args(argv), benchmark, format_report, _progress, "replicas stopped")


if __name__ == "__main__":
    sys.exit(main())
