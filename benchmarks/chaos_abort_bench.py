"""How fast a breached experiment stops hurting: from the breach to the faults gone.

What it measures
    One Bulwark replica with its embedded etcd (so it leads, and runs experiments).
    Each trial starts an experiment whose hypothesis is "breaker payments is not
    OPEN" and whose method is a fault rule on calls to payments; an ``AsyncClient``
    that opted in to chaos (``ClientOptions(chaos=True)``) follows the rules. The
    trial then breaks the steady state the way a fleet would: a ``ReportOutcomes``
    batch of failures that trips the breaker. Timed from just before that report:

    * ``abort``: until the client no longer holds the experiment's rule (the leader
      saw the breach, aborted, deleted the rule; the deletion reached the client's
      watch): the time during which the client would still inject faults;
    * ``trip`` (the baseline, same trials): until the same client's breaker cache
      shows the breaker OPEN: how long any state change takes to reach a client.

    Reported: p50/p90/max of both, the ratio abort / trip, and whether abort stays
    under the 1 s target in every trial.

How
    ``python benchmarks/chaos_abort_bench.py [--trials N] [--check-interval S]``.
    Everything started is stopped on exit; the run takes about ``trials`` seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence

import grpc.aio
from bench_report import (
    bench_parser,
    cpu_times,
    machine_info,
    machine_line,
    progress_to,
    steal_share,
    utc_now,
)
from bench_servers import BulwarkProcess, ProcessGroup, probe_getleader
from google.protobuf import duration_pb2

from bulwark import AsyncClient, ClientOptions
from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, chaos_pb2_grpc
from bulwark.v1 import chaos_pb2 as C

TARGET_S = 1.0
OPEN = breaker_pb2.BREAKER_STATE_OPEN
_progress = progress_to("chaos-abort")


def _state(client: AsyncClient, name: str) -> int | None:
    view = client.breakers.get(name)
    return view.state if view is not None else None


def _percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


async def _trial(
    address: str, client: AsyncClient, check_interval: float, index: int
) -> tuple[float, float]:
    """(abort, trip) seconds of one trial."""
    async with grpc.aio.insecure_channel(address) as channel:
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        chaos = chaos_pb2_grpc.ChaosServiceStub(channel)
        await breakers.ForceState(
            breaker_pb2.ForceStateRequest(name="payments", state=1, reason="bench reset"),
            timeout=5,
        )
        interval = duration_pb2.Duration()
        interval.FromNanoseconds(int(check_interval * 1e9))
        spec = C.ExperimentSpec(
            title=f"abort latency trial {index}",
            hypothesis=[C.Probe(breaker=C.BreakerProbe(breaker="payments", not_state=OPEN))],
            method=[
                C.MethodStep(
                    fault=C.FaultRule(
                        target=C.FaultTarget(downstream="payments"),
                        abort=C.FaultAbort(code=14, percentage=30),
                    )
                )
            ],
            duration=duration_pb2.Duration(seconds=60),
            check_interval=interval,
        )
        started = await chaos.StartExperiment(C.StartExperimentRequest(spec=spec), timeout=10)
        rule = started.experiment.fault_rules[0]
        faults = client.faults()
        assert faults is not None
        while rule not in faults.cache:
            await asyncio.sleep(0.001)
        while _state(client, "payments") in (None, OPEN):
            await asyncio.sleep(0.001)
        t0 = time.monotonic()
        await breakers.ReportOutcomes(
            breaker_pb2.ReportOutcomesRequest(
                reporter="bench",
                outcomes=[
                    breaker_pb2.BreakerOutcomes(
                        name="payments", counts=breaker_pb2.OutcomeCounts(failures=200)
                    )
                ],
            ),
            timeout=5,
        )
        trip = abort = None
        deadline = t0 + 10
        while (trip is None or abort is None) and time.monotonic() < deadline:
            now = time.monotonic()
            if trip is None and _state(client, "payments") == OPEN:
                trip = now - t0
            if abort is None and rule not in faults.cache:
                abort = now - t0
            await asyncio.sleep(0.0005)
        if trip is None or abort is None:
            raise RuntimeError(f"trial {index}: no trip or no abort within 10 s")
        return abort, trip


async def _measure(address: str, trials: int, check_interval: float) -> list[tuple[float, float]]:
    async with grpc.aio.insecure_channel(address) as channel:
        await breaker_pb2_grpc.CircuitBreakerServiceStub(channel).PutBreaker(
            breaker_pb2.PutBreakerRequest(name="payments"), timeout=5
        )
    client = AsyncClient(address, options=ClientOptions(service="bench", chaos=True))
    await client.start()
    try:
        results = []
        for index in range(trials):
            results.append(await _trial(address, client, check_interval, index))
            _progress(f"trial {index + 1}/{trials}: abort {results[-1][0] * 1000:.1f} ms")
        return results
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser("chaos_abort_bench.py", __doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="experiments, one after another")
    parser.add_argument(
        "--check-interval", type=float, default=0.1, help="the hypothesis' check interval (s)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 1000:
        parser.error("--trials must be 1-1000")
    if not 0.1 <= args.check_interval <= 10:
        parser.error("--check-interval must be 0.1-10 s")
    machine = machine_info()
    with ProcessGroup("bulwark-chaos-bench-", _progress) as group:
        _progress("starting Bulwark (embedded etcd)...")
        bulwark = group.add(BulwarkProcess(str(group.root / "replica"), name="replica"))
        address = bulwark.wait_address()
        probe_getleader(address)
        before = cpu_times()
        results = asyncio.run(_measure(address, args.trials, args.check_interval))
        steal = steal_share(before, cpu_times())
        bulwark.check_alive()
    aborts = [a for a, _ in results]
    trips = [t for _, t in results]
    print(f"chaos abort latency, {utc_now()}")
    print(machine_line(machine, f"; CPU steal {steal:.0%}" if steal is not None else ""))
    print(f"{args.trials} trials, hypothesis checked every {args.check_interval:g} s")
    for name, values in (("abort", aborts), ("trip (baseline)", trips)):
        print(
            f"  {name:<16} p50 {_percentile(values, 50) * 1000:7.1f} ms"
            f"  p90 {_percentile(values, 90) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
        )
    print(f"  abort / trip at p50: {_percentile(aborts, 50) / _percentile(trips, 50):.2f}x")
    within = max(aborts) < TARGET_S
    print(f"  every abort under {TARGET_S:g} s: {'yes' if within else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
