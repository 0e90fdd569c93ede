"""etcd writes per 1,000 rate-limit decisions in steady state: what counter checkpoints cost.

What it measures
    Two sides, each one Bulwark replica with its own embedded etcd (so each leads its own
    fleet): "current" (this working tree) and "baseline" (``--server-rev``, by default
    1102d72), both up for the whole run. Each holds three limits in domain ``economy``:

    * ``per-ip``: ``[remote_address: any]``, fixed window, ``--per-ip-rate`` per MINUTE,
      counted per address (``--addresses`` distinct values, 10.x.y.z);
    * ``checkout``: ``[path: /checkout]``, an exact value, fixed window, 1,000,000 per
      second (one counter);
    * ``per-user``: ``[user: any]``, token bucket, ``--per-user-rate`` per second,
      counted per user (``--users`` distinct values).

    Load: ``RateLimitService/Check`` calls of one descriptor each, naming the three in
    turn (an address, the checkout path, a user), from ``--processes`` spawned load
    processes keeping ``--concurrency`` calls in flight each (``bench_load.run_load``).
    A decision is one answered Check (one descriptor decided; refused ones count too: a
    fixed window counts hits over its limit, so they change counters as allowed ones do).
    Envoy's ShouldRateLimit decides through the same counters on the leader, so it
    costs etcd the same; Check is what is sent.

    In each of ``--turns`` turns, each side in turn (which goes first flips every turn):
    ``--settle`` seconds with nothing sent (the previous load's last checkpoint lands),
    then ``--idle`` seconds with nothing sent, then ``--warmup`` seconds of discarded
    load and ``--duration`` seconds measured. etcd's ``etcd_server_proposals_committed_total``
    (its client URL + ``/metrics``) is read at the start and end of the idle span and of
    the measured window (the parent waits at the load processes' start barrier, so the
    readings cover the same span as the decisions counted).

    Printed per side: decisions, decisions/s, proposals and proposals/s under load, the
    idle proposals/s, proposals per 1,000 decisions, and the same net of the idle rate
    (what rate limiting itself writes). Every proposal counts, not only checkpoints: the
    leader's lease keep-alives, the leader key's renewals and the replica's heartbeat
    write too; the idle figure shows that part. The leader checkpoints changed counters
    every second, so the decisions' share is bounded by time, not by the decisions.
    Then the ratios current/baseline.

How
    ``python benchmarks/ratelimit_economy_bench.py [--server-rev REV] [--turns N]``;
    ``--no-baseline`` measures the current tree alone; ``--quick`` is a smoke run (one
    turn, 3 s idle, 1 s warm-up, 3 s measured). The baseline runs the server of that
    commit (``git archive`` into a temporary tree, ``bench_trees.py``), checked to import
    its own packages; the load is generated with this tree's stubs (the same wire format).
    Everything runs on 127.0.0.1, every wait has a deadline, and every process and the
    temporary directory are removed on exit, error or Ctrl-C.

Caveats
    Both replicas, their etcds and the load share the machine: decisions/s is a lower
    bound and differs between runs; proposals per 1,000 decisions depends on it (the
    checkpoints are per second), so compare sides of the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from bench_load import CallSpec, WindowProbe, run_load
from bench_report import (
    add_json_option,
    add_load_options,
    bench_parser,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    ratio,
    ratio_lines,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    shared_cpus_note,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    PROPOSALS_METRIC,
    BulwarkProcess,
    ProcessGroup,
    probe_getleader,
    proposals_committed,
)
from bench_trees import make_side

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc

DEFAULT_BASELINE = "1102d72"
DOMAIN = "economy"
CHECKOUT_PATH = "/checkout"
CHECKOUT_RATE = 1_000_000  # per second: one counter, never refusing
SIDES = ("current", "baseline")
Entry = ratelimit_pb2.DescriptorEntry

_progress = progress_to("ratelimit-economy")


# --------------------------------------------------------------------------- limits, load


def make_limits(per_ip_rate: int, per_user_rate: int) -> list[ratelimit_pb2.Limit]:
    """The three limits: per-ip (fixed window per minute), checkout (exact), per-user (bucket)."""
    rate, fixed = ratelimit_pb2.Rate, ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
    return [
        ratelimit_pb2.Limit(
            domain=DOMAIN,
            name="per-ip",
            descriptor=[Entry(key="remote_address")],
            rate=rate(requests_per_unit=per_ip_rate, unit=ratelimit_pb2.RATE_UNIT_MINUTE),
            algorithm=fixed,
        ),
        ratelimit_pb2.Limit(
            domain=DOMAIN,
            name="checkout",
            descriptor=[Entry(key="path", value=CHECKOUT_PATH)],
            rate=rate(requests_per_unit=CHECKOUT_RATE, unit=ratelimit_pb2.RATE_UNIT_SECOND),
            algorithm=fixed,
        ),
        ratelimit_pb2.Limit(
            domain=DOMAIN,
            name="per-user",
            descriptor=[Entry(key="user")],
            rate=rate(requests_per_unit=per_user_rate, unit=ratelimit_pb2.RATE_UNIT_SECOND),
            algorithm=ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET,
        ),
    ]


def ip(n: int) -> str:
    """The address of client ``n``: 10.x.y.z."""
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def economy_requests(addresses: int, users: int) -> tuple[ratelimit_pb2.CheckRequest, ...]:
    """Check requests of one descriptor each: an address, the checkout path, a user, in turn,
    until every address and every user has come up once."""
    out = []
    for i in range(max(addresses, users)):
        for entry in (
            Entry(key="remote_address", value=ip(i % addresses)),
            Entry(key="path", value=CHECKOUT_PATH),
            Entry(key="user", value=f"u{i % users}"),
        ):
            descriptor = ratelimit_pb2.RateLimitDescriptor(entries=[entry])
            out.append(ratelimit_pb2.CheckRequest(domain=DOMAIN, descriptors=[descriptor]))
    return tuple(out)


def check_call(requests: tuple[ratelimit_pb2.CheckRequest, ...]) -> CallSpec:
    return CallSpec(
        label="RateLimitService/Check",
        method="/bulwark.v1.RateLimitService/Check",
        request=requests[0],
        response_type=ratelimit_pb2.CheckResponse,
        requests=requests,
    )


def prepare(address: str, limits: list[ratelimit_pb2.Limit], probes: Sequence[Any]) -> None:
    """Put the limits; fail unless each probe Check is decided by the leader under the
    limit its descriptor names."""
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        for limit in limits:
            stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=CALL_TIMEOUT)
        for request, limit in zip(probes, limits, strict=True):
            response = stub.Check(request, timeout=CALL_TIMEOUT)
            if response.local_fallback or response.results[0].limit_name != limit.name:
                raise RuntimeError(f"Check is not decided by {limit.name!r}: {response}")


# --------------------------------------------------------------------------- the run


@dataclass
class Turn:
    turn: int
    idle_s: float
    idle_proposals: int
    seconds: float
    decisions: int
    errors: int
    proposals: int


@dataclass
class SideResult:
    key: str
    server: dict[str, str]
    turns: list[Turn] = field(default_factory=list)
    decisions: int = 0
    errors: int = 0
    seconds: float = 0.0
    proposals: int = 0
    idle_s: float = 0.0
    idle_proposals: int = 0
    decisions_per_s: float = 0.0
    proposals_per_s: float = 0.0
    idle_per_s: float = 0.0
    per_1000: float = 0.0
    net_per_1000: float = 0.0

    def finish(self) -> None:
        t = self.turns
        self.decisions = sum(x.decisions for x in t)
        self.errors = sum(x.errors for x in t)
        self.seconds = sum(x.seconds for x in t)
        self.proposals = sum(x.proposals for x in t)
        self.idle_s = sum(x.idle_s for x in t)
        self.idle_proposals = sum(x.idle_proposals for x in t)
        self.decisions_per_s = ratio(self.decisions, self.seconds)
        self.proposals_per_s = ratio(self.proposals, self.seconds)
        self.idle_per_s = ratio(self.idle_proposals, self.idle_s)
        self.per_1000 = ratio(self.proposals * 1000, self.decisions)
        net = self.proposals - self.idle_per_s * self.seconds
        self.net_per_1000 = ratio(net * 1000, self.decisions)


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    sides: dict[str, SideResult] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


def measure_turn(
    turn: int,
    replica: BulwarkProcess,
    call: CallSpec,
    args: argparse.Namespace,
) -> Turn:
    assert replica.etcd_endpoint is not None
    etcd = replica.etcd_endpoint
    time.sleep(args.settle)
    idle_before, t0 = proposals_committed(etcd), time.monotonic()
    time.sleep(args.idle)
    idle_after, t1 = proposals_committed(etcd), time.monotonic()
    probe = WindowProbe(lambda: proposals_committed(etcd))
    result = run_load(replica.name, replica.wait_address(), call, args, replica, probe)
    if probe.start is None or probe.end is None:
        raise RuntimeError(f"{replica.name}: no proposals reading at the window's ends")
    return Turn(
        turn=turn,
        idle_s=t1 - t0,
        idle_proposals=idle_after - idle_before,
        seconds=probe.seconds,
        decisions=result.calls,
        errors=result.errors,
        proposals=probe.end - probe.start,
    )


def benchmark(args: argparse.Namespace) -> Report:
    keys = SIDES[:1] if args.no_baseline else SIDES
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        settings={
            **load_settings(args),
            "turns": args.turns,
            "settle_s": args.settle,
            "idle_s": args.idle,
            "addresses": args.addresses,
            "users": args.users,
            "per_ip_rate_per_minute": args.per_ip_rate,
            "per_user_rate_per_s": args.per_user_rate,
            "baseline_rev": None if args.no_baseline else args.server_rev,
        },
    )
    limits = make_limits(args.per_ip_rate, args.per_user_rate)
    requests = economy_requests(args.addresses, args.users)
    call = check_call(requests)
    with ProcessGroup("bulwark-ratelimit-economy-", _progress) as group:
        revs = {"current": None, "baseline": args.server_rev}
        sides = {key: make_side(key, revs[key], group.root) for key in keys}
        replicas: dict[str, BulwarkProcess] = {}
        for key, side in sides.items():
            side.check_imports()
            report.sides[key] = SideResult(key, side.describe())
            _progress(f"{key}: {side.commit}; runs {side.bulwark_server_file}")
            replicas[key] = group.add(
                BulwarkProcess(
                    str(group.root / f"{key}-data"),
                    name=key,
                    extra_args=[f"--replica-id=economy-{key}"],
                    env=side.server_env,
                    cwd=str(side.run_dir),
                )
            )
        for key, replica in replicas.items():
            served = replica.wait_address()
            probe_getleader(served)
            if replica.etcd_endpoint is None:
                raise RuntimeError(f"{key}: the replica did not log its embedded etcd endpoint")
            prepare(served, limits, requests[:3])
            _progress(f"{key}: leads on {served}, etcd at {replica.etcd_endpoint}; limits put")
        per_turn = args.settle + args.idle + args.warmup + args.duration
        _progress(
            f"{args.turns} turn(s) x {len(keys)} side(s), about {per_turn + 3:.0f}s each "
            f"(settle {args.settle:g}s, idle {args.idle:g}s, warm-up {args.warmup:g}s, "
            f"measured {args.duration:g}s)"
        )
        for turn in range(1, args.turns + 1):
            order = list(keys) if turn % 2 else list(reversed(keys))
            for key in order:
                t = measure_turn(turn, replicas[key], call, args)
                report.sides[key].turns.append(t)
                _progress(
                    f"turn {turn}/{args.turns} {key}: {t.decisions} decisions "
                    f"({t.decisions / t.seconds:.0f}/s), {t.proposals} proposals "
                    f"({ratio(t.proposals * 1000, t.decisions):.2f} per 1,000); idle "
                    f"{t.idle_proposals / t.idle_s:.2f} proposals/s"
                    + (f"; {t.errors} errors" if t.errors else "")
                )
        for replica in replicas.values():
            replica.check_alive()
    for side in report.sides.values():
        side.finish()
    if "baseline" in report.sides:
        now, base = report.sides["current"], report.sides["baseline"]
        report.ratios = {
            "current/baseline: proposals per 1,000 decisions": ratio(now.per_1000, base.per_1000),
            "current/baseline: net of idle, per 1,000 decisions": ratio(
                now.net_per_1000, base.net_per_1000
            ),
            "current/baseline: decisions/s": ratio(now.decisions_per_s, base.decisions_per_s),
            "current/baseline: idle proposals/s": ratio(now.idle_per_s, base.idle_per_s),
        }
    return report


def format_report(report: Report) -> str:
    s = report.settings
    lines = [
        f"Rate-limit decisions: etcd writes per 1,000 decisions (started {report.started_utc})",
        machine_line(report.machine),
    ]
    for key, side in report.sides.items():
        lines.append(f"{key}: {side.server['commit']} ({side.server['rev']})")
    lines += [
        f"Limits: per-ip [remote_address: any] fixed window {s['per_ip_rate_per_minute']}/minute"
        f" over {s['addresses']} addresses; checkout [path: {CHECKOUT_PATH}] fixed window "
        f"{CHECKOUT_RATE}/s; per-user [user: any] token bucket {s['per_user_rate_per_s']}/s "
        f"over {s['users']} users. One descriptor per Check, the three in turn.",
        f"Turns: {s['turns']} per side, alternating which goes first; each: settle "
        f"{s['settle_s']:g}s, idle {s['idle_s']:g}s, warm-up {s['warmup_s']:g}s, measured "
        f"{s['duration_s']:g}s; load {s['processes']} process(es) x {s['concurrency']} in "
        "flight (grpc.aio)",
        f"Proposals: etcd's {PROPOSALS_METRIC}, every write (lease keep-alives, the leader "
        "key, heartbeats too); 'net' subtracts the idle rate over the measured seconds.",
        shared_cpus_note(report.machine["cpus"]),
        "",
        f"{'side':<9} {'decisions':>10} {'dec/s':>8} {'errors':>6} {'proposals':>9} "
        f"{'prop/s':>7} {'idle prop/s':>11} {'per 1,000':>9} {'net per 1,000':>13}",
    ]
    for key, r in report.sides.items():
        lines.append(
            f"{key:<9} {r.decisions:>10} {r.decisions_per_s:>8.0f} {r.errors:>6} "
            f"{r.proposals:>9} {r.proposals_per_s:>7.2f} {r.idle_per_s:>11.2f} "
            f"{r.per_1000:>9.3f} {r.net_per_1000:>13.3f}"
        )
    lines.append("")
    for key, r in report.sides.items():
        per_turn = ", ".join(f"{ratio(t.proposals * 1000, t.decisions):.3f}" for t in r.turns)
        lines.append(f"{key}: per 1,000 decisions, turn by turn: {per_turn}")
    lines.extend(ratio_lines(report.ratios))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "ratelimit_economy_bench.py",
        "etcd writes (committed proposals) per 1,000 rate-limit decisions in steady state, "
        "this tree against a baseline revision in alternating turns.",
    )
    parser.add_argument(
        "--server-rev",
        default=DEFAULT_BASELINE,
        help="the baseline: run its replica from this commit's tree",
    )
    parser.add_argument("--no-baseline", action="store_true", help="measure the current tree alone")
    parser.add_argument("--turns", type=int, default=2, help="turns per side")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="quiet seconds before each idle span"
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds of idle proposals per turn"
    )
    parser.add_argument("--addresses", type=int, default=10_000, help="distinct addresses")
    parser.add_argument("--users", type=int, default=1_000, help="distinct users")
    parser.add_argument(
        "--per-ip-rate", type=int, default=6_000, help="per-ip limit, requests per minute"
    )
    parser.add_argument(
        "--per-user-rate", type=int, default=1_000, help="per-user limit, requests per second"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 turn, settle 1.5 s, idle 3 s, warm-up 1 s, measured 3 s",
    )
    add_load_options(parser)
    parser.set_defaults(processes=1)
    add_json_option(parser, "table")
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.settle, args.idle, args.warmup, args.duration = 1, 1.5, 3.0, 1.0, 3.0
    require_at_least_one(
        parser,
        args,
        "turns",
        "processes",
        "concurrency",
        "addresses",
        "users",
        "per_ip_rate",
        "per_user_rate",
    )
    require_duration_warmup(parser, args)
    if args.idle <= 0 or args.settle < 0:
        parser.error("--idle must be positive and --settle not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(
        parse_args(argv), benchmark, format_report, _progress, "replicas and load stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
