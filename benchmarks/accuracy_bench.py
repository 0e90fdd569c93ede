"""Rate-limit accuracy through three real replicas: what they admit beside what is permitted.

What it measures
    One deployment on 127.0.0.1 (``scaleout_bench.Deployment``): one etcd member and three
    replicas, real processes. Limits are created with PutLimit (domain ``accuracy``,
    each on a descriptor key of its own, its name: ``[{key: "window-1000"}]``, ...;
    every run first checks that its Checks are decided by its limit), then:

    1. **Busy limits, skewed load.** For each of a fixed-window limit (``window-1000``)
       and a token-bucket limit (``bucket-1000``, burst ``--burst``, default the rate) of
       ``--rate`` hits per second (default 1,000), one descriptor value receives
       ``--offered`` x the rate (default 1.3x) for ``--duration`` seconds (default 10),
       split ``--split`` (default 70/20/10) across the three replicas. The value is
       chosen so that its counter's owner is the replica named by ``--owner`` (default
       ``light``, the one with the smallest part: most of the traffic is then decided
       from shares, the case this measures). The load is open loop (``bench_load.
       run_paced``): calls are sent on a fixed schedule whatever the answers, from
       ``--processes`` load processes; offered and achieved calls are reported, and how
       far a sender ever fell behind its schedule. With ``--hits`` > 1 each Check
       charges that many hits (``CheckRequest.hits``, Envoy's ``hits_addend``), so the
       offered hits exceed the limit at a call rate the machine can afford; the default
       is 1 hit per Check.

       What the limit permits over exactly the span of the load:

       * token bucket: ``rate x (last send - first send) + burst``: the bucket starts
         full (a fresh counter) and refills at the rate while the load lasts.
       * fixed window: windows are epoch-aligned (``counters.FixedWindow``); the load
         starts on a boundary and stops ``END_MARGIN_S`` (50 ms) before the boundary
         ``--duration`` seconds later, so it covers ``--duration`` windows, the last
         one all but its last 50 ms, and no call sent in one window is decided in the
         next unless it takes longer than that (``slowest`` says). Calls are counted in
         the window they were sent in, and each window permits
         ``min(rate, hits offered in it)`` (whole Checks of ``--hits``): the rate for
         every window the load kept above the limit, the last one included (it is
         offered 95 % of a second at 1.3x the rate). Also counted: Checks allowed with
         a ``reset_after`` of 0, which an exact decision never gives (its window has
         time left): allowed from a share whose window had already ended.

       Reported: allowed hits in total and per replica, permitted, allowed/permitted and
       the deviation in % (target within +-5 %), per window for the fixed window.

    2. **A 5-per-minute window** (``login-5``, fixed window, 5 per MINUTE): once the
       busy runs are done, the bench waits for the next minute boundary (showing a
       countdown), then sends ``--minute-rate`` Checks per second (default 3) round-robin
       over the three replicas for ``--windows`` whole minutes (default 2). Allowed
       Checks are counted in the window that counted them (by their answer: see
       ``bench_load.PacedSpec.by_answer``) and printed per window; target exactly 5 in
       each.

Run (from the repository root, after ``make install``)::

    .venv/bin/python benchmarks/accuracy_bench.py               # defaults, about 4 minutes
    .venv/bin/python benchmarks/accuracy_bench.py --windows 1 --duration 5
    .venv/bin/python benchmarks/accuracy_bench.py --hits 4 --offered 1.5   # 4 hits per Check

Everything is bounded in time and stops by itself; every process and directory it started
is removed on exit, error, Ctrl-C or SIGTERM. Load generator, replicas and etcd share the
machine's CPUs (2 cores for the figures in RESULTS.md): a Check costs about 1 ms of server
CPU there, so the offered rate is what the machine can carry, and ``behind`` tells whether
the load generator kept its schedule.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from bench_load import PacedSpec, run_paced
from bench_report import machine_info, machine_line, progress_to, utc_now
from scaleout_bench import Deployment, busy_value_owned_by

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc, ratelimit_pb2, ratelimit_pb2_grpc

DOMAIN = "accuracy"
SECOND = ratelimit_pb2.RATE_UNIT_SECOND
MINUTE = ratelimit_pb2.RATE_UNIT_MINUTE
FIXED = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
BUCKET = ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET
LOAD_START_S = 3.0  # the spawned load processes import grpc and connect first
TARGET_PCT = 5.0
END_MARGIN_S = 0.05  # a fixed-window load stops this long before its last boundary
OWNERS = ("heavy", "middle", "light")
# Beyond these the machine did not carry the load as scheduled: the run says so.
BEHIND_OK_S = 0.1
SLOWEST_OK_S = 0.5

_progress = progress_to("accuracy-bench")


# --------------------------------------------------------------------------- set-up


def put_limit(
    address: str, name: str, per_unit: int, unit: int, algorithm: int, burst: int = 0
) -> ratelimit_pb2.Limit:
    """Create limit ``name``, on a descriptor key of its own (its name): limits of one
    domain with the same pattern would match the same descriptors, and one only decides."""
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.PutLimit(
            ratelimit_pb2.PutLimitRequest(
                limit=ratelimit_pb2.Limit(
                    domain=DOMAIN,
                    name=name,
                    descriptor=[ratelimit_pb2.DescriptorEntry(key=name)],
                    rate=ratelimit_pb2.Rate(requests_per_unit=per_unit, unit=unit),
                    algorithm=algorithm,
                    burst=burst,
                )
            ),
            timeout=10,
        )
    return answer.limit


def wait_ready(deployment: Deployment, names: Sequence[str], timeout: float = 30.0) -> None:
    """Until every replica counts all replicas as counter owners and has every limit.

    Before that a replica may assign the slots among fewer owners, and decide a counter
    it will not own a moment later.
    """
    deadline = time.monotonic() + timeout
    size = len(deployment.replicas)
    pending = list(deployment.replicas)
    while pending:
        replica = pending[0]
        with grpc.insecure_channel(replica.address) as channel:
            status = cluster_pb2_grpc.ClusterServiceStub(channel)
            limits = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
            with contextlib.suppress(grpc.RpcError):
                answer = status.GetClusterStatus(cluster_pb2.GetClusterStatusRequest(), timeout=2)
                owners = sum(r.counter_owner for r in answer.replicas)
                for name in names:
                    limits.GetLimit(
                        ratelimit_pb2.GetLimitRequest(domain=DOMAIN, name=name), timeout=2
                    )
                if owners == size:
                    pending.pop(0)
                    continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"{replica.replica_id}: not every replica known within {timeout}s")
        time.sleep(0.2)


def weighted_turns(addresses: Sequence[str], weights: Sequence[int]) -> list[str]:
    """``addresses`` repeated by ``weights``, interleaved (smooth weighted round-robin), so
    that a load process taking them in turn splits its calls by the weights at every
    moment, not only over a whole cycle."""
    current = [0] * len(addresses)
    total = sum(weights)
    out = []
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights, strict=True)]
        best = max(range(len(addresses)), key=lambda i: current[i])
        current[best] -= total
        out.append(addresses[best])
    return out


def check_request(limit: ratelimit_pb2.Limit, value: str, hits: int) -> bytes:
    request = ratelimit_pb2.CheckRequest(
        domain=DOMAIN,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.DescriptorEntry(key=limit.descriptor[0].key, value=value)]
            )
        ],
    )
    if hits != 1:
        request.hits = hits
    return request.SerializeToString()


def decided_by(address: str, limit: ratelimit_pb2.Limit, request: bytes) -> None:
    """Raise unless ``limit`` decides ``request`` (asked with hits 0: nothing is charged)."""
    probe = ratelimit_pb2.CheckRequest.FromString(request)
    probe.hits = 0
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.Check(probe, timeout=10)
    if answer.results[0].limit_name != limit.name:
        raise RuntimeError(
            f"{limit.name}: the Check is decided by {answer.results[0].limit_name!r}"
        )


def next_boundary(unit_s: float, at_least: float) -> float:
    """The first wall-clock multiple of ``unit_s`` at least ``at_least`` seconds from now."""
    return math.ceil((time.time() + at_least) / unit_s) * unit_s


# --------------------------------------------------------------------------- loads


@dataclass
class BusyRun:
    """One busy limit under skewed load and what it admitted."""

    limit: str
    algorithm: str
    rate: int
    burst: int
    hits_per_check: int
    owner: str
    offered_calls_per_s: float
    duration_s: float
    span_s: float  # first to last call sent
    sent: int  # calls sent (answered or failed)
    skipped: int  # calls due but not sent (too many in flight)
    errors: int
    behind_s: float
    slowest_s: float  # the longest a Check took to be answered
    allowed: int  # hits
    permitted: float  # hits
    allowed_by_replica: dict[str, int] = field(default_factory=dict)
    offered_by_replica: dict[str, int] = field(default_factory=dict)  # hits answered
    # Fixed window: window start (epoch s) -> [hits offered, hits allowed, hits permitted,
    # Checks allowed with a reset_after of 0 (from a share past its window's end)].
    windows: dict[str, list[float]] = field(default_factory=dict)
    # Why the run may not measure what it should (the machine was too busy): empty if fine.
    doubts: list[str] = field(default_factory=list)

    @property
    def deviation_pct(self) -> float:
        return (self.allowed / self.permitted - 1) * 100 if self.permitted else math.nan

    @property
    def achieved_calls_per_s(self) -> float:
        return self.sent / self.duration_s


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The load processes' results as one (counts, per address, per window, send span)."""
    counts: dict[str, int] = {}
    by_address: dict[str, dict[str, int]] = {}
    windows: dict[int, list[int]] = {}
    for result in results:
        for key, value in result["counts"].items():
            counts[key] = counts.get(key, 0) + value
        for address, tally in result["by_address"].items():
            mine = by_address.setdefault(address, {})
            for key, value in tally.items():
                mine[key] = mine.get(key, 0) + value
        for window, tally in result["windows"].items():
            mine_w = windows.setdefault(int(window), [0] * len(tally))
            for i, value in enumerate(tally):
                mine_w[i] += value
    return {
        "counts": counts,
        "by_address": by_address,
        "windows": windows,
        "first_send": min(r["first_send"] for r in results),
        "last_send": max(r["last_send"] for r in results),
        "behind_s": max(r["behind_s"] for r in results),
        "slowest_s": max(r["slowest_s"] for r in results),
    }


def run_busy(
    deployment: Deployment, limit: ratelimit_pb2.Limit, args: argparse.Namespace
) -> BusyRun:
    replicas = deployment.replicas
    ids = [r.replica_id for r in replicas]
    owner = replicas[OWNERS.index(args.owner)]
    value = busy_value_owned_by(owner.replica_id, ids, name=limit.name, domain=DOMAIN)
    fixed = limit.algorithm == FIXED
    hits = args.hits
    calls_per_s = args.rate * args.offered / hits
    turns = weighted_turns([r.address for r in replicas], args.split)
    request = check_request(limit, value, hits)
    decided_by(replicas[0].address, limit, request)
    specs = [
        PacedSpec(
            turns,
            calls_per_s / args.processes,
            0.0,
            args.duration - (END_MARGIN_S if fixed else 0.0),
            [request],
            offset=i * 3,
            window_s=1.0 if fixed else 0.0,
        )
        for i in range(args.processes)
    ]
    # A whole second from now and on a boundary: the first window under load is whole.
    start_at = next_boundary(1.0, LOAD_START_S)
    _progress(
        f"{limit.name}: {calls_per_s:.0f} Checks/s x {hits} hit(s) = "
        f"{calls_per_s * hits:.0f} hits/s ({args.offered:g}x the limit) for {args.duration:g}s, "
        f"split {'/'.join(map(str, args.split))}; counter owner {owner.replica_id} ({args.owner})"
    )

    def alive() -> None:
        for replica in replicas:
            if not replica.running:
                raise RuntimeError(f"{replica.replica_id} exited: {replica.tail()}")

    merged = merge(
        run_paced(
            specs,
            start_at,
            alive,
            lambda t: _progress(f"{limit.name}: {min(t, args.duration):.0f}/{args.duration:g}s"),
        )
    )
    counts = merged["counts"]
    span = merged["last_send"] - merged["first_send"]
    name_of = {r.address: r.replica_id for r in replicas}
    allowed_by = {name_of[a]: t["ok"] * hits for a, t in merged["by_address"].items()}
    offered_by = {name_of[a]: (t["ok"] + t["over"]) * hits for a, t in merged["by_address"].items()}
    windows: dict[str, list[float]] = {}
    if fixed:
        per_window = limit.rate.requests_per_unit // hits * hits  # whole Checks only
        for start, (answered, ok, late) in sorted(merged["windows"].items()):
            offered = answered * hits
            windows[str(start)] = [offered, ok * hits, min(per_window, offered), late]
        permitted = sum(w[2] for w in windows.values())
    else:
        permitted = limit.rate.requests_per_unit * span + limit.burst
    offered = (counts["ok"] + counts["over"]) * hits
    doubts = []
    if counts["local_ok"]:
        doubts.append(
            f"{counts['local_ok']} Checks allowed on a replica's own part of the limit "
            "(local_fallback: the counter's owner did not answer within 250 ms)"
        )
    if counts["skipped"] or counts["errors"]:
        doubts.append(f"{counts['skipped']} Checks not sent, {counts['errors']} failed")
    if merged["behind_s"] > BEHIND_OK_S:
        doubts.append(f"the load fell {merged['behind_s'] * 1000:.0f} ms behind its schedule")
    if merged["slowest_s"] > SLOWEST_OK_S:
        doubts.append(f"a Check took {merged['slowest_s'] * 1000:.0f} ms")
    if merged["slowest_s"] > END_MARGIN_S and fixed:
        doubts.append(
            f"a Check took {merged['slowest_s'] * 1000:.0f} ms, more than the "
            f"{END_MARGIN_S * 1000:.0f} ms margin: it may count in the next window"
        )
    if offered <= permitted:
        doubts.append(f"offered {offered} hits, not above the {permitted:.0f} permitted")
    return BusyRun(
        limit=limit.name,
        algorithm="fixed window" if fixed else "token bucket",
        rate=limit.rate.requests_per_unit,
        burst=limit.burst if not fixed else 0,
        hits_per_check=hits,
        owner=f"{owner.replica_id} ({args.owner})",
        offered_calls_per_s=calls_per_s,
        duration_s=args.duration,
        span_s=span,
        sent=counts["ok"] + counts["over"] + counts["errors"],
        skipped=counts["skipped"],
        errors=counts["errors"],
        behind_s=merged["behind_s"],
        slowest_s=merged["slowest_s"],
        allowed=counts["ok"] * hits,
        permitted=permitted,
        allowed_by_replica=allowed_by,
        offered_by_replica=offered_by,
        windows=windows,
        doubts=doubts,
    )


@dataclass
class MinuteRun:
    """The 5-per-minute window, window by window."""

    limit: str
    per_minute: int
    calls_per_s: float
    sent: int
    errors: int
    slowest_s: float
    local_ok: int  # allowed on a replica's own part (local_fallback: the owner was late)
    # window start (epoch minutes) -> [Checks answered, allowed, allowed past the window]
    windows: dict[str, list[int]] = field(default_factory=dict)
    allowed_by_replica: dict[str, int] = field(default_factory=dict)

    def whole(self) -> list[tuple[str, int, int]]:
        """(window start UTC, answered, allowed) of the windows under load."""
        return [
            (time.strftime("%H:%M", time.gmtime(int(start) * 60)), tally[0], tally[1])
            for start, tally in sorted(self.windows.items(), key=lambda kv: int(kv[0]))
        ]


def run_minute(
    deployment: Deployment, limit: ratelimit_pb2.Limit, args: argparse.Namespace
) -> MinuteRun:
    replicas = deployment.replicas
    addresses = [r.address for r in replicas]
    decided_by(addresses[0], limit, check_request(limit, "alice", 0))
    start_at = next_boundary(60.0, LOAD_START_S) + 0.01
    # The load stops short of the last boundary so that every call is decided in the
    # window it was sent in: whole windows only.
    duration = args.windows * 60.0 - 0.01 - END_MARGIN_S
    spec = PacedSpec(
        addresses,
        args.minute_rate,
        0.0,
        duration,
        [check_request(limit, "alice", 1)],
        window_s=60.0,
        # Decided by its owner (never shared), so an answer names its window exactly: a
        # call sent before a boundary and decided after it counts where it was decided.
        by_answer=True,
    )
    while (left := start_at - LOAD_START_S - time.time()) > 0:
        _progress(f"{limit.name}: waiting {left:.0f}s for the next minute boundary")
        time.sleep(min(left, 10.0))
    _progress(
        f"{limit.name}: {args.minute_rate:g} Checks/s round-robin over 3 replicas "
        f"for {args.windows} minute window(s)"
    )

    def show(t: float) -> None:
        if int(t) % 10 < 2:
            _progress(f"{limit.name}: {min(t, duration):.0f}/{duration:.0f}s")

    merged = merge(run_paced([spec], start_at, progress=show))
    name_of = {r.address: r.replica_id for r in replicas}
    counts = merged["counts"]
    return MinuteRun(
        limit=limit.name,
        per_minute=limit.rate.requests_per_unit,
        calls_per_s=args.minute_rate,
        sent=counts["ok"] + counts["over"] + counts["errors"],
        errors=counts["errors"],
        slowest_s=merged["slowest_s"],
        local_ok=counts["local_ok"],
        windows={str(k): v for k, v in merged["windows"].items()},
        allowed_by_replica={name_of[a]: t["ok"] for a, t in merged["by_address"].items()},
    )


# --------------------------------------------------------------------------- report


def format_report(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"# Rate-limit accuracy through 3 replicas ({report['date']})",
        machine_line(report["machine"]),
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "| Limit | Offered hits/s (Checks/s x hits) | Checks sent/s | Behind / slowest | Allowed "
        "| Permitted | Allowed / permitted | Deviation | Allowed per replica (of offered) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for raw in report["busy"]:
        run = BusyRun(**raw)
        per = ", ".join(
            f"{rid} {run.allowed_by_replica.get(rid, 0)} ({run.offered_by_replica.get(rid, 0)})"
            for rid in sorted(run.offered_by_replica)
        )
        lines.append(
            f"| {run.limit}: {run.algorithm} {run.rate}/s"
            f"{f', burst {run.burst}' if run.burst else ''}, owner {run.owner} "
            f"| {run.offered_calls_per_s * run.hits_per_check:.0f} "
            f"({run.offered_calls_per_s:.0f} x {run.hits_per_check}) "
            f"| {run.achieved_calls_per_s:.0f} (skipped {run.skipped}, errors {run.errors}) "
            f"| {run.behind_s * 1000:.0f} / {run.slowest_s * 1000:.0f} ms "
            f"| {run.allowed} | {run.permitted:.0f} "
            f"| {run.allowed / run.permitted:.4f} | {run.deviation_pct:+.2f} % "
            f"{'(within' if abs(run.deviation_pct) <= TARGET_PCT else '(OUTSIDE'} "
            f"+-{TARGET_PCT:g} %) | {per} |"
        )
    for raw in report["busy"]:
        run = BusyRun(**raw)
        if run.doubts:
            lines += ["", f"{run.limit}: NOTE: " + "; ".join(run.doubts)]
        if run.windows:
            lines += [
                "",
                f"{run.limit} per window (start UTC: offered / allowed / permitted hits; "
                "Checks allowed past their window's end): "
                + "; ".join(
                    f"{time.strftime('%H:%M:%S', time.gmtime(int(start)))}: "
                    f"{offered:.0f} / {allowed:.0f} / {permitted:.0f}; {late:.0f}"
                    for start, (offered, allowed, permitted, late) in run.windows.items()
                ),
            ]
        else:
            lines += [
                "",
                f"{run.limit}: permitted = {run.rate} x {run.span_s:.3f} s (first to last "
                f"call sent) + burst {run.burst}",
            ]
    minute = report.get("minute")
    if minute is not None:
        run_m = MinuteRun(**minute)
        per_window = run_m.whole()
        exact = all(ok == run_m.per_minute for _, _, ok in per_window)
        lines += [
            "",
            f"{run_m.limit}: {run_m.per_minute} per minute, fixed window, "
            f"{run_m.calls_per_s:g} Checks/s round-robin over 3 replicas "
            f"({run_m.sent} sent, {run_m.errors} errors, slowest "
            f"{run_m.slowest_s * 1000:.0f} ms, {run_m.local_ok} allowed by local_fallback); "
            "allowed per replica: "
            + ", ".join(f"{k} {v}" for k, v in sorted(run_m.allowed_by_replica.items())),
            "",
            "| Window (UTC) | Checks answered | Allowed |",
            "|---|---:|---:|",
            *(f"| {end} | {answered} | {ok} |" for end, answered, ok in per_window),
            "",
            f"exactly {run_m.per_minute} in each window: {'yes' if exact else 'NO'}",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="accuracy_bench.py",
        description=(
            "What three real replicas admit beside what the limit permits: a fixed-window "
            "and a token-bucket limit under load skewed across the replicas, and a "
            "5-per-minute window hit through all three. Everything runs on 127.0.0.1 and "
            "stops by itself."
        ),
    )
    parser.add_argument(
        "--rate", type=int, default=1000, help="the busy limits, hits per second (default 1000)"
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="the token bucket's burst (default 0: the rate, the server's default)",
    )
    parser.add_argument(
        "--offered",
        type=float,
        default=1.3,
        help="offered hits per second as a multiple of the rate (default 1.3)",
    )
    parser.add_argument("--hits", type=int, default=2, help="hits charged per Check (default 2)")
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds of load per busy limit (default 10)"
    )
    parser.add_argument(
        "--split",
        type=int,
        nargs=3,
        default=[7, 2, 1],
        metavar=("HEAVY", "MIDDLE", "LIGHT"),
        help="parts of the busy load each replica receives (default 7 2 1: 70/20/10)",
    )
    parser.add_argument(
        "--owner",
        choices=OWNERS,
        default="light",
        help="which replica owns the busy counters (default light: most traffic from shares)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="load processes for the busy load (default 2)"
    )
    parser.add_argument(
        "--algorithms",
        nargs="+",
        choices=("fixed", "bucket"),
        default=["fixed", "bucket"],
        help="busy limits to measure (default both)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=2,
        help="whole minute windows of the 5-per-minute limit (default 2; 0 skips it)",
    )
    parser.add_argument(
        "--minute-rate",
        type=float,
        default=3.0,
        help="Checks per second against the 5-per-minute limit (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.rate < 50:
        parser.error("--rate must be at least 50 (a limit below is never shared)")
    if args.burst and args.burst < args.rate:
        parser.error("--burst must be at least --rate")
    if args.offered <= 0 or args.duration <= 0 or args.minute_rate <= 0:
        parser.error("--offered, --duration and --minute-rate must be positive")
    if not 1 <= args.hits <= args.rate:
        parser.error("--hits must be between 1 and --rate")
    if args.duration != int(args.duration):
        parser.error("--duration must be whole seconds (whole windows)")
    if args.processes < 1 or args.windows < 0 or min(args.split) < 1:
        parser.error("--processes and --split must be at least 1, --windows at least 0")
    return args


@contextlib.contextmanager
def deployment_of_three(root: Path) -> Iterator[Deployment]:
    deployment = Deployment("acc", root, 3)
    try:
        _progress("starting 1 etcd member and 3 replicas")
        deployment.start()
        yield deployment
    finally:
        _progress("stopping the replicas and etcd")
        deployment.stop()


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    busy: list[dict[str, Any]] = []
    minute: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="accuracy-bench-") as tmp,
        deployment_of_three(Path(tmp)) as deployment,
    ):
        address = deployment.replicas[0].address
        limits = {
            "fixed": put_limit(address, "window-1000", args.rate, SECOND, FIXED),
            "bucket": put_limit(address, "bucket-1000", args.rate, SECOND, BUCKET, args.burst),
            "minute": put_limit(address, "login-5", 5, MINUTE, FIXED),
        }
        wait_ready(deployment, [limit.name for limit in limits.values()])
        for algorithm in args.algorithms:
            run = run_busy(deployment, limits[algorithm], args)
            _progress(
                f"{run.limit}: allowed {run.allowed} of {run.permitted:.0f} permitted "
                f"({run.deviation_pct:+.2f} %); per replica {run.allowed_by_replica}"
            )
            busy.append(asdict(run))
        if args.windows:
            minute_run = run_minute(deployment, limits["minute"], args)
            _progress(f"{minute_run.limit}: allowed per window {minute_run.whole()}")
            minute = asdict(minute_run)
    return {
        "date": utc_now(),
        "machine": machine_info(),
        "settings": {
            "rate": args.rate,
            "burst": args.burst or args.rate,
            "offered": args.offered,
            "hits": args.hits,
            "duration": args.duration,
            "split": "/".join(map(str, args.split)),
            "owner": args.owner,
            "processes": args.processes,
            "windows": args.windows,
            "minute_rate": args.minute_rate,
        },
        "busy": busy,
        "minute": minute,
    }


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the clean-up as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    report = benchmark(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
