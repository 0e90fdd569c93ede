"""Decisions that scale out: CPU per decision on 1 replica and on 3, and the leader's part.

What it measures
    Two deployments run side by side on 127.0.0.1, each with its own single etcd member:
    ONE (1 replica) and THREE (3 replicas). For each load shape, ``RateLimitService/Check``
    calls (open loop, from ``--processes`` load processes) at ``--rate`` per second **per
    replica that receives them** go, in turn:

    * to ONE's replica ("1 replica"): ``--rate`` in all;
    * to THREE's replicas, evenly ("3 replicas"): 3 x ``--rate``;
    * to THREE's two followers only ("3, followers only"): 2 x ``--rate``; the leader gets
      no call.

    The rate is per replica because a Python gRPC server's CPU per call falls as its calls
    per second rise (epoll wakes it for several at once): on the machine of RESULTS.md one
    replica spent 1.65 ms per Check at 200/s and 1.18 ms at 600/s. The same total spread
    over three replicas would measure that, not what coordinating them costs.

    The two shapes:

    * ``busy``: one limit (``bench/busy``, 1,000,000 per second, never refused) and one
      counter, every call the same descriptor. The counter's value is chosen so that THREE's
      leader owns it (the case where the leader could be on the path).
    * ``per-ip``: one limit (``bench/per-ip``, 100 per second per address) and
      ``--addresses`` distinct addresses, each call the next one (10,000 by default: each
      at a low rate).

    Before each loaded window every replica's CPU is read over ``--idle`` seconds of no
    load; its idle rate is subtracted from its CPU in the window (``/proc/<pid>/stat``,
    user + system). Decision CPU of a replica = its CPU in the window less its idle rate x
    the window. Reported per configuration: decisions answered (OK responses in the
    window), the replicas' decision CPU per decision (ms), each replica's part of it, and
    etcd's CPU beside it. Turns alternate the order of the configurations.

Ratios (the issue's must-shows)
    * ``3 replicas / 1 replica``: cluster decision CPU per decision (target <= 1.2), per
      shape.
    * ``largest replica part``: the largest replica's part of THREE's decision CPU with the
      load spread evenly (target <= 0.5).
    * ``leader / follower, followers only``: the leader's decision CPU per follower-served
      decision over a follower's own per decision (target <= 0.05), per shape.

Run (from the repository root, after ``make install``)::

    .venv/bin/python benchmarks/scaleout_bench.py                 # defaults, ~6 minutes
    .venv/bin/python benchmarks/scaleout_bench.py --turns 1 --duration 5 --idle 3
    .venv/bin/python benchmarks/scaleout_bench.py --revision da912aa   # the baseline:
        # the last version before every replica decided (its leader decides every Check)

Everything is bounded in time and stops by itself; every process and directory it
started is removed on exit, error or Ctrl-C. Client, servers and etcd share the
machine's CPUs: the CPU per decision is what compares, not the throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from bench_load import PacedSpec, run_paced
from bench_report import machine_info, machine_line, progress_to, ratio, utc_now
from bench_servers import cpu_seconds

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc, ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.ratelimits.sharding import assign, slot_of

REPO = Path(__file__).resolve().parents[1]
DOMAIN = "bench"
SECOND = ratelimit_pb2.RATE_UNIT_SECOND

_progress = progress_to("scaleout-bench")


# --------------------------------------------------------------------------- deployments


@dataclass
class Deployment:
    """One etcd member and its replicas, started under ``root``."""

    name: str
    root: Path
    size: int
    tree: Path | None = None  # run the replicas from this source tree (another version)
    etcd: EtcdMember | None = None
    replicas: list[ReplicaProcess] = field(default_factory=list)

    def start(self) -> None:
        self.etcd = EtcdMember(f"{self.name}-etcd", self.root / "etcd", unsafe_no_fsync=True)
        self.etcd.start_healthy()
        for i in range(self.size):
            replica = ReplicaProcess(
                f"{self.name}-r{i}",
                [self.etcd.endpoint],
                self.root / f"r{i}.log",
                extra_args=["--log-level=INFO"],
                env=tree_env(self.tree),
            )
            replica.start()
            self.replicas.append(replica)
        for replica in self.replicas:
            replica.wait_serving(60)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def leader(self) -> ReplicaProcess:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for replica in self.replicas:
                with grpc.insecure_channel(replica.address) as channel:
                    stub = cluster_pb2_grpc.ClusterServiceStub(channel)
                    with contextlib.suppress(grpc.RpcError):
                        answer = stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=2)
                        if answer.is_self:
                            return replica
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no leader within 30 s")

    def pids(self) -> dict[str, int]:
        return {r.replica_id: r.process.pid for r in self.replicas if r.process is not None}

    def etcd_pid(self) -> int:
        assert self.etcd is not None and self.etcd.process is not None
        return self.etcd.process.pid


def tree_env(tree: Path | None) -> dict[str, str]:
    """The environment that runs ``bulwark_server`` from ``tree`` (None: this tree)."""
    if tree is None:
        return {}
    return {"PYTHONPATH": f"{tree / 'server'}{os.pathsep}{tree / 'clients' / 'python'}"}


def materialize(revision: str, into: Path) -> Path:
    """The server and client of ``revision``, extracted with ``git archive`` under ``into``."""
    tree = into / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "server", "clients/python"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def put_limits(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        for name, key, per_second in (
            ("busy", "user", 1_000_000),
            ("per-ip", "remote_address", 100),
        ):
            stub.PutLimit(
                ratelimit_pb2.PutLimitRequest(
                    limit=ratelimit_pb2.Limit(
                        domain=DOMAIN,
                        name=name,
                        descriptor=[ratelimit_pb2.DescriptorEntry(key=key)],
                        rate=ratelimit_pb2.Rate(requests_per_unit=per_second, unit=SECOND),
                    )
                ),
                timeout=10,
            )


def busy_value_owned_by(
    owner: str, replica_ids: Sequence[str], name: str = "busy", domain: str = DOMAIN
) -> str:
    """A value of limit ``domain/name`` whose counter ``owner`` owns among ``replica_ids``."""
    slots = assign(replica_ids)
    for n in range(10_000):
        value = f"hot-{n}"
        if slots[slot_of(domain, name, [value])] == owner:
            return value
    raise RuntimeError(f"no value of {domain}/{name} owned by {owner}")


def requests_for(shape: str, busy_value: str, addresses: int) -> list[bytes]:
    """Serialized CheckRequests a load process cycles through."""
    if shape == "busy":
        pairs = [("user", busy_value)]
    else:
        pairs = [
            ("remote_address", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
            for n in range(addresses)
        ]
    return [
        ratelimit_pb2.CheckRequest(
            domain=DOMAIN,
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.DescriptorEntry(key=key, value=value)]
                )
            ],
        ).SerializeToString()
        for key, value in pairs
    ]


# --------------------------------------------------------------------------- load


def run_load(
    addresses: list[str],
    rate: float,
    processes: int,
    warmup: float,
    duration: float,
    requests: list[bytes],
) -> tuple[dict[str, int], float, float]:
    """Offer ``rate`` calls/s to ``addresses`` for warm-up + duration; (counts, window start,
    window end) in wall-clock seconds."""
    start_at = time.time() + 3.0  # the spawned processes import grpc first
    specs = [
        PacedSpec(addresses, rate / processes, warmup, duration, requests, i * 7919)
        for i in range(processes)
    ]
    counts: dict[str, int] = {}
    for result in run_paced(specs, start_at):
        for key, value in result["counts"].items():
            counts[key] = counts.get(key, 0) + value
    return counts, start_at + warmup, start_at + warmup + duration


# --------------------------------------------------------------------------- measuring


@dataclass
class Window:
    config: str
    shape: str
    decisions: int
    counts: dict[str, int]
    seconds: float
    # replica id -> decision CPU seconds (idle rate subtracted)
    cpu: dict[str, float]
    etcd_cpu: float
    leader: str
    targets: list[str]

    @property
    def cluster_ms_per_decision(self) -> float:
        return sum(self.cpu.values()) * 1000 / max(1, self.decisions)

    def parts(self) -> dict[str, float]:
        total = sum(self.cpu.values())
        return {rid: (cpu / total if total > 0 else float("nan")) for rid, cpu in self.cpu.items()}


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {rid: cpu_seconds(pid) for rid, pid in pids.items()}


def measure(
    deployment: Deployment,
    config: str,
    shape: str,
    targets: list[ReplicaProcess],
    leader: ReplicaProcess,
    requests: list[bytes],
    args: argparse.Namespace,
) -> Window:
    pids = deployment.pids()
    etcd_pid = deployment.etcd_pid()
    _progress(f"{config} / {shape}: idle {args.idle:g}s")
    idle0, idle_etcd0, t0 = _cpu(pids), cpu_seconds(etcd_pid), time.monotonic()
    time.sleep(args.idle)
    idle1, idle_etcd1, t1 = _cpu(pids), cpu_seconds(etcd_pid), time.monotonic()
    idle_rate = {rid: (idle1[rid] - idle0[rid]) / (t1 - t0) for rid in pids}
    etcd_idle_rate = (idle_etcd1 - idle_etcd0) / (t1 - t0)
    _progress(
        f"{config} / {shape}: {args.rate * len(targets):g} calls/s "
        f"for {args.warmup:g}+{args.duration:g}s"
    )
    # The CPU is read at the window's edges by a thread here, while the load runs.
    edges: dict[str, Any] = {}

    def read_edges(start: float, end: float) -> None:
        time.sleep(max(0.0, start - time.time()))
        edges["before"], edges["etcd_before"], edges["t0"] = (
            _cpu(pids),
            cpu_seconds(etcd_pid),
            time.monotonic(),
        )
        time.sleep(max(0.0, end - time.time()))
        edges["after"], edges["etcd_after"], edges["t1"] = (
            _cpu(pids),
            cpu_seconds(etcd_pid),
            time.monotonic(),
        )

    start_at = time.time() + 3.0 + args.warmup
    reader = threading.Thread(
        target=read_edges, args=(start_at, start_at + args.duration), daemon=True
    )
    reader.start()
    counts, _, _ = run_load(
        [t.address for t in targets],
        args.rate * len(targets),
        args.processes,
        args.warmup,
        args.duration,
        requests,
    )
    reader.join(30)
    seconds = edges["t1"] - edges["t0"]
    cpu = {
        rid: edges["after"][rid] - edges["before"][rid] - idle_rate[rid] * seconds for rid in pids
    }
    etcd_cpu = edges["etcd_after"] - edges["etcd_before"] - etcd_idle_rate * seconds
    return Window(
        config,
        shape,
        counts.get("ok", 0) + counts.get("over", 0),
        counts,
        seconds,
        cpu,
        etcd_cpu,
        leader.replica_id,
        [t.replica_id for t in targets],
    )


# --------------------------------------------------------------------------- report


def summarize(windows: list[Window]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape in sorted({w.shape for w in windows}):
        by: dict[str, list[Window]] = {}
        for w in windows:
            if w.shape == shape:
                by.setdefault(w.config, []).append(w)
        one = statistics.median(w.cluster_ms_per_decision for w in by["1 replica"])
        three = statistics.median(w.cluster_ms_per_decision for w in by["3 replicas"])
        largest = statistics.median(max(w.parts().values()) for w in by["3 replicas"])
        leader_cost = []
        for w in by["3, followers only"]:
            followers = [rid for rid in w.targets]
            follower_ms = sum(w.cpu[r] for r in followers) * 1000 / max(1, w.decisions)
            leader_ms = w.cpu[w.leader] * 1000 / max(1, w.decisions)
            leader_cost.append(ratio(leader_ms, follower_ms))
        out[shape] = {
            "ms per decision, 1 replica": one,
            "ms per decision, 3 replicas": three,
            "3 replicas / 1 replica (target <= 1.2)": ratio(three, one),
            "largest replica part, 3 replicas (target <= 0.5)": largest,
            "leader / follower per decision, followers only (target <= 0.05)": statistics.median(
                leader_cost
            ),
        }
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"# Scale-out: CPU per decision ({report['date']})",
        machine_line(report["machine"]),
        "Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
        "",
        "| Turn | Shape | Configuration | Decisions | Decisions/s | Replica CPU ms/decision "
        "| Parts of decision CPU | etcd CPU ms/decision |",
        "|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for w in report["windows"]:
        window = Window(**{k: v for k, v in w.items() if k != "turn"})
        parts = ", ".join(
            f"{rid}{'*' if rid == window.leader else ''} {part:.2f}"
            for rid, part in sorted(window.parts().items())
        )
        lines.append(
            f"| {w['turn']} | {window.shape} | {window.config} | {window.decisions} | "
            f"{window.decisions / window.seconds:.0f} | {window.cluster_ms_per_decision:.3f} | "
            f"{parts} | {window.etcd_cpu * 1000 / max(1, window.decisions):.3f} |"
        )
    lines += ["", "(* the leader)", ""]
    for shape, values in report["summary"].items():
        lines.append(f"**{shape}** (medians over the turns)")
        for name, value in values.items():
            lines.append(f"  {name:<68} {value:.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scaleout_bench.py",
        description=(
            "CPU per Check decision on 1 replica and on 3 (load spread evenly, and to the "
            "followers only), for one busy counter and for a per-IP limit of many addresses. "
            "Everything runs on 127.0.0.1 and stops by itself."
        ),
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200,
        help="offered Check calls per second per receiving replica (default 200)",
    )
    parser.add_argument("--processes", type=int, default=2, help="load processes (default 2)")
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of load not measured (default 3)"
    )
    parser.add_argument(
        "--duration", type=float, default=10, help="measured seconds per window (default 10)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=5,
        help="seconds of idle CPU read before each window (default 5)",
    )
    parser.add_argument(
        "--turns", type=int, default=2, help="turns over every configuration (default 2)"
    )
    parser.add_argument(
        "--addresses",
        type=int,
        default=10_000,
        help="distinct addresses of the per-IP shape (default 10000)",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=("busy", "per-ip"),
        default=["busy", "per-ip"],
        help="load shapes to measure (default both)",
    )
    parser.add_argument(
        "--revision",
        help="run the replicas of another git revision of Bulwark (git archive; the load, "
        "the limits and the measures stay this tree's), e.g. the baseline before a change",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    for name in ("rate", "warmup", "duration", "idle"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.turns < 1 or args.processes < 1 or args.addresses < 1:
        parser.error("--turns, --processes and --addresses must be at least 1")
    return args


@contextlib.contextmanager
def deployments(root: Path, tree: Path | None) -> Iterator[tuple[Deployment, Deployment]]:
    one = Deployment("one", root / "one", 1, tree)
    three = Deployment("three", root / "three", 3, tree)
    try:
        for deployment in (one, three):
            _progress(f"starting {deployment.name}: 1 etcd member, {deployment.size} replicas")
            deployment.start()
        yield one, three
    finally:
        for deployment in (one, three):
            deployment.stop()


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    windows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="scaleout-bench-") as tmp,
        deployments(
            Path(tmp), materialize(args.revision, Path(tmp)) if args.revision else None
        ) as (one, three),
    ):
        for deployment in (one, three):
            put_limits(deployment.replicas[0].address)
        leader = three.leader()
        followers = [r for r in three.replicas if r is not leader]
        value = busy_value_owned_by(leader.replica_id, [r.replica_id for r in three.replicas])
        time.sleep(2)  # every replica's cache has the limits
        configs = [
            ("1 replica", one, one.replicas, one.replicas[0]),
            ("3 replicas", three, three.replicas, leader),
            ("3, followers only", three, followers, leader),
        ]
        for turn in range(args.turns):
            for shape in args.shapes:
                requests = requests_for(shape, value, args.addresses)
                order = configs if turn % 2 == 0 else list(reversed(configs))
                for config, deployment, targets, lead in order:
                    window = measure(deployment, config, shape, targets, lead, requests, args)
                    windows.append({"turn": turn + 1, **asdict(window)})
    parsed = [Window(**{k: v for k, v in w.items() if k != "turn"}) for w in windows]
    return {
        "date": utc_now(),
        "machine": machine_info(),
        "settings": {
            "rate": args.rate,
            "processes": args.processes,
            "warmup": args.warmup,
            "duration": args.duration,
            "idle": args.idle,
            "turns": args.turns,
            "addresses": args.addresses,
            "busy value": value,
            "revision": args.revision or "this tree",
        },
        "windows": windows,
        "summary": summarize(parsed),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = benchmark(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
