"""Rate limits: Check and Envoy ShouldRateLimit throughput, batches, leases, and `limits`+Redis.

What it measures, in one run, on one Bulwark replica
    A limit ``bench/per-user`` (descriptor pattern ``[{key: "user"}]``, any value; 1,000,000
    requests per SECOND, token bucket) is created first with PutLimit, so no request is ever
    limited. Requests name users ``u0`` ... ``u<--users - 1>`` in turn, so the leader keeps
    one counter per user, as it would for real traffic.

    1. Check under load. Decisions/s and latency percentiles of
       ``bulwark.v1.RateLimitService/Check`` (one descriptor ``[{user: "u<n>"}]`` per
       request), beside a plain ``grpc.aio`` echo server loaded the same way in the same
       run; the echo returns the serialized bytes of a real CheckResponse.
    2. Envoy. The same for ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``
       (domain ``bench``, the same descriptors). Its generated modules are looked up under
       ``bulwark_server.envoy_api``; when they are missing, or the replica answers
       UNIMPLEMENTED, the run prints "ShouldRateLimit: not available in this build" and
       goes on.
    3. Batched descriptors. Check requests carrying ``--batch`` descriptors (distinct
       users) each: descriptor decisions/s (requests/s x ``--batch``) and request latency,
       beside the same echo server loaded the same way with a batched payload: the
       serialized bytes of a real CheckResponse of ``--batch`` results (as the single
       echo returns a real one-result CheckResponse), reported as items/s (calls/s x
       ``--batch``), the floor of deciding ``--batch`` descriptors per call.
    4. Local decisions from a quota lease. One LeaseQuota call (descriptor
       ``[{user: "lease-holder"}]``, client ``bench-client``, wanted 100000), then, in this
       process, ``TokenBucket(capacity=granted, per_second=granted / unit_seconds, now)``
       ``.take(1, time.monotonic())`` in a tight loop for ``--lease-duration`` seconds. This
       is what the client library will do; there is no client library yet, so this loop
       stands in for it. Decisions/s counts allowed and refused decisions alike (once the
       bucket's first ``granted`` tokens are spent, it admits ``granted`` per unit).
    5. The peer: the ``limits`` library (``RedisStorage`` from
       ``storage_from_string("redis://127.0.0.1:PORT")``, item ``1000000/second``),
       ``FixedWindowRateLimiter`` and ``MovingWindowRateLimiter``, each driven by as many
       processes as the Bulwark load (``--processes``), each running ``--peer-threads``
       synchronous loops of ``.hit(item, "user", "u<n>")``. Each ``hit`` is one Redis
       round trip (one EVALSHA). Then, one caller in one process, a decision per call:
       Bulwark Check over one synchronous gRPC channel, the ``limits`` fixed window, and the
       echo over one synchronous channel (the floor of that shape), measured in alternating
       turns so that drifting background load hits all of them alike.

How
    The machinery is that of ``bench_servers.py`` and ``bench_load.py`` (the replica as a
    subprocess with a private embedded etcd in a temporary data dir; the echo server;
    ``--processes`` spawned load processes keeping ``--concurrency`` calls in flight each
    over one ``grpc.aio`` channel; warm-up discarded; exact merged percentiles),
    ``bench_redis.py`` (``redis-server`` as a child process with no persistence, installed
    with apt-get when missing) and ``bench_peers.py`` (the alternating single-caller
    turns). Redis is flushed before each ``limits`` strategy, whose keys would otherwise
    collide. Every phase is bounded in time; every
    subprocess and temporary directory is removed on exit, error or Ctrl-C.

Client and server share the machine's CPUs (2 cores where the numbers in RESULTS.md were
taken): absolute numbers are lower bounds; the ratios are the meaningful figures.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import importlib
import importlib.metadata
import importlib.util
import itertools
import math
import multiprocessing
import multiprocessing.synchronize
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import redis
from bench_load import (
    WORKER_SLACK,
    CallSpec,
    TargetResult,
    echo_call,
    load_target,
    run_processes,
    summarize,
)
from bench_peers import Peer, PeerResult, echo_peer, peer_table, take_turns
from bench_redis import RedisProcess, add_redis_options, find_redis_server, redis_versions
from bench_report import (
    NAMED_TARGET_RATIOS,
    add_json_option,
    add_load_options,
    bench_parser,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    ratio,
    ratio_lines,
    ratios,
    require_at_least_one,
    run_and_print,
    shared_cpus_note,
    target_table,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    HOST,
    BulwarkProcess,
    EchoProcess,
    ProcessGroup,
    ServerProcess,
    probe_getleader,
)

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.ratelimits.config import UNIT_SECONDS
from bulwark_server.ratelimits.counters import TokenBucket

DOMAIN = "bench"
LIMIT_NAME = "per-user"
KEY = "user"
RATE = 1_000_000  # per second: never reached, so every decision is OK
LIMITS_ITEM = f"{RATE}/second"
LEASE_USER = "lease-holder"
LEASE_CLIENT = "bench-client"
LEASE_WANTED = 100_000
ENVOY_PACKAGE = "bulwark_server.envoy_api"
ENVOY_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
SHOULD_RATE_LIMIT = f"/{ENVOY_SERVICE}/ShouldRateLimit"
NOT_AVAILABLE = "ShouldRateLimit: not available in this build"
OK = ratelimit_pb2.CHECK_CODE_OK
STRATEGIES = {"fixed": "FixedWindowRateLimiter", "moving": "MovingWindowRateLimiter"}


_progress = progress_to("ratelimit-bench")


def user(n: int) -> str:
    """The descriptor value of user ``n``."""
    return f"u{n}"


# --------------------------------------------------------------------------- Bulwark Check


def put_limit(address: str) -> ratelimit_pb2.Limit:
    """Create (or replace) ``bench/per-user``: [{user: any}], RATE per SECOND."""
    limit = ratelimit_pb2.Limit(
        domain=DOMAIN,
        name=LIMIT_NAME,
        descriptor=[ratelimit_pb2.DescriptorEntry(key=KEY)],
        rate=ratelimit_pb2.Rate(requests_per_unit=RATE, unit=ratelimit_pb2.RATE_UNIT_SECOND),
    )
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        response = stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=CALL_TIMEOUT)
    return response.limit


def check_requests(users: int, batch: int) -> tuple[ratelimit_pb2.CheckRequest, ...]:
    """Check requests of ``batch`` descriptors each, covering users 0..users-1 in order."""
    per_request = [range(i, min(i + batch, users)) for i in range(0, users, batch)]
    if len(per_request[-1]) < batch:  # every request carries exactly ``batch`` descriptors
        per_request[-1] = range(users - batch, users) if users >= batch else range(batch)
    return tuple(
        ratelimit_pb2.CheckRequest(
            domain=DOMAIN,
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.DescriptorEntry(key=KEY, value=user(n))]
                )
                for n in ns
            ],
        )
        for ns in per_request
    )


def check_call(requests: tuple[ratelimit_pb2.CheckRequest, ...], label: str) -> CallSpec:
    """``RateLimitService/Check``, sending ``requests`` in turn."""
    return CallSpec(
        label=label,
        method="/bulwark.v1.RateLimitService/Check",
        request=requests[0],
        response_type=ratelimit_pb2.CheckResponse,
        requests=requests,
    )


def probe_check(address: str, request: ratelimit_pb2.CheckRequest) -> bytes:
    """One Check; fail unless every descriptor is OK under ``per-user``; the response bytes."""
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        response = stub.Check(request, timeout=CALL_TIMEOUT)
    names = {result.limit_name for result in response.results}
    if response.overall_code != OK or names != {LIMIT_NAME} or response.local_fallback:
        raise RuntimeError(f"Check is not deciding OK on {LIMIT_NAME!r}: {response}")
    return response.SerializeToString()


# --------------------------------------------------------------------------- Envoy RLS


def load_envoy_rls() -> tuple[ModuleType | None, str]:
    """The generated ``rls_pb2`` module under ENVOY_PACKAGE, or None and the reason."""
    try:
        spec = importlib.util.find_spec(ENVOY_PACKAGE)
    except ImportError as exc:
        return None, f"{ENVOY_PACKAGE} not importable ({exc})"
    if spec is None or not spec.submodule_search_locations:
        return None, f"no package {ENVOY_PACKAGE}"
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).rglob("rls_pb2.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-4:-1] != ("service", "ratelimit", "v3"):
                continue
            name = ".".join((ENVOY_PACKAGE, *parts))
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                return None, f"{name} does not import ({type(exc).__name__}: {exc})"
            if not hasattr(module, "RateLimitRequest"):
                return None, f"{name} has no RateLimitRequest"
            return module, name
    return None, f"no service/ratelimit/v3/rls_pb2.py under {ENVOY_PACKAGE}"


def rls_requests(rls: ModuleType, users: int) -> tuple[Any, ...]:
    """One ShouldRateLimit request per user, each with the descriptor [{user: u<n>}]."""
    requests = []
    for n in range(users):
        request = rls.RateLimitRequest(domain=DOMAIN)
        request.descriptors.add().entries.add(key=KEY, value=user(n))
        requests.append(request)
    return tuple(requests)


def probe_should_rate_limit(address: str, rls: ModuleType, request: Any) -> str | None:
    """Call ShouldRateLimit once: None when it answers OK, else why it is not available."""
    with grpc.insecure_channel(address) as channel:
        method = channel.unary_unary(
            SHOULD_RATE_LIMIT,
            request_serializer=type(request).SerializeToString,
            response_deserializer=rls.RateLimitResponse.FromString,
        )
        try:
            response = method(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return f"the replica does not serve {ENVOY_SERVICE}"
            raise
    if response.overall_code != rls.RateLimitResponse.Code.OK:
        raise RuntimeError(f"ShouldRateLimit is not deciding OK: {response}")
    return None


# --------------------------------------------------------------------------- quota lease


@dataclass
class LeaseResult:
    """Local decisions from one quota lease, in one process."""

    granted: int
    unit_seconds: int
    lease_term_s: float
    lease_rpc_ms: float
    decisions: int
    allowed: int
    denied: int
    duration_s: float
    decisions_per_s: float
    allowed_per_s: float
    ns_per_decision: float


def lease_local(address: str, duration: float) -> LeaseResult:
    """LeaseQuota once, then ``TokenBucket.take(1, monotonic())`` in a loop for ``duration``."""
    request = ratelimit_pb2.LeaseQuotaRequest(
        domain=DOMAIN,
        descriptor=ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.DescriptorEntry(key=KEY, value=LEASE_USER)]
        ),
        client_id=LEASE_CLIENT,
        wanted=LEASE_WANTED,
    )
    with grpc.insecure_channel(address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        started = time.perf_counter()
        lease = stub.LeaseQuota(request, timeout=CALL_TIMEOUT)
        rpc_ms = (time.perf_counter() - started) * 1000
    if lease.granted <= 0 or lease.limit_name != LIMIT_NAME:
        raise RuntimeError(f"LeaseQuota granted nothing on {LIMIT_NAME!r}: {lease}")
    unit_seconds = UNIT_SECONDS[lease.limit.unit]
    term = lease.expires_at.ToNanoseconds() / 1e9 - time.time()
    clock = time.monotonic
    bucket = TokenBucket(
        capacity=lease.granted, per_second=lease.granted / unit_seconds, now=clock()
    )
    take = bucket.take
    allowed = denied = 0
    begin = clock()
    end = begin + duration
    while (now := clock()) < end:
        if take(1, now).allowed:
            allowed += 1
        else:
            denied += 1
    seconds = clock() - begin
    decisions = allowed + denied
    return LeaseResult(
        granted=lease.granted,
        unit_seconds=unit_seconds,
        lease_term_s=round(term, 1),
        lease_rpc_ms=rpc_ms,
        decisions=decisions,
        allowed=allowed,
        denied=denied,
        duration_s=seconds,
        decisions_per_s=decisions / seconds,
        allowed_per_s=allowed / seconds,
        ns_per_decision=seconds / decisions * 1e9 if decisions else math.nan,
    )


# --------------------------------------------------------------------------- limits + Redis


@dataclass
class LimitsWorkerSpec:
    """What one `limits` load process does; picklable so it crosses the spawn boundary."""

    index: int
    redis_url: str
    strategy: str  # a key of STRATEGIES
    users: int
    threads: int
    warmup: float
    duration: float


def _limits_drive(
    spec: LimitsWorkerSpec, barrier: multiprocessing.synchronize.Barrier
) -> dict[str, Any]:
    import limits
    import limits.strategies
    from limits.storage import storage_from_string

    storage = storage_from_string(spec.redis_url)
    limiter = getattr(limits.strategies, STRATEGIES[spec.strategy])(storage)
    item = limits.parse(LIMITS_ITEM)
    names = [user(n) for n in range(spec.users)]
    if not storage.check():
        raise RuntimeError(f"Redis at {spec.redis_url} does not answer")
    limiter.hit(item, KEY, names[0])  # load the Lua script before the clock starts
    barrier.wait(WORKER_SLACK)
    begin = time.perf_counter() + spec.warmup
    end = begin + spec.duration
    per_thread = [array.array("d") for _ in range(spec.threads)]
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def loop(latencies: array.array[float], offset: int) -> None:
        clock, hit = time.perf_counter, limiter.hit
        local: Counter[str] = Counter()
        for name in itertools.cycle(names[offset:] + names[:offset]):
            started = clock()
            if started >= end:
                break
            try:
                outcome = None if hit(item, KEY, name) else "DENIED"
            except Exception as exc:
                outcome = type(exc).__name__
            finished = clock()
            if begin <= finished < end:
                if outcome is None:
                    latencies.append(finished - started)
                else:
                    local[outcome] += 1
        with lock:
            errors.update(local)

    step = max(1, spec.users // spec.threads)
    threads = [
        threading.Thread(target=loop, args=(per_thread[i], (i * step) % spec.users))
        for i in range(spec.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = array.array("d")
    for latencies in per_thread:
        merged.extend(latencies)
    return {"latencies": merged.tobytes(), "errors": dict(errors)}


def run_limits_load(
    strategy: str, redis_proc: RedisProcess, args: argparse.Namespace
) -> TargetResult:
    """``args.processes`` processes x ``args.peer_threads`` loops of ``limits`` hits."""
    with contextlib.closing(redis.Redis(host=HOST, port=redis_proc.port)) as client:
        client.flushall()  # the two strategies use the same keys with different types
    url = f"redis://{HOST}:{redis_proc.port}"
    specs = [
        LimitsWorkerSpec(
            i, url, strategy, args.users, args.peer_threads, args.warmup, args.duration
        )
        for i in range(args.processes)
    ]

    def redis_alive() -> None:
        if redis_proc.proc.poll() is not None:
            raise RuntimeError("redis-server exited during the load")

    latencies, errors = run_processes(f"limits-{strategy}", _limits_drive, specs, args, redis_alive)
    label = f"limits {STRATEGIES[strategy]} + Redis"
    return summarize(f"limits_{strategy}", label, latencies, errors, args.duration)


def measure_sequential(
    redis_port: int,
    address: str,
    echo_address: str,
    echo_payload: bytes,
    args: argparse.Namespace,
) -> dict[str, PeerResult]:
    """One caller, one decision per call: `limits` fixed window, Bulwark Check, echo floor."""
    import limits
    import limits.strategies
    from limits.storage import storage_from_string

    with contextlib.closing(redis.Redis(host=HOST, port=redis_port)) as client:
        client.flushall()
    storage = storage_from_string(f"redis://{HOST}:{redis_port}")
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.parse(LIMITS_ITEM)
    names = itertools.cycle([user(n) for n in range(args.users)])
    checks = itertools.cycle(check_requests(args.users, 1))
    with contextlib.ExitStack() as stack:
        check_channel = stack.enter_context(grpc.insecure_channel(address))
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(check_channel)

        def fixed_window() -> bool:
            return limiter.hit(item, KEY, next(names))

        def check() -> bool:
            return stub.Check(next(checks), timeout=CALL_TIMEOUT).overall_code == OK

        peers = [
            Peer(
                "limits_fixed_window_sequential",
                "limits FixedWindowRateLimiter + Redis",
                fixed_window,
                "Redis round trips (one EVALSHA: INCRBY, EXPIRE on a window's first hit)",
            ),
            Peer(
                "bulwark_check_sequential",
                "Bulwark Check (sync gRPC, 1 channel)",
                check,
                "gRPC round trips (the leader decides in memory; no etcd access)",
            ),
            echo_peer(stack, echo_address, echo_payload),
        ]
        take_turns(peers, args.seq_warmup, args.seq_duration, args.seq_slices)
    for peer in peers:  # one round trip per decision, by construction
        peer.one_round_trip_each()
    return {peer.key: peer.result() for peer in peers}


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything printed."""

    started_utc: str
    machine: dict[str, Any]
    note: str
    load: dict[str, Any]
    targets: dict[str, TargetResult] = field(default_factory=dict)
    should_rate_limit: str = ""  # the module used, or why the service is not available
    batched_descriptor_decisions_per_s: float = math.nan
    batched_echo_items_per_s: float = math.nan
    lease: LeaseResult | None = None
    sequential: dict[str, PeerResult] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


TARGET_LABELS = {
    "check": "Bulwark Check (1 descriptor)",
    "echo": "echo baseline (grpc.aio, raw bytes)",
    "should_rate_limit": "Envoy ShouldRateLimit (1 descriptor)",
    "check_batched": "Bulwark Check (batched; per request)",
    "echo_batched": "echo baseline (batched; per call)",
    "limits_fixed": "limits FixedWindow + Redis (hits)",
    "limits_moving": "limits MovingWindow + Redis (hits)",
}


def compute_ratios(report: Report) -> dict[str, float]:
    """Every ratio printed, keyed by what it compares."""
    t, r = report.targets, {}
    check, echo = t.get("check"), t.get("echo")
    if check and echo:
        r.update(ratios(check, echo, NAMED_TARGET_RATIOS, "Check / echo"))
    srl = t.get("should_rate_limit")
    if srl and echo and check:
        r["ShouldRateLimit / echo: QPS"] = ratio(srl.qps, echo.qps)
        r["ShouldRateLimit / echo: p99"] = ratio(srl.p99_ms, echo.p99_ms)
        r["ShouldRateLimit / Check: QPS"] = ratio(srl.qps, check.qps)
        r["ShouldRateLimit / Check: p99"] = ratio(srl.p99_ms, check.p99_ms)
    batched = t.get("check_batched")
    if batched and check:
        r["batched descriptor decisions/s / Check QPS"] = ratio(
            report.batched_descriptor_decisions_per_s, check.qps
        )
        r["batched request QPS / Check QPS"] = ratio(batched.qps, check.qps)
        r["batched request p99 / Check p99"] = ratio(batched.p99_ms, check.p99_ms)
    echo_batched = t.get("echo_batched")
    if batched and echo_batched:
        r["batched descriptor decisions/s / batched echo items/s"] = ratio(
            report.batched_descriptor_decisions_per_s, report.batched_echo_items_per_s
        )
        r["batched request p99 / batched echo p99"] = ratio(batched.p99_ms, echo_batched.p99_ms)
    fixed, moving = t.get("limits_fixed"), t.get("limits_moving")
    if check and fixed:
        r["Check QPS / limits fixed-window hits/s"] = ratio(check.qps, fixed.qps)
    if check and moving:
        r["Check QPS / limits moving-window hits/s"] = ratio(check.qps, moving.qps)
    if srl and fixed:
        r["ShouldRateLimit QPS / limits fixed-window hits/s"] = ratio(srl.qps, fixed.qps)
    if batched and fixed:
        r["batched descriptor decisions/s / limits fixed-window hits/s"] = ratio(
            report.batched_descriptor_decisions_per_s, fixed.qps
        )
    lease = report.lease
    if lease and check:
        r["lease local decisions/s / Check QPS"] = ratio(lease.decisions_per_s, check.qps)
    if lease and fixed:
        r["lease local decisions/s / limits fixed-window hits/s"] = ratio(
            lease.decisions_per_s, fixed.qps
        )
    seq = report.sequential
    if "bulwark_check_sequential" in seq and "limits_fixed_window_sequential" in seq:
        a, b = seq["bulwark_check_sequential"], seq["limits_fixed_window_sequential"]
        r["one caller: Check / limits fixed window: calls/s"] = ratio(a.calls_per_s, b.calls_per_s)
        r["one caller: Check / limits fixed window: p50"] = ratio(a.p50_ms, b.p50_ms)
        r["one caller: Check / limits fixed window: p99"] = ratio(a.p99_ms, b.p99_ms)
    if "bulwark_check_sequential" in seq and "echo_sequential" in seq:
        a, b = seq["bulwark_check_sequential"], seq["echo_sequential"]
        r["one caller: Check / echo: calls/s"] = ratio(a.calls_per_s, b.calls_per_s)
    return r


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, load = report.machine, report.load
    lines = [
        f"Bulwark rate-limit benchmark, started {report.started_utc}",
        machine_line(m),
        f"Note: {report.note}",
        f"Limit: {DOMAIN}/{LIMIT_NAME}, [{{{KEY}: any}}], {RATE} per SECOND (never reached); "
        f"{load['users']} users in turn",
        "",
        f"Under load: {load['processes']} processes x {load['concurrency']} in-flight gRPC calls "
        f"(limits: {load['processes']} processes x {load['peer_threads']} synchronous "
        f"loop(s)), {load['warmup_s']:g}s warm-up + {load['duration_s']:g}s per target, one "
        f"target after the other; echo payload {load['echo_payload_bytes']} bytes",
        *target_table(
            ((TARGET_LABELS[key], r) for key, r in report.targets.items()), 38, compact=True
        ),
    ]
    if "should_rate_limit" not in report.targets:
        lines.append(f"{NOT_AVAILABLE} ({report.should_rate_limit})")
    if "check_batched" in report.targets:
        lines.append(
            f"Batched Check: {load['batch']} descriptors per request -> "
            f"{report.batched_descriptor_decisions_per_s:.1f} descriptor decisions/s"
        )
    if "echo_batched" in report.targets:
        lines.append(
            f"Batched echo: a {load['batch']}-result CheckResponse "
            f"({load['batched_echo_payload_bytes']} bytes) per call -> "
            f"{report.batched_echo_items_per_s:.1f} items/s"
        )
    lease = report.lease
    if lease is not None:
        lines += [
            "",
            f"Local decisions from a quota lease (no client library yet: this process runs "
            f"TokenBucket(capacity=granted, per_second=granted/unit).take(1, monotonic()) "
            f"in a loop, as the library will): granted {lease.granted} per "
            f"{lease.unit_seconds}s, lease term {lease.lease_term_s:g}s, LeaseQuota RPC "
            f"{lease.lease_rpc_ms:.2f} ms",
            f"  {lease.decisions_per_s:.0f} decisions/s ({lease.ns_per_decision:.0f} ns each) "
            f"over {lease.duration_s:.1f}s: {lease.allowed} allowed "
            f"({lease.allowed_per_s:.0f}/s, capped by the grant), {lease.denied} refused",
        ]
    if report.sequential:
        lines += [
            "",
            f"One caller in one process, one decision per call: {load['seq_warmup_s']:g}s "
            f"warm-up, then {load['seq_duration_s']:g}s each in {load['seq_slices']} "
            "alternating turns",
            *peer_table(report.sequential.values(), 52),
        ]
    lines += ratio_lines(report.ratios)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = bench_parser(
        "ratelimit_bench.py",
        "Measure Bulwark's rate limits on one local replica (embedded etcd) in one run: "
        "RateLimitService/Check and Envoy ShouldRateLimit decisions/s and p50/p99 beside "
        "a bare grpc.aio echo; Check with batched descriptors beside the echo of a batched "
        "CheckResponse; local decisions from a "
        "quota lease; and the `limits` library with Redis (fixed and moving window) "
        "under the same number of processes, plus a one-caller comparison. Everything "
        "runs on 127.0.0.1; clients and servers share the same CPUs.",
    )
    load = parser.add_argument_group("load (same shape as getleader_bench)")
    add_load_options(
        load,
        concurrency_help="gRPC calls kept in flight by each load process (over one grpc.aio "
        "channel)",
    )
    load.add_argument(
        "--users", type=int, default=1000, help="distinct descriptor values u0..u<N-1>, in turn"
    )
    load.add_argument(
        "--batch", type=int, default=100, help="descriptors per request in the batched Check"
    )
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=5.0,
        help="seconds of local TokenBucket decisions from the quota lease",
    )
    peers = parser.add_argument_group("the limits library with Redis")
    peers.add_argument(
        "--peer-threads",
        type=int,
        default=1,
        help="synchronous hit loops (threads) in each of the --processes limits processes",
    )
    peers.add_argument(
        "--seq-duration", type=float, default=5.0, help="one caller: measured seconds per peer"
    )
    peers.add_argument(
        "--seq-warmup", type=float, default=1.0, help="one caller: discarded seconds per peer"
    )
    peers.add_argument(
        "--seq-slices",
        type=int,
        default=5,
        help="one caller: turns the peers take, so drifting background load hits all alike",
    )
    add_redis_options(peers)
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "processes", "concurrency", "peer_threads")
    if args.duration <= 0 or args.warmup < 0 or args.lease_duration <= 0:
        parser.error("--duration and --lease-duration must be positive, --warmup not negative")
    if args.seq_duration <= 0 or args.seq_warmup < 0 or args.seq_slices < 1:
        parser.error("--seq-duration must be positive, --seq-warmup not negative, slices >= 1")
    if not 1 <= args.batch <= 100:
        parser.error("--batch must be 1-100 (Check takes at most 100 descriptors)")
    require_at_least_one(parser, args, "users")
    return args


def _load(
    report: Report,
    key: str,
    address: str,
    call: CallSpec,
    args: argparse.Namespace,
    server: ServerProcess,
) -> TargetResult:
    result = load_target(key, address, call, args, server, _progress, show_p99=True)
    report.targets[key] = result
    return result


def benchmark(args: argparse.Namespace) -> Report:
    """Start the servers, run every part, stop everything; return the report."""
    redis_binary = find_redis_server(
        args.redis_server, install=not args.no_install_redis, progress=_progress
    )
    machine = {
        **machine_info(),
        "limits": importlib.metadata.version("limits"),
        **redis_versions(redis_binary),
    }
    report = Report(
        started_utc=utc_now(),
        machine=machine,
        note=shared_cpus_note(machine["cpus"]),
        load={
            **load_settings(args),
            "users": args.users,
            "batch": args.batch,
            "peer_threads": args.peer_threads,
            "lease_duration_s": args.lease_duration,
            "seq_warmup_s": args.seq_warmup,
            "seq_duration_s": args.seq_duration,
            "seq_slices": args.seq_slices,
        },
    )
    with ProcessGroup("bulwark-ratelimit-bench-", _progress) as group:
        _progress("starting Bulwark replica (embedded etcd), the echo server and redis-server...")
        replica = group.add(BulwarkProcess(str(group.root / "replica"), name="replica"))
        echo = group.add(EchoProcess())
        redis_proc = group.add(RedisProcess.under(redis_binary, group.root))
        address = replica.wait_address()
        echo_address = echo.wait_address()
        redis_proc.wait_ready()
        probe_getleader(address)
        put_limit(address)
        singles = check_requests(args.users, 1)
        payload = probe_check(address, singles[0])
        report.load["check_response_bytes"] = len(payload)
        report.load["echo_payload_bytes"] = len(payload)

        # 1. Check beside the echo baseline.
        _load(
            report, "check", address, check_call(singles, "RateLimitService/Check"), args, replica
        )
        _load(report, "echo", echo_address, echo_call(payload), args, echo)

        # 2. Envoy ShouldRateLimit, when this build has it.
        rls, found = load_envoy_rls()
        if rls is None:
            report.should_rate_limit = found
        else:
            requests = rls_requests(rls, args.users)
            missing = probe_should_rate_limit(address, rls, requests[0])
            if missing is not None:
                report.should_rate_limit = missing
            else:
                report.should_rate_limit = f"served; messages from {found}"
                call = CallSpec(
                    label=SHOULD_RATE_LIMIT.lstrip("/"),
                    method=SHOULD_RATE_LIMIT,
                    request=requests[0],
                    response_type=rls.RateLimitResponse,
                    requests=requests,
                )
                _load(report, "should_rate_limit", address, call, args, replica)
        if "should_rate_limit" not in report.targets:
            _progress(f"{NOT_AVAILABLE} ({report.should_rate_limit})")

        # 3. Batched descriptors.
        batches = check_requests(max(args.users, args.batch), args.batch)
        batch_payload = probe_check(address, batches[0])
        report.load["batched_echo_payload_bytes"] = len(batch_payload)
        call = check_call(batches, f"RateLimitService/Check x{args.batch} descriptors")
        batched = _load(report, "check_batched", address, call, args, replica)
        report.batched_descriptor_decisions_per_s = batched.qps * args.batch
        echo_batched = _load(
            report, "echo_batched", echo_address, echo_call(batch_payload), args, echo
        )
        report.batched_echo_items_per_s = echo_batched.qps * args.batch

        # 4. Local decisions from a quota lease.
        _progress(f"quota lease: local TokenBucket decisions for {args.lease_duration:g}s")
        report.lease = lease_local(address, args.lease_duration)
        _progress(f"lease: {report.lease.decisions_per_s:.0f} local decisions/s")

        # 5. The limits library with Redis, then one caller.
        for strategy in STRATEGIES:
            _progress(
                f"loading limits {STRATEGIES[strategy]}: {args.processes} processes x "
                f"{args.peer_threads} loop(s), {args.warmup:g}s warm-up + {args.duration:g}s"
            )
            result = run_limits_load(strategy, redis_proc, args)
            report.targets[f"limits_{strategy}"] = result
            _progress(f"limits {strategy}: {result.calls} hits, {result.qps:.1f} hits/s")
        _progress(
            f"one caller: limits fixed window, Bulwark Check and echo, {args.seq_warmup:g}s "
            f"warm-up each, then {args.seq_slices} turns of "
            f"{args.seq_duration / args.seq_slices:g}s each"
        )
        report.sequential = measure_sequential(
            redis_proc.port, address, echo_address, payload, args
        )
        for peer in report.sequential.values():
            _progress(f"{peer.peer}: {peer.calls_per_s:.1f} calls/s")
        probe_check(address, singles[0])  # still deciding OK on per-user after all that
        replica.check_alive()
        echo.check_alive()
    report.ratios = compute_ratios(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON)."""
    return run_and_print(
        parse_args(argv),
        benchmark,
        format_report,
        _progress,
        "servers, load processes and redis-server stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
