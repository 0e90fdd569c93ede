"""Feature flags with dependencies, against real replica processes and a real etcd.

One etcd and two replicas are shared by the module; every test uses feature and
breaker names of its own, so the tests do not see each other's changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, feature_pb2, feature_pb2_grpc, watch_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, wait_for

AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED
FEATURE = feature_pb2.DEPENDENCY_KIND_FEATURE
BREAKER = feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
SNAPSHOT = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT
SYNCED = watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT = watch_pb2.WATCH_EVENT_TYPE_PUT


@dataclass
class Client:
    """Stubs for one replica."""

    channel: grpc.Channel
    features: feature_pb2_grpc.FeatureServiceStub
    breakers: breaker_pb2_grpc.CircuitBreakerServiceStub

    @classmethod
    def connect(cls, address: str) -> Client:
        channel = grpc.insecure_channel(address)
        return cls(
            channel,
            feature_pb2_grpc.FeatureServiceStub(channel),
            breaker_pb2_grpc.CircuitBreakerServiceStub(channel),
        )

    def put(
        self,
        name: str,
        *depends_on: feature_pb2.Dependency,
        status: int = 0,
        reason: str = "",
        expected_revision: int = 0,
    ) -> feature_pb2.PutFeatureResponse:
        feature = feature_pb2.Feature(
            name=name, status=status, reason=reason, depends_on=depends_on
        )
        return self.features.PutFeature(
            feature_pb2.PutFeatureRequest(feature=feature, expected_revision=expected_revision),
            timeout=5,
        )

    def get(self, name: str) -> feature_pb2.FeatureView:
        return self.features.GetFeature(feature_pb2.GetFeatureRequest(name=name), timeout=5).feature

    def set_status(
        self,
        name: str,
        status: int,
        reason: str = "",
        expires_at: timestamp_pb2.Timestamp | None = None,
    ) -> feature_pb2.FeatureView:
        return self.features.SetFeatureStatus(
            feature_pb2.SetFeatureStatusRequest(
                name=name, status=status, reason=reason, expires_at=expires_at, updated_by="ops"
            ),
            timeout=5,
        ).feature

    def breaker(self, name: str) -> None:
        self.breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=name), timeout=5)

    def force(self, name: str, state: int) -> None:
        self.breakers.ForceState(
            breaker_pb2.ForceStateRequest(name=name, state=state, actor="ops", reason="drill"),
            timeout=5,
        )

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except grpc.RpcError:
            return False


def feat(name: str, soft: bool = False) -> feature_pb2.Dependency:
    return feature_pb2.Dependency(kind=FEATURE, name=name, soft=soft)


def brk(name: str, soft: bool = False) -> feature_pb2.Dependency:
    return feature_pb2.Dependency(kind=BREAKER, name=name, soft=soft)


def path(view: feature_pb2.FeatureView) -> list[tuple[int, str, bool]]:
    return [(d.kind, d.name, d.soft) for d in view.blocked_by]


def names_of(view: feature_pb2.FeatureView) -> list[str]:
    return [d.name for d in view.feature.depends_on]


def at(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return ts


def rejected(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


class Watcher:
    """A WatchFeatures stream read by a thread into ``events``."""

    def __init__(self, client: Client, names: list[str]):
        self._call = client.features.WatchFeatures(
            feature_pb2.WatchFeaturesRequest(names=names), timeout=60
        )
        self.events: list[feature_pb2.WatchFeaturesResponse] = []
        self.error: grpc.RpcError | None = None
        self.mark = 0  # events before this index are already accounted for
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._call:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            self.error = exc

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)

    def wait(
        self, predicate: Callable[[feature_pb2.WatchFeaturesResponse], bool], timeout: float
    ) -> feature_pb2.WatchFeaturesResponse:
        """The first event at or after ``mark`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[self.mark :]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"no matching event within {timeout}s; got {self.events[self.mark :]}"
                    )
                self._cond.wait(left)

    def since_mark(self) -> list[feature_pb2.WatchFeaturesResponse]:
        with self._cond:
            return list(self.events[self.mark :])

    def set_mark(self) -> None:
        with self._cond:
            self.mark = len(self.events)

    def synced(self, timeout: float = 5) -> list[feature_pb2.WatchFeaturesResponse]:
        """Wait for SYNCED; return the SNAPSHOT events before it."""
        self.wait(lambda e: e.type == SYNCED, timeout)
        with self._cond:
            events = list(self.events)
        cut = next(i for i, e in enumerate(events) if e.type == SYNCED)
        assert all(e.type == SNAPSHOT for e in events[:cut])
        self.mark = cut + 1
        return events[:cut]

    def put_for(
        self, name: str, status: int, timeout: float = 1.0
    ) -> feature_pb2.WatchFeaturesResponse:
        event = self.wait(lambda e: e.type == PUT and e.feature.feature.name == name, timeout)
        assert event.feature.effective_status == status, event
        return event


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ReplicaProcess]]:
    """One etcd and two replicas for the whole module (a leader elected)."""
    root: Path = tmp_path_factory.mktemp("features")
    member = EtcdMember("features", root / "etcd", unsafe_no_fsync=True)
    started: list[ReplicaProcess] = []
    try:
        member.start_healthy()
        for i in range(2):
            replica = ReplicaProcess(f"f{i}", [member.endpoint], root / f"f{i}.log")
            started.append(replica)
            replica.start()
        for replica in started:
            replica.wait_serving()
        wait_for(
            lambda: any(
                (view := get_leader(r.address)) is not None and view.is_self for r in started
            ),
            10,
        )
        yield started
    finally:
        for replica in started:
            replica.stop()
        member.stop()


@pytest.fixture(scope="module")
def clients(replicas: list[ReplicaProcess]) -> Iterator[tuple[Client, Client]]:
    a, b = Client.connect(replicas[0].address), Client.connect(replicas[1].address)
    try:
        yield a, b
    finally:
        a.channel.close()
        b.channel.close()


@pytest.fixture
def watchers() -> Iterator[Callable[[Client, list[str]], Watcher]]:
    opened: list[Watcher] = []

    def open_watch(client: Client, names: list[str]) -> Watcher:
        watcher = Watcher(client, names)
        opened.append(watcher)
        return watcher

    try:
        yield open_watch
    finally:
        for watcher in opened:
            watcher.close()


# -- effective status ---------------------------------------------------------------


def test_effective_status_follows_a_three_level_chain_down_to_a_breaker(
    clients: tuple[Client, Client],
):
    a, b = clients
    a.breaker("chain-card-gw")
    a.put("chain-card", brk("chain-card-gw"))
    a.put("chain-payments", feat("chain-card"))
    a.put("chain-checkout", feat("chain-payments"), reason="fine")
    assert a.get("chain-checkout").effective_status == AVAILABLE

    a.force("chain-card-gw", FORCED_OPEN)
    expected_path = [
        (FEATURE, "chain-payments", False),
        (FEATURE, "chain-card", False),
        (BREAKER, "chain-card-gw", False),
    ]
    reason = "circuit breaker 'chain-card-gw' is FORCED_OPEN"
    for client in (a, b):  # the other replica answers from its own cache
        view = wait_for(
            lambda c=client: (v := c.get("chain-checkout")).effective_status == DISABLED and v, 5
        )
        assert path(view) == expected_path  # type: ignore[arg-type]
        assert view.effective_reason == reason  # type: ignore[attr-defined]
        assert view.feature.status == AVAILABLE  # type: ignore[attr-defined]
    middle = a.get("chain-payments")
    assert middle.effective_status == DISABLED
    assert path(middle) == expected_path[1:]
    assert middle.effective_reason == reason

    a.force("chain-card-gw", CLOSED)
    for client in (a, b):
        view = wait_for(
            lambda c=client: (v := c.get("chain-checkout")).effective_status == AVAILABLE and v, 5
        )
        assert list(view.blocked_by) == []  # type: ignore[attr-defined]
        assert view.effective_reason == ""  # type: ignore[attr-defined]


def test_own_status_wins_ties_then_the_first_dependency(clients: tuple[Client, Client]):
    a, _ = clients
    a.breaker("tie-gw")
    a.put("tie-first", status=DISABLED, reason="first is off")
    a.put("tie-second", status=DISABLED, reason="second is off")
    a.put("tie-top", brk("tie-gw"), feat("tie-first"), feat("tie-second"))
    a.force("tie-gw", FORCED_OPEN)
    view = a.get("tie-top")
    assert view.effective_status == DISABLED
    assert path(view) == [(BREAKER, "tie-gw", False)]  # first in depends_on order
    assert view.effective_reason == "circuit breaker 'tie-gw' is FORCED_OPEN"

    own = a.set_status("tie-top", DISABLED, "maintenance")
    assert own.effective_status == DISABLED
    assert list(own.blocked_by) == []
    assert own.effective_reason == "maintenance"


def test_a_soft_dependency_only_degrades(clients: tuple[Client, Client]):
    a, _ = clients
    a.breaker("soft-gw")
    a.put("soft-recs", status=DISABLED, reason="model down")
    a.put("soft-home", feat("soft-recs", soft=True))
    view = a.get("soft-home")
    assert view.effective_status == DEGRADED
    assert path(view) == [(FEATURE, "soft-recs", True)]
    assert view.effective_reason == "model down"

    a.put("soft-search", brk("soft-gw", soft=True))
    a.force("soft-gw", FORCED_OPEN)
    view = a.get("soft-search")
    assert view.effective_status == DEGRADED
    assert path(view) == [(BREAKER, "soft-gw", True)]
    assert view.effective_reason == "circuit breaker 'soft-gw' is FORCED_OPEN"

    # A hard dependency beside the soft one still disables.
    a.put("soft-hard", status=DISABLED, reason="hard off")
    a.put("soft-both", feat("soft-recs", soft=True), feat("soft-hard"))
    view = a.get("soft-both")
    assert view.effective_status == DISABLED
    assert path(view) == [(FEATURE, "soft-hard", False)]


# -- writes refused -----------------------------------------------------------------


def test_cycles_are_refused_and_nothing_is_stored(clients: tuple[Client, Client]):
    a, _ = clients
    for name in ("cyc-a", "cyc-b", "cyc-c"):
        a.put(name, reason="original")
    cases = [
        ("cyc-a", [feat("cyc-a")], "would form a cycle: cyc-a -> cyc-a"),
        ("cyc-b", [feat("cyc-a")], None),  # fine: b -> a
        ("cyc-a", [feat("cyc-b")], "would form a cycle: cyc-a -> cyc-b -> cyc-a"),
        ("cyc-c", [feat("cyc-b")], None),  # fine: c -> b -> a
        ("cyc-a", [feat("cyc-c")], "would form a cycle: cyc-a -> cyc-c -> cyc-b -> cyc-a"),
    ]
    for name, deps, message in cases:
        before = a.get(name).feature
        if message is None:
            a.put(name, *deps)
            continue
        err = rejected(lambda n=name, d=deps: a.put(n, *d, reason="changed"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert message in (err.details() or ""), err.details()
        assert "feature.depends_on" in (err.details() or "")
        after = a.get(name).feature
        assert after == before  # same definition, same revision
        assert after.reason == "original"


def test_concurrent_writes_through_two_replicas_cannot_close_a_cycle(
    clients: tuple[Client, Client],
):
    a, b = clients
    barrier = threading.Barrier(2)

    def put_after_barrier(client: Client, name: str, dep: str) -> tuple[grpc.StatusCode, str]:
        barrier.wait(5)
        try:
            client.put(name, feat(dep))
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""

    with ThreadPoolExecutor(2) as pool:
        for i in range(20):
            x, y = f"race{i}-x", f"race{i}-y"
            a.put(x)
            a.put(y)
            wait_for(lambda x=x, y=y: b.exists(x) and b.exists(y), 5)
            on_a = pool.submit(put_after_barrier, a, x, y)  # x -> y
            on_b = pool.submit(put_after_barrier, b, y, x)  # y -> x
            results = [on_a.result(30), on_b.result(30)]
            codes = [code for code, _ in results]
            assert codes.count(grpc.StatusCode.OK) == 1, (i, results)
            loser = next(r for r in results if r[0] != grpc.StatusCode.OK)
            assert loser[0] == grpc.StatusCode.INVALID_ARGUMENT, (i, results)
            assert "would form a cycle" in loser[1], (i, results)
            expected = ([y], []) if codes[0] == grpc.StatusCode.OK else ([], [x])
            for client in (a, b):
                wait_for(
                    lambda c=client, x=x, y=y, e=expected: (
                        (names_of(c.get(x)), names_of(c.get(y))) == e
                    ),
                    5,
                )


def test_missing_dependencies_and_unknown_kinds_are_refused(clients: tuple[Client, Client]):
    a, _ = clients
    a.put("miss-real")
    a.put("miss-top", reason="original")
    before = a.get("miss-top").feature

    err = rejected(lambda: a.put("miss-top", feat("miss-real"), feat("miss-ghost")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "feature.depends_on[1]" in (err.details() or "")
    assert "miss-ghost" in (err.details() or "")

    err = rejected(lambda: a.put("miss-top", brk("miss-no-breaker")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "feature.depends_on[0]" in (err.details() or "")

    err = rejected(lambda: a.put("miss-new", feat("miss-ghost")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert rejected(lambda: a.get("miss-new")).code() == grpc.StatusCode.NOT_FOUND

    for kind in (feature_pb2.DEPENDENCY_KIND_UNSPECIFIED, 7):
        err = rejected(
            lambda k=kind: a.put(
                "miss-top", feat("miss-real"), feature_pb2.Dependency(kind=k, name="miss-real")
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "feature.depends_on[1].kind" in (err.details() or "")
    assert a.get("miss-top").feature == before


# -- expiry -------------------------------------------------------------------------


def test_a_status_with_an_expiry_returns_to_available(clients: tuple[Client, Client]):
    a, b = clients
    a.put("exp-banner")
    expires = at(1.5)
    view = a.set_status("exp-banner", DISABLED, "launch blocked", expires)
    assert view.effective_status == DISABLED
    wait_for(lambda: b.get("exp-banner").effective_status == DISABLED, 1)
    assert view.feature.expires_at == expires

    deadline = expires.ToNanoseconds() / 1e9
    time.sleep(max(0.0, deadline - time.time()) + 0.05)
    assert a.get("exp-banner").effective_status == AVAILABLE  # at once, on any replica
    assert b.get("exp-banner").effective_status == AVAILABLE
    stored = wait_for(
        lambda: (f := a.get("exp-banner").feature).reason.startswith("expired") and f, 1.0
    )
    assert stored.status == AVAILABLE  # type: ignore[attr-defined]
    assert stored.reason == "expired (was DISABLED: launch blocked)"  # type: ignore[attr-defined]
    assert not stored.HasField("expires_at")  # type: ignore[attr-defined]
    # Written by the leader within a tick or so of the expiry.
    written = stored.updated_at.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
    assert 0 <= written - deadline < 0.75


def test_bad_expiries_are_refused(clients: tuple[Client, Client]):
    a, _ = clients
    a.put("badexp-x", reason="original")
    before = a.get("badexp-x").feature
    err = rejected(lambda: a.set_status("badexp-x", DISABLED, "late", at(-5)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expires_at" in (err.details() or "")
    err = rejected(lambda: a.set_status("badexp-x", AVAILABLE, "odd", at(60)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expires_at" in (err.details() or "")
    feature = feature_pb2.Feature(name="badexp-x", status=DEGRADED, expires_at=at(-1))
    err = rejected(
        lambda: a.features.PutFeature(feature_pb2.PutFeatureRequest(feature=feature), timeout=5)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "feature.expires_at" in (err.details() or "")
    assert a.get("badexp-x").feature == before


# -- watch ---------------------------------------------------------------------------


def test_watching_the_top_of_a_chain_sees_changes_below_it(
    clients: tuple[Client, Client], watchers: Callable[[Client, list[str]], Watcher]
):
    a, b = clients
    a.breaker("wchain-gw")
    a.put("wchain-leaf", brk("wchain-gw"))
    a.put("wchain-mid", feat("wchain-leaf"))
    a.put("wchain-top", feat("wchain-mid"))
    a.put("wchain-other")
    wait_for(lambda: b.exists("wchain-top"), 5)
    on_a = watchers(a, ["wchain-top"])
    on_b = watchers(b, ["wchain-top"])
    for watcher in (on_a, on_b):
        snapshot = watcher.synced()
        assert [e.feature.feature.name for e in snapshot] == ["wchain-top"]
        assert snapshot[0].feature.effective_status == AVAILABLE

    # A breaker three levels down.
    a.force("wchain-gw", FORCED_OPEN)
    for watcher in (on_a, on_b):
        event = watcher.put_for("wchain-top", DISABLED)
        assert [d.name for d in event.feature.blocked_by] == [
            "wchain-mid",
            "wchain-leaf",
            "wchain-gw",
        ]
        watcher.set_mark()

    # A change below that leaves the top's view as it was: no event.
    a.set_status("wchain-mid", DEGRADED, "slow")
    # An unrelated feature: no event either.
    a.set_status("wchain-other", DISABLED, "off")
    time.sleep(0.5)
    assert on_a.since_mark() == [] and on_b.since_mark() == []

    # Back to CLOSED: the middle feature's own DEGRADED shows through.
    a.force("wchain-gw", CLOSED)
    for watcher in (on_a, on_b):
        event = watcher.put_for("wchain-top", DEGRADED)
        assert [d.name for d in event.feature.blocked_by] == ["wchain-mid"]
        assert event.feature.effective_reason == "slow"
        watcher.set_mark()

    # A feature status change at the bottom, through the other replica.
    b.set_status("wchain-leaf", DISABLED, "leaf off")
    for watcher in (on_a, on_b):
        event = watcher.put_for("wchain-top", DISABLED)
        assert event.feature.effective_reason == "leaf off"
        watcher.set_mark()

    # Recovery from the bottom up: DEGRADED while the middle is slow, then AVAILABLE.
    b.set_status("wchain-leaf", AVAILABLE)
    for watcher in (on_a, on_b):
        event = watcher.put_for("wchain-top", DEGRADED)
        assert event.feature.effective_reason == "slow"
        watcher.set_mark()
    b.set_status("wchain-mid", AVAILABLE)
    for watcher in (on_a, on_b):
        watcher.put_for("wchain-top", AVAILABLE)
        time.sleep(0.2)
        assert len(watcher.since_mark()) == 1
    assert on_a.error is None and on_b.error is None


def test_watching_the_top_of_a_diamond_gets_one_event_per_change(
    clients: tuple[Client, Client], watchers: Callable[[Client, list[str]], Watcher]
):
    a, b = clients
    a.breaker("dia-gw")
    a.put("dia-base", brk("dia-gw"))
    a.put("dia-left", feat("dia-base"))
    a.put("dia-right", feat("dia-base", soft=True))
    a.put("dia-top", feat("dia-right"), feat("dia-left"))
    wait_for(lambda: b.exists("dia-top"), 5)
    watcher = watchers(b, ["dia-top"])
    watcher.synced()

    a.force("dia-gw", FORCED_OPEN)
    event = watcher.put_for("dia-top", DISABLED)
    # The hard path decides (the soft one only degrades).
    assert [d.name for d in event.feature.blocked_by] == ["dia-left", "dia-base", "dia-gw"]
    time.sleep(0.3)
    assert len(watcher.since_mark()) == 1  # one change, one event
    watcher.set_mark()

    a.set_status("dia-base", DISABLED, "base off")  # cause moves to the base's own status
    event = watcher.put_for("dia-top", DISABLED)
    assert [d.name for d in event.feature.blocked_by] == ["dia-left", "dia-base"]
    assert event.feature.effective_reason == "base off"
    watcher.set_mark()

    a.force("dia-gw", CLOSED)  # the base's own status still decides: no event
    time.sleep(0.5)
    assert watcher.since_mark() == []

    a.set_status("dia-base", AVAILABLE)
    watcher.put_for("dia-top", AVAILABLE)


def test_an_expiry_below_a_watched_feature_sends_an_event(
    clients: tuple[Client, Client], watchers: Callable[[Client, list[str]], Watcher]
):
    a, b = clients
    a.put("wexp-leaf")
    a.put("wexp-top", feat("wexp-leaf"))
    wait_for(lambda: b.exists("wexp-top"), 5)
    watcher = watchers(b, ["wexp-top"])
    watcher.synced()
    expires = at(1.0)
    a.set_status("wexp-leaf", DISABLED, "short", expires)
    watcher.put_for("wexp-top", DISABLED)
    watcher.set_mark()
    event = watcher.put_for("wexp-top", AVAILABLE, timeout=2.0)
    seen = time.time()
    assert seen - expires.ToNanoseconds() / 1e9 < 1.0
    assert list(event.feature.blocked_by) == []


# -- reads and plain validation ------------------------------------------------------


def test_list_pages_and_plain_validation(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    client = Client.connect(replica_factory("solo", [etcd.endpoint]).address)
    with client.channel:
        for name in ("e", "c", "a", "d", "b"):
            assert client.put(f"page-{name}").created
        pages, token = [], ""
        while True:
            page = client.features.ListFeatures(
                feature_pb2.ListFeaturesRequest(page_size=2, page_token=token), timeout=5
            )
            pages.append([v.feature.name for v in page.features])
            token = page.next_page_token
            if not token:
                break
        assert pages == [["page-a", "page-b"], ["page-c", "page-d"], ["page-e"]]
        for bad in ("%%%", "bm90IGEgbmFtZSE="):  # garbage; base64 of "not a name!"
            err = rejected(
                lambda t=bad: client.features.ListFeatures(
                    feature_pb2.ListFeaturesRequest(page_size=2, page_token=t), timeout=5
                )
            )
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in (err.details() or "")

        err = rejected(lambda: client.get("page-zzz"))
        assert err.code() == grpc.StatusCode.NOT_FOUND

        before = client.get("page-a").feature
        err = rejected(lambda: client.set_status("page-a", feature_pb2.FEATURE_STATUS_UNSPECIFIED))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "status" in (err.details() or "")
        err = rejected(lambda: client.set_status("page-a", DISABLED, "x" * 1025))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reason" in (err.details() or "")
        err = rejected(lambda: client.set_status("page-zzz", DISABLED))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert client.get("page-a").feature == before
        assert client.set_status("page-a", DISABLED, "x" * 1024).feature.status == DISABLED

        current = client.get("page-b").feature.revision
        replaced = client.put("page-b", reason="v2", expected_revision=current)
        assert not replaced.created
        assert replaced.feature.feature.revision > current
        err = rejected(lambda: client.put("page-b", reason="v3", expected_revision=current))
        assert err.code() == grpc.StatusCode.ABORTED
        assert client.get("page-b").feature.reason == "v2"
        err = rejected(lambda: client.put("page-zzz", expected_revision=5))
        assert err.code() == grpc.StatusCode.NOT_FOUND
