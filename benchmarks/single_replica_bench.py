"""One replica beside the floors of Python gRPC, in alternating turns.

What it measures, in one run
    A limit ``bench/per-user`` (``[{key: "user"}]``, any value; 1,000,000 per SECOND, so
    no request is ever limited) on one Bulwark replica with its own embedded etcd, and
    the echo server of ``bench_servers.py``, both on 127.0.0.1. Seven targets, each
    loaded by ``--processes`` processes keeping ``--concurrency`` calls in flight, take
    ``--rounds`` turns (reversed every other round, so drifting background load hits
    them alike):

    * ``check``: ``RateLimitService/Check``, one descriptor ``[{user: "u<n>"}]``;
    * ``should_rate_limit``: Envoy's ``ShouldRateLimit``, the same descriptor;
    * ``echo``: the bare ``grpc.aio`` echo of a one-result CheckResponse's bytes;
    * ``read_check``: the echo server's ``ReadCheck``: the same CheckRequest as
      ``check``, parsed by gRPC, its entries read once, a ready CheckResponse sent
      back. The client side is that of ``check``. It is the floor of any Check
      written in Python: no validation, no decision, no telemetry, no access control;
    * ``check_batched``, ``echo_batched``, ``read_check_batched``: the same with
      ``--batch`` descriptors (distinct users) per request, counted in items/s
      (calls/s x ``--batch``).

    The ratios are taken round by round (each pair measured minutes apart at most) and
    their median printed with the lowest and highest.

Client and server share the machine's CPUs: the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_load import CallSpec, echo_call, load_target
from bench_report import (
    add_json_option,
    add_load_options,
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
from bench_servers import (
    READ_CHECK_METHOD,
    BulwarkProcess,
    EchoProcess,
    ProcessGroup,
    probe_getleader,
)
from ratelimit_bench import (
    SHOULD_RATE_LIMIT,
    check_call,
    check_requests,
    load_envoy_rls,
    probe_check,
    probe_should_rate_limit,
    put_limit,
    rls_requests,
)

_progress = progress_to("single-replica-bench")

# (numerator, denominator) of each ratio printed; items/s for the batched targets.
RATIOS = {
    "Check / echo": ("check", "echo"),
    "ShouldRateLimit / echo": ("should_rate_limit", "echo"),
    "read floor / echo": ("read_check", "echo"),
    "Check / read floor": ("check", "read_check"),
    "batched Check / batched echo (items/s)": ("check_batched", "echo_batched"),
    "batched read floor / batched echo (items/s)": ("read_check_batched", "echo_batched"),
    "batched Check / batched read floor": ("check_batched", "read_check_batched"),
}


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    note: str
    load: dict[str, Any]
    # target -> items/s in each round (calls/s for single targets)
    rates: dict[str, list[float]] = field(default_factory=dict)
    # ratio name -> value in each round
    ratios: dict[str, list[float]] = field(default_factory=dict)


def _as(call: CallSpec, method: str, label: str) -> CallSpec:
    """``call``'s requests and client side, sent to ``method``."""
    return CallSpec(
        label=label,
        method=method,
        request=call.request,
        response_type=call.response_type,
        requests=call.requests,
    )


def benchmark(args: argparse.Namespace) -> Report:
    """Start the replica and the echo server, run the rounds, stop both."""
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        note="",
        load={**load_settings(args), "users": args.users, "batch": args.batch},
    )
    report.note = shared_cpus_note(report.machine["cpus"])
    with ProcessGroup("bulwark-single-replica-bench-", _progress) as group:
        _progress("starting a Bulwark replica (embedded etcd) and the echo server...")
        replica = group.add(BulwarkProcess(str(group.root / "replica"), name="replica"))
        echo = group.add(EchoProcess())
        address, echo_address = replica.wait_address(), echo.wait_address()
        probe_getleader(address)
        put_limit(address)
        singles = check_requests(args.users, 1)
        batches = check_requests(max(args.users, args.batch), args.batch)
        check, batched = check_call(singles, "Check"), check_call(batches, "Check batched")
        rls, found = load_envoy_rls()
        if rls is None:
            raise SystemExit(f"ShouldRateLimit: not available in this build ({found})")
        envoy = rls_requests(rls, args.users)
        missing = probe_should_rate_limit(address, rls, envoy[0])
        if missing is not None:
            raise SystemExit(f"ShouldRateLimit: not available ({missing})")
        targets = {
            "check": (address, check, replica, 1),
            "should_rate_limit": (
                address,
                CallSpec(
                    label="ShouldRateLimit",
                    method=SHOULD_RATE_LIMIT,
                    request=envoy[0],
                    response_type=rls.RateLimitResponse,
                    requests=envoy,
                ),
                replica,
                1,
            ),
            "echo": (echo_address, echo_call(probe_check(address, singles[0])), echo, 1),
            "read_check": (echo_address, _as(check, READ_CHECK_METHOD, "ReadCheck"), echo, 1),
            "check_batched": (address, batched, replica, args.batch),
            "echo_batched": (
                echo_address,
                echo_call(probe_check(address, batches[0])),
                echo,
                args.batch,
            ),
            "read_check_batched": (
                echo_address,
                _as(batched, READ_CHECK_METHOD, "ReadCheck batched"),
                echo,
                args.batch,
            ),
        }
        for turn in range(args.rounds):
            order = list(targets) if turn % 2 == 0 else list(reversed(targets))
            for name in order:
                target_address, call, server, items = targets[name]
                result = load_target(name, target_address, call, args, server, lambda _: None)
                if result.errors:
                    raise SystemExit(f"{name}: {sum(result.errors.values())} calls failed")
                report.rates.setdefault(name, []).append(result.qps * items)
            for label, (a, b) in RATIOS.items():
                report.ratios.setdefault(label, []).append(
                    report.rates[a][-1] / report.rates[b][-1]
                )
            _progress(
                f"round {turn + 1}/{args.rounds}: "
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in report.ratios.items() if "/" in k)
            )
        probe_check(address, singles[0])  # still deciding OK after all that
    return report


def format_report(report: Report) -> str:
    load = report.load
    lines = [
        f"Single replica beside the floors of Python gRPC ({report.started_utc})",
        machine_line(report.machine),
        report.note,
        f"{load['processes']} processes x {load['concurrency']} in flight, "
        f"{load['warmup_s']:g}s warm-up + {load['duration_s']:g}s per target per round; "
        f"{load['users']} users; batches of {load['batch']}",
        "",
        *spread_table("target (items/s)", report.rates, 0),
        "",
        *spread_table("ratio (per round)", report.ratios, 3),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = bench_parser(
        "single_replica_bench.py",
        "Measure one Bulwark replica's Check and Envoy ShouldRateLimit (single and batched "
        "descriptors) beside a bare grpc.aio echo and a server that only reads the "
        "CheckRequest (the floor of any Python Check), in alternating rounds, on 127.0.0.1.",
    )
    load = parser.add_argument_group("load")
    add_load_options(load)
    load.set_defaults(duration=5.0, warmup=1.0)
    load.add_argument("--rounds", type=int, default=5, help="turns every target takes")
    load.add_argument(
        "--users", type=int, default=1000, help="distinct descriptor values u0..u<N-1>, in turn"
    )
    load.add_argument(
        "--batch", type=int, default=100, help="descriptors per request in the batched targets"
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "processes", "concurrency", "rounds", "users")
    require_duration_warmup(parser, args)
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be 1-100 (Check takes at most 100 descriptors)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(
        parse_args(argv), benchmark, format_report, _progress, "servers and load stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
