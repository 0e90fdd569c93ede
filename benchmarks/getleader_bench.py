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

The machinery is shared with the other benchmarks: the servers in ``bench_servers.py``,
the load processes and percentiles in ``bench_load.py``, the report helpers and options in
``bench_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_load import CallSpec, TargetResult, echo_call, load_target
from bench_report import (
    TARGET_RATIOS,
    add_json_option,
    add_load_options,
    bench_parser,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    ratios,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    target_table,
)
from bench_servers import (
    BulwarkProcess,
    EchoProcess,
    ProcessGroup,
    probe_getleader,
    run_echo_server,
)

from bulwark.v1 import cluster_pb2

TARGETS = ("bulwark", "echo")

_progress = progress_to("bench")


def getleader_call() -> CallSpec:
    """``ClusterService/GetLeader`` with an empty request."""
    return CallSpec(
        label="ClusterService/GetLeader",
        method="/bulwark.v1.ClusterService/GetLeader",
        request=cluster_pb2.GetLeaderRequest(),
        response_type=cluster_pb2.GetLeaderResponse,
    )


@dataclass
class Report:
    """Everything printed: machine, load shape, per-target results and ratios."""

    machine: dict[str, Any]
    load: dict[str, Any]
    note: str
    results: dict[str, TargetResult] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)


def format_report(report: Report) -> str:
    """The human-readable table."""
    m, load = report.machine, report.load
    lines = [
        machine_line(m, " (embedded, single member)"),
        f"Load: {load['processes']} processes x {load['concurrency']} in-flight calls each, "
        f"{load['warmup_s']:g}s warm-up + {load['duration_s']:g}s measured per target, "
        f"targets run one after the other; echo payload {load['echo_payload_bytes']} bytes",
        f"Note: {report.note}",
        "",
        *target_table(((r.target, r) for r in report.results.values()), 8),
    ]
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
    parser = bench_parser(
        "getleader_bench.py",
        "Measure QPS and p50/p99 latency of Bulwark's ClusterService/GetLeader on one "
        "local replica (with its own embedded etcd) against a bare grpc.aio echo server "
        "as a baseline, and print the Bulwark/echo ratios. Everything runs on 127.0.0.1; "
        "the load generator shares the CPUs with the servers.",
    )
    add_load_options(
        parser,
        processes_help="load-generator processes per target",
        warmup_help="seconds of load per target before measuring (those calls are discarded)",
    )
    parser.add_argument(
        "--echo-bytes",
        type=int,
        default=0,
        help="echo payload size; 0 sends the bytes of a real GetLeader response instead",
    )
    add_json_option(parser, "table")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "processes", "concurrency")
    require_duration_warmup(parser, args)
    if args.echo_bytes < 0:
        parser.error("--echo-bytes must not be negative")
    return args


def benchmark(args: argparse.Namespace) -> Report:
    """Start both servers, load each in turn, stop everything; return the report."""
    machine = machine_info()
    report = Report(
        machine=machine,
        load=load_settings(args),
        note=(
            f"the load generator ({args.processes} process(es)) and the server under test "
            f"share the same {machine['cpus']} CPUs on 127.0.0.1, so client and server "
            "compete for CPU; read the Bulwark/echo ratio, not the absolute QPS."
        ),
    )
    with ProcessGroup("bulwark-bench-", _progress) as group:
        _progress("starting Bulwark replica (embedded etcd)...")
        bulwark = group.add(BulwarkProcess(str(group.root)))
        _progress("starting echo server...")
        echo = group.add(EchoProcess())
        bulwark_address = bulwark.wait_address()
        echo_address = echo.wait_address()
        _progress(f"Bulwark serving on {bulwark_address}, echo on {echo_address}")
        leader_response = probe_getleader(bulwark_address)
        payload = b"x" * args.echo_bytes if args.echo_bytes else leader_response
        report.load["getleader_response_bytes"] = len(leader_response)
        report.load["echo_payload_bytes"] = len(payload)
        for target, address, call, server in (
            ("bulwark", bulwark_address, getleader_call(), bulwark),
            ("echo", echo_address, echo_call(payload), echo),
        ):
            report.results[target] = load_target(target, address, call, args, server, _progress)
    report.ratio = ratios(report.results["bulwark"], report.results["echo"], TARGET_RATIOS)
    return report


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
