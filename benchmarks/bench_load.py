"""Load processes and the statistics of what they measure.

Holds the unary call a load process makes (``CallSpec``), the spawned processes that keep
``--concurrency`` calls in flight each over one ``grpc.aio`` channel (started together at
a barrier, warm-up discarded, every latency kept), what the parent may read at both ends
of their measured window (``WindowProbe``), the parent's merge of their samples into exact
nearest-rank percentiles, and the summaries those percentiles fill. Also the open-loop
load of rate-limit benchmarks (``PacedSpec``, ``run_paced``): processes that send Checks
on a fixed schedule whatever the answers, and count what was allowed per address and
per window of the limit.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from bench_servers import CALL_TIMEOUT, ECHO_METHOD, SERVING_TIMEOUT, ServerProcess

WORKER_SLACK = 60.0  # seconds on top of warm-up + duration for workers to start and finish

# What one load process does: (its spec, the start barrier) -> its result dict.
Drive = Callable[[Any, multiprocessing.synchronize.Barrier], dict[str, Any]]


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ms_percentiles(sorted_seconds: Sequence[float]) -> dict[str, float]:
    """``p50_ms``, ``p90_ms``, ``p99_ms`` and ``max_ms`` of ascending durations in seconds."""
    return {
        "p50_ms": percentile(sorted_seconds, 50) * 1000,
        "p90_ms": percentile(sorted_seconds, 90) * 1000,
        "p99_ms": percentile(sorted_seconds, 99) * 1000,
        "max_ms": (sorted_seconds[-1] * 1000) if sorted_seconds else math.nan,
    }


@dataclass
class LatencySummary:
    """Percentiles of a set of durations, in milliseconds."""

    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def latency_summary(seconds: Sequence[float]) -> LatencySummary:
    """Exact (nearest-rank) percentiles of ``seconds``, reported in milliseconds."""
    ordered = sorted(seconds)
    return LatencySummary(samples=len(ordered), **ms_percentiles(ordered))


@dataclass
class TargetResult:
    """Merged outcome of all load processes against one target."""

    target: str
    method: str
    calls: int
    errors: int
    errors_by_code: dict[str, int]
    duration_s: float
    qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def summarize(
    target: str, method: str, latencies: list[float], errors: Counter[str], duration: float
) -> TargetResult:
    """Exact percentiles over every successful call; QPS counts successful calls only."""
    latencies.sort()
    n = len(latencies)
    return TargetResult(
        target=target,
        method=method,
        calls=n,
        errors=sum(errors.values()),
        errors_by_code=dict(errors),
        duration_s=duration,
        qps=n / duration,
        **ms_percentiles(latencies),
        mean_ms=(sum(latencies) / n * 1000) if n else math.nan,
    )


# --------------------------------------------------------------------------- load workers


@dataclass
class CallSpec:
    """The unary method a load process calls; picklable so it crosses the spawn boundary.

    With ``response_type`` set, ``request`` is a protobuf message and the call is built
    exactly as a generated stub builds it. With ``response_type`` None, ``request`` is raw
    bytes sent and received unchanged (the echo baseline). With ``requests`` set (messages
    of ``request``'s type), each process sends them in turn, one per call, instead of
    ``request`` every time.
    """

    label: str
    method: str
    request: Any
    response_type: type[Any] | None = None
    requests: tuple[Any, ...] = ()


def echo_call(payload: bytes) -> CallSpec:
    """The echo baseline, sending (and getting back) ``payload``."""
    return CallSpec(label=ECHO_METHOD.lstrip("/"), method=ECHO_METHOD, request=payload)


@dataclass
class WorkerSpec:
    """What one load process does; picklable so it crosses the spawn boundary."""

    index: int
    target: str
    address: str
    call: CallSpec
    concurrency: int
    warmup: float
    duration: float


async def _drive(spec: WorkerSpec, barrier: multiprocessing.synchronize.Barrier) -> dict[str, Any]:
    latencies = array.array("d")
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(spec.address) as channel:
        request = spec.call.request
        if spec.call.response_type is not None:
            # As a generated stub does it.
            method = channel.unary_unary(
                spec.call.method,
                request_serializer=type(request).SerializeToString,
                response_deserializer=spec.call.response_type.FromString,
                _registered_method=True,
            )
        else:
            method = channel.unary_unary(spec.call.method)

        if spec.call.requests:
            in_turn = itertools.cycle(spec.call.requests)

            async def call() -> object:
                return await method(next(in_turn), timeout=CALL_TIMEOUT)

        else:

            async def call() -> object:
                return await method(request, timeout=CALL_TIMEOUT)

        await asyncio.wait_for(channel.channel_ready(), SERVING_TIMEOUT)
        # All processes start the clock together, so their windows line up.
        await asyncio.to_thread(barrier.wait, WORKER_SLACK)
        begin = time.perf_counter() + spec.warmup
        end = begin + spec.duration

        async def loop() -> None:
            clock = time.perf_counter
            while (started := clock()) < end:
                try:
                    await call()
                    outcome = None
                except grpc.RpcError as exc:
                    code = exc.code()
                    outcome = code.name if code is not None else "UNKNOWN"
                except Exception as exc:
                    outcome = type(exc).__name__
                finished = clock()
                if begin <= finished < end:
                    if outcome is None:
                        latencies.append(finished - started)
                    else:
                        errors[outcome] += 1

        await asyncio.gather(*(loop() for _ in range(spec.concurrency)))
    return {"latencies": latencies.tobytes(), "errors": dict(errors)}


def drive_grpc(spec: WorkerSpec, barrier: multiprocessing.synchronize.Barrier) -> dict[str, Any]:
    """One gRPC load process: ``spec.concurrency`` calls in flight over one channel."""
    return asyncio.run(_drive(spec, barrier))


def run_worker(
    drive: Drive,
    spec: Any,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[dict[str, Any]],
) -> None:
    """Entry point of one load process: ``drive`` it, put one result dict on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        outcome = drive(spec, barrier)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            barrier.abort()  # do not leave the other workers waiting
        outcome = {"failure": f"{type(exc).__name__}: {exc}"}
    outcome["index"] = spec.index
    results.put(outcome)


@dataclass
class WindowProbe:
    """A reading taken in the parent at the start and at the end of the measured window.

    ``read`` is called (in a thread of the parent) ``warmup`` seconds after the load
    processes pass their start barrier, which the parent then waits at too, and again
    ``duration`` seconds later: e.g. a counter of the server under test, so that its
    change covers the same span as the calls counted. ``seconds`` is the span between
    the two readings; both stay None when the run fails before the window ends.
    """

    read: Callable[[], Any]
    start: Any = None
    end: Any = None
    seconds: float = math.nan

    def watch(
        self, barrier: multiprocessing.synchronize.Barrier, warmup: float, duration: float
    ) -> None:
        try:
            barrier.wait(WORKER_SLACK)
        except threading.BrokenBarrierError:
            return  # a worker failed; run_processes reports it
        begin = time.monotonic() + warmup
        time.sleep(max(0.0, begin - time.monotonic()))
        self.start, started = self.read(), time.monotonic()
        time.sleep(max(0.0, begin + duration - time.monotonic()))
        self.end = self.read()
        self.seconds = time.monotonic() - started


def run_processes(
    label: str,
    drive: Drive,
    specs: Sequence[Any],
    args: argparse.Namespace,
    check_alive: Callable[[], None],
    probe: WindowProbe | None = None,
) -> tuple[list[float], Counter[str]]:
    """Run ``drive(spec, barrier)`` in one process per spec; merge their samples.

    ``drive`` is a module-level function (it is pickled into a spawned process) returning
    a dict with ``latencies`` (array of doubles as bytes) and ``errors``; each spec has an
    ``index``. ``args`` needs ``warmup`` and ``duration`` (to bound the wait);
    ``check_alive`` raises if the server under test died. With ``probe``, the parent
    takes its readings at the start and end of the measured window (``WindowProbe``).
    Every process is stopped on the way out, whatever happens.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that already ran gRPC
    barrier = ctx.Barrier(len(specs) + (1 if probe is not None else 0))
    watcher = None
    if probe is not None:
        watcher = threading.Thread(
            target=probe.watch,
            args=(barrier, args.warmup, args.duration),
            name=f"{label}-probe",
            daemon=True,
        )
    results: multiprocessing.queues.Queue[dict[str, Any]] = ctx.Queue()
    workers = [
        ctx.Process(target=run_worker, args=(drive, spec, barrier, results), name=f"{label}-{i}")
        for i, spec in enumerate(specs)
    ]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    received: set[int] = set()
    deadline = time.monotonic() + args.warmup + args.duration + CALL_TIMEOUT + WORKER_SLACK
    try:
        for process in workers:
            process.start()
        if watcher is not None:
            watcher.start()
        while len(received) < len(workers):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label} processes did not finish") from None
                exited = [w for w in workers if w.exitcode is not None]
                if len(exited) > len(received):
                    barrier.abort()
                    raise RuntimeError(f"a {label} process died without a result") from None
                continue
            received.add(item["index"])
            if "failure" in item:
                barrier.abort()
                raise RuntimeError(f"{label} process {item['index']} failed: {item['failure']}")
            chunk = array.array("d")
            chunk.frombytes(item["latencies"])
            latencies.extend(chunk)
            errors.update(item["errors"])
        for process in workers:
            process.join(10.0)
        if watcher is not None:
            # The workers stop at the window's end too; its last reading is due by now.
            watcher.join(CALL_TIMEOUT + WORKER_SLACK)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    return latencies, errors


def run_load(
    target: str,
    address: str,
    call: CallSpec,
    args: argparse.Namespace,
    server: ServerProcess,
    probe: WindowProbe | None = None,
) -> TargetResult:
    """Run ``args.processes`` load processes against one target and merge their results.

    ``args`` needs ``processes``, ``concurrency``, ``warmup`` and ``duration``; ``probe``
    is read at the start and end of the measured window (``WindowProbe``).
    """
    specs = [
        WorkerSpec(i, target, address, call, args.concurrency, args.warmup, args.duration)
        for i in range(args.processes)
    ]
    latencies, errors = run_processes(
        f"load-{target}", drive_grpc, specs, args, server.check_alive, probe
    )
    server.check_alive()
    return summarize(target, call.label, latencies, errors, args.duration)


def load_target(
    target: str,
    address: str,
    call: CallSpec,
    args: argparse.Namespace,
    server: ServerProcess,
    progress: Callable[[str], None],
    *,
    show_p99: bool = False,
) -> TargetResult:
    """``run_load``, saying what it loads before and what it measured after."""
    progress(
        f"loading {target}: {args.processes} x {args.concurrency} in flight, "
        f"{args.warmup:g}s warm-up + {args.duration:g}s"
    )
    result = run_load(target, address, call, args, server)
    p99 = f", p99 {result.p99_ms:.2f} ms" if show_p99 else ""
    progress(f"{target}: {result.calls} calls, {result.qps:.1f} QPS{p99}")
    return result


# --------------------------------------------------------------------------- paced (open-loop) load

CHECK_METHOD = "/bulwark.v1.RateLimitService/Check"
MAX_IN_FLIGHT = 256  # calls a paced process keeps outstanding at most; beyond, it skips


@dataclass(frozen=True)
class PacedSpec:
    """What one open-loop load process sends: serialized ``CheckRequest``s at a fixed rate.

    Calls go to ``addresses`` in turn (list an address several times to weight it) with
    ``requests`` in turn, starting at index ``offset``. The schedule does not wait for
    answers: the call due at ``n / rate`` seconds after the start is sent then, however
    slowly the servers answer (at most ``MAX_IN_FLIGHT`` outstanding; a call due beyond
    that is counted as skipped, not sent). A call counts when it was *sent* within the
    measured window (after ``warmup``, for ``duration``), whenever its answer arrives.

    ``window_s`` > 0: answered calls are also tallied per window of ``window_s`` seconds
    (epoch-aligned, as fixed windows are) by the time they were sent, named by the
    window's start in units of ``window_s``: ``[answered, allowed, allowed with a
    reset_after of 0]``. A fixed window's exact answer always has time left in its
    window (reset_after > 0); 0 means the answer came from a share of a window that
    had already ended when it was spent. A call sent just before a boundary and
    decided after it is tallied in the window it was sent in: a caller that stops
    sending a little before a boundary, by more than its calls take, sees no such call
    at that boundary.

    ``by_answer``: tallied instead in the window that counted the call, by its answer.
    The decision came between sending and answer, and ``reset_after`` runs from it to
    the end of its window, so that end is the one multiple of ``window_s`` in
    ``[sent + reset_after, answered + reset_after]`` (a call takes less than a window).
    Exact for a limit decided by its counter's owner; not for answers from a share,
    whose ``reset_after`` runs to the end of the window it was granted in.
    """

    addresses: list[str]
    rate: float  # calls per second from this process
    warmup: float
    duration: float
    requests: list[bytes]
    offset: int = 0
    window_s: float = 0.0
    by_answer: bool = False


def _new_tally() -> dict[str, int]:
    # local_ok: allowed by a replica on its own part of the limit (local_fallback: the
    # counter's owner did not answer in time), counted in ok too.
    return {"ok": 0, "over": 0, "errors": 0, "local_ok": 0}


async def drive_paced(spec: PacedSpec, start_at: float) -> dict[str, Any]:
    """Run one ``PacedSpec`` from wall-clock ``start_at``; its counts (see ``run_paced``)."""
    from bulwark.v1 import ratelimit_pb2  # the stubs, in the spawned process only

    channels = {a: grpc.aio.insecure_channel(a) for a in dict.fromkeys(spec.addresses)}
    calls = [
        channels[a].unary_unary(
            CHECK_METHOD,
            request_serializer=None,
            response_deserializer=ratelimit_pb2.CheckResponse.FromString,
        )
        for a in spec.addresses
    ]
    counts = {**_new_tally(), "skipped": 0}
    by_address = {a: _new_tally() for a in channels}
    windows: dict[int, list[int]] = {}  # window start (in window_s units) -> see PacedSpec
    first_send = last_send = math.nan  # wall-clock times of calls sent in the window
    in_flight = 0
    behind = 0.0  # the furthest the sender fell behind its schedule, in seconds
    slowest = 0.0  # the longest a measured call took to be answered, in seconds
    tasks: set[asyncio.Task[None]] = set()
    ok_code = ratelimit_pb2.CHECK_CODE_OK

    async def one(call: Any, address: str, body: bytes, measured: bool) -> None:
        nonlocal in_flight, slowest
        sent_at = time.time()
        try:
            answer = await call(body, timeout=CALL_TIMEOUT)
            if measured:
                slowest = max(slowest, time.time() - sent_at)
                outcome = "ok" if answer.overall_code == ok_code else "over"
                counts[outcome] += 1
                by_address[address][outcome] += 1
                if answer.local_fallback and outcome == "ok":
                    counts["local_ok"] += 1
                    by_address[address]["local_ok"] += 1
                if spec.window_s > 0:
                    window = math.floor(sent_at / spec.window_s)
                    if spec.by_answer and answer.results:
                        reset_after = answer.results[0].reset_after.ToNanoseconds() / 1e9
                        window = math.ceil((sent_at + reset_after) / spec.window_s) - 1
                    tally = windows.setdefault(window, [0, 0, 0])
                    tally[0] += 1
                    if outcome == "ok":
                        tally[1] += 1
                        late = answer.results and not answer.results[0].reset_after.ToNanoseconds()
                        tally[2] += bool(late)
        except grpc.aio.AioRpcError:
            if measured:
                counts["errors"] += 1
                by_address[address]["errors"] += 1
        finally:
            in_flight -= 1

    try:
        for channel in channels.values():
            await asyncio.wait_for(channel.channel_ready(), SERVING_TIMEOUT)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        begin = time.monotonic()
        measure_from = begin + spec.warmup
        end = measure_from + spec.duration
        sent = 0
        n = spec.offset
        while (now := time.monotonic()) < end:
            measured = measure_from <= now
            due = int((now - begin) * spec.rate) - sent
            if measured and due > 1:
                behind = max(behind, (due - 1) / spec.rate)
            for _ in range(due):
                sent += 1
                if in_flight >= MAX_IN_FLIGHT:
                    counts["skipped"] += measured
                    continue
                in_flight += 1
                n += 1
                if measured:
                    last_send = time.time()
                    if math.isnan(first_send):
                        first_send = last_send
                task = asyncio.create_task(
                    one(
                        calls[n % len(calls)],
                        spec.addresses[n % len(calls)],
                        spec.requests[n % len(spec.requests)],
                        measured,
                    )
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.002)
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
    finally:
        for channel in channels.values():
            await channel.close()
    return {
        "counts": counts,
        "by_address": by_address,
        "windows": {str(k): v for k, v in windows.items()},
        "first_send": first_send,
        "last_send": last_send,
        "behind_s": behind,
        "slowest_s": slowest,
    }


def _paced_worker(
    index: int,
    spec: PacedSpec,
    start_at: float,
    out: multiprocessing.queues.Queue[dict[str, Any]],
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        result = asyncio.run(drive_paced(spec, start_at))
    except BaseException as exc:
        result = {"failure": f"{type(exc).__name__}: {exc}"}
    out.put({**result, "index": index})


def run_paced(
    specs: Sequence[PacedSpec],
    start_at: float,
    check_alive: Callable[[], None] = lambda: None,
    progress: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each spec in a process of its own from wall-clock ``start_at``; their results,
    in the order of ``specs``.

    Each result holds ``counts`` (``ok``, ``over``, ``errors``, ``skipped``, and
    ``local_ok``: allowed on a replica's own part of the limit, its counter's owner
    having not answered in time), the same
    per address (``by_address``), the per-window tallies (``windows``, see
    ``PacedSpec``), the wall-clock times of the first and the last call sent in the
    measured window, ``behind_s``, the furthest the sender fell behind its schedule, and
    ``slowest_s``, the longest a call took to be answered.
    ``progress`` is called about every 2 s with the seconds since ``start_at``;
    ``check_alive`` raises if a server under load died. Every process is stopped on the
    way out, whatever happens; the wait is bounded by the load's length.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that already ran gRPC
    out: multiprocessing.queues.Queue[dict[str, Any]] = ctx.Queue()
    workers = [
        ctx.Process(target=_paced_worker, args=(i, spec, start_at, out), daemon=True)
        for i, spec in enumerate(specs)
    ]
    longest = max(spec.warmup + spec.duration for spec in specs)
    deadline = start_at + longest + CALL_TIMEOUT + WORKER_SLACK
    results: list[dict[str, Any]] = []
    shown = time.time()
    try:
        for worker in workers:
            worker.start()
        while len(results) < len(workers):
            try:
                item = out.get(timeout=0.5)
            except queue.Empty:
                check_alive()
                now = time.time()
                if now > deadline:
                    raise TimeoutError("the load processes did not finish") from None
                if sum(w.exitcode is not None for w in workers) > len(results):
                    raise RuntimeError("a load process died without a result") from None
                if progress is not None and now - shown >= 2.0 and now >= start_at:
                    shown = now
                    progress(now - start_at)
                continue
            if "failure" in item:
                raise RuntimeError(f"a load process failed: {item['failure']}")
            results.append(item)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
        out.close()
        out.join_thread()
    return sorted(results, key=lambda result: int(result["index"]))
