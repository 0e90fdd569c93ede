"""etcd writes per 1,000 reported breaker outcomes: what the leader's window checkpoints cost.

What it measures
    One Bulwark replica with its embedded etcd (so it leads) and ``--breakers``
    breakers (default 2,000; default configuration). A reporter sends
    ``ReportOutcomes`` batches (at most 1,000 entries each) so that every breaker
    gets one success every ``--period`` seconds (default 0.1 s, as a fleet of
    clients would send), for ``--duration`` seconds after ``--warmup`` seconds.
    etcd's own ``etcd_server_proposals_committed_total`` (its client URL +
    ``/metrics``) is read at the start and end of the measured span; the
    difference, per 1,000 accepted outcomes, is what the report prints. Every
    proposal counts (lease renewals of the election too), so it is an upper bound
    on what the checkpoints write.

How
    ``python benchmarks/breaker_checkpoint_bench.py [--breakers N] [--duration S] [--rev REV]``.
    With ``--rev``, the replica runs the server of that commit (``bench_trees.py``);
    without it, this working tree's. Everything started is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    PROPOSALS_METRIC,
    BulwarkProcess,
    ProcessGroup,
    probe_getleader,
    proposals_committed,
)
from bench_trees import server_side
from breaker_idle_bench import BREAKER_PREFIX, create_breakers

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc

BATCH = 1000  # entries per ReportOutcomes request (the API's limit)
REPORT_TIMEOUT = 10.0

_progress = progress_to("breaker-checkpoint")


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    server: dict[str, str]
    put_errors: dict[str, int] = field(default_factory=dict)
    measured_s: float = 0.0
    outcomes: int = 0
    report_errors: int = 0
    proposals: int = 0

    @property
    def per_1000(self) -> float:
        return self.proposals * 1000 / self.outcomes if self.outcomes else float("nan")


class _Reporter:
    """Sends one success per breaker every ``period`` seconds; counts what was accepted."""

    def __init__(self, address: str, names: list[str], period: float) -> None:
        self._address = address
        self._names = names
        self._period = period
        self.accepted = 0
        self.errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        requests = [
            breaker_pb2.ReportOutcomesRequest(
                reporter="checkpoint-bench",
                outcomes=[
                    breaker_pb2.BreakerOutcomes(
                        name=name, counts=breaker_pb2.OutcomeCounts(successes=1)
                    )
                    for name in self._names[i : i + BATCH]
                ],
            )
            for i in range(0, len(self._names), BATCH)
        ]
        async with grpc.aio.insecure_channel(self._address) as channel:
            stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
            next_at = time.monotonic()
            while not stop.is_set():
                answers = await asyncio.gather(
                    *(stub.ReportOutcomes(r, timeout=REPORT_TIMEOUT) for r in requests),
                    return_exceptions=True,
                )
                for answer in answers:
                    if isinstance(answer, BaseException):
                        self.errors += 1
                    else:
                        self.accepted += answer.accepted
                next_at += self._period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _measure(
    address: str, etcd: str, n: int, period: float, warmup: float, duration: float
) -> tuple[float, int, int, int]:
    """(measured seconds, outcomes accepted, report errors, proposals) over ``duration``."""
    reporter = _Reporter(address, [f"{BREAKER_PREFIX}{i:05d}" for i in range(n)], period)
    stop = asyncio.Event()
    task = asyncio.create_task(reporter.run(stop))
    await asyncio.sleep(warmup)
    before, accepted0, errors0, t0 = (
        proposals_committed(etcd),
        reporter.accepted,
        reporter.errors,
        time.monotonic(),
    )
    await asyncio.sleep(duration)
    after, accepted1, errors1, t1 = (
        proposals_committed(etcd),
        reporter.accepted,
        reporter.errors,
        time.monotonic(),
    )
    stop.set()
    await task
    return t1 - t0, accepted1 - accepted0, errors1 - errors0, after - before


def benchmark(args: argparse.Namespace) -> Report:
    with ProcessGroup("bulwark-breaker-checkpoint-", _progress) as group:
        side = server_side(args.rev, group.root)
        env, cwd, server = side.server_env, str(side.run_dir), side.describe()
        report = Report(
            started_utc=utc_now(),
            machine=machine_info(),
            settings={
                "breakers": args.breakers,
                "period_s": args.period,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
            },
            server=server,
        )
        replica = group.add(BulwarkProcess(str(group.root / "data"), env=env, cwd=cwd))
        address = replica.wait_address()
        probe_getleader(address)
        if replica.etcd_endpoint is None:
            raise RuntimeError("the replica did not log its embedded etcd endpoint")
        _progress(f"leads, serving on {address}; etcd at {replica.etcd_endpoint}")
        _progress(f"creating {args.breakers} breakers...")
        report.put_errors = dict(asyncio.run(create_breakers(address, args.breakers, 64)))
        _progress(f"reporting: warmup {args.warmup:g}s, then measuring {args.duration:g}s...")
        measured = asyncio.run(
            _measure(
                address,
                replica.etcd_endpoint,
                args.breakers,
                args.period,
                args.warmup,
                args.duration,
            )
        )
        report.measured_s, report.outcomes, report.report_errors, report.proposals = measured
        replica.check_alive()
    return report


def format_report(report: Report) -> str:
    s = report.settings
    seconds = report.measured_s or float("nan")
    return "\n".join(
        [
            f"Breaker window checkpoints: etcd writes per outcome ({report.started_utc})",
            machine_line(report.machine),
            f"Server: {report.server['commit']}",
            f"Setup: {s['breakers']} breakers (PutBreaker errors: {report.put_errors or 'none'}),"
            f" one success each every {s['period_s']:g}s; warmup {s['warmup_s']:g}s,"
            f" measured {report.measured_s:.1f}s",
            f"outcomes accepted: {report.outcomes} ({report.outcomes / seconds:.0f}/s),"
            f" report errors: {report.report_errors}",
            f"{PROPOSALS_METRIC}: +{report.proposals} ({report.proposals / seconds:.1f}/s)",
            f"etcd writes per 1,000 outcomes: {report.per_1000:.3f}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "breaker_checkpoint_bench.py", "etcd writes per 1,000 reported breaker outcomes."
    )
    parser.add_argument("--breakers", type=int, default=2_000, help="breakers reported on")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between reports")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--rev", help="run the server of this commit (default: working tree)")
    add_json_option(parser, "report")
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "breakers")
    if args.duration <= 0 or args.warmup < 0 or args.period <= 0:
        parser.error("--duration and --period must be positive and --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(parse_args(argv), benchmark, format_report, _progress, "replica stopped")


if __name__ == "__main__":
    sys.exit(main())
