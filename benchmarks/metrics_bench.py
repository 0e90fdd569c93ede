"""What the Prometheus metrics cost a replica: server CPU per call, metrics on beside off.

What it measures, in one run
    Two Bulwark replicas, each with its own embedded etcd on 127.0.0.1: one serving
    metrics (``--metrics-listen``), scraped once a second while it is loaded, as a
    Prometheus with a short interval would; one without. Two calls, each in
    ``--rounds`` turns alternating between the replicas (the order reversed every
    other round): ``CircuitBreakerService/Allow`` on a CLOSED breaker
    (``breaker_bench.py``'s call) and ``RateLimitService/Check`` with one descriptor
    under a limit that never refuses (``ratelimit_bench.py``'s). For each turn the
    replica's own CPU seconds (user + system, from /proc, its etcd apart) over the
    measured window, divided by the calls answered in it: microseconds per call. The
    ratio on/off is taken per round; the median, lowest and highest are printed.

Client and servers share the machine's CPUs; CPU per call is what the figure is about.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_load import CallSpec, WindowProbe, run_load
from bench_report import (
    add_json_option,
    add_load_options,
    alternate_on_off,
    bench_parser,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    shared_cpus_note,
    spread_table,
    utc_now,
)
from bench_servers import BulwarkProcess, ProcessGroup, ServerProcess, cpu_seconds, probe_getleader
from breaker_bench import allow_call, prepare_allow_breaker
from ratelimit_bench import check_call, check_requests, probe_check, put_limit

from bulwark_server.loopback.etcd import free_port

_progress = progress_to("metrics-bench")
SCRAPE_EVERY_S = 1.0


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    note: str
    load: dict[str, Any]
    # "allow on", "allow off", ... -> microseconds of server CPU per call, per round
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    # "allow", "check" -> on/off per round
    ratios: dict[str, list[float]] = field(default_factory=dict)
    scrapes: int = 0
    scrape_bytes: int = 0


class Scraper:
    """GETs ``/metrics`` every ``SCRAPE_EVERY_S`` while started."""

    def __init__(self, port: int, report: Report) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._report = report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Scraper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            with urllib.request.urlopen(self._url, timeout=5) as response:
                self._report.scrape_bytes = len(response.read())
            self._report.scrapes += 1


def cpu_per_call(
    name: str,
    address: str,
    call: CallSpec,
    args: argparse.Namespace,
    server: ServerProcess,
    pid: int,
) -> float:
    """Microseconds of the server's CPU per call answered in the measured window."""
    probe = WindowProbe(lambda: cpu_seconds(pid))
    result = run_load(name, address, call, args, server, probe)
    if result.errors or not result.calls:
        raise SystemExit(f"{name}: {result.errors} of {result.calls} calls failed")
    return (probe.end - probe.start) / result.calls * 1e6


def benchmark(args: argparse.Namespace) -> Report:
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        note="",
        load={**load_settings(args), "rounds": args.rounds, "scrape_every_s": SCRAPE_EVERY_S},
    )
    report.note = shared_cpus_note(report.machine["cpus"])
    with ProcessGroup("bulwark-metrics-bench-", _progress) as group:
        _progress("starting two replicas (metrics on and off), each with an embedded etcd...")
        port = free_port()
        on = group.add(
            BulwarkProcess(
                str(group.root / "on"),
                name="metrics-on",
                extra_args=["--metrics-listen", f"127.0.0.1:{port}"],
            )
        )
        off = group.add(BulwarkProcess(str(group.root / "off"), name="metrics-off"))
        replicas = {"on": (on, on.wait_address()), "off": (off, off.wait_address())}
        users = check_requests(1000, 1)
        for _, address in replicas.values():
            probe_getleader(address)
            prepare_allow_breaker(address)
            put_limit(address)
            probe_check(address, users[0])
        calls: dict[str, Callable[[], CallSpec]] = {
            "allow": allow_call,
            "check": lambda: check_call(users, "Check"),
        }

        def measure(call_name: str, side: str) -> float:
            server, address = replicas[side]
            assert server.proc is not None
            scraped = Scraper(port, report) if side == "on" else contextlib.nullcontext()
            with scraped:
                return cpu_per_call(
                    f"{call_name} {side}",
                    address,
                    calls[call_name](),
                    args,
                    server,
                    server.proc.pid,
                )

        alternate_on_off(
            args.rounds,
            list(calls),
            measure,
            report.cpu_us,
            report.ratios,
            lambda turn: _progress(
                f"round {turn + 1}/{args.rounds}: "
                + ", ".join(f"{k} on/off {v[-1]:.3f}" for k, v in report.ratios.items())
            ),
        )
    return report


def format_report(report: Report) -> str:
    load = report.load
    lines = [
        f"Server CPU per call, metrics on beside off ({report.started_utc})",
        machine_line(report.machine),
        report.note,
        f"{load['processes']} processes x {load['concurrency']} in flight, "
        f"{load['warmup_s']:g}s warm-up + {load['duration_s']:g}s per turn, "
        f"{load['rounds']} rounds; the 'on' replica scraped every {SCRAPE_EVERY_S:g}s "
        f"({report.scrapes} scrapes, the last {report.scrape_bytes} bytes)",
        "",
        *spread_table("server CPU µs per call", report.cpu_us, 1),
        "",
        *spread_table("on/off (per round)", report.ratios, 3),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "metrics_bench.py",
        "Measure a replica's CPU per Allow and per Check call with the Prometheus endpoint "
        "on (scraped every second) beside a replica without it, in alternating turns, on "
        "127.0.0.1.",
    )
    load = parser.add_argument_group("load")
    add_load_options(load)
    load.set_defaults(duration=5.0, warmup=1.0)
    load.add_argument("--rounds", type=int, default=5, help="turns each side takes per call")
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "processes", "concurrency", "rounds")
    require_duration_warmup(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(
        parse_args(argv), benchmark, format_report, _progress, "replicas and load stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
