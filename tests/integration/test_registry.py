"""RegistryService against real etcd, `bulwark serve` replicas and `bulwark instance` agents.

Failover is measured from a SIGKILL of the primary's agent process to the
moment GetPrimary names another instance, and the epoch history is checked on a
WatchPrimary stream that runs the whole time. Tests that need no heartbeating
process register instances directly with a TTL long enough to outlive the test
(30 s) and report health and load with Heartbeat themselves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from bulwark.v1 import cluster_pb2, registry_pb2, registry_pb2_grpc, watch_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, start_replicas, wait_for

Code = grpc.StatusCode
Stub = registry_pb2_grpc.RegistryServiceStub

UNSPECIFIED = registry_pb2.INSTANCE_HEALTH_UNSPECIFIED
SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
NOT_SERVING = registry_pb2.INSTANCE_HEALTH_NOT_SERVING
DRAINING = registry_pb2.INSTANCE_HEALTH_DRAINING
PRIMARY = registry_pb2.ROLE_PRIMARY
BACKUP = registry_pb2.ROLE_BACKUP
SNAPSHOT = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT = watch_pb2.WATCH_EVENT_TYPE_PUT
DELETE = watch_pb2.WATCH_EVENT_TYPE_DELETE

AGENT_TTL = 2  # seconds: the shortest lease an instance may have
LONG_TTL = 30.0  # direct registrations that must outlive the test without heartbeats


def dur(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def unix(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


@contextlib.contextmanager
def registry(address: str) -> Iterator[Stub]:
    with grpc.insecure_channel(address) as channel:
        yield Stub(channel)


def register(
    stub: Stub,
    service: str,
    instance_id: str,
    *,
    priority: int = 0,
    zone: str = "",
    ttl: float = LONG_TTL,
    health: int = UNSPECIFIED,
) -> registry_pb2.RegisterInstanceResponse:
    instance = registry_pb2.Instance(
        service=service,
        id=instance_id,
        address=f"127.0.0.1:{9000 + sum(map(ord, instance_id)) % 1000}",
        zone=zone,
        priority=priority,
        health=health,
        ttl=dur(ttl),
    )
    return stub.RegisterInstance(registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5)


def heartbeat(
    stub: Stub,
    service: str,
    instance_id: str,
    *,
    health: int = UNSPECIFIED,
    load: registry_pb2.Load | None = None,
    epoch: int = 0,
) -> registry_pb2.HeartbeatResponse:
    request = registry_pb2.HeartbeatRequest(
        service=service, instance_id=instance_id, health=health, epoch=epoch
    )
    if load is not None:
        request.load.CopyFrom(load)
    return stub.Heartbeat(request, timeout=5)


def deregister(stub: Stub, service: str, instance_id: str) -> int:
    return stub.DeregisterInstance(
        registry_pb2.DeregisterInstanceRequest(service=service, instance_id=instance_id),
        timeout=5,
    ).revision


def get_primary(stub: Stub, service: str) -> registry_pb2.Primary | None:
    """The service's primary record, or None while the replica knows nothing of the service."""
    try:
        return stub.GetPrimary(registry_pb2.GetPrimaryRequest(service=service), timeout=5).primary
    except grpc.RpcError as exc:
        if exc.code() == Code.NOT_FOUND:  # type: ignore[attr-defined]
            return None
        raise


def wait_primary(
    stub: Stub,
    service: str,
    predicate: Callable[[registry_pb2.Primary], bool],
    timeout: float = 5.0,
) -> registry_pb2.Primary:
    def ready() -> registry_pb2.Primary | None:
        record = get_primary(stub, service)
        return record if record is not None and predicate(record) else None

    return wait_for(ready, timeout, interval=0.02)  # type: ignore[return-value]


def instances(stub: Stub, service: str) -> dict[str, registry_pb2.Instance]:
    page = stub.ListInstances(
        registry_pb2.ListInstancesRequest(service=service, page_size=1000), timeout=5
    )
    return {instance.id: instance for instance in page.instances}


def pick(stub: Stub, service: str, *, key: str = "", zone: str = "") -> str:
    request = registry_pb2.PickInstanceRequest(service=service, affinity_key=key, zone=zone)
    return stub.PickInstance(request, timeout=5).instance.id


def pick_all(stub: Stub, service: str, keys: list[str], batch: int = 500) -> dict[str, str]:
    """The instance each affinity key maps to, asked with many calls in flight at once."""
    out: dict[str, str] = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        futures = [
            stub.PickInstance.future(
                registry_pb2.PickInstanceRequest(service=service, affinity_key=key), timeout=30
            )
            for key in chunk
        ]
        for key, future in zip(chunk, futures, strict=True):
            out[key] = future.result().instance.id
    return out


def rpc_error(call: Callable[..., object], *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


class Stream:
    """Reads a server stream in a thread into a queue, so a test can wait with a timeout."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._items: queue.Queue[Any] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._call:
                self._items.put(item)
        except grpc.RpcError as exc:
            if exc.code() != Code.CANCELLED:  # type: ignore[attr-defined]
                self.error = exc

    def next(self, timeout: float) -> Any:
        try:
            return self._items.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no stream event within {timeout}s (stream error: {self.error})")

    def until(self, predicate: Callable[[Any], bool], timeout: float) -> list[Any]:
        """Events up to and including the first one matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            item = self.next(max(0.0, deadline - time.monotonic()))
            seen.append(item)
            if predicate(item):
                return seen

    def pending(self, settle: float = 0.0) -> list[Any]:
        """Everything received and not yet taken, after waiting ``settle`` seconds."""
        time.sleep(settle)
        out = []
        while True:
            try:
                out.append(self._items.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


class Agent:
    """One `bulwark instance` process; its JSON lines are collected by a thread."""

    def __init__(
        self, server: str, service: str, instance_id: str, *, priority: int = 0, ttl: int
    ) -> None:
        self.id = instance_id
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._other: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulwark_server",
                "instance",
                f"--server={server}",
                f"--service={service}",
                f"--id={instance_id}",
                f"--address=127.0.0.1:{9000 + sum(map(ord, instance_id)) % 1000}",
                f"--priority={priority}",
                f"--ttl={ttl}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            with self._lock:
                try:
                    self._events.append(json.loads(line))
                except ValueError:
                    self._other.append(line)

    def events(self, name: str, **match: object) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self._events
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
            ]

    def wait_event(self, name: str, timeout: float, **match: object) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, **match)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                with self._lock:
                    output = [*self._events, *self._other]
                pytest.fail(f"agent {self.id}: no {name} {match} within {timeout}s: {output}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self._finish()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._finish()

    def _finish(self) -> None:
        self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    """Start `bulwark instance` processes; all are stopped at the end of the test."""
    started: list[Agent] = []

    def start(
        server: str, service: str, instance_id: str, *, priority: int = 0, ttl: int = AGENT_TTL
    ) -> Agent:
        agent = Agent(server, service, instance_id, priority=priority, ttl=ttl)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def _is_leader(replica: ReplicaProcess) -> bool:
    return (get_leader(replica.address) or cluster_pb2.GetLeaderResponse()).is_self


@pytest.fixture
def replica(etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]) -> ReplicaProcess:
    """One replica, leading (so it promotes)."""
    solo = replica_factory("r0", [etcd.endpoint])
    wait_for(lambda: _is_leader(solo), 10)
    return solo


@pytest.fixture
def two_replicas(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> list[ReplicaProcess]:
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint])
    wait_for(lambda: any(_is_leader(r) for r in replicas), 10)
    return replicas


# -- failover --------------------------------------------------------------------------


def test_sigkill_of_the_primary_fails_over_within_ttl_plus_one_second_20_times(
    two_replicas: list[ReplicaProcess], agents: Callable[..., Agent]
):
    # 20 SIGKILLs: 5 in turn on each of 4 services at once. Each failover waits out
    # the instance's TTL; the services need not wait for each other.
    services, trials = [f"orders-{n}" for n in range(4)], 5
    server, observer = two_replicas[0].address, two_replicas[1].address
    with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
        runs = [pool.submit(_failovers, server, observer, s, trials, agents) for s in services]
        took = [elapsed for run in runs for elapsed in run.result()]
    assert len(took) == 20
    print(
        f"\nfailover after SIGKILL ({len(took)} trials, TTL {AGENT_TTL}s): "
        f"min {min(took):.2f}s p50 {statistics.median(took):.2f}s max {max(took):.2f}s"
    )


def _failovers(
    server: str, observer: str, service: str, trials: int, agents: Callable[..., Agent]
) -> list[float]:
    """SIGKILL ``service``'s primary ``trials`` times in turn, a new instance joining
    after each; how long each failover took. Every promotion is checked on the way,
    and the whole history at the end."""
    with registry(observer) as stub:
        watch = Stream(
            stub.WatchPrimary(registry_pb2.WatchPrimaryRequest(services=[service]), timeout=110)
        )
        try:
            live = {}
            for n in range(3):
                agent = agents(server, service, f"{service}-n{n:02d}")
                agent.wait_event("registered", 10)
                live[agent.id] = agent
            first = wait_primary(stub, service, lambda p: bool(p.instance_id))
            assert first.epoch == 1
            took = []
            for trial in range(trials):
                before = get_primary(stub, service)
                assert before is not None and before.instance_id in live
                victim = live.pop(before.instance_id)
                killed_at = time.monotonic()
                victim.kill()
                while True:
                    after = get_primary(stub, service)
                    assert after is not None
                    if after.instance_id and after.instance_id != before.instance_id:
                        break
                    if time.monotonic() - killed_at > AGENT_TTL + 5:
                        pytest.fail(f"{service} trial {trial}: {before.instance_id} still primary")
                    time.sleep(0.02)
                elapsed = time.monotonic() - killed_at
                took.append(elapsed)
                assert after.epoch == before.epoch + 1, (service, trial, before, after)
                assert after.instance_id in live
                assert after.previous_instance_id == before.instance_id
                assert elapsed <= AGENT_TTL + 1.0, (
                    f"{service} trial {trial}: failover took {elapsed:.2f}s"
                )
                fresh = agents(server, service, f"{service}-n{trial + 3:02d}")
                fresh.wait_event("registered", 10)
                live[fresh.id] = fresh
            final = get_primary(stub, service)
            assert final is not None and final.epoch == trials + 1
            records = watch.until(lambda e: e.primary.epoch == final.epoch, 5)
        finally:
            watch.close()
    assert watch.error is None

    epochs = [e.primary.epoch for e in records if e.type in (SNAPSHOT, PUT)]
    assert epochs == sorted(epochs), f"{service}: epochs went down: {epochs}"
    holders: dict[int, set[str]] = {}
    for event in records:
        if event.type in (SNAPSHOT, PUT):
            assert event.primary.instance_id, f"vacancy with SERVING backups: {event.primary}"
            holders.setdefault(event.primary.epoch, set()).add(event.primary.instance_id)
    assert set(holders) == set(range(1, trials + 2)), (service, sorted(holders))
    two = {epoch: ids for epoch, ids in holders.items() if len(ids) != 1}
    assert not two, f"{service}: two primaries in one epoch: {two}"
    return took


def test_promotion_skips_not_serving_and_a_vacancy_ends_when_a_backup_serves(
    replica: ReplicaProcess,
):
    service = "ledger"
    with registry(replica.address) as stub:
        watch = Stream(
            stub.WatchPrimary(registry_pb2.WatchPrimaryRequest(services=[service]), timeout=60)
        )
        try:
            register(stub, service, "p")
            first = wait_primary(stub, service, lambda p: p.instance_id == "p")
            assert first.epoch == 1
            register(stub, service, "b-high", priority=100)
            register(stub, service, "b-mid", priority=50)
            register(stub, service, "b-low", priority=10)
            heartbeat(stub, service, "b-high", health=NOT_SERVING)

            deregister(stub, service, "p")
            promoted = wait_primary(stub, service, lambda p: p.epoch > 1)
            assert promoted.instance_id == "b-mid", promoted  # not the NOT_SERVING b-high
            assert promoted.epoch == 2
            assert promoted.previous_instance_id == "p"

            heartbeat(stub, service, "b-low", health=NOT_SERVING)
            deregister(stub, service, "b-mid")
            vacant = wait_primary(stub, service, lambda p: not p.instance_id)
            assert vacant.epoch == 2  # kept: epochs never go down
            assert vacant.previous_instance_id == "b-mid"
            assert "no SERVING backup" in vacant.reason, vacant.reason
            seen = watch.until(lambda e: e.type == PUT and not e.primary.instance_id, 5)
            assert seen[-1].primary.epoch == 2
            with pytest.raises(grpc.RpcError) as err:
                pick(stub, service)
            assert err.value.code() == Code.FAILED_PRECONDITION

            heartbeat(stub, service, "b-low", health=SERVING)
            refilled = wait_primary(stub, service, lambda p: bool(p.instance_id))
            assert refilled.instance_id == "b-low"
            assert refilled.epoch == 3
            seen = watch.until(lambda e: e.primary.instance_id == "b-low", 5)
            assert seen[-1].primary.epoch == 3
        finally:
            watch.close()
    assert watch.error is None


def test_primary_reporting_not_serving_is_replaced_and_its_next_heartbeat_is_stale(
    replica: ReplicaProcess,
):
    service = "inventory"
    with registry(replica.address) as stub:
        register(stub, service, "a")
        wait_primary(stub, service, lambda p: p.instance_id == "a")
        register(stub, service, "b")
        beat = heartbeat(stub, service, "a", epoch=1)
        assert (beat.role, beat.epoch, beat.stale_epoch, beat.drain) == (PRIMARY, 1, False, False)
        assert beat.ttl.seconds == LONG_TTL

        heartbeat(stub, service, "a", health=NOT_SERVING, epoch=1)
        replaced = wait_primary(stub, service, lambda p: p.instance_id == "b")
        assert replaced.epoch == 2
        assert "NOT_SERVING" in replaced.reason, replaced.reason

        stale = heartbeat(stub, service, "a", epoch=1)
        assert stale.role == BACKUP
        assert stale.stale_epoch
        assert stale.epoch == 2
        assert stale.primary.instance_id == "b"
        fresh = heartbeat(stub, service, "b", epoch=2)
        assert (fresh.role, fresh.epoch, fresh.stale_epoch) == (PRIMARY, 2, False)

        # No failback: a serving again, or a higher-priority newcomer, leaves b in place.
        back = heartbeat(stub, service, "a", health=SERVING)
        assert (back.role, back.stale_epoch) == (BACKUP, False)
        register(stub, service, "c", priority=500)
        time.sleep(0.6)  # more than two rounds of the leader's loop
        kept = get_primary(stub, service)
        assert kept is not None and (kept.instance_id, kept.epoch) == ("b", 2)


def test_failover_prefers_the_old_primarys_zone_also_when_the_primary_left(
    replica: ReplicaProcess,
):
    # Best backup: priority, then lag, then the old primary's zone, then the smallest id.
    # Here priority and lag tie, so the zone decides over the id.
    service = "geo"
    with registry(replica.address) as stub:
        register(stub, service, "p", zone="z-b")
        wait_primary(stub, service, lambda p: p.instance_id == "p")
        for instance_id, zone in (("a1", "z-a"), ("b1", "z-b"), ("a2", "z-a"), ("b2", "z-b")):
            register(stub, service, instance_id, zone=zone)

        heartbeat(stub, service, "p", health=NOT_SERVING)
        second = wait_primary(stub, service, lambda p: p.epoch == 2)
        assert second.instance_id == "b1", second  # p's zone, though a1 has the smaller id

        deregister(stub, service, "b1")  # the primary leaves, as when its lease ends
        third = wait_primary(stub, service, lambda p: p.epoch == 3)
        assert third.instance_id == "b2", third  # b1's zone, though a1 has the smaller id


def test_sigterm_of_the_primary_agent_deregisters_and_a_backup_is_promoted_at_once(
    replica: ReplicaProcess, agents: Callable[..., Agent]
):
    service = "profiles"
    ttl = 10  # a promotion within a second cannot be the lease running out
    first = agents(replica.address, service, "s0", ttl=ttl)
    first.wait_event("registered", 10)
    with registry(replica.address) as stub:
        before = wait_primary(stub, service, lambda p: p.instance_id == "s0")
        backup = agents(replica.address, service, "s1", ttl=ttl)
        backup.wait_event("registered", 10)
        stopped_at = time.monotonic()
        first.stop()
        after = wait_primary(stub, service, lambda p: p.instance_id == "s1", timeout=ttl)
        took = time.monotonic() - stopped_at
    assert first.process.returncode == 0
    assert first.events("deregistered", id="s0")
    assert after.epoch == before.epoch + 1
    assert took < 1.0, f"promoted {took:.2f}s after SIGTERM"
    backup.wait_event("role", ttl / 3 + 2, role="PRIMARY", epoch=after.epoch)


# -- switchover ------------------------------------------------------------------------


def test_switchover_with_agents_drains_the_primary_before_promoting_the_target(
    replica: ReplicaProcess, agents: Callable[..., Agent]
):
    service = "payments"
    a = agents(replica.address, service, "a", priority=10)
    a.wait_event("registered", 10)
    with registry(replica.address) as stub:
        before = wait_primary(stub, service, lambda p: p.instance_id == "a")
        b = agents(replica.address, service, "b", priority=5)
        c = agents(replica.address, service, "c", priority=0)
        b.wait_event("registered", 10)
        c.wait_event("registered", 10)
        a.wait_event("role", 5, role="PRIMARY", epoch=before.epoch)

        started = time.monotonic()
        response = stub.Switchover(
            registry_pb2.SwitchoverRequest(
                service=service, target_instance_id="c", drain_timeout=dur(10)
            ),
            timeout=20,
        )
        took = time.monotonic() - started
    after = response.primary
    assert after.instance_id == "c"  # the target, not the best backup b
    assert after.epoch == before.epoch + 1
    assert after.previous_instance_id == "a"
    assert not after.HasField("switchover_target")
    assert "drained" in after.reason, after.reason
    assert took < 5.0, f"switchover took {took:.2f}s: it waited for the deadline"

    draining = a.wait_event("draining", 1)
    assert draining["epoch"] == before.epoch
    # The agent prints before it reports DRAINING; the promotion follows that report.
    assert draining["time"] <= unix(after.since) + 0.001, (draining, after.since)
    promoted = c.wait_event("role", 5, role="PRIMARY", epoch=after.epoch)
    demoted = a.wait_event("role", 5, role="BACKUP", epoch=after.epoch)
    assert draining["time"] <= promoted["time"]
    assert draining["time"] <= demoted["time"]
    assert not b.events("role", role="PRIMARY")


def test_switchover_waits_for_draining_then_promotes_the_target_promptly(
    replica: ReplicaProcess,
):
    service = "accounts"
    with registry(replica.address) as stub:
        register(stub, service, "x")
        wait_primary(stub, service, lambda p: p.instance_id == "x")
        register(stub, service, "y")
        register(stub, service, "z", priority=100)
        future = stub.Switchover.future(
            registry_pb2.SwitchoverRequest(
                service=service, target_instance_id="y", drain_timeout=dur(10)
            ),
            timeout=20,
        )
        try:
            requested = wait_primary(stub, service, lambda p: p.HasField("switchover_target"))
            assert requested.switchover_target == "y"
            assert (requested.instance_id, requested.epoch) == ("x", 1)
            for _ in range(5):
                beat = heartbeat(stub, service, "x", epoch=1)
                assert (beat.role, beat.epoch, beat.drain, beat.stale_epoch) == (
                    PRIMARY,
                    1,
                    True,
                    False,
                )
                current = get_primary(stub, service)
                assert current is not None and (current.instance_id, current.epoch) == ("x", 1)
                assert not future.done()
                time.sleep(0.2)
            assert not heartbeat(stub, service, "y").drain  # only the primary drains

            drained_at = time.monotonic()
            heartbeat(stub, service, "x", health=DRAINING, epoch=1)
            after = future.result(timeout=5).primary
            took = time.monotonic() - drained_at
        finally:
            future.cancel()
        assert after.instance_id == "y"  # the target, though z has the higher priority
        assert after.epoch == 2
        assert took < 1.5, f"promoted {took:.2f}s after DRAINING"
        old = heartbeat(stub, service, "x", epoch=1)
        assert (old.role, old.stale_epoch, old.drain) == (BACKUP, True, False)


def test_switchover_refuses_bad_targets_and_promotes_anyway_after_the_drain_timeout(
    replica: ReplicaProcess,
):
    service = "billing"
    with registry(replica.address) as stub:
        register(stub, service, "p")
        wait_primary(stub, service, lambda p: p.instance_id == "p")
        register(stub, service, "q")
        register(stub, service, "r")
        heartbeat(stub, service, "r", health=NOT_SERVING)

        def switchover(target: str, drain: float = 1.0) -> registry_pb2.SwitchoverResponse:
            return stub.Switchover(
                registry_pb2.SwitchoverRequest(
                    service=service, target_instance_id=target, drain_timeout=dur(drain)
                ),
                timeout=20,
            )

        err = rpc_error(switchover, "r")
        assert err.code() == Code.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "NOT_SERVING" in (err.details() or "")  # type: ignore[attr-defined]
        err = rpc_error(switchover, "ghost")
        assert err.code() == Code.NOT_FOUND  # type: ignore[attr-defined]
        assert "ghost" in (err.details() or "")  # type: ignore[attr-defined]
        err = rpc_error(switchover, "p")
        assert err.code() == Code.FAILED_PRECONDITION  # type: ignore[attr-defined]
        untouched = get_primary(stub, service)
        assert untouched is not None and untouched.instance_id == "p"
        assert not untouched.HasField("switchover_target")

        started = time.monotonic()
        after = switchover("q", drain=1.0).primary  # p never reports DRAINING
        took = time.monotonic() - started
        assert after.instance_id == "q"
        assert after.epoch == 2
        assert "did not drain in time" in after.reason, after.reason
        assert 0.9 <= took <= 2.5, f"promoted after {took:.2f}s with a 1 s drain timeout"


# -- picking ---------------------------------------------------------------------------


def test_affinity_keys_stay_put_when_one_of_five_instances_leaves(
    two_replicas: list[ReplicaProcess],
):
    service = "sessions"
    ids = [f"shard-{i}" for i in range(5)]
    keys = [f"user-{n}" for n in range(4_000)]
    with registry(two_replicas[0].address) as one, registry(two_replicas[1].address) as other:
        for instance_id in ids:
            # No heartbeats here: the TTL must outlive every pick, even on a starved machine.
            register(one, service, instance_id, ttl=300)
        for stub in (one, other):
            wait_for(lambda s=stub: len(instances(s, service)) == 5, 5)

        before = pick_all(one, service, keys)
        assert pick_all(other, service, keys) == before  # same mapping on every replica
        counts = {i: list(before.values()).count(i) for i in ids}
        assert all(640 <= n <= 960 for n in counts.values()), counts  # 800 ± 6 sigma

        removed = "shard-2"
        deregister(one, service, removed)
        for stub in (one, other):
            wait_for(lambda s=stub: removed not in instances(s, service), 5)
        after = pick_all(one, service, keys)
        assert pick_all(other, service, keys[:1_000]) == {k: after[k] for k in keys[:1_000]}

    was_on_removed = [k for k in keys if before[k] == removed]
    moved = [k for k in keys if after[k] != before[k]]
    assert len(moved) <= len(was_on_removed) + len(keys) // 50, (len(moved), len(was_on_removed))
    stayed = [k for k in keys if before[k] != removed and after[k] == before[k]]
    assert len(stayed) == len(keys) - len(was_on_removed)  # every surviving key kept its place
    assert removed not in after.values()


def test_least_load_picks_follow_reported_load_and_prefer_the_zone(replica: ReplicaProcess):
    service = "search"
    with registry(replica.address) as stub:
        register(stub, service, "l0", zone="eu-1a")
        register(stub, service, "l1", zone="eu-1b")
        register(stub, service, "l2", zone="eu-1b")

        def report(**loads: int) -> None:
            for instance_id, in_flight in loads.items():
                heartbeat(stub, service, instance_id, load=registry_pb2.Load(in_flight=in_flight))

        report(l0=50, l1=0, l2=50)
        picks = [pick(stub, service) for _ in range(20)]
        assert set(picks) == {"l1"}, picks

        report(l0=5, l1=80, l2=60)
        picks = [pick(stub, service) for _ in range(20)]
        assert set(picks) == {"l0"}, picks

        zoned = [pick(stub, service, zone="eu-1b") for _ in range(20)]
        assert set(zoned) <= {"l1", "l2"}, zoned  # l0 is less loaded but in another zone
        assert "l2" in zoned  # the least loaded of the zone
        assert set(pick(stub, service, zone="eu-1c") for _ in range(5)) == {"l0"}  # no one there

        heartbeat(stub, service, "l1", health=NOT_SERVING)
        heartbeat(stub, service, "l2", health=DRAINING)
        fallback = [pick(stub, service, zone="eu-1b") for _ in range(5)]
        assert set(fallback) == {"l0"}, fallback  # nothing SERVING left in the zone


# -- watches ---------------------------------------------------------------------------


def test_watch_instances_resumes_from_a_revision_and_reports_lease_expiry(
    replica: ReplicaProcess,
):
    service = "cart"
    with registry(replica.address) as stub:
        register(stub, service, "w1")
        register(stub, service, "w2")
        first = Stream(
            stub.WatchInstances(registry_pb2.WatchInstancesRequest(service=service), timeout=30)
        )
        try:
            snapshot = first.until(lambda e: e.type == SYNCED, 5)
        finally:
            first.close()
        assert [e.type for e in snapshot] == [SNAPSHOT, SNAPSHOT, SYNCED]
        assert sorted(e.instance.id for e in snapshot[:2]) == ["w1", "w2"]
        revision = snapshot[-1].revision
        assert revision >= max(e.revision for e in snapshot[:2])

        register(stub, service, "w3")
        heartbeat(stub, service, "w1", load=registry_pb2.Load(in_flight=7))
        gone_at = deregister(stub, service, "w2")

        resumed = Stream(
            stub.WatchInstances(
                registry_pb2.WatchInstancesRequest(service=service, start_revision=revision),
                timeout=30,
            )
        )
        try:
            changes = [resumed.next(5) for _ in range(3)]
            assert [(e.type, e.instance.id) for e in changes] == [
                (PUT, "w3"),
                (PUT, "w1"),
                (DELETE, "w2"),
            ]
            assert changes[1].instance.load.in_flight == 7
            assert changes[2].revision == gone_at
            revisions = [e.revision for e in changes]
            assert revision < revisions[0] < revisions[1] < revisions[2]
            assert resumed.pending(settle=0.5) == []  # no snapshot, nothing repeated

            registered_at = time.monotonic()
            register(stub, service, "w4", ttl=AGENT_TTL)  # never heartbeated
            put = resumed.next(2)
            assert (put.type, put.instance.id) == (PUT, "w4")
            expired = resumed.next(5)
            took = time.monotonic() - registered_at
        finally:
            resumed.close()
        assert (expired.type, expired.instance.id) == (DELETE, "w4")
        assert took <= AGENT_TTL + 1.5, f"expired lease removed after {took:.2f}s"
        assert "w4" not in instances(stub, service)


# -- validation and errors -------------------------------------------------------------


def _instance(**fields: Any) -> registry_pb2.RegisterInstanceRequest:
    instance = registry_pb2.Instance(service="svc", id="i-1", address="127.0.0.1:9000")
    for name, value in fields.items():
        if isinstance(value, duration_pb2.Duration | registry_pb2.Load):
            getattr(instance, name).CopyFrom(value)
        else:
            setattr(instance, name, value)
    return registry_pb2.RegisterInstanceRequest(instance=instance)


def _beat(**fields: Any) -> registry_pb2.HeartbeatRequest:
    request = registry_pb2.HeartbeatRequest(service="svc", instance_id="i-1")
    for name, value in fields.items():
        if isinstance(value, registry_pb2.Load):
            request.load.CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


BAD_REQUESTS = [
    ("RegisterInstance", _instance(service=""), "instance.service"),
    ("RegisterInstance", _instance(id="bad id!"), "instance.id"),
    ("RegisterInstance", _instance(address=""), "instance.address"),
    ("RegisterInstance", _instance(ttl=dur(1)), "instance.ttl"),
    ("RegisterInstance", _instance(priority=5000), "instance.priority"),
    ("RegisterInstance", _instance(health=9), "instance.health"),
    (
        "RegisterInstance",
        _instance(load=registry_pb2.Load(in_flight=-1)),
        "instance.load.in_flight",
    ),
    ("RegisterInstance", _instance(load=registry_pb2.Load(cpu=math.nan)), "instance.load.cpu"),
    ("Heartbeat", _beat(service=""), "service"),
    ("Heartbeat", _beat(instance_id="a/b"), "instance_id"),
    ("Heartbeat", _beat(load=registry_pb2.Load(in_flight=-1)), "load.in_flight"),
    ("Heartbeat", _beat(load=registry_pb2.Load(cpu=math.nan)), "load.cpu"),
    ("Heartbeat", _beat(health=9), "health"),
    ("Heartbeat", _beat(epoch=-1), "epoch"),
    ("DeregisterInstance", registry_pb2.DeregisterInstanceRequest(service="svc"), "instance_id"),
    ("ListInstances", registry_pb2.ListInstancesRequest(service="svc", page_size=-1), "page_size"),
    (
        "PickInstance",
        registry_pb2.PickInstanceRequest(service="svc", affinity_key="k" * 1025),
        "affinity_key",
    ),
    ("PickInstance", registry_pb2.PickInstanceRequest(service="svc", zone="eu 1"), "zone"),
    ("GetPrimary", registry_pb2.GetPrimaryRequest(service="no/slash"), "service"),
    (
        "Switchover",
        registry_pb2.SwitchoverRequest(service="svc", drain_timeout=dur(301)),
        "drain_timeout",
    ),
    (
        "Switchover",
        registry_pb2.SwitchoverRequest(service="svc", target_instance_id="bad id"),
        "target_instance_id",
    ),
]

BAD_STREAMS = [
    (
        "WatchInstances",
        registry_pb2.WatchInstancesRequest(service="svc", start_revision=-1),
        "start_revision",
    ),
    ("WatchInstances", registry_pb2.WatchInstancesRequest(service=""), "service"),
    ("WatchPrimary", registry_pb2.WatchPrimaryRequest(start_revision=-1), "start_revision"),
    ("WatchPrimary", registry_pb2.WatchPrimaryRequest(services=["ok", "bad name"]), "services[1]"),
]


def test_bad_input_is_invalid_argument_naming_the_field_and_missing_things_are_named(
    replica: ReplicaProcess,
):
    with registry(replica.address) as stub:
        for method, request, field in BAD_REQUESTS:
            err = rpc_error(getattr(stub, method), request, timeout=5)
            assert err.code() == Code.INVALID_ARGUMENT, (method, field, err)  # type: ignore[attr-defined]
            assert field in (err.details() or ""), (method, err.details())  # type: ignore[attr-defined]
        for method, request, field in BAD_STREAMS:
            stream = getattr(stub, method)(request, timeout=5)
            err = rpc_error(next, stream)
            assert err.code() == Code.INVALID_ARGUMENT, (method, field, err)  # type: ignore[attr-defined]
            assert field in (err.details() or ""), (method, err.details())  # type: ignore[attr-defined]

        # Nothing was stored by the refused requests, and missing things say so.
        assert instances(stub, "svc") == {}
        err = rpc_error(stub.GetPrimary, registry_pb2.GetPrimaryRequest(service="svc"), timeout=5)
        assert err.code() == Code.NOT_FOUND  # type: ignore[attr-defined]
        err = rpc_error(heartbeat, stub, "svc", "i-1")
        assert err.code() == Code.NOT_FOUND  # type: ignore[attr-defined]
        err = rpc_error(pick, stub, "svc")
        assert err.code() == Code.NOT_FOUND  # type: ignore[attr-defined]
        err = rpc_error(deregister, stub, "svc", "i-1")
        assert err.code() == Code.NOT_FOUND  # type: ignore[attr-defined]

        register(stub, "down", "d1", health=NOT_SERVING)
        register(stub, "down", "d2")
        heartbeat(stub, "down", "d2", health=NOT_SERVING)
        for key in ("", "user-1"):
            err = rpc_error(pick, stub, "down", key=key)
            assert err.code() == Code.FAILED_PRECONDITION, (key, err)  # type: ignore[attr-defined]
