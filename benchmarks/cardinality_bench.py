"""One per-IP limit charged by a million distinct addresses: leader memory, checkpoints, failover.

What it measures
    One limit ``edge/per-ip``: ``[remote_address: any]``, fixed window, ``--limit``
    requests (default 1) per ``--unit`` (default HOUR, so the whole run fits in one
    window: counters of a past window are forgotten, and the failover check needs the
    window the addresses were charged in). Two replicas share one standalone etcd (an
    ``EtcdMember`` of ``bulwark_server.loopback``, as the integration tests' failover
    tests run it): a replica's embedded etcd is its child and dies with it, so it could
    not outlive the leader this benchmark stops. Replica a starts first and so normally
    leads; b follows.

    1. Charge. ``--values`` distinct addresses (default 1,000,000; 10.x.y.z) are charged
       once each with hits = ``--limit``, so each stands exactly at its limit, in Check
       requests of ``--batch`` descriptors (default 100, the most one Check may carry:
       ``ratelimits.descriptors.MAX_DESCRIPTORS``), ``--concurrency`` requests in flight,
       sent to the leader. Reported: time, descriptors/s, and how they were decided
       (allowed, refused, decided by a replica's local share because no leader answered).
    2. Memory. Each replica's resident memory (VmRSS of its Python server process)
       before the charge and ``--settle`` seconds after it; target: growth at most 250 MB
       (the larger of the two: should leadership move during the charge, the counters
       are split). etcd's is shown too. A thread asks both replicas GetLeader every 0.5 s
       and the report names every (leader, term) seen before the stop: one, unless the
       leader lost its lease (e.g. its event loop blocked by a checkpoint).
    3. Checkpoints. Lines of each replica's log that mention "checkpoint" at WARNING or
       above (e.g. "request is too large": the old code writes every counter of a limit
       in one etcd value) are counted, grouped by message. The limit's checkpoint, the
       key(s) under ``/bulwark/v1/limit-counters/edge/per-ip``, is read from etcd (its
       JSON gateway, ``/v3/kv/range``): keys, bytes, counters held and
       ``checkpointed_at``, after the settle and again after step 4.
    4. Failover bound. ``--chosen`` other addresses (203.0.113.N) are charged to exactly
       their limit; after ``--after-charge`` seconds (more than one checkpoint interval,
       1 s) the checkpoint is read again (its ``checkpointed_at`` must have moved past
       that charge), then the replica leading at that moment is stopped (``--stop``:
       SIGKILL by default, or SIGTERM). Once the other leads, the chosen addresses are
       charged one hit each there: each must be refused (they are in the same window).
       So must ``--sample`` addresses drawn from step 1's (seeded), each also charged one
       hit: the re-admitted ones, scaled to ``--values``, estimate how many the new
       leader would let through beyond their count. ``--sample`` never-charged addresses
       (198.18.N.N) are charged one hit each too (the control): they should pass. A
       checkpoint that cannot list every address carries a filter of the addresses
       counted, whose false positives are refused: the share refused is its rate.

    Every figure is printed beside its target, with "same window: yes" when the charge,
    the failover and the checks all fell within one window of the limit (otherwise the
    failover figures are void: run again).

How
    ``python benchmarks/cardinality_bench.py [--values N] [--server-rev REV]``;
    ``--quick`` is a smoke run (100,000 values, 200 sampled, waiting for the next window
    only when less than a minute is left). With ``--server-rev`` both
    replicas run the server of that commit (``git archive`` into a temporary tree,
    ``bench_trees.py``); the old code (1102d72) is expected to fail its checkpoints
    ("request is too large", or etcd's gRPC "received message larger than max") past
    about 40,000 counters, and to re-admit addresses after the failover. Each of its
    checkpoints builds every counter into one record; should that make the full size too
    slow on a machine, run its baseline with a smaller ``--values`` and say so. When less than
    ``--min-window-left`` seconds remain in the current window, the run first waits for
    the next one. Everything runs on 127.0.0.1; every wait has a deadline; every process
    and the temporary directory are removed on exit, error or Ctrl-C.

Caveats
    Linux only (``/proc``). RSS counts the interpreter and libraries too: the growth is
    the figure to read. MB are 10^6 bytes. The charge rate depends on the machine (the
    client builds its requests in Python on the same CPUs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    ratio,
    require_at_least_one,
    run_and_print,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    STOP_TIMEOUT,
    BulwarkProcess,
    ProcessGroup,
    probe_getleader,
    rss_mb,
)
from bench_trees import Side, server_side

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc, ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.ratelimits.descriptors import MAX_DESCRIPTORS
from bulwark_server.store.keys import LIMIT_COUNTER_KIND, kind_prefix

DOMAIN = "edge"
LIMIT_NAME = "per-ip"
KEY = "remote_address"
UNITS = {
    "minute": (ratelimit_pb2.RATE_UNIT_MINUTE, 60),
    "hour": (ratelimit_pb2.RATE_UNIT_HOUR, 3600),
    "day": (ratelimit_pb2.RATE_UNIT_DAY, 86400),
}
MAX_VALUES = 1 << 24  # distinct 10.x.y.z addresses
MAX_HITS = 1_000_000  # a Check's hits
GROWTH_TARGET_MB = 250.0
MAX_DEFAULT_WINDOW_LEFT = 600.0  # seconds: at most 10 minutes' wait for a fresh window
CHARGE_TIMEOUT = 60.0  # one Check of the charge (the old code may stall its event loop)
FAILOVER_TIMEOUT = 120.0  # for the follower to lead after the leader stops
OK = ratelimit_pb2.CHECK_CODE_OK
WARNING_LEVELS = {"WARNING", "ERROR", "CRITICAL"}

_progress = progress_to("cardinality")


# --------------------------------------------------------------------------- requests


def bulk_address(n: int) -> str:
    """Address ``n`` of the charge: 10.x.y.z (16M of them)."""
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def chosen_address(n: int) -> str:
    """Address ``n`` of the chosen few (TEST-NET-3, apart from the charge's)."""
    return f"203.0.113.{n}"


def fresh_address(n: int) -> str:
    """Address ``n`` of the never-charged control (198.18.0.0/15, for benchmarks)."""
    return f"198.{18 + n // 65536 % 2}.{n // 256 % 256}.{n % 256}"


def check_batches(
    addresses: Iterable[str], batch: int, hits: int
) -> Iterator[ratelimit_pb2.CheckRequest]:
    """Check requests of up to ``batch`` descriptors ``[remote_address: a]``, ``hits`` each."""
    descriptors: list[ratelimit_pb2.RateLimitDescriptor] = []
    for a in addresses:
        entry = ratelimit_pb2.DescriptorEntry(key=KEY, value=a)
        descriptors.append(ratelimit_pb2.RateLimitDescriptor(entries=[entry]))
        if len(descriptors) == batch:
            yield ratelimit_pb2.CheckRequest(domain=DOMAIN, descriptors=descriptors, hits=hits)
            descriptors = []
    if descriptors:
        yield ratelimit_pb2.CheckRequest(domain=DOMAIN, descriptors=descriptors, hits=hits)


@dataclass
class Tally:
    """How the descriptors of a series of Checks were decided."""

    descriptors: int = 0
    allowed: int = 0
    refused: int = 0
    fallback: int = 0  # descriptors decided by a replica's local share, not the leader
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def per_s(self) -> float:
        return ratio(self.descriptors, self.seconds)


async def _send(
    address: str,
    requests: Iterable[ratelimit_pb2.CheckRequest],
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> Tally:
    tally = Tally()
    errors: Counter[str] = Counter()
    pending = iter(requests)
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)

        async def worker() -> None:
            for request in pending:  # one shared iterator: each request is sent once
                try:
                    response = await stub.Check(request, timeout=CHARGE_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += len(request.descriptors)
                    continue
                for result in response.results:
                    if response.local_fallback:
                        tally.fallback += 1
                    if result.code == OK:
                        tally.allowed += 1
                    else:
                        tally.refused += 1
                tally.descriptors += len(request.descriptors)
                if progress is not None:
                    progress(tally.descriptors)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds = time.perf_counter() - started
    tally.errors = dict(errors)
    return tally


def send_checks(
    address: str,
    requests: Iterable[ratelimit_pb2.CheckRequest],
    concurrency: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Send ``requests`` with ``concurrency`` in flight; tally their descriptors."""
    return asyncio.run(_send(address, requests, concurrency, progress))


def charge_progress(total: int) -> Callable[[int], None]:
    """A progress callback saying how far the charge got, at every tenth."""
    step = max(1, total // 10)
    started = time.perf_counter()
    state = {"next": step}

    def report(done: int) -> None:
        if done >= state["next"]:
            state["next"] = (done // step + 1) * step
            spent = time.perf_counter() - started
            _progress(f"charged {done}/{total} in {spent:.0f}s ({done / spent:.0f}/s)")

    return report


# --------------------------------------------------------------------------- the cluster


def leader_of(address: str) -> cluster_pb2.GetLeaderResponse:
    """GetLeader as ``address`` answers it."""
    with grpc.insecure_channel(address) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        return stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=CALL_TIMEOUT)


def replica_id(name: str) -> str:
    return f"cardinality-{name}"


def leading(replicas: Mapping[str, BulwarkProcess]) -> BulwarkProcess:
    """The replica GetLeader names, asked of each live replica until one answers."""
    for replica in replicas.values():
        if replica.proc.poll() is not None:
            continue
        try:
            response = leader_of(replica.wait_address())
        except grpc.RpcError:
            continue
        for name, candidate in replicas.items():
            if response.HasField("leader") and response.leader.replica_id == replica_id(name):
                return candidate
    raise RuntimeError("no replica names a leader")


def wait_leads(address: str, timeout: float) -> float:
    """Poll GetLeader on ``address`` until it says it leads; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            response = leader_of(address)
        except grpc.RpcError:
            response = None
        if response is not None and response.is_self and not response.stale:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"{address} did not lead within {timeout:.0f}s")


class LeaderWatch:
    """A thread asking each replica GetLeader every ``period`` seconds; ``terms`` holds
    the (replica id, term) pairs seen, in the order first seen."""

    def __init__(self, addresses: Sequence[str], period: float = 0.5) -> None:
        self._addresses = list(addresses)
        self._period = period
        self._stop = threading.Event()
        self.terms: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)

    def _run(self) -> None:
        while True:
            for address in self._addresses:
                try:
                    response = leader_of(address)
                except grpc.RpcError:
                    continue
                if not response.HasField("leader"):
                    continue
                pair = (response.leader.replica_id, response.leader.term)
                if pair not in self.terms:
                    self.terms.append(pair)
            if self._stop.wait(self._period):
                return

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(CALL_TIMEOUT * len(self._addresses) + self._period)


def put_limit(address: str, per_unit: int, unit: int) -> None:
    limit = ratelimit_pb2.Limit(
        domain=DOMAIN,
        name=LIMIT_NAME,
        descriptor=[ratelimit_pb2.DescriptorEntry(key=KEY)],
        rate=ratelimit_pb2.Rate(requests_per_unit=per_unit, unit=unit),
        algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
    )
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=CALL_TIMEOUT)


# --------------------------------------------------------------------------- checkpoints


@dataclass
class CheckpointRead:
    """The limit's checkpoint key(s) in etcd at one moment."""

    when: str
    keys: int = 0
    total_bytes: int = 0
    largest_bytes: int = 0
    counters: int = 0
    checkpointed_at: float = 0.0  # Unix seconds, the latest of the keys; 0: none
    error: str = ""


def read_checkpoint(etcd_endpoint: str, when: str) -> CheckpointRead:
    """Every key under the limit's counter prefix, through etcd's JSON gateway."""
    prefix = kind_prefix(LIMIT_COUNTER_KIND) + f"{DOMAIN}/{LIMIT_NAME}".encode()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    body = json.dumps(
        {"key": base64.b64encode(prefix).decode(), "range_end": base64.b64encode(end).decode()}
    ).encode()
    request = urllib.request.Request(
        f"http://{etcd_endpoint}/v3/kv/range",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    out = CheckpointRead(when)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            kvs = json.loads(response.read()).get("kvs", [])
    except (OSError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    for kv in kvs:
        value = base64.b64decode(kv.get("value", ""))
        out.keys += 1
        out.total_bytes += len(value)
        out.largest_bytes = max(out.largest_bytes, len(value))
        try:
            record = ratelimit_pb2.LimitCounters.FromString(value)
        except Exception as exc:
            out.error = f"a value is not LimitCounters ({type(exc).__name__})"
            continue
        out.counters += len(record.counters)
        at = record.checkpointed_at.seconds + record.checkpointed_at.nanos / 1e9
        out.checkpointed_at = max(out.checkpointed_at, at)
    return out


def checkpoint_warnings(lines: Iterable[str]) -> dict[str, int]:
    """Log lines at WARNING or above, grouped by their message with the numbers left out;
    each group keyed by its first message (at most 200 characters)."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = {"level": "WARNING", "msg": line}
        if not isinstance(record, dict) or record.get("level") not in WARNING_LEVELS:
            continue
        message = str(record.get("msg", line))
        shape = re.sub(r"\d+", "N", message)
        counts[shape] += 1
        first.setdefault(shape, message[:200])
    return {first[shape]: count for shape, count in counts.items()}


# --------------------------------------------------------------------------- the run


@dataclass
class Memory:
    """One replica's resident memory (its Python server process) around the charge."""

    name: str
    led_before: bool
    led_after: bool
    before_mb: float = 0.0
    after_mb: float = 0.0
    growth_mb: float = 0.0


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    server: dict[str, str]
    window_start_utc: str = ""
    same_window: bool = False
    charge: Tally = field(default_factory=Tally)
    memory: list[Memory] = field(default_factory=list)
    growth_mb: float = 0.0  # the larger growth of the two replicas
    growth_target_mb: float = GROWTH_TARGET_MB
    etcd_rss_after_mb: float = 0.0
    terms_before_stop: list[tuple[str, int]] = field(default_factory=list)
    checkpoints: list[CheckpointRead] = field(default_factory=list)
    warning_lines: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, dict[str, int]] = field(default_factory=dict)
    chosen_charge: Tally = field(default_factory=Tally)
    chosen_charged_at: float = 0.0
    checkpoint_covers_chosen: bool = False
    stopped: str = ""
    stop_signal: str = ""
    failover_s: float = 0.0
    chosen_after: Tally = field(default_factory=Tally)
    sample_after: Tally = field(default_factory=Tally)
    control_after: Tally = field(default_factory=Tally)
    readmitted_estimate: float = 0.0


def wait_for_window(unit_s: int, min_left: float) -> None:
    """Return at once when at least ``min_left`` seconds remain in the current window of
    ``unit_s`` seconds; otherwise sleep until the next window starts."""
    left = unit_s - time.time() % unit_s
    if left < min_left:
        _progress(f"{left:.0f}s left in this window (< {min_left:g}s): waiting for the next")
        time.sleep(left + 0.5)


def start_replica(group: ProcessGroup, name: str, etcd: str, side: Side) -> BulwarkProcess:
    replica = group.add(
        BulwarkProcess(
            str(group.root / name),
            name=name,
            extra_args=[
                f"--etcd-endpoints={etcd}",
                f"--replica-id={replica_id(name)}",
                # A replica of an external etcd requires callers to authenticate by
                # default; the benchmark measures counters, not identities.
                "--auth=off",
            ],
            env=side.server_env,
            cwd=str(side.run_dir),
            watch_for=("checkpoint",),
        )
    )
    probe_getleader(replica.wait_address())
    return replica


def failover(
    report: Report,
    args: argparse.Namespace,
    replicas: Mapping[str, BulwarkProcess],
    chosen: list[str],
) -> None:
    """Stop the leader; once the other replica leads, charge the chosen, a sample of the
    charge and a control there, one hit each."""
    leader = leading(replicas)
    survivor = next(r for r in replicas.values() if r is not leader)
    signum = signal.SIGKILL if args.stop == "kill" else signal.SIGTERM
    report.stopped, report.stop_signal = leader.name, signum.name
    _progress(f"stopping the leader ({leader.name}) with {signum.name}...")
    leader.proc.send_signal(signum)
    leader.proc.wait(STOP_TIMEOUT)
    address = survivor.wait_address()
    report.failover_s = wait_leads(address, FAILOVER_TIMEOUT)
    _progress(f"{survivor.name} leads after {report.failover_s:.1f}s; checking...")
    report.chosen_after = send_checks(address, check_batches(chosen, MAX_DESCRIPTORS, 1))
    sample = random.Random(args.seed).sample(range(args.values), min(args.sample, args.values))
    report.sample_after = send_checks(
        address,
        check_batches((bulk_address(n) for n in sample), args.batch, 1),
        args.concurrency,
    )
    report.control_after = send_checks(
        address,
        check_batches((fresh_address(n) for n in range(args.sample)), args.batch, 1),
        args.concurrency,
    )
    s = report.sample_after
    report.readmitted_estimate = ratio(s.allowed, s.descriptors) * args.values
    survivor.check_alive()


def benchmark(args: argparse.Namespace) -> Report:
    unit, unit_s = UNITS[args.unit]
    default_left = min(unit_s / 4, MAX_DEFAULT_WINDOW_LEFT)
    min_left = args.min_window_left if args.min_window_left is not None else default_left
    with ProcessGroup("bulwark-cardinality-", _progress) as group:
        side = server_side(args.server_rev, group.root)
        settings = (
            "values",
            "limit",
            "unit",
            "batch",
            "concurrency",
            "settle",
            "chosen",
            "after_charge",
            "sample",
            "stop",
            "seed",
        )
        report = Report(
            started_utc=utc_now(),
            machine=machine_info(),
            settings={k: getattr(args, k) for k in settings},
            server=side.describe(),
        )
        etcd = group.add(EtcdMember("etcd", group.root / "etcd"))
        etcd.start_healthy()
        _progress(f"etcd at {etcd.endpoint}")
        replicas = {name: start_replica(group, name, etcd.endpoint, side) for name in "ab"}
        put_limit(leading(replicas).wait_address(), args.limit, unit)
        wait_for_window(unit_s, min_left)
        window = time.time() // unit_s
        report.window_start_utc = time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(window * unit_s)
        )
        time.sleep(1.0)
        first = leading(replicas)
        before = {name: rss_mb(r.proc.pid) for name, r in replicas.items()}
        addresses = [r.wait_address() for r in replicas.values()]
        with LeaderWatch(addresses) as watch:
            # 1. The charge, sent to the leader.
            _progress(
                f"{first.name} leads (RSS {before[first.name]:.1f} MB); charging "
                f"{args.values} addresses, {args.batch} per Check, {args.concurrency} in "
                "flight..."
            )
            report.charge = send_checks(
                first.wait_address(),
                check_batches(
                    (bulk_address(n) for n in range(args.values)), args.batch, args.limit
                ),
                args.concurrency,
                charge_progress(args.values),
            )
            c = report.charge
            _progress(
                f"charged in {c.seconds:.0f}s ({c.per_s:.0f}/s): allowed {c.allowed}, refused "
                f"{c.refused}, local fallback {c.fallback}, errors {c.errors or 'none'}"
            )

            # 2. and 3. Memory and the checkpoint once the charge has settled.
            time.sleep(args.settle)
            then = leading(replicas)
            for name, replica in replicas.items():
                replica.check_alive()
                m = Memory(name, replica is first, replica is then, before[name])
                m.after_mb = rss_mb(replica.proc.pid)
                m.growth_mb = m.after_mb - m.before_mb
                report.memory.append(m)
                _progress(f"{name}: RSS {m.after_mb:.1f} MB ({m.growth_mb:+.1f})")
            report.growth_mb = max(m.growth_mb for m in report.memory)
            report.etcd_rss_after_mb = rss_mb(etcd.process.pid if etcd.process else None)
            report.checkpoints.append(read_checkpoint(etcd.endpoint, "after the charge"))

            # 4. The chosen few, then more than a checkpoint interval.
            chosen = [chosen_address(n) for n in range(1, args.chosen + 1)]
            report.chosen_charge = send_checks(
                leading(replicas).wait_address(),
                check_batches(chosen, MAX_DESCRIPTORS, args.limit),
            )
            # A checkpoint taken from now on was built after the charge was answered.
            report.chosen_charged_at = time.time()
            time.sleep(args.after_charge)
            read = read_checkpoint(etcd.endpoint, f"{args.after_charge:g}s after the chosen")
            report.checkpoints.append(read)
            report.checkpoint_covers_chosen = read.checkpointed_at >= report.chosen_charged_at
        report.terms_before_stop = watch.terms
        for name, replica in replicas.items():
            report.warning_lines[name] = replica.watched_count
            report.warnings[name] = checkpoint_warnings(replica.watched)
        failover(report, args, replicas, chosen)
        report.same_window = time.time() // unit_s == window
    return report


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _tally(t: Tally) -> str:
    extra = f", local fallback {t.fallback}" if t.fallback else ""
    extra += f", errors {t.errors}" if t.errors else ""
    return f"allowed {t.allowed}, refused {t.refused} of {t.descriptors}{extra}"


def _at(seconds: float, since: float) -> str:
    if not seconds:
        return "none"
    stamp = time.strftime("%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int(seconds % 1 * 1000):03d} UTC ({seconds - since:+.1f}s from the chosen)"


def _role(m: Memory) -> str:
    if m.led_before and m.led_after:
        return "leader"
    if m.led_before or m.led_after:
        return "leader " + ("before" if m.led_before else "after") + " the charge"
    return "follower"


def format_report(report: Report) -> str:
    s = report.settings
    c = report.charge
    terms = ", ".join(f"{rid} (term {term})" for rid, term in report.terms_before_stop)
    moved = len(report.terms_before_stop) > 1
    lines = [
        f"One per-IP limit, many addresses (started {report.started_utc})",
        machine_line(report.machine),
        f"Server: {report.server['commit']} ({report.server['rev']}); two replicas on one "
        "standalone etcd",
        f"Limit {DOMAIN}/{LIMIT_NAME}: [{KEY}: any], fixed window, {s['limit']} per {s['unit']}"
        f" (window from {report.window_start_utc}); same window throughout: "
        f"{_yes(report.same_window)}",
        f"Leaders seen before the stop: {terms or 'none'}"
        + (" (leadership moved during the run)" if moved else ""),
        "",
        f"Charge: {s['values']} addresses x {s['limit']} hit(s), {s['batch']} descriptors per "
        f"Check, {s['concurrency']} in flight: {c.seconds:.1f}s ({c.per_s:.0f} descriptors/s);"
        f" {_tally(c)}",
        "",
        f"RSS (VmRSS of the server process), MB, before and {s['settle']:g}s after the charge:",
        f"  {'replica':<8} {'role':<26} {'before':>8} {'after':>8} {'growth':>8}",
    ]
    for m in report.memory:
        lines.append(
            f"  {m.name:<8} {_role(m):<26} {m.before_mb:>8.1f} {m.after_mb:>8.1f} "
            f"{m.growth_mb:>+8.1f}"
        )
    met = report.growth_mb <= report.growth_target_mb
    lines += [
        f"  target: growth <= {report.growth_target_mb:.0f} MB (the larger of the two): "
        f"{report.growth_mb:.1f} MB, {'met' if met else 'NOT met'}; etcd "
        f"{report.etcd_rss_after_mb:.1f} MB after",
        "",
    ]
    for name, count in report.warning_lines.items():
        found = report.warnings.get(name, {})
        lines.append(
            f"Checkpoint warnings in {name}'s log: {sum(found.values())} "
            f"(lines mentioning 'checkpoint': {count})"
        )
        for message, n in sorted(found.items(), key=lambda item: -item[1])[:5]:
            lines.append(f"  {n} x {message}")
    lines.append(
        f"{'checkpoint read':<28} {'keys':>5} {'bytes':>10} {'largest':>10} {'counters':>9}"
        "  checkpointed_at"
    )
    for r in report.checkpoints:
        lines.append(
            f"{r.when:<28} {r.keys:>5} {r.total_bytes:>10} {r.largest_bytes:>10} "
            f"{r.counters:>9}  {_at(r.checkpointed_at, report.chosen_charged_at)}"
            + (f"  [{r.error}]" if r.error else "")
        )
    lines += [
        f"checkpoint taken after the chosen were charged: {_yes(report.checkpoint_covers_chosen)}",
        "",
        f"Failover: {report.stopped} (leading) stopped with {report.stop_signal} "
        f"{s['after_charge']:g}s after the chosen were charged "
        f"({_tally(report.chosen_charge)}); the other led after {report.failover_s:.1f}s",
        f"  chosen, one more hit each: {_tally(report.chosen_after)} (all must be refused: "
        f"{_yes(report.chosen_after.refused == s['chosen'])})",
        f"  sample of the charge, one more hit each: {_tally(report.sample_after)} "
        f"(all must be refused: "
        f"{_yes(report.sample_after.refused == report.sample_after.descriptors)})",
        f"  re-admitted beyond their count, scaled to {s['values']}: "
        f"~{report.readmitted_estimate:.0f}",
        f"  control, never-charged addresses, one hit each: allowed "
        f"{report.control_after.allowed} of {report.control_after.descriptors} "
        f"(the rest are the checkpoint filter's false positives)",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser(
        "cardinality_bench.py",
        "One per-IP limit charged by many distinct addresses: leader RSS, checkpoints, and "
        "what a new leader still refuses after a failover.",
    )
    parser.add_argument("--values", type=int, default=1_000_000, help="distinct addresses")
    parser.add_argument("--limit", type=int, default=1, help="requests per unit per address")
    parser.add_argument("--unit", choices=sorted(UNITS), default="hour", help="the window")
    parser.add_argument(
        "--batch",
        type=int,
        default=MAX_DESCRIPTORS,
        help=f"descriptors per Check (at most {MAX_DESCRIPTORS})",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="Checks in flight")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after the charge before measuring"
    )
    parser.add_argument("--chosen", type=int, default=5, help="addresses charged last")
    parser.add_argument(
        "--after-charge",
        type=float,
        default=2.5,
        help="seconds from charging the chosen to stopping the leader (> 1 s, the interval)",
    )
    parser.add_argument(
        "--sample", type=int, default=1_000, help="charged addresses checked after failover"
    )
    parser.add_argument(
        "--stop", choices=("kill", "term"), default="kill", help="SIGKILL or SIGTERM the leader"
    )
    parser.add_argument(
        "--min-window-left",
        type=float,
        default=None,
        help="wait for the next window when fewer seconds remain (default: a quarter of the "
        "unit, at most 600)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample")
    parser.add_argument(
        "--server-rev", default=None, help="run both replicas from this commit's tree"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 100,000 values, 200 sampled, at least 60 s left in the window",
    )
    add_json_option(parser, "report")
    args = parser.parse_args(argv)
    if args.quick:
        args.values, args.sample, args.min_window_left = 100_000, 200, 60.0
    require_at_least_one(
        parser, args, "values", "limit", "batch", "concurrency", "sample", "chosen"
    )
    if args.values > MAX_VALUES or args.limit > MAX_HITS:
        parser.error(f"--values must be at most {MAX_VALUES} and --limit at most {MAX_HITS}")
    if args.batch > MAX_DESCRIPTORS:
        parser.error(f"--batch must be at most {MAX_DESCRIPTORS} (a Check's descriptors)")
    if args.chosen > 254:
        parser.error("--chosen must be at most 254")
    if args.after_charge <= 1.0 or args.settle < 0:
        parser.error("--after-charge must exceed 1 s (the checkpoint interval), --settle >= 0")
    if args.min_window_left is not None and args.min_window_left >= UNITS[args.unit][1]:
        parser.error("--min-window-left must be shorter than the unit")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_print(
        parse_args(argv), benchmark, format_report, _progress, "replicas and etcd stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
