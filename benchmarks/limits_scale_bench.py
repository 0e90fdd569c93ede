"""Does a rate-limit decision, or a PutLimit, cost more when a domain holds more limits?

One replica (embedded etcd) per size, each holding that many limits in one domain, as a
user with per-customer overrides has them: mostly exact ``user=u<N>`` limits, some
prefix limits (``user=g<N>-*``), some two-entry limits (``tenant=t<N>, user=*``) and one
any-value default (``user=*``). Setup loads them with concurrent PutLimit calls (not
measured), then compacts each etcd's history of the load (``compact_history``: etcd
would, five minutes later, in the middle of the turns). Then, in alternating turns
between the sizes (the order flips every turn):

* ``Check``: sequential, unloaded calls, cycling through descriptors that hit an exact,
  a prefix, a two-entry and the any-value limit, while a background writer rewrites a
  registry instance (``--writer-rate`` per second), so the store's revision keeps moving;
* ``PutLimit``: sequential calls replacing existing exact limits (a new rate each time),
  while another thread keeps sequential Checks going (decisions go on while the
  configuration changes; each put must not make the next decision rebuild anything).

Prints per-size latencies and PutLimit calls/s over all turns and the ratios of the
largest size to the smallest. ``--server-rev REV`` runs the replicas from that commit's
tree instead (as compare_commits.py does), for the numbers of older code.

    .venv/bin/python benchmarks/limits_scale_bench.py --sizes 1000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from bench_load import LatencySummary, latency_summary
from bench_report import (
    add_json_option,
    bench_parser,
    latency_header,
    latency_row,
    machine_info,
    machine_line,
    progress_to,
    ratio,
    ratio_lines,
    run_and_print,
    shared_cpus_note,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    HOST,
    BulwarkProcess,
    ProcessGroup,
    compact_history,
    probe_getleader,
)
from bench_trees import server_side

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc, registry_pb2, registry_pb2_grpc

DOMAIN = "bench"
SECOND = ratelimit_pb2.RATE_UNIT_SECOND
HUGE_RATE = 1_000_000_000  # never over the limit: the decision's cost is what is measured
LOAD_CONCURRENCY = 64  # PutLimit calls in flight while loading
SETUP_TIMEOUT = 3600.0

_progress = progress_to("limits-scale")


# --------------------------------------------------------------------------- the limits


def shares(size: int) -> dict[str, int]:
    """How many limits of each kind a domain of ``size`` holds (all but 10 % exact)."""
    prefix = two = max(1, size // 20)
    return {"exact": size - prefix - two - 1, "prefix": prefix, "two": two, "any": 1}


def make_limit(kind: str, n: int, per_second: int = HUGE_RATE) -> ratelimit_pb2.Limit:
    entry = ratelimit_pb2.DescriptorEntry
    pattern = {
        "exact": [entry(key="user", value=f"u{n}")],
        "prefix": [entry(key="user", value=f"g{n}-*")],
        "two": [entry(key="tenant", value=f"t{n}"), entry(key="user", value="*")],
        "any": [entry(key="user", value="*")],
    }[kind]
    return ratelimit_pb2.Limit(
        domain=DOMAIN,
        name=f"{kind}-{n}",
        descriptor=pattern,
        rate=ratelimit_pb2.Rate(requests_per_unit=per_second, unit=SECOND),
    )


def check_requests(size: int, count: int, rng: random.Random) -> list[ratelimit_pb2.CheckRequest]:
    """``count`` Check requests cycling exact, prefix, two-entry and any-value hits."""
    share = shares(size)
    entry = ratelimit_pb2.DescriptorEntry
    out = []
    for i in range(count):
        kind = ("exact", "prefix", "two", "any")[i % 4]
        n = rng.randrange(max(1, share.get(kind, 1)))
        entries = {
            "exact": [entry(key="user", value=f"u{n}")],
            "prefix": [entry(key="user", value=f"g{n}-{rng.randrange(1000)}")],
            "two": [entry(key="tenant", value=f"t{n}"), entry(key="user", value=f"x{i}")],
            "any": [entry(key="user", value=f"nobody-{i}")],
        }[kind]
        out.append(
            ratelimit_pb2.CheckRequest(
                domain=DOMAIN, descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=entries)]
            )
        )
    return out


async def _load(
    address: str, size: int, progress: Callable[[str], None] | None, concurrency: int
) -> None:
    limits = (make_limit(kind, n) for kind, count in shares(size).items() for n in range(count))
    done = 0
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)

        async def worker() -> None:
            nonlocal done
            for limit in limits:  # one shared generator: each limit is put once
                await stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=60)
                done += 1
                if progress is not None and done % max(1, size // 10) == 0:
                    spent = time.perf_counter() - started
                    progress(f"PutLimit: {done}/{size} in {spent:.0f}s ({done / spent:.0f}/s)")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def load_limits(
    address: str,
    size: int,
    progress: Callable[[str], None] | None = None,
    concurrency: int = LOAD_CONCURRENCY,
) -> float:
    """Put ``size`` limits (``shares``, ``make_limit``) with ``concurrency`` calls in flight;
    the seconds it took. ``progress`` hears how far it got at every tenth."""
    started = time.perf_counter()
    asyncio.run(_load(address, size, progress, concurrency))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measures


class Background:
    """A thread making calls until stopped (``_run``); ``calls`` counts them."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._stop = threading.Event()
        self.calls = 0
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


class Writer(Background):
    """Rewrites one registry instance ``rate`` times a second (other keys than limits)."""

    def __init__(self, address: str, rate: float) -> None:
        super().__init__(address)
        self._rate = rate

    def _run(self) -> None:
        if self._rate <= 0:
            return
        with grpc.insecure_channel(self._address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            for n in itertools.count():
                if self._stop.wait(1 / self._rate):
                    return
                instance = registry_pb2.Instance(
                    service="bench-writer",
                    id="w",
                    address=f"{HOST}:{20000 + n % 10000}",  # a new value: a real write
                    health=registry_pb2.INSTANCE_HEALTH_SERVING,
                )
                instance.ttl.FromSeconds(300)
                stub.RegisterInstance(
                    registry_pb2.RegisterInstanceRequest(instance=instance), timeout=CALL_TIMEOUT
                )
                self.calls += 1


class Checker(Background):
    """Sequential Checks, one after the other, cycling through ``requests``."""

    def __init__(self, address: str, requests: list[ratelimit_pb2.CheckRequest]) -> None:
        super().__init__(address)
        self._requests = requests

    def _run(self) -> None:
        with grpc.insecure_channel(self._address) as channel:
            stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
            for request in itertools.cycle(self._requests):
                if self._stop.is_set():
                    return
                stub.Check(request, timeout=CALL_TIMEOUT)
                self.calls += 1


def time_checks(address: str, requests: list[ratelimit_pb2.CheckRequest]) -> list[float]:
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        for request in requests[:50]:  # warm the channel and the replica
            stub.Check(request, timeout=CALL_TIMEOUT)
        out = []
        for request in requests:
            started = time.perf_counter()
            response = stub.Check(request, timeout=CALL_TIMEOUT)
            out.append(time.perf_counter() - started)
            if not response.results[0].limit_name:
                raise RuntimeError(f"no limit matched {request}")
        return out


def time_puts(address: str, size: int, count: int, rng: random.Random) -> tuple[int, float]:
    """``count`` sequential PutLimit calls replacing exact limits; (calls, seconds)."""
    exact = shares(size)["exact"]
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        started = time.perf_counter()
        for _ in range(count):
            limit = make_limit("exact", rng.randrange(exact), HUGE_RATE - rng.randrange(1000))
            stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=CALL_TIMEOUT)
        return count, time.perf_counter() - started


# --------------------------------------------------------------------------- the run


@dataclass
class SizeResult:
    size: int
    setup_s: float = 0.0
    check_seconds: list[float] = field(default_factory=list, repr=False)
    check: LatencySummary | None = None
    turn_p99_ms: list[float] = field(default_factory=list)
    put_calls: int = 0
    put_seconds: float = 0.0
    put_per_s: float = 0.0
    turn_put_per_s: list[float] = field(default_factory=list)
    writer_writes: int = 0
    checks_during_puts: int = 0


@dataclass
class Report:
    started_utc: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    server: dict[str, str]
    sizes: list[SizeResult]
    ratios: dict[str, float]


def benchmark(args: argparse.Namespace) -> Report:
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    report = Report(
        started_utc=utc_now(),
        machine=machine_info(),
        settings={k: getattr(args, k) for k in ("sizes", "turns", "checks", "puts", "writer_rate")},
        server={},
        sizes=[SizeResult(size) for size in sizes],
        ratios={},
    )
    rng = random.Random(7)
    with ProcessGroup("bulwark-limits-scale-", _progress) as group:
        side = server_side(args.server_rev, group.root)
        report.server = side.describe()
        servers = {
            size: group.add(
                BulwarkProcess(
                    str(group.root / f"data-{size}"),
                    name=f"replica-{size}",
                    extra_args=[f"--replica-id=scale-{size}"],
                    env=side.server_env,
                    cwd=str(side.run_dir),
                )
            )
            for size in sizes
        }
        addresses = {size: server.wait_address() for size, server in servers.items()}
        for result in report.sizes:
            probe_getleader(addresses[result.size])
            _progress(f"{result.size}: loading limits")
            result.setup_s = load_limits(addresses[result.size], result.size, _progress)
            endpoint = servers[result.size].etcd_endpoint
            assert endpoint is not None
            revision = compact_history(endpoint)
            _progress(
                f"{result.size}: loaded in {result.setup_s:.0f}s; etcd compacted to {revision}"
            )
        for turn in range(args.turns):
            order = report.sizes if turn % 2 == 0 else report.sizes[::-1]
            for result in order:
                address = addresses[result.size]
                requests = check_requests(result.size, args.checks, rng)
                with Writer(address, args.writer_rate) as writer:
                    seconds = time_checks(address, requests)
                result.writer_writes += writer.calls
                result.check_seconds.extend(seconds)
                result.turn_p99_ms.append(latency_summary(seconds).p99_ms)
                with Checker(address, requests) as checker:
                    calls, spent = time_puts(address, result.size, args.puts, rng)
                result.checks_during_puts += checker.calls
                result.put_calls += calls
                result.put_seconds += spent
                result.turn_put_per_s.append(calls / spent)
                _progress(
                    f"turn {turn + 1} size {result.size}: Check p99 "
                    f"{result.turn_p99_ms[-1]:.2f} ms, PutLimit {calls / spent:.0f}/s"
                )
    for result in report.sizes:
        result.check = latency_summary(result.check_seconds)
        result.put_per_s = result.put_calls / result.put_seconds
    small, large = report.sizes[0], report.sizes[-1]
    assert small.check and large.check
    label = f"{large.size}/{small.size}"
    report.ratios = {
        f"Check p50 {label}": ratio(large.check.p50_ms, small.check.p50_ms),
        f"Check p99 {label}": ratio(large.check.p99_ms, small.check.p99_ms),
        f"PutLimit calls/s {label}": ratio(large.put_per_s, small.put_per_s),
    }
    return report


def format_report(report: Report) -> str:
    lines = [
        f"Limits scale benchmark, started {report.started_utc}",
        machine_line(report.machine),
        f"Server: {report.server['rev']} ({report.server['commit']})",
        f"Settings: {report.settings}",
        shared_cpus_note(report.machine["cpus"]),
        "",
        latency_header("Check (sequential)", 24),
    ]
    for r in report.sizes:
        assert r.check is not None
        lines.append(latency_row(f"{r.size} limits", r.check, 24))
    lines.append("")
    for r in report.sizes:
        lines.append(
            f"{r.size} limits: PutLimit {r.put_per_s:.0f} calls/s "
            f"(turns: {', '.join(f'{v:.0f}' for v in r.turn_put_per_s)}); "
            f"Check p99 per turn: {', '.join(f'{v:.2f}' for v in r.turn_p99_ms)} ms; "
            f"setup {r.setup_s:.0f}s; background writes {r.writer_writes}, "
            f"Checks beside the puts {r.checks_during_puts}"
        )
    lines.extend(ratio_lines(report.ratios))
    return "\n".join(lines)


def main() -> int:
    parser = bench_parser("limits_scale_bench.py", __doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated limit counts")
    parser.add_argument("--turns", type=int, default=4, help="alternating turns per size")
    parser.add_argument("--checks", type=int, default=2000, help="Check calls per turn")
    parser.add_argument("--puts", type=int, default=200, help="PutLimit calls per turn")
    parser.add_argument(
        "--writer-rate", type=float, default=50.0, help="background writes per second"
    )
    parser.add_argument(
        "--server-rev", default=None, help="run the replicas from this commit's tree"
    )
    add_json_option(parser)
    args = parser.parse_args()
    if args.turns < 1 or args.checks < 1 or args.puts < 1:
        parser.error("--turns, --checks and --puts must be at least 1")
    return run_and_print(args, benchmark, format_report, _progress, "servers stopped")


if __name__ == "__main__":
    sys.exit(main())
