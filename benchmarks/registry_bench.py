"""Service registry: failover time beside the lease TTL, and PickInstance beside the echo.

What it measures, in one run, on one Bulwark replica (its own embedded etcd)
    1. Failover. A service ``bench-failover`` with 3 instances, each kept registered by
       its own ``bulwark instance`` agent process (``python -m bulwark_server instance
       --ttl TTL``, heartbeating every third of the TTL). ``--trials`` times: find the
       primary with GetPrimary, wait a random fraction of a heartbeat period (so the kill
       falls anywhere between two heartbeats), SIGKILL that primary's agent, and poll
       GetPrimary every ``--poll-interval`` until it names another instance; check that
       the epoch grew by exactly one. Then start a replacement agent (a new instance id)
       and wait until it is registered before the next trial. Timed from the kill:
       - the instance key's DELETE on a WatchInstances stream (etcd ended the lease);
       - the promotion as seen by the GetPrimary poll (the headline figure);
       - the promotion as seen on a WatchPrimary stream (the PUT with epoch + 1);
       - the new primary's agent printing ``{"event": "role", "role": "PRIMARY"}``, which
         happens on its next heartbeat after the promotion.
       The difference between the two stream arrivals is the leader's reaction (DELETE to
       promotion). Reported as min/p50/p90/max, next to the TTL and the bound TTL + 1 s,
       with how many trials met that bound.
    2. PickInstance under load. A service ``bench-pick`` with 5 instances registered
       directly with RegisterInstance (TTL 300 s, so they outlive the run without
       heartbeats), then QPS and latency percentiles of
       ``bulwark.v1.RegistryService/PickInstance`` without an affinity key (least load),
       and with an affinity key (rendezvous hashing; ``--keys`` distinct keys in turn),
       beside the bare ``grpc.aio`` echo server loaded the same way, which returns the
       serialized bytes of a real PickInstanceResponse.

How
    The machinery is that of ``bench_servers.py`` and ``bench_load.py``: the replica as a
    subprocess with a private embedded etcd in a temporary data dir, the echo server,
    ``--processes`` spawned load processes keeping ``--concurrency`` calls in flight each
    over one ``grpc.aio`` channel, warm-up discarded, exact merged percentiles. The failover part
    runs first, on an otherwise idle replica; its agents are stopped (SIGTERM, which
    deregisters) before part 2. The GetPrimary poll and both watch streams share one
    asyncio loop in this process and take their times with ``time.perf_counter`` when a
    response arrives; the agent's role line carries its own ``time.time()``, compared with
    this process's ``time.time()`` at the kill (same machine, same clock). The kill phase
    comes from ``random.Random(0)``, so runs are repeatable. Every subprocess and
    temporary directory is removed on exit, error or Ctrl-C.

Caveats
    The failover time is kill -> promotion, not last heartbeat -> promotion: etcd ends a
    lease TTL seconds after its last renewal, which came up to a third of a TTL before the
    kill, and etcd checks for expired leases only every 500 ms. Client and server share
    the machine's CPUs (2 cores where the numbers in RESULTS.md were taken): absolute QPS
    are lower bounds; the ratios are the meaningful figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from bench_load import CallSpec, TargetResult, echo_call, load_target, percentile
from bench_report import (
    NAMED_TARGET_RATIOS,
    add_json_option,
    add_load_options,
    bench_parser,
    load_settings,
    machine_info,
    machine_line,
    progress_to,
    ratio_lines,
    ratios,
    require_at_least_one,
    require_duration_warmup,
    run_and_print,
    shared_cpus_note,
    target_table,
    utc_now,
)
from bench_servers import (
    CALL_TIMEOUT,
    HOST,
    LEADER_TIMEOUT,
    BulwarkProcess,
    EchoProcess,
    ProcessGroup,
    ServerProcess,
    probe_getleader,
    stop_all,
)

from bulwark.v1 import registry_pb2, registry_pb2_grpc, watch_pb2

FAILOVER_SERVICE = "bench-failover"
PICK_SERVICE = "bench-pick"
AGENTS = 3
PICK_INSTANCES = 5
PICK_TTL_S = 300
REGISTER_TIMEOUT = 30.0  # seconds for an agent to register (a fresh interpreter starts)
PROMOTION_SLACK = 15.0  # seconds beyond the TTL to wait for a promotion before giving up
EVENT_TIMEOUT = 5.0  # seconds to wait for stream events and the agent's role line
BOUND_SLACK_S = 1.0  # the bound checked: TTL + this
TARGET_LABELS = {
    "pick": "Bulwark PickInstance, least load (no key)",
    "pick_affinity": "Bulwark PickInstance, affinity key",
    "echo": "Echo baseline (grpc.aio, raw bytes)",
}


_progress = progress_to("registry-bench")


# --------------------------------------------------------------------------- part 1: failover


class AgentProcess(ServerProcess):
    """``python -m bulwark_server instance``: prints one JSON line per registration or role.

    The "port" of the base class is set (to 1) by the agent's first ``"registered"``
    line, so ``wait_port`` waits for the registration; later lines stay in ``tail``.
    """

    def __init__(self, server: str, instance_id: str, ttl: int) -> None:
        self.instance_id = instance_id
        argv = [
            sys.executable,
            "-m",
            "bulwark_server",
            "instance",
            "--server",
            server,
            "--service",
            FAILOVER_SERVICE,
            "--id",
            instance_id,
            "--address",
            f"{HOST}:{20000 + int(instance_id.rsplit('-', 1)[1])}",
            "--ttl",
            str(ttl),
        ]
        super().__init__(f"agent {instance_id}", argv, port_stream="stdout")

    @staticmethod
    def _record(line: str) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _parse_port(self, line: str) -> int | None:
        return 1 if self._record(line).get("event") == "registered" else None

    def wait_registered(self, timeout: float) -> None:
        try:
            self.wait_port(timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.name} did not register: {exc}") from None

    def told_primary(self, epoch: int) -> float | None:
        """The agent's ``time`` on its line saying it is PRIMARY at ``epoch``, if printed.

        It prints a line only when its role or the epoch changes, so the last 40 lines
        the base class keeps reach back past the current epoch.
        """
        for line in tuple(self.tail):
            record = self._record(line)
            if (
                record.get("event") == "role"
                and record.get("role") == "PRIMARY"
                and record.get("epoch") == epoch
            ):
                return float(record["time"])
        return None


@dataclass
class Trial:
    """One kill of the primary's agent. Times are seconds from the SIGKILL."""

    index: int
    killed: str
    promoted: str
    epoch_before: int
    epoch_after: int
    kill_phase_s: float  # the random wait before the kill, after the previous settle
    key_deleted_s: float  # WatchInstances DELETE of the killed instance
    poll_s: float  # GetPrimary named the new primary
    watch_s: float  # WatchPrimary PUT at epoch_after
    reaction_s: float  # watch_s - key_deleted_s: the leader's DELETE -> promotion
    agent_told_s: float  # the new primary's agent printed its PRIMARY role line
    polls: int


@dataclass
class Spread:
    """min/p50/p90/max of one measure over the trials, in seconds."""

    samples: int
    min_s: float
    p50_s: float
    p90_s: float
    max_s: float


def spread(values: Sequence[float]) -> Spread:
    """Nearest-rank percentiles of the values that are not NaN."""
    ordered = sorted(v for v in values if not math.isnan(v))
    return Spread(
        samples=len(ordered),
        min_s=ordered[0] if ordered else math.nan,
        p50_s=percentile(ordered, 50),
        p90_s=percentile(ordered, 90),
        max_s=ordered[-1] if ordered else math.nan,
    )


MEASURES = {
    "key_deleted_s": "kill -> instance key deleted (WatchInstances)",
    "poll_s": "kill -> promotion seen by GetPrimary poll",
    "watch_s": "kill -> promotion seen on WatchPrimary",
    "reaction_s": "key deleted -> promotion (leader reaction)",
    "agent_told_s": "kill -> new primary's agent told (heartbeat)",
}


@dataclass
class FailoverResult:
    """All trials, and the spread of each measure."""

    ttl_s: int
    heartbeat_s: float
    poll_interval_s: float
    bound_s: float
    within_bound: int  # trials whose GetPrimary poll saw the promotion within bound_s
    agent_within_bound: int  # trials whose new primary's agent was told within bound_s
    epoch_plus_one: int
    trials: list[Trial]
    spreads: dict[str, Spread]


class _Streams:
    """WatchInstances and WatchPrimary on the failover service; arrival times by key."""

    def __init__(self) -> None:
        self.deleted: dict[str, float] = {}  # instance id -> perf_counter of its DELETE
        self.promoted: dict[int, float] = {}  # epoch -> perf_counter of its first PUT
        self.errors: list[str] = []

    async def _follow(
        self, label: str, events: AsyncIterator[Any], on_event: Callable[[Any, float], None]
    ) -> None:
        """``on_event(event, perf_counter at its arrival)`` for each event; errors noted."""
        try:
            async for event in events:
                on_event(event, time.perf_counter())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors.append(f"{label}: {type(exc).__name__}: {exc}")

    async def watch_instances(self, stub: registry_pb2_grpc.RegistryServiceStub) -> None:
        def on_event(event: registry_pb2.WatchInstancesResponse, now: float) -> None:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_DELETE:
                self.deleted.setdefault(event.instance.id, now)

        request = registry_pb2.WatchInstancesRequest(service=FAILOVER_SERVICE)
        await self._follow("WatchInstances", stub.WatchInstances(request), on_event)

    async def watch_primary(self, stub: registry_pb2_grpc.RegistryServiceStub) -> None:
        def on_event(event: registry_pb2.WatchPrimaryResponse, now: float) -> None:
            if event.type == watch_pb2.WATCH_EVENT_TYPE_PUT:
                self.promoted.setdefault(event.primary.epoch, now)

        request = registry_pb2.WatchPrimaryRequest(services=[FAILOVER_SERVICE])
        await self._follow("WatchPrimary", stub.WatchPrimary(request), on_event)

    def check(self) -> None:
        if self.errors:
            raise RuntimeError("a watch stream failed: " + "; ".join(self.errors))


async def _poll_until(predicate: Callable[[], bool], within: float) -> bool:
    """Check ``predicate`` every 10 ms for up to ``within`` seconds; its last value."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.01)
    return predicate()


async def _primary(stub: registry_pb2_grpc.RegistryServiceStub) -> registry_pb2.Primary:
    response = await stub.GetPrimary(
        registry_pb2.GetPrimaryRequest(service=FAILOVER_SERVICE), timeout=CALL_TIMEOUT
    )
    return response.primary


async def _failover(
    address: str,
    agents: dict[str, AgentProcess],
    everything: list[ServerProcess],
    replica: BulwarkProcess,
    args: argparse.Namespace,
) -> list[Trial]:
    ttl = args.ttl
    heartbeat = ttl / 3
    rng = random.Random(0)
    next_id = len(agents) + 1
    streams = _Streams()
    trials: list[Trial] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        tasks = [
            asyncio.create_task(streams.watch_instances(stub), name="watch-instances"),
            asyncio.create_task(streams.watch_primary(stub), name="watch-primary"),
        ]
        try:
            for index in range(1, args.trials + 1):
                streams.check()
                replica.check_alive()
                before = await _primary(stub)
                old = before.instance_id
                if old not in agents:
                    raise RuntimeError(f"the primary {old!r} is none of the live agents")
                victim = agents.pop(old)
                victim.check_alive()
                phase = rng.uniform(0.0, heartbeat)
                await asyncio.sleep(phase)
                wall_kill = time.time()
                t_kill = time.perf_counter()
                victim.proc.kill()  # SIGKILL: no deregistration, the lease has to run out
                polls = 0
                deadline = t_kill + ttl + PROMOTION_SLACK
                while True:
                    try:
                        after = await _primary(stub)
                    except grpc.aio.AioRpcError as exc:
                        raise RuntimeError(
                            f"GetPrimary failed during trial {index}: "
                            f"{exc.code().name}: {exc.details()}"
                        ) from None
                    t_poll = time.perf_counter()
                    polls += 1
                    if after.instance_id and after.instance_id != old:
                        break
                    if t_poll > deadline:
                        raise RuntimeError(
                            f"trial {index}: no promotion {ttl + PROMOTION_SLACK:g}s after "
                            f"killing {old}'s agent (primary: {after})"
                        )
                    await asyncio.sleep(args.poll_interval)
                await asyncio.to_thread(victim.proc.wait)
                new = after.instance_id
                await _poll_until(
                    lambda old=old, epoch=after.epoch: (
                        old in streams.deleted and epoch in streams.promoted
                    ),
                    EVENT_TIMEOUT,
                )
                streams.check()
                told_agent = agents.get(new)
                told: float | None = None
                if told_agent is not None and await _poll_until(
                    lambda a=told_agent, epoch=after.epoch: a.told_primary(epoch) is not None,
                    heartbeat + EVENT_TIMEOUT,
                ):
                    told = told_agent.told_primary(after.epoch)
                deleted = streams.deleted.get(old, math.nan) - t_kill
                watched = streams.promoted.get(after.epoch, math.nan) - t_kill
                trial = Trial(
                    index=index,
                    killed=old,
                    promoted=new,
                    epoch_before=before.epoch,
                    epoch_after=after.epoch,
                    kill_phase_s=phase,
                    key_deleted_s=deleted,
                    poll_s=t_poll - t_kill,
                    watch_s=watched,
                    reaction_s=watched - deleted,
                    agent_told_s=(told - wall_kill) if told is not None else math.nan,
                    polls=polls,
                )
                trials.append(trial)
                _progress(
                    f"trial {index}/{args.trials}: killed {old} (epoch {before.epoch}), "
                    f"{new} primary at epoch {after.epoch} after {trial.poll_s:.3f}s "
                    f"(key deleted at {trial.key_deleted_s:.3f}s, {polls} polls)"
                )
                if after.epoch != before.epoch + 1:
                    _progress(f"trial {index}: epoch went {before.epoch} -> {after.epoch}, not +1")

                # A replacement, so every trial starts with 3 instances.
                replacement = AgentProcess(address, f"inst-{next_id}", ttl)
                next_id += 1
                everything.append(replacement)
                await asyncio.to_thread(replacement.wait_registered, REGISTER_TIMEOUT)
                agents[replacement.instance_id] = replacement
                listed = await stub.ListInstances(
                    registry_pb2.ListInstancesRequest(service=FAILOVER_SERVICE),
                    timeout=CALL_TIMEOUT,
                )
                ids = sorted(i.id for i in listed.instances)
                if ids != sorted(agents):
                    raise RuntimeError(f"expected instances {sorted(agents)}, registry has {ids}")
            streams.check()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return trials


def measure_failover(
    address: str, everything: list[ServerProcess], replica: BulwarkProcess, args: argparse.Namespace
) -> FailoverResult:
    """Start the agents, run the trials; the agents stay in ``everything`` for the caller."""
    agents: dict[str, AgentProcess] = {}
    for n in range(1, AGENTS + 1):
        agent = AgentProcess(address, f"inst-{n}", args.ttl)
        everything.append(agent)
        agents[agent.instance_id] = agent
    for agent in agents.values():
        agent.wait_registered(REGISTER_TIMEOUT)

    async def first_primary() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            deadline = time.monotonic() + LEADER_TIMEOUT
            while not (await _primary(stub)).instance_id:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no primary for {FAILOVER_SERVICE} in {LEADER_TIMEOUT}s")
                await asyncio.sleep(0.05)

    asyncio.run(first_primary())
    _progress(f"{AGENTS} agents registered (TTL {args.ttl}s); {args.trials} trials")
    trials = asyncio.run(_failover(address, agents, everything, replica, args))
    bound = args.ttl + BOUND_SLACK_S
    return FailoverResult(
        ttl_s=args.ttl,
        heartbeat_s=args.ttl / 3,
        poll_interval_s=args.poll_interval,
        bound_s=bound,
        within_bound=sum(1 for t in trials if t.poll_s <= bound),
        agent_within_bound=sum(1 for t in trials if t.agent_told_s <= bound),
        epoch_plus_one=sum(1 for t in trials if t.epoch_after == t.epoch_before + 1),
        trials=trials,
        spreads={key: spread([getattr(t, key) for t in trials]) for key in MEASURES},
    )


# --------------------------------------------------------------------------- part 2: picks


def register_pick_instances(address: str) -> None:
    """RegisterInstance ``pick-1`` ... ``pick-5`` of PICK_SERVICE, TTL 300 s, SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        for n in range(1, PICK_INSTANCES + 1):
            instance = registry_pb2.Instance(
                service=PICK_SERVICE,
                id=f"pick-{n}",
                address=f"{HOST}:{30000 + n}",
                health=registry_pb2.INSTANCE_HEALTH_SERVING,
            )
            instance.ttl.FromSeconds(PICK_TTL_S)
            stub.RegisterInstance(
                registry_pb2.RegisterInstanceRequest(instance=instance), timeout=CALL_TIMEOUT
            )


def affinity_key(n: int) -> str:
    return f"user-{n}"


def pick_call(keys: int) -> CallSpec:
    """PickInstance without a key (least load), or with ``keys`` affinity keys in turn."""
    if not keys:
        return CallSpec(
            label="RegistryService/PickInstance",
            method="/bulwark.v1.RegistryService/PickInstance",
            request=registry_pb2.PickInstanceRequest(service=PICK_SERVICE),
            response_type=registry_pb2.PickInstanceResponse,
        )
    requests = tuple(
        registry_pb2.PickInstanceRequest(service=PICK_SERVICE, affinity_key=affinity_key(n))
        for n in range(keys)
    )
    return CallSpec(
        label="RegistryService/PickInstance (affinity key)",
        method="/bulwark.v1.RegistryService/PickInstance",
        request=requests[0],
        response_type=registry_pb2.PickInstanceResponse,
        requests=requests,
    )


def probe_picks(address: str, keys: int) -> tuple[bytes, dict[str, Any]]:
    """A least-load pick's bytes, and how picks spread over the instances (a sanity check)."""
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        least = [
            stub.PickInstance(
                registry_pb2.PickInstanceRequest(service=PICK_SERVICE), timeout=CALL_TIMEOUT
            )
            for _ in range(PICK_INSTANCES)
        ]
        keyed = {}
        for n in range(min(keys, 100)):
            request = registry_pb2.PickInstanceRequest(
                service=PICK_SERVICE, affinity_key=affinity_key(n)
            )
            first = stub.PickInstance(request, timeout=CALL_TIMEOUT).instance.id
            again = stub.PickInstance(request, timeout=CALL_TIMEOUT).instance.id
            if first != again:
                raise RuntimeError(f"affinity key {request.affinity_key!r}: {first} then {again}")
            keyed[first] = keyed.get(first, 0) + 1
    check = {
        "least_load_distinct_in_5_picks": len({r.instance.id for r in least}),
        "affinity_picks_by_instance": dict(sorted(keyed.items())),
    }
    return least[0].SerializeToString(), check


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything printed."""

    started_utc: str
    machine: dict[str, Any]
    note: str
    load: dict[str, Any]
    failover: FailoverResult | None = None
    pick: dict[str, TargetResult] = field(default_factory=dict)
    pick_check: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, load = report.machine, report.load
    lines = [
        f"Bulwark registry benchmark, started {report.started_utc}",
        machine_line(m, " (embedded, single member)"),
        f"Note: {report.note}",
    ]
    f = report.failover
    if f is not None:
        lines += [
            "",
            f"1. Failover: {AGENTS} `bulwark instance` agents, lease TTL {f.ttl_s}s (heartbeat "
            f"every {f.heartbeat_s:.2f}s), {len(f.trials)} trials: SIGKILL the primary's agent "
            f"at a random point of its heartbeat period, poll GetPrimary every "
            f"{f.poll_interval_s * 1000:g} ms",
            f"{'measure':<46} {'n':>3} {'min ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}",
        ]
        for key, label in MEASURES.items():
            s = f.spreads[key]
            lines.append(
                f"{label:<46} {s.samples:>3} {s.min_s * 1000:>8.1f} {s.p50_s * 1000:>8.1f} "
                f"{s.p90_s * 1000:>8.1f} {s.max_s * 1000:>8.1f}"
            )
        n = len(f.trials)
        lines += [
            f"Lease TTL {f.ttl_s}s; bound TTL + {BOUND_SLACK_S:g}s = {f.bound_s:g}s: promoted "
            f"within it in {f.within_bound}/{n} trials (GetPrimary poll), new primary's agent "
            f"told within it in {f.agent_within_bound}/{n}; epoch + 1 in {f.epoch_plus_one}/{n}",
        ]
    if report.pick:
        lines += [
            "",
            f"2. PickInstance under load ({PICK_INSTANCES} instances): {load['processes']} "
            f"processes x {load['concurrency']} in-flight calls, {load['warmup_s']:g}s warm-up "
            f"+ {load['duration_s']:g}s per target, one target after the other; "
            f"{load['keys']} affinity keys in turn; echo payload {load['echo_payload_bytes']} "
            "bytes",
            *target_table(
                ((TARGET_LABELS[key], r) for key, r in report.pick.items()), 42, compact=True
            ),
        ]
        c = report.pick_check
        if c:
            lines.append(
                f"Sanity: 5 least-load picks went to {c['least_load_distinct_in_5_picks']} "
                f"distinct instances; affinity keys by instance: "
                f"{c['affinity_picks_by_instance']}"
            )
    lines += ratio_lines(report.ratios)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = bench_parser(
        "registry_bench.py",
        "Measure Bulwark's service registry on one local replica (embedded etcd): "
        "(1) failover time, from SIGKILL of the primary's `bulwark instance` agent to the "
        "promotion of a backup, over --trials trials, beside the lease TTL; (2) "
        "RegistryService/PickInstance QPS and p50/p99, least-load and with an affinity "
        "key, beside a bare grpc.aio echo server under the same load. Everything runs on "
        "127.0.0.1; clients and servers share the same CPUs.",
    )
    fail = parser.add_argument_group("part 1: failover")
    fail.add_argument("--trials", type=int, default=20, help="primaries killed, one at a time")
    fail.add_argument(
        "--ttl", type=int, default=2, help="lease TTL of the agents' instances, 2-300 seconds"
    )
    fail.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between GetPrimary calls while waiting for the promotion",
    )
    load = parser.add_argument_group("part 2: PickInstance under load (as getleader_bench)")
    add_load_options(load)
    load.add_argument(
        "--keys", type=int, default=1000, help="distinct affinity keys user-0..user-<N-1>, in turn"
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "trials")
    if not 2 <= args.ttl <= 300:
        parser.error("--ttl must be 2-300 seconds (the registry's limits)")
    if args.poll_interval < 0:
        parser.error("--poll-interval must not be negative")
    require_at_least_one(parser, args, "processes", "concurrency", "keys")
    require_duration_warmup(parser, args)
    return args


def benchmark(args: argparse.Namespace) -> Report:
    """Start the servers, run both parts, stop everything; return the report."""
    machine = machine_info()
    report = Report(
        started_utc=utc_now(),
        machine=machine,
        note=shared_cpus_note(machine["cpus"]),
        load={**load_settings(args), "keys": args.keys},
    )
    with ProcessGroup("bulwark-registry-bench-", _progress) as group:
        _progress("starting Bulwark replica (embedded etcd) and the echo server...")
        replica = group.add(BulwarkProcess(str(group.root / "replica"), name="replica"))
        echo = group.add(EchoProcess())
        address = replica.wait_address()
        echo_address = echo.wait_address()
        probe_getleader(address)

        # Part 1: failover.
        _progress(f"failover: starting {AGENTS} `bulwark instance` agents (TTL {args.ttl}s)...")
        agents: list[ServerProcess] = []
        try:
            report.failover = measure_failover(address, agents, replica, args)
        finally:
            stop_all(reversed(agents), _progress)  # SIGTERM deregisters a live agent
        f = report.failover
        _progress(
            f"failover p50 {f.spreads['poll_s'].p50_s:.3f}s, max "
            f"{f.spreads['poll_s'].max_s:.3f}s; {f.within_bound}/{len(f.trials)} within "
            f"{f.bound_s:g}s"
        )

        # Part 2: PickInstance beside the echo.
        register_pick_instances(address)
        payload, report.pick_check = probe_picks(address, args.keys)
        report.load["echo_payload_bytes"] = len(payload)
        for key, target_address, call, server in (
            ("pick", address, pick_call(0), replica),
            ("pick_affinity", address, pick_call(args.keys), replica),
            ("echo", echo_address, echo_call(payload), echo),
        ):
            report.pick[key] = load_target(key, target_address, call, args, server, _progress)
        e = report.pick["echo"]
        for key, name in (("pick", "PickInstance"), ("pick_affinity", "PickInstance + key")):
            report.ratios.update(ratios(report.pick[key], e, NAMED_TARGET_RATIOS, f"{name} / echo"))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON)."""
    return run_and_print(
        parse_args(argv),
        benchmark,
        format_report,
        _progress,
        "servers, agents and load processes stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
