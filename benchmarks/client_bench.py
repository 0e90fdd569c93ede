"""The Python client's breaker decisions: local decisions/s, and trip → every client's cache.

What it measures, in one run, beside pybreaker with Redis-shared state
    1. Local decisions in one process. One ``bulwark.aio.AsyncClient`` connected to a
       real Bulwark replica, breaker ``bench`` created with the default configuration (so
       it stays CLOSED). Timed: ``await client.allow("bench")`` (answered from the
       watch-fed cache, no RPC), and ``async with client.breaker("bench"): pass`` (allow,
       then ``record()`` of the outcome, reported in the background in batches). Beside
       them, in the same process: pybreaker with its Redis-shared state
       (``pybreaker.CircuitRedisStorage``) guarding a no-op, ``breaker.call(noop)``: what
       a pybreaker user pays per decision. Each contender is warmed up for ``--warmup``
       seconds, then measured in ``--slices`` alternating turns (A B C A B C ...), so
       drifting background load hits all of them alike. In each turn a contender runs an
       untimed pass (decisions/s: a clock read every 256 decisions) and a timed pass (one
       ``perf_counter_ns`` pair around every decision: latency percentiles; each sample
       includes one clock read, ~0.05 us). Each pass lasts ``--duration / --slices`` seconds.
       The Bulwark loops yield to the event loop (``asyncio.sleep(0)``) after every 256
       decisions, so the client's watch and reporter tasks keep running, as they would
       in a service; that yield counts in decisions/s but not in the latencies. The
       Bulwark rows also count decisions not answered from the cache (expected 0); the
       pybreaker row counts Redis commands per decision (``INFO stats``).
    2. Trip → every client's cache. ``--clients`` client processes, each with its own
       AsyncClient watching the breaker ``client-bench-trip`` (``sliding_window_size=10``,
       ``minimum_number_of_calls=10``, 60 s wait in OPEN). Each client replaces its
       ``client.breakers.apply`` with a wrapper that, after the cache has applied a watch
       event, reads the breaker's state from the cache and, when it changed, writes
       ``time.time()`` and the state to stdout. The cache shows the change then, so a
       decision made at that moment would see it: no polling delay is added. The parent
       trips the breaker ``--trials`` times (after one unrecorded warm-up round) in two
       ways, taking turns trip by trip (in alternating order), so that both rows meet the
       same load on the machine and their ratio compares the paths, not the moments:
         * ``ForceState(FORCED_OPEN)`` over one gRPC stub (an operator's trip);
         * 10 failures ``record()``-ed by the parent's own AsyncClient, which reports
           them at once: failures are urgent after a quiet period or in a burst, and
           ``record()`` wakes the reporter (see ``bulwark._outcomes``); otherwise it
           wakes every 50 ms. The replica trips the breaker on that ReportOutcomes. This
           is the path of a real trip: failures seen by one client cut off the
           dependency for every client. With ``--background-rate`` the parent's client
           also records that many successes a second (another breaker) during these
           trips, so it is never quiet and only the burst rule hurries the failures.
       Latency per (client, trial) = the client's wall time of the first cache state
       OPEN/FORCED_OPEN minus the parent's wall time just before the trip (the ForceState
       call, or the first ``record()``). Between trials the parent resets the breaker
       with ``ForceState(CLOSED)``, waits until every client's cache shows CLOSED, then
       0.1-0.2 s more: at least one report interval (100 ms), so the parent's last
       report is over as after any quiet spell, and random over two of the reporter's
       50 ms cycles, so that trips fall at random points of it.

       Beside the failure row: its p50 and p99 over the ForceState row's, the
       ReportOutcomes calls the parent's client made during its trips, and that client's
       ReportOutcomes/s in steady state: recording 1000 outcomes/s on another breaker
       (default config, so it never trips) for ``--steady`` seconds, successes only, then
       5 % failures. Counted by wrapping the client's ``_run``.

       pybreaker + Redis, the same shape: ``--clients`` processes, each with a pybreaker
       on the same ``CircuitRedisStorage`` namespace, calling ``breaker.call(noop)`` at
       a fixed rate (every ``--pybreaker-interval`` seconds, 1 ms by default) and
       writing ``time.time()`` to stdout when a decision's outcome (allowed/refused)
       changes. The parent trips the shared breaker with ``breaker.open()`` (what
       pybreaker itself does when its failure count is reached: write ``opened_at`` and
       the state to Redis); latency per (client, trial) = the client's wall time when
       its first refusing decision returns minus the parent's wall time just before
       ``open()``. Reset with ``breaker.close()``, then the same waits. There is no
       "trip by failures" row for pybreaker: its failure counter is shared and any
       success resets it, so with clients calling a healthy no-op the parent's failures
       cannot reach ``fail_max`` in a row; the trip it would make is the ``open()`` above.

       What the comparison means: Bulwark pushes a trip to every client's cache (one etcd
       write, then the replica's watch fan-out), and decides locally, with no round trip,
       at every call; pybreaker keeps no state in the process and pulls it from Redis on
       every call (2 Redis commands per allowed decision), so a trip reaches a client on
       its next call: the latency is the wait for that call (up to the call interval)
       plus the call's own round trips, and it is paid for with those round trips on
       every decision, trip or no trip. A client that calls less often learns later.

    Reported for part 2: p50/p90/p99/max over all (client, trial) samples, and the same
    over the slowest client of each trial (when the trip had reached every client), plus
    the duration of the trip call itself (for the failure trips: from the first
    ``record()`` to the answer of the ReportOutcomes that carried them; the next trial
    waits for it). A trial lasts about 0.2 s, so ``--trials 200``
    (600 trips over the three rows) adds about two minutes.

How
    Bulwark runs as ``python -m bulwark_server serve`` on 127.0.0.1 with a free port and a
    private embedded etcd in a temporary data dir (``BulwarkProcess`` of
    ``bench_servers.py``); ``redis-server`` runs as a child process with no persistence
    (``RedisProcess`` and ``find_redis_server`` of ``bench_redis.py``, which installs it
    with ``apt-get`` when it is missing and this runs as root). The client processes of
    part 2 are this script with hidden ``--child-*`` flags; they exit when their stdin
    closes. Every subprocess and the temporary directory are removed on exit, error or
    Ctrl-C.

Caveats
    Everything shares the machine's CPUs (2 cores where the numbers in RESULTS.md were
    taken): the replica, its etcd, Redis, the parent and the client processes. Part 2's
    pybreaker clients call Redis 1000 times a second each while being measured, the
    Bulwark clients are idle (they need no call to learn of a trip), so the two rows do
    not run under the same CPU load. Part 1 measures one process's decision cost; the
    Redis round trips are over loopback, the shortest a network can make them.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pybreaker
import redis
from bench_load import LatencySummary, latency_summary, percentile
from bench_peers import PybreakerPeer, pybreaker_version
from bench_redis import RedisProcess, add_redis_options, find_redis_server, redis_versions
from bench_report import (
    add_json_option,
    bench_parser,
    cpu_times,
    latency_header,
    latency_row,
    machine_info,
    machine_line,
    progress_to,
    ratio,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    steal_share,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    HOST,
    BulwarkProcess,
    ProcessGroup,
    probe_getleader,
    watch_stdin,
)
from breaker_bench import ALLOW_BREAKER, prepare_allow_breaker
from compare_client_worker import BATCH, count

from bulwark.aio import AsyncClient
from bulwark.errors import BreakerOpenError
from bulwark.v1 import breaker_pb2, breaker_pb2_grpc

TRIP_BREAKER = "client-bench-trip"
STEADY_BREAKER = "client-bench-steady"  # default config: 100 calls before it can trip
TRIP_FAILURES = 10
ACTOR = "client-bench"
ROUND_TIMEOUT = 10.0  # seconds for every client to see one trip or one reset
# Seconds after a reset before the next trip, plus up to JITTER more. At least one report
# interval (100 ms): the parent's last report is over, as after any quiet spell.
SETTLE = 0.1
JITTER = 0.1  # random, so trips do not lock to the phase of the client's 50 ms reporter
STEADY_RATE = 1000.0  # outcomes recorded per second while the steady report rate is measured
STEADY_FAILURES = 0.05  # the background failure share of the second steady measurement
CHILD_READY_TIMEOUT = 60.0  # seconds for every client process to start and sync
CHILD_STOP_TIMEOUT = 5.0  # seconds a client process gets after its stdin closes
PYBREAKER_RESET_TIMEOUT = 3600  # seconds: a trip stays OPEN for the whole trial
OPEN_STATES = frozenset({breaker_pb2.BREAKER_STATE_OPEN, breaker_pb2.BREAKER_STATE_FORCED_OPEN})
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED


_progress = progress_to("client-bench")


# --------------------------------------------------------------------------- part 1


@dataclass
class DecisionResult:
    """One contender's decisions in one process, for a fixed time."""

    peer: str
    label: str
    decisions: int
    duration_s: float
    decisions_per_s: float
    timed_decisions: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    not_from_cache: int
    refused: int
    round_trips_per_decision: float
    round_trips: str


class _LocalPeer:
    """A contender of part 1; subclasses implement the untimed and the timed pass."""

    def __init__(self, key: str, label: str, round_trips: str) -> None:
        self.key = key
        self.label = label
        self.round_trips = round_trips
        self.decisions = 0
        self.seconds = 0.0
        self.latencies = array.array("q")  # nanoseconds, timed pass
        self.not_from_cache = 0
        self.refused = 0
        self.backend_ops = 0

    async def untimed(self, seconds: float) -> None:
        raise NotImplementedError

    async def timed(self, seconds: float) -> None:
        raise NotImplementedError

    def before_slice(self) -> None:
        """Hook: called before each turn (both passes)."""

    def after_slice(self) -> None:
        """Hook: called after each turn."""

    def result(self) -> DecisionResult:
        ordered = sorted(self.latencies)
        timed = len(ordered)

        def us(pct: float) -> float:
            return percentile(ordered, pct) / 1000

        calls = self.decisions + timed
        return DecisionResult(
            peer=self.key,
            label=self.label,
            decisions=self.decisions,
            duration_s=self.seconds,
            decisions_per_s=self.decisions / self.seconds if self.seconds else float("nan"),
            timed_decisions=timed,
            p50_us=us(50),
            p90_us=us(90),
            p99_us=us(99),
            p999_us=us(99.9),
            max_us=ordered[-1] / 1000 if ordered else float("nan"),
            not_from_cache=self.not_from_cache,
            refused=self.refused,
            round_trips_per_decision=self.backend_ops / calls if calls else float("nan"),
            round_trips=self.round_trips,
        )


class _AllowPeer(_LocalPeer):
    """``await client.allow(name)``."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        super().__init__(
            "bulwark_allow",
            "Bulwark AsyncClient.allow() (watch-fed cache)",
            "none: answered from the cache",
        )
        self.client = client
        self.name = name

    async def untimed(self, seconds: float) -> None:
        # The loop compare_commits.py runs on each side (compare_client_worker.py).
        n, took, bad = await count(self.client, self.name, seconds)
        self.seconds += took
        self.decisions += n
        self.not_from_cache += bad

    async def timed(self, seconds: float) -> None:
        allow, name, clock = self.client.allow, self.name, time.perf_counter_ns
        append = self.latencies.append
        end = clock() + int(seconds * 1e9)
        bad = 0
        while clock() < end:
            for _ in range(BATCH):
                started = clock()
                decision = await allow(name)
                append(clock() - started)
                if not decision.allowed or decision.source != "cache":
                    bad += 1
            await asyncio.sleep(0)
        self.not_from_cache += bad


class _GuardPeer(_LocalPeer):
    """``async with client.breaker(name): pass`` — allow, then record the outcome."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        super().__init__(
            "bulwark_breaker",
            "Bulwark `async with client.breaker()` (allow + record)",
            "none; outcomes reported in batches",
        )
        self.client = client
        self.name = name

    async def untimed(self, seconds: float) -> None:
        guard, name, clock = self.client.breaker, self.name, time.perf_counter
        n = refused = 0
        begin = clock()
        end = begin + seconds
        while clock() < end:
            for _ in range(BATCH):
                try:
                    async with guard(name) as decision:
                        if decision.source != "cache":
                            self.not_from_cache += 1
                except BreakerOpenError:
                    refused += 1
            n += BATCH
            await asyncio.sleep(0)
        self.seconds += clock() - begin
        self.decisions += n
        self.refused += refused

    async def timed(self, seconds: float) -> None:
        guard, name, clock = self.client.breaker, self.name, time.perf_counter_ns
        append = self.latencies.append
        end = clock() + int(seconds * 1e9)
        while clock() < end:
            for _ in range(BATCH):
                started = clock()
                try:
                    async with guard(name) as decision:
                        pass
                except BreakerOpenError:
                    self.refused += 1
                    continue
                append(clock() - started)
                if decision.source != "cache":
                    self.not_from_cache += 1
            await asyncio.sleep(0)


class _PybreakerLocalPeer(_LocalPeer):
    """pybreaker + ``CircuitRedisStorage``, ``breaker.call(noop)`` (``PybreakerPeer``'s)."""

    def __init__(self, client: redis.Redis) -> None:
        self.peer = PybreakerPeer(client)
        super().__init__(
            "pybreaker_redis",
            f"pybreaker {pybreaker_version()} + Redis, call(no-op)",
            "Redis commands, counted with INFO stats",
        )

    async def untimed(self, seconds: float) -> None:
        decide, clock = self.peer.decide, time.perf_counter
        n = refused = 0
        begin = clock()
        end = begin + seconds
        while clock() < end:  # blocks the loop: a pybreaker caller does the same
            if not decide():
                refused += 1
            n += 1
        self.seconds += clock() - begin
        self.decisions += n
        self.refused += refused

    async def timed(self, seconds: float) -> None:
        decide, clock = self.peer.decide, time.perf_counter_ns
        append = self.latencies.append
        end = clock() + int(seconds * 1e9)
        while clock() < end:
            started = clock()
            ok = decide()
            append(clock() - started)
            if not ok:
                self.refused += 1

    def before_slice(self) -> None:
        self.peer.before_slice()

    def after_slice(self) -> None:
        # The pybreaker peer counts the Redis commands of the turn (with INFO stats).
        self.peer.after_slice()
        self.backend_ops = self.peer.backend_ops


async def measure_local(
    address: str, redis_port: int, warmup: float, duration: float, slices: int
) -> dict[str, DecisionResult]:
    """Part 1: one AsyncClient and one pybreaker in this process, taking turns."""
    prepare_allow_breaker(address)  # breaker "bench", default config, CLOSED
    client_redis = redis.Redis(host=HOST, port=redis_port)
    try:
        async with AsyncClient(address) as client:
            deadline = time.monotonic() + ROUND_TIMEOUT
            while (view := client.breakers.get(ALLOW_BREAKER)) is None or view.state != CLOSED:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the client's cache never showed {ALLOW_BREAKER!r} CLOSED")
                await asyncio.sleep(0.01)
            pyb = _PybreakerLocalPeer(client_redis)
            peers: list[_LocalPeer] = [
                _AllowPeer(client, ALLOW_BREAKER),
                _GuardPeer(client, ALLOW_BREAKER),
                pyb,
            ]
            for peer in peers:
                await peer.untimed(warmup)
                peer.decisions = 0
                peer.seconds = 0.0
                peer.not_from_cache = peer.refused = 0
            turn = duration / slices
            for _ in range(slices):
                for peer in peers:
                    peer.before_slice()
                    await peer.untimed(turn)
                    await peer.timed(turn)
                    peer.after_slice()
                    await asyncio.sleep(0)  # let the client's tasks catch up between turns
            state = pyb.peer.breaker.current_state
            if state != pybreaker.STATE_CLOSED:
                raise RuntimeError(f"pybreaker left CLOSED during the benchmark ({state})")
            return {peer.key: peer.result() for peer in peers}
    finally:
        client_redis.close()


# --------------------------------------------------------------------------- part 2 children


def _emit(kind: str, wall: float) -> None:
    print(f"{kind} {wall!r}", flush=True)


def _state_word(state: int) -> str:
    if state in OPEN_STATES:
        return "open"
    if state == CLOSED:
        return "closed"
    return f"state-{state}"


async def child_bulwark(address: str, name: str) -> None:
    """One Bulwark client: report every change of ``name``'s state in its cache."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watch_stdin(lambda: loop.call_soon_threadsafe(stop.set))
    client = AsyncClient(address, client_id=f"client-bench-{os.getpid()}")
    cache = client.breakers
    original = cache.apply
    last: list[int | None] = [None]

    def apply(event: breaker_pb2.WatchBreakersResponse, now_mono: float, now_wall: float) -> None:
        original(event, now_mono, now_wall)
        view = cache.get(name)
        state = view.state if view is not None else breaker_pb2.BREAKER_STATE_UNSPECIFIED
        if state != last[0]:
            last[0] = state
            _emit(_state_word(state), time.time())

    cache.apply = apply  # type: ignore[method-assign]
    async with client:
        if cache.synced_at is None:
            raise RuntimeError("the breaker watch did not sync")
        _emit("ready", time.time())
        await stop.wait()


def child_pybreaker(port: int, namespace: str, interval: float) -> None:
    """One pybreaker client: decide every ``interval`` s; report each change of outcome."""
    stop = threading.Event()
    watch_stdin(stop.set)
    client = redis.Redis(host=HOST, port=port)
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
    breaker = pybreaker.CircuitBreaker(
        reset_timeout=PYBREAKER_RESET_TIMEOUT, state_storage=storage, name="client-bench"
    )

    def noop() -> None:
        return None

    last: str | None = None
    ready = False
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            try:
                breaker.call(noop)
                outcome = "closed"
            except pybreaker.CircuitBreakerError:
                outcome = "open"
            wall = time.time()
            if outcome != last:
                last = outcome
                _emit(outcome, wall)
            if not ready:
                ready = True
                _emit("ready", time.time())
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # behind: no burst to catch up
    finally:
        client.close()


# --------------------------------------------------------------------------- part 2 parent


@dataclass
class TripResult:
    """Trip → every client's cache (or next decision), over all trials."""

    system: str
    trip: str
    clients: int
    trials: int
    missed: int
    each_client: LatencySummary
    slowest_client: LatencySummary
    trip_call: LatencySummary


class _Fleet:
    """The client processes of part 2 and what their stdout says."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.procs: list[asyncio.subprocess.Process] = []
        self.states: list[str] = []
        self.ready: list[bool] = []
        self.tails: list[deque[str]] = []
        self.changed = asyncio.Condition()
        self.t0: float | None = None  # wall time just before this trial's trip
        self.arrivals: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.exited: list[str] = []

    async def start(self, argvs: list[list[str]]) -> None:
        for index, argv in enumerate(argvs):
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
            self.states.append("unknown")
            self.ready.append(False)
            self.tails.append(deque(maxlen=20))
            self._tasks.append(asyncio.create_task(self._read(index, proc)))
            self._tasks.append(asyncio.create_task(self._drain(index, proc)))

    async def _read(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            kind, _, value = raw.decode().strip().partition(" ")
            async with self.changed:
                if kind == "ready":
                    self.ready[index] = True
                else:
                    self.states[index] = kind
                    if (
                        kind == "open"
                        and self.t0 is not None
                        and index not in self.arrivals
                        and value
                    ):
                        self.arrivals[index] = float(value) - self.t0
                self.changed.notify_all()
        await proc.wait()
        async with self.changed:
            self.exited.append(f"{self.label} client {index} exited ({proc.returncode})")
            self.changed.notify_all()

    async def _drain(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            self.tails[index].append(raw.decode(errors="replace").rstrip())

    def failure(self) -> str:
        lines = list(self.exited)
        for index, tail in enumerate(self.tails):
            if tail:
                lines.append(f"client {index} stderr:\n    " + "\n    ".join(tail))
        return "\n  ".join(lines)

    async def wait_until(self, predicate: Callable[[], bool], what: str, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit), self.changed:
                await self.changed.wait_for(lambda: bool(self.exited) or predicate())
        except TimeoutError:
            _progress(f"timed out waiting for {what}")
            return False
        if self.exited:
            raise RuntimeError(f"a client process ended early:\n  {self.failure()}")
        return True

    def all_in(self, state: str) -> bool:
        return all(s == state for s in self.states)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), CHILD_STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_trials(
    fleet: _Fleet,
    system: str,
    trips: Sequence[tuple[str, Callable[[], Awaitable[None]]]],
    reset: Callable[[], Awaitable[None]],
    trials: int,
) -> list[TripResult]:
    """One warm-up round, then ``trials`` recorded ones; each round trips once by each of
    ``trips`` (label, trip), in turn and in alternating order, so that every row sees the
    same load on the machine; reset and wait after each trip."""
    clients = len(fleet.procs)
    samples: list[list[float]] = [[] for _ in trips]
    slowest: list[list[float]] = [[] for _ in trips]
    calls: list[list[float]] = [[] for _ in trips]
    missed = [0 for _ in trips]
    for trial in range(trials + 1):
        order = list(range(len(trips)))
        if trial % 2:
            order.reverse()
        for row in order:
            async with fleet.changed:
                fleet.arrivals = {}
                fleet.t0 = t0 = time.time()
            await trips[row][1]()
            call = time.time() - t0
            await fleet.wait_until(
                lambda: len(fleet.arrivals) == clients,
                f"trip {trial} ({trips[row][0]}) to reach every client",
                ROUND_TIMEOUT,
            )
            async with fleet.changed:
                fleet.t0 = None
                arrivals = dict(fleet.arrivals)
            if trial:
                calls[row].append(call)
                samples[row].extend(arrivals.values())
                missed[row] += clients - len(arrivals)
                if len(arrivals) == clients:
                    slowest[row].append(max(arrivals.values()))
            await reset()
            if not await fleet.wait_until(
                lambda: fleet.all_in("closed"),
                f"reset {trial} to reach every client",
                ROUND_TIMEOUT,
            ):
                raise RuntimeError(f"the reset to CLOSED did not reach every {system} client")
            await asyncio.sleep(SETTLE + random.uniform(0, JITTER))
    return [
        TripResult(
            system=system,
            trip=label,
            clients=clients,
            trials=trials,
            missed=missed[row],
            each_client=latency_summary(samples[row]),
            slowest_client=latency_summary(slowest[row]),
            trip_call=latency_summary(calls[row]),
        )
        for row, (label, _) in enumerate(trips)
    ]


def _child_argv(*flags: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *flags]


@dataclass
class SteadyReports:
    """The ReportOutcomes calls one AsyncClient sends while outcomes trickle in."""

    failure_share: float
    outcomes_per_s: float
    seconds: float
    outcomes: int
    reports: int
    reports_per_s: float


@dataclass
class BulwarkTrips:
    """Part 2's Bulwark rows, and the report rates of the client that records the failures."""

    rows: list[TripResult]
    steady: list[SteadyReports]
    reports_during_failure_trips: int
    background_rate: float


class _ReportCounter:
    """Counts the ReportOutcomes calls an AsyncClient makes (wraps its ``_run``); ``tripped``
    is set when one carrying TRIP_BREAKER's outcomes has been answered."""

    def __init__(self, client: AsyncClient) -> None:
        self.count = 0
        self.tripped = asyncio.Event()
        original = client._run

        async def run(remote: Any) -> Any:
            if remote.method != "ReportOutcomes":
                return await original(remote)
            self.count += 1
            try:
                return await original(remote)
            finally:
                if any(o.name == TRIP_BREAKER for o in remote.request.outcomes):
                    self.tripped.set()

        client._run = run  # type: ignore[method-assign]


async def record_steadily(
    client: AsyncClient, rate: float, failure_share: float, seconds: float | None = None
) -> int:
    """Record ``rate`` outcomes a second on STEADY_BREAKER (a ``failure_share`` of them
    failures) for ``seconds``, or until cancelled; the outcomes recorded."""
    rng = random.Random(1)
    begin = time.monotonic()
    done = 0
    try:
        while seconds is None or time.monotonic() - begin < seconds:
            due = int((time.monotonic() - begin) * rate)
            for _ in range(due - done):
                client.record(STEADY_BREAKER, success=rng.random() >= failure_share)
            done = due
            await asyncio.sleep(0.001)
    except asyncio.CancelledError:
        pass
    return done


async def measure_steady_reports(
    client: AsyncClient, counter: _ReportCounter, seconds: float, failure_share: float
) -> SteadyReports:
    """Reports/s of ``client`` while it records STEADY_RATE outcomes/s for ``seconds``."""
    await asyncio.sleep(0.2)  # what came before has been reported
    before, begin = counter.count, time.monotonic()
    outcomes = await record_steadily(client, STEADY_RATE, failure_share, seconds)
    took = time.monotonic() - begin
    reports = counter.count - before
    return SteadyReports(
        failure_share=failure_share,
        outcomes_per_s=outcomes / took,
        seconds=took,
        outcomes=outcomes,
        reports=reports,
        reports_per_s=reports / took,
    )


async def measure_bulwark_trips(
    address: str, clients: int, trials: int, steady_seconds: float, background_rate: float
) -> BulwarkTrips:
    """Part 2, Bulwark: ForceState(FORCED_OPEN), and 10 failures recorded by a client."""
    results: list[TripResult] = []
    async with contextlib.AsyncExitStack() as stack:
        channel = grpc.aio.insecure_channel(address)
        stack.push_async_callback(channel.close)
        control = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        config = breaker_pb2.BreakerConfig(sliding_window_size=10, minimum_number_of_calls=10)
        config.wait_duration_in_open_state.FromSeconds(60)
        await control.PutBreaker(
            breaker_pb2.PutBreakerRequest(name=TRIP_BREAKER, config=config), timeout=CALL_TIMEOUT
        )
        await control.PutBreaker(
            breaker_pb2.PutBreakerRequest(name=STEADY_BREAKER), timeout=CALL_TIMEOUT
        )

        def force(state: int, reason: str) -> Callable[[], Awaitable[None]]:
            request = breaker_pb2.ForceStateRequest(
                name=TRIP_BREAKER, state=state, reason=reason, actor=ACTOR
            )

            async def run() -> None:
                await control.ForceState(request, timeout=CALL_TIMEOUT)

            return run

        reset = force(CLOSED, "benchmark reset")
        await reset()
        fleet = _Fleet("bulwark")
        stack.push_async_callback(fleet.stop)
        await fleet.start(
            [
                _child_argv("--child-bulwark", address, "--child-breaker", TRIP_BREAKER)
                for _ in range(clients)
            ]
        )
        if not await fleet.wait_until(
            lambda: all(fleet.ready) and fleet.all_in("closed"),
            "the Bulwark clients to sync",
            CHILD_READY_TIMEOUT,
        ):
            raise RuntimeError(f"the Bulwark clients did not sync:\n  {fleet.failure()}")
        reporter = AsyncClient(address, client_id=f"{ACTOR}-reporter")
        await stack.enter_async_context(reporter)
        counter = _ReportCounter(reporter)

        async def fail() -> None:
            # The trip call, as ForceState's: until the report of the failures is answered.
            counter.tripped.clear()
            for _ in range(TRIP_FAILURES):
                reporter.record(TRIP_BREAKER, success=False)
            await asyncio.wait_for(counter.tripped.wait(), ROUND_TIMEOUT)

        label = f"{TRIP_FAILURES} failures record()-ed by a client"
        background: asyncio.Task[int] | None = None
        if background_rate > 0:
            label += f" also recording {background_rate:g} successes/s"
            background = asyncio.create_task(record_steadily(reporter, background_rate, 0.0))
        _progress(
            f"Bulwark: {clients} clients synced; trips by ForceState(FORCED_OPEN) and by "
            f"{TRIP_FAILURES} failures recorded in the parent's AsyncClient, taking turns"
        )
        before = counter.count
        try:
            forced = force(breaker_pb2.BREAKER_STATE_FORCED_OPEN, "benchmark trip")
            trips = [("ForceState(FORCED_OPEN) RPC", forced), (label, fail)]
            results.extend(await run_trials(fleet, "Bulwark AsyncClient", trips, reset, trials))
        finally:
            if background is not None:
                background.cancel()
                await background
        during = counter.count - before
        steady: list[SteadyReports] = []
        for share in (0.0, STEADY_FAILURES):
            _progress(
                f"Bulwark: the reporter's ReportOutcomes/s at {STEADY_RATE:g} outcomes/s, "
                f"{share:.0%} failures, for {steady_seconds:g}s"
            )
            steady.append(await measure_steady_reports(reporter, counter, steady_seconds, share))
    return BulwarkTrips(results, steady, during, background_rate)


async def measure_pybreaker_trips(
    redis_port: int, clients: int, trials: int, interval: float
) -> TripResult:
    """Part 2, pybreaker: ``open()`` on the shared state; clients learn on their next call."""
    namespace = f"client-bench-{os.getpid()}"
    client = redis.Redis(host=HOST, port=redis_port)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(client.close)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
        breaker = pybreaker.CircuitBreaker(
            reset_timeout=PYBREAKER_RESET_TIMEOUT, state_storage=storage, name="client-bench"
        )
        breaker.close()

        async def trip() -> None:
            breaker.open()

        async def reset() -> None:
            breaker.close()

        fleet = _Fleet("pybreaker")
        stack.push_async_callback(fleet.stop)
        await fleet.start(
            [
                _child_argv(
                    "--child-pybreaker",
                    str(redis_port),
                    "--child-namespace",
                    namespace,
                    "--child-interval",
                    repr(interval),
                )
                for _ in range(clients)
            ]
        )
        if not await fleet.wait_until(
            lambda: all(fleet.ready) and fleet.all_in("closed"),
            "the pybreaker clients to start",
            CHILD_READY_TIMEOUT,
        ):
            raise RuntimeError(f"the pybreaker clients did not start:\n  {fleet.failure()}")
        _progress(
            f"pybreaker: {clients} clients calling every {interval * 1000:g} ms; open() trips"
        )
        label = f"open() (state in Redis); clients call every {interval * 1000:g} ms"
        (result,) = await run_trials(fleet, "pybreaker + Redis", [(label, trip)], reset, trials)
        return result


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything printed."""

    started_utc: str
    machine: dict[str, Any]
    note: str
    config: dict[str, Any]
    local: dict[str, DecisionResult] = field(default_factory=dict)
    allow_vs_pybreaker: dict[str, float] = field(default_factory=dict)
    trips: list[TripResult] = field(default_factory=list)
    # Bulwark's failure-reported trip row over its ForceState row, each client.
    failures_vs_force: dict[str, float] = field(default_factory=dict)
    steady: list[SteadyReports] = field(default_factory=list)
    reports_during_failure_trips: int = 0
    # CPU steal over the Bulwark trips (None: not measurable here).
    steal_during_trips: float | None = None


def _fmt_trip_row(label: str, s: LatencySummary) -> str:
    return latency_row(label, s, 30, samples=7, indent="  ")


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, c = report.machine, report.config
    lines = [
        f"Bulwark Python client benchmark, started {report.started_utc}",
        machine_line(m),
        f"Note: {report.note}",
        "",
        f"1. Local decisions in one process, breaker CLOSED: {c['warmup_s']:g}s warm-up each, "
        f"then {c['duration_s']:g}s untimed + {c['duration_s']:g}s timed each, in "
        f"{c['slices']} alternating turns",
        f"{'peer':<52} {'decisions/s':>12} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} "
        f"{'p99.9 us':>9} {'max us':>9}  round trips/decision",
    ]
    for r in report.local.values():
        lines.append(
            f"{r.label:<52} {r.decisions_per_s:>12.0f} {r.p50_us:>8.2f} {r.p90_us:>8.2f} "
            f"{r.p99_us:>8.2f} {r.p999_us:>9.2f} {r.max_us:>9.1f}  "
            f"{r.round_trips_per_decision:.2f} ({r.round_trips})"
        )
        if r.not_from_cache or r.refused:
            lines.append(f"{'':<52} not from cache {r.not_from_cache}, refused {r.refused}")
    if report.allow_vs_pybreaker:
        ratio = report.allow_vs_pybreaker
        lines.append(
            f"allow() / pybreaker+Redis: decisions/s {ratio['decisions_per_s']:.0f}x, "
            f"p50 {ratio['p50']:.4f}x, p99 {ratio['p99']:.4f}x; "
            f"breaker() / pybreaker+Redis: decisions/s {ratio['guard_decisions_per_s']:.0f}x"
        )
    if report.trips:
        lines += [
            "",
            f"2. Trip -> every client: {c['clients']} client processes, {c['trials']} trials "
            "(+1 warm-up) per row; ms from just before the trip to the client's cache "
            "showing OPEN (Bulwark) or its first refused decision (pybreaker)",
        ]
        if report.steal_during_trips is not None:
            lines.append(
                f"CPU steal during the Bulwark trips: {report.steal_during_trips:.0%} of the "
                "machine's CPU time went to other guests (every hop waits longer for a CPU)"
            )
        for t in report.trips:
            lines += [
                f"{t.system}, trip: {t.trip}",
                latency_header("", 30, samples=7, indent="  "),
                _fmt_trip_row("each client", t.each_client),
                _fmt_trip_row("slowest client of the trial", t.slowest_client),
                _fmt_trip_row(_trip_call_label(t), t.trip_call),
            ]
            if t.missed:
                lines.append(f"  missed: {t.missed} (client, trial) pairs saw no trip in time")
            if t.trip.startswith(f"{TRIP_FAILURES} failures"):
                lines += _failure_row_notes(report, t)
    return "\n".join(lines)


def _trip_call_label(t: TripResult) -> str:
    if t.trip.startswith(f"{TRIP_FAILURES} failures"):
        return "(record() to report's answer)"
    return "(the trip call itself)"


def _failure_row_notes(report: Report, t: TripResult) -> list[str]:
    """Beside the failure-reported trip row: its ratio to ForceState, and the report rates."""
    r = report.failures_vs_force
    lines = [
        f"  / ForceState row, each client: p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x; "
        f"ReportOutcomes sent by the recording client over the {t.trials + 1} rounds: "
        f"{report.reports_during_failure_trips}"
    ]
    for s in report.steady:
        lines.append(
            f"  steady state, that client: {s.reports_per_s:.2f} ReportOutcomes/s while "
            f"recording {s.outcomes_per_s:.0f} outcomes/s ({s.failure_share:.0%} failures) "
            f"for {s.seconds:.1f}s ({s.reports} reports)"
        )
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = bench_parser(
        "client_bench.py",
        "Measure the Bulwark Python client (AsyncClient) beside pybreaker with "
        "Redis-shared state, in one run: (1) local breaker decisions per second and "
        "their latency in one process; (2) the time from a trip to every client "
        "process's cache (Bulwark: pushed by WatchBreakers) or next decision "
        "(pybreaker: pulled from Redis on each call). Everything runs on 127.0.0.1; "
        "the replica, etcd, Redis and the clients share the CPUs.",
    )
    local = parser.add_argument_group("part 1: local decisions in one process")
    local.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="seconds per contender for each pass (untimed for decisions/s, timed for latency)",
    )
    local.add_argument("--warmup", type=float, default=0.5, help="discarded seconds per contender")
    local.add_argument(
        "--slices", type=int, default=4, help="alternating turns the contenders take"
    )
    trips = parser.add_argument_group("part 2: trip -> every client")
    trips.add_argument("--clients", type=int, default=4, help="client processes per system")
    trips.add_argument("--trials", type=int, default=20, help="recorded trips per row")
    trips.add_argument(
        "--steady",
        type=float,
        default=3.0,
        help="seconds the recording client's ReportOutcomes/s is measured in steady state "
        f"({STEADY_RATE:g} outcomes/s: successes only, then "
        f"{STEADY_FAILURES * 100:.0f}%% failures)",
    )
    trips.add_argument(
        "--background-rate",
        type=float,
        default=0.0,
        help="successes/s the recording client also records (another breaker) during the "
        "failure-reported trips, so its reports never pause (0: none)",
    )
    trips.add_argument(
        "--pybreaker-interval",
        type=float,
        default=0.001,
        help="seconds between two decisions of each pybreaker client",
    )
    add_redis_options(parser)
    add_json_option(parser)
    parser.add_argument("--child-bulwark", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--child-pybreaker", metavar="PORT", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-breaker", default=TRIP_BREAKER, help=argparse.SUPPRESS)
    parser.add_argument("--child-namespace", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child-interval", type=float, default=0.001, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    require_duration_warmup(parser, args)
    require_at_least_one(parser, args, "slices", "clients", "trials")
    if args.pybreaker_interval <= 0:
        parser.error("--pybreaker-interval must be positive")
    if args.steady <= 0 or args.background_rate < 0:
        parser.error("--steady must be positive and --background-rate not negative")
    return args


async def _measure(args: argparse.Namespace, report: Report, address: str, redis_port: int) -> None:
    _progress(
        f"local decisions: {args.warmup:g}s warm-up, then {args.slices} turns of "
        f"{args.duration / args.slices:g}s untimed + {args.duration / args.slices:g}s timed"
    )
    report.local = await measure_local(address, redis_port, args.warmup, args.duration, args.slices)
    for r in report.local.values():
        _progress(f"{r.label}: {r.decisions_per_s:.0f} decisions/s, p99 {r.p99_us:.2f} us")
    allow, guard = report.local["bulwark_allow"], report.local["bulwark_breaker"]
    py = report.local["pybreaker_redis"]
    report.allow_vs_pybreaker = {
        "decisions_per_s": ratio(allow.decisions_per_s, py.decisions_per_s),
        "p50": ratio(allow.p50_us, py.p50_us),
        "p99": ratio(allow.p99_us, py.p99_us),
        "guard_decisions_per_s": ratio(guard.decisions_per_s, py.decisions_per_s),
    }
    _progress(f"trips: {args.clients} Bulwark client processes, 1 + {args.trials} trips per way")
    cpu_before = cpu_times()
    bulwark = await measure_bulwark_trips(
        address, args.clients, args.trials, args.steady, args.background_rate
    )
    report.steal_during_trips = steal_share(cpu_before, cpu_times())
    report.trips = list(bulwark.rows)
    report.steady = bulwark.steady
    report.reports_during_failure_trips = bulwark.reports_during_failure_trips
    force, failures = (row.each_client for row in bulwark.rows)
    report.failures_vs_force = {
        "p50": ratio(failures.p50_ms, force.p50_ms),
        "p99": ratio(failures.p99_ms, force.p99_ms),
    }
    _progress(f"trips: {args.clients} pybreaker client processes, 1 + {args.trials} trips")
    report.trips.append(
        await measure_pybreaker_trips(
            redis_port, args.clients, args.trials, args.pybreaker_interval
        )
    )
    for t in report.trips:
        _progress(
            f"{t.system} / {t.trip}: each client p50 {t.each_client.p50_ms:.2f} ms, "
            f"p99 {t.each_client.p99_ms:.2f} ms"
        )
    for st in report.steady:
        _progress(f"steady, {st.failure_share:.0%} failures: {st.reports_per_s:.2f} reports/s")


def benchmark(args: argparse.Namespace) -> Report:
    """Start Bulwark and Redis, run both parts, stop everything; return the report."""
    redis_binary = find_redis_server(
        args.redis_server, install=not args.no_install_redis, progress=_progress
    )
    machine = {**machine_info(), "pybreaker": pybreaker_version(), **redis_versions(redis_binary)}
    report = Report(
        started_utc=utc_now(),
        machine=machine,
        note=(
            f"the replica, etcd, Redis and every client share this {machine['cpus']}-core "
            "machine on 127.0.0.1; Redis round trips are loopback ones."
        ),
        config={
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "slices": args.slices,
            "clients": args.clients,
            "trials": args.trials,
            "pybreaker_interval_s": args.pybreaker_interval,
            "steady_s": args.steady,
            "background_rate": args.background_rate,
        },
    )
    with ProcessGroup("bulwark-client-bench-", _progress) as group:
        _progress("starting Bulwark (embedded etcd) and redis-server...")
        bulwark = group.add(BulwarkProcess(str(group.root / "replica"), name="replica"))
        redis_proc = group.add(RedisProcess.under(redis_binary, group.root))
        address = bulwark.wait_address()
        probe_getleader(address)
        redis_proc.wait_ready()
        asyncio.run(_measure(args, report, address, redis_proc.port))
        bulwark.check_alive()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with a hidden ``--child-*`` flag, be one client of part 2)."""
    args = parse_args(argv)
    if args.child_bulwark or args.child_pybreaker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (stdin EOF)
        if args.child_bulwark:
            asyncio.run(child_bulwark(args.child_bulwark, args.child_breaker))
        else:
            child_pybreaker(args.child_pybreaker, args.child_namespace, args.child_interval)
        return 0
    return run_and_print(
        args, benchmark, format_report, _progress, "Bulwark, redis-server and clients stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
