"""One caller, one decision per call: the contenders measured in alternating turns.

Holds ``Peer`` (a decision function called back to back by one caller, its outcomes and
latencies), the pybreaker contender with its Redis-shared state (round trips counted
with ``INFO stats``), the bare echo contender that is the floor of that shape, the
alternating turns that expose every contender to the same drifting background load, and
the table that reports them.
"""

from __future__ import annotations

import array
import contextlib
import importlib.metadata
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
import pybreaker
import redis
from bench_load import percentile
from bench_servers import CALL_TIMEOUT, ECHO_METHOD

# Fields compared by ``bench_report.ratios`` between two peers.
PEER_RATIOS = {"calls_per_s": "calls_per_s", "p50": "p50_ms", "p99": "p99_ms"}


def pybreaker_version() -> str:
    """pybreaker's installed version."""
    return importlib.metadata.version("pybreaker")


@dataclass
class PeerResult:
    """One caller making one decision per call, in a loop, for a fixed time."""

    peer: str
    calls: int
    denied: int
    errors: int
    duration_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    round_trips_per_call: float
    round_trips: str


class Peer:
    """One contender: a decision function and its accumulated measurements."""

    def __init__(self, key: str, label: str, decide: Callable[[], bool], round_trips: str) -> None:
        self.key = key
        self.label = label
        self.decide = decide
        self.round_trips = round_trips
        self.allowed = self.denied = self.errors = 0
        self.seconds = 0.0
        self.latencies = array.array("d")
        self.backend_ops = 0  # counted round trips, when the peer can count them

    def before_slice(self) -> None:
        """Hook: called just before each measured slice."""

    def after_slice(self) -> None:
        """Hook: called just after each measured slice."""

    def warm_up(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.decide()

    def run_slice(self, seconds: float) -> None:
        """Call ``decide`` back to back for ``seconds``; add the outcomes and latencies."""
        clock, decide, latencies = time.perf_counter, self.decide, self.latencies
        self.before_slice()
        begin = clock()
        end = begin + seconds
        while (started := clock()) < end:
            try:
                ok = decide()
            except Exception:
                self.errors += 1
                continue
            latencies.append(clock() - started)
            if ok:
                self.allowed += 1
            else:
                self.denied += 1
        self.seconds += clock() - begin
        self.after_slice()

    def one_round_trip_each(self) -> None:
        """Count one round trip per decision (a peer that makes one call per decision)."""
        self.backend_ops = self.allowed + self.denied + self.errors

    def ops_per_call(self) -> float:
        calls = self.allowed + self.denied + self.errors
        return self.backend_ops / calls if calls else math.nan

    def result(self) -> PeerResult:
        ordered = sorted(self.latencies)
        return PeerResult(
            peer=self.label,
            calls=self.allowed,
            denied=self.denied,
            errors=self.errors,
            duration_s=self.seconds,
            calls_per_s=self.allowed / self.seconds if self.seconds else math.nan,
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            round_trips_per_call=self.ops_per_call(),
            round_trips=self.round_trips,
        )


class PybreakerPeer(Peer):
    """pybreaker with ``CircuitRedisStorage`` guarding a no-op; counts Redis commands."""

    def __init__(self, client: redis.Redis) -> None:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"bulwark-bench-{os.getpid()}"
        )
        self.breaker = pybreaker.CircuitBreaker(state_storage=storage, name="bench")
        self._client = client
        self._before = 0
        breaker = self.breaker

        def noop() -> None:
            return None

        def decide() -> bool:
            try:
                breaker.call(noop)
            except pybreaker.CircuitBreakerError:
                return False
            return True

        super().__init__(
            "pybreaker_redis",
            f"pybreaker {pybreaker_version()} + Redis (CircuitRedisStorage)",
            decide,
            "Redis commands (one round trip each), counted with INFO stats",
        )

    def _commands(self) -> int:
        return int(self._client.info("stats")["total_commands_processed"])

    def before_slice(self) -> None:
        self._before = self._commands()

    def after_slice(self) -> None:
        # The INFO of before_slice is counted by this one.
        self.backend_ops += self._commands() - self._before - 1


def echo_peer(stack: contextlib.ExitStack, address: str, payload: bytes) -> Peer:
    """The echo server called over one synchronous channel (closed by ``stack``)."""
    channel = stack.enter_context(grpc.insecure_channel(address))
    echo = channel.unary_unary(ECHO_METHOD)

    def echo_once() -> bool:
        echo(payload, timeout=CALL_TIMEOUT)
        return True

    return Peer(
        "echo_sequential",
        "bare grpc.aio echo (sync gRPC, 1 channel; the floor)",
        echo_once,
        "gRPC round trips",
    )


def take_turns(peers: Sequence[Peer], warmup: float, duration: float, slices: int) -> None:
    """Warm each peer up for ``warmup`` s, then ``slices`` rounds of ``duration / slices`` s.

    Every peer is measured for ``duration`` seconds in all, under the same (drifting)
    conditions of a shared machine.
    """
    for peer in peers:
        peer.warm_up(warmup)
    for _ in range(slices):
        for peer in peers:
            peer.run_slice(duration / slices)


def peer_table(results: Iterable[PeerResult], width: int) -> list[str]:
    """A header and a line per peer: calls/s, p50/p99 and round trips per call."""
    lines = [f"{'peer':<{width}} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}  round trips per call"]
    for r in results:
        lines.append(
            f"{r.peer:<{width}} {r.calls_per_s:>9.1f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f}  "
            f"{r.round_trips_per_call:.2f} {r.round_trips}"
        )
        if r.denied or r.errors:
            lines.append(f"{'':<{width}} denied {r.denied}, errors {r.errors}")
    return lines
