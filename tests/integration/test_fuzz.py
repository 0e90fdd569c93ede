"""Generated requests thrown at every RPC of a real replica (hypothesis).

Every method of ``security.roles.RULES`` gets requests built from its request
descriptor (``tests.strategies.messages``): whatever they hold, the answer is
never UNKNOWN or INTERNAL, no call hangs (DEADLINE_EXCEEDED only for the calls
that may wait: Acquire, Switchover and the watches) and the replica is still
alive and SERVING at the end.

A second replica, on an etcd of its own, only gets requests for the methods
that change state (audited ``ALWAYS`` or ``ON_WRITE``), and a watch on the
whole of that etcd checks that a rejected call (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED) wrote
nothing but its audit event. Background writes are told apart from a call's
own: the leader's renewals (``election/``), replica records (``replicas/``) and
the leader's alerts (``alerts/``) are ignored, like the audit trail; checkpoints,
expiries and failovers only ever touch resources an earlier call changed
successfully ("busy" ones), so a rejected call that changed anything else fails
at once, and one that changed only busy resources is repeated once etcd has
settled, and fails if it changes anything again.

Requests come from ``tests.strategies.messages`` (plausible, mostly plausible or
hostile field by field); ids the server handed out (permit ids, token ids) are
fed back into later requests. The tests after the fuzzing pin down, with
minimal requests, the bugs it found.

Run with ``-s`` for a count of calls per status code.
"""

from __future__ import annotations

import importlib
import pkgutil
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory, text_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulwark.v1 import ratelimit_pb2, watch_pb2
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2  # noqa: F401 (registers)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.security.roles import RULES, Audit
from bulwark_server.store import _etcd_client as ec
from tests.integration.conftest import get_leader, wait_for
from tests.strategies import messages

CALL_TIMEOUT_S = 2.0
# How long a watch is read before the test cancels it (at most 2 messages are read).
STREAM_READ_S = 0.15
EXAMPLES_PER_RPC = 25
STORE_EXAMPLES = 250

MAY_WAIT = {"/bulwark.v1.BulkheadService/Acquire", "/bulwark.v1.RegistryService/Switchover"}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}
# Written by the replica on its own, whatever the calls: never held against one.
# The leader's alerts (``alerts/``) follow the state earlier calls left, on its own time.
BACKGROUND_PREFIXES = (
    b"/bulwark/v1/audit/",
    b"/bulwark/v1/election/",
    b"/bulwark/v1/replicas/",
    b"/bulwark/v1/alerts/",
)
STORE_PREFIX = b"/bulwark/v1/"

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Rpc:
    method: str
    request: type[Message]
    response: type[Message]
    streaming: bool


def _rpcs() -> dict[str, Rpc]:
    """Every method of the role table, by full name, looked up in the descriptor pool
    (every generated module imported first, so new services are found too)."""
    import bulwark.v1

    for module in pkgutil.iter_modules(bulwark.v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"bulwark.v1.{module.name}")
    # The vendored protocols served beside them.
    importlib.import_module("bulwark_server.keda_api.externalscaler_pb2")
    importlib.import_module("bulwark_server.envoy_api.service.ratelimit.v3.rls_pb2")
    pool = descriptor_pool.Default()
    out: dict[str, Rpc] = {}
    for name in RULES:
        service_name, _, method_name = name.lstrip("/").rpartition("/")
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        out[name] = Rpc(
            name,
            message_factory.GetMessageClass(method.input_type),
            message_factory.GetMessageClass(method.output_type),
            method.server_streaming,
        )
    return out


RPCS = _rpcs()
STATEFUL = sorted(name for name, rule in RULES.items() if rule.audit is not Audit.NEVER)
MAKERS = ("Put", "Register", "Create", "Backup")
REMOVERS = ("Delete", "Deregister", "Revoke")


def _order(method: str) -> tuple[int, str]:
    """Calls that make things first (so that the others find something), removals last."""
    name = method.rpartition("/")[2]
    return (0 if name.startswith(MAKERS) else 2 if name.startswith(REMOVERS) else 1, method)


ORDERED = sorted(RULES, key=_order)

# Calls per status code over the module, printed at the end (-s).
STATS: Counter[str] = Counter()
BY_METHOD: dict[str, Counter[str]] = {}
STORE_STATS: Counter[str] = Counter()


def show(request: Message) -> str:
    text = text_format.MessageToString(request, as_one_line=True)
    return text if len(text) <= 600 else f"{text[:600]}... ({request.ByteSize()} bytes)"


# -- calling -----------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    cancelled_by_test: bool = False


def invoke(channel: grpc.Channel, rpc: Rpc, request: Message) -> Outcome:
    """One call; for a watch, read at most 2 messages for STREAM_READ_S, then cancel."""
    if not rpc.streaming:
        call = channel.unary_unary(
            rpc.method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=rpc.response.FromString,
        )
        try:
            response = call(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return Outcome(exc.code(), exc.details() or "")
        remember_ids(response)
        return Outcome(grpc.StatusCode.OK, "")
    stream = channel.unary_stream(
        rpc.method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=rpc.response.FromString,
    )(request, timeout=CALL_TIMEOUT_S)
    cancelled = threading.Event()

    def cancel() -> None:
        cancelled.set()
        stream.cancel()

    timer = threading.Timer(STREAM_READ_S, cancel)
    timer.start()
    try:
        received = 0
        for _ in stream:
            received += 1
            if received >= 2:
                return Outcome(grpc.StatusCode.OK, "", cancelled_by_test=True)
        return Outcome(stream.code(), stream.details() or "")
    except grpc.RpcError as exc:
        code = exc.code()
        return Outcome(
            code, exc.details() or "", code is grpc.StatusCode.CANCELLED and cancelled.is_set()
        )
    finally:
        timer.cancel()
        stream.cancel()


def check_outcome(rpc: Rpc, request: Message, outcome: Outcome, replica: ReplicaProcess) -> None:
    """Record the outcome; fail on UNKNOWN/INTERNAL, an unexpected hang or a dead replica."""
    label = outcome.code.name + (" (cancelled by the test)" if outcome.cancelled_by_test else "")
    STATS[label] += 1
    BY_METHOD.setdefault(rpc.method, Counter())[outcome.code.name] += 1
    context = f"{rpc.method} with {{{show(request)}}}"
    assert outcome.code not in NEVER, f"{context} answered {outcome.code.name}: {outcome.details!r}"
    if outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        assert rpc.streaming or rpc.method in MAY_WAIT, (
            f"{context} did not answer within {CALL_TIMEOUT_S}s"
        )
    if outcome.code is grpc.StatusCode.CANCELLED:
        assert outcome.cancelled_by_test, f"{context} answered CANCELLED: {outcome.details!r}"
    assert replica.running, f"the replica exited after {context}: {replica.tail()}"


# -- ids handed out by the server ----------------------------------------------

# Ids no generator could guess (permit ids, token ids, ...), from earlier answers,
# by the request field that takes them ("permit_id", "id", "instance_id", ...).
SEEN_IDS: dict[str, list[str]] = {}


def remember_ids(message: Message) -> None:
    for fd, value in message.ListFields():
        if fd.message_type is not None:
            for item in value if fd.is_repeated else [value]:
                if isinstance(item, Message):
                    remember_ids(item)
        elif fd.type == fd.TYPE_STRING and not fd.is_repeated and value:
            names = [fd.name]
            if fd.name == "id":
                names.append(f"{message.DESCRIPTOR.name.lower()}_id")
            for name in names:
                seen = SEEN_IDS.setdefault(name, [])
                if value not in seen:
                    seen.append(value)
                    del seen[:-20]


def with_seen_ids(request: Message, data: st.DataObject) -> Message:
    """Maybe put ids the server handed out into the request's top-level id fields.

    What is drawn does not depend on what was seen (hypothesis replays examples and
    wants the same draws): a choice and an index, applied only if there are ids."""
    for fd in request.DESCRIPTOR.fields:
        if fd.type != fd.TYPE_STRING or fd.is_repeated:
            continue
        if not (fd.name == "id" or fd.name.endswith("_id")):
            continue
        pick = data.draw(st.none() | st.integers(0, 19), label=f"seen {fd.name}")
        seen = SEEN_IDS.get(fd.name)
        if pick is not None and seen:
            setattr(request, fd.name, seen[pick % len(seen)])
    return request


class Brief:
    """Printed as one short line, also in hypothesis' report of a failing example
    (which would otherwise print fixtures field by field: every change etcd saw)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class Shown(Brief):
    """A drawn request, printed on one line (truncated) in hypothesis' report."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def __repr__(self) -> str:
        return show(self.message)


def requests(rpc: Rpc) -> st.SearchStrategy[Shown]:
    return messages(rpc.request).map(Shown)


# -- servers ---------------------------------------------------------------------


@dataclass(repr=False)
class Server(Brief):
    member: EtcdMember
    replica: ReplicaProcess
    channel: grpc.Channel

    def __repr__(self) -> str:
        return f"<replica {self.replica.address} on etcd {self.member.endpoint}>"


def start_server(root: Path, name: str) -> Iterator[Server]:
    member = EtcdMember(name, root / "etcd", unsafe_no_fsync=True)
    replica = ReplicaProcess(name, [member.endpoint], root / f"{name}.log")
    channel: grpc.Channel | None = None
    try:
        member.start_healthy()
        replica.etcd_endpoints = [member.endpoint]
        replica.start()
        replica.wait_serving()
        wait_for(lambda: (view := get_leader(replica.address)) is not None and view.is_self, 10)
        channel = grpc.insecure_channel(replica.address)
        yield Server(member, replica, channel)
    finally:
        if channel is not None:
            channel.close()
        replica.stop()
        member.stop()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One etcd and one replica (plaintext loopback, so authentication off) for every RPC."""
    yield from start_server(tmp_path_factory.mktemp("fuzz"), "fuzz")


@dataclass
class Change:
    revision: int
    key: bytes
    deleted: bool


@dataclass(repr=False)
class EtcdWatcher(Brief):
    """Every change of the whole etcd keyspace since it started, read from a watch."""

    endpoint: str
    changes: list[Change] = field(default_factory=list)
    seen: int = 0
    _channel: grpc.Channel | None = None
    _requests: queue.Queue[Any] = field(default_factory=queue.Queue)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _kv: Any = None
    _responses: Any = None

    def start(self) -> None:
        self._channel = grpc.insecure_channel(self.endpoint)
        self._kv = ec.rpc_grpc.KVStub(self._channel)
        watch = ec.rpc_grpc.WatchStub(self._channel)
        # The whole keyspace, so that every revision has an event: having seen an
        # event of revision R means every change up to R was seen.
        create = ec.rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0")
        self._requests.put(ec.rpc_pb2.WatchRequest(create_request=create))
        self._responses = watch.Watch(iter(self._requests.get, None))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._responses:
                with self._lock:
                    for event in response.events:
                        self.changes.append(
                            Change(
                                event.kv.mod_revision,
                                event.kv.key,
                                event.type == ec.kv_pb2.Event.DELETE,
                            )
                        )
                        self.seen = max(self.seen, event.kv.mod_revision)
                    self._lock.notify_all()
        except grpc.RpcError:
            pass

    def revision(self) -> int:
        response = self._kv.Range(ec.rpc_pb2.RangeRequest(key=b"\0", count_only=True), timeout=5)
        return int(response.header.revision)

    def between(self, after: int, upto: int) -> list[Change]:
        """Changes with after < revision <= upto (waits for the watch to catch up)."""
        with self._lock:
            assert self._lock.wait_for(lambda: self.seen >= upto, timeout=5), (
                f"the etcd watch did not reach revision {upto} (at {self.seen})"
            )
            return [c for c in self.changes if after < c.revision <= upto]

    def close(self) -> None:
        self._requests.put(None)
        if self._responses is not None:
            self._responses.cancel()
        if self._channel is not None:
            self._channel.close()
        if self._thread is not None:
            self._thread.join(5)


@dataclass(repr=False)
class StoreServer(Brief):
    server: Server
    etcd: EtcdWatcher
    # Names of the resources (see resource_of) some call changed without being
    # rejected: checkpoints, expiries and failovers may change them at any time later.
    busy: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreServer]:
    """A replica on an etcd of its own, whose every change is watched."""
    for server in start_server(tmp_path_factory.mktemp("fuzz-store"), "fuzzstore"):
        watcher = EtcdWatcher(server.member.endpoint)
        watcher.start()
        try:
            yield StoreServer(server, watcher)
        finally:
            watcher.close()


def resource_of(key: bytes) -> str:
    """``/bulwark/v1/<kind>/<name>/...`` → the resource's name, shared by the kinds
    that belong to one resource (``breakers/a`` and ``breaker-windows/a``)."""
    rest = key[len(STORE_PREFIX) :].decode(errors="replace")
    parts = rest.split("/")
    return parts[1] if len(parts) > 1 else rest


def is_background(key: bytes) -> bool:
    return key.startswith(BACKGROUND_PREFIXES)


# -- tests -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ORDERED, ids=lambda m: m.rpartition(".")[2].replace("/", "."))
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_RPC)
@given(data=st.data())
def test_generated_requests_get_a_proper_answer(
    fuzz_server: Server, method: str, data: st.DataObject
) -> None:
    rpc = RPCS[method]
    request = with_seen_ids(data.draw(requests(rpc), label="request").message, data)
    outcome = invoke(fuzz_server.channel, rpc, request)
    check_outcome(rpc, request, outcome, fuzz_server.replica)


@settings(FUZZ_SETTINGS, max_examples=STORE_EXAMPLES)
@given(data=st.data())
def test_rejected_requests_store_nothing(store_server: StoreServer, data: st.DataObject) -> None:
    rpc = RPCS[data.draw(st.sampled_from(STATEFUL), label="method")]
    request = with_seen_ids(data.draw(requests(rpc), label="request").message, data)
    server, etcd = store_server.server, store_server.etcd

    def call() -> tuple[Outcome, list[Change]]:
        before = etcd.revision()
        outcome = invoke(server.channel, rpc, request)
        after = etcd.revision()
        check_outcome(rpc, request, outcome, server.replica)
        changes = [c for c in etcd.between(before, after) if not is_background(c.key)]
        if outcome.code not in REJECTED:
            store_server.busy.update(resource_of(c.key) for c in changes)
        return outcome, changes

    def fail(outcome: Outcome, changes: list[Change], note: str = "") -> None:
        written = [
            f"{'deleted' if c.deleted else 'put'} {c.key.decode(errors='replace')} at {c.revision}"
            for c in changes
        ]
        pytest.fail(
            f"{rpc.method} with {{{show(request)}}} was answered {outcome.code.name} "
            f"({outcome.details!r}) but changed etcd{note}: {written}"
        )

    outcome, changes = call()
    STORE_STATS[outcome.code.name] += 1
    if outcome.code not in REJECTED or not changes:
        return
    fresh = [c for c in changes if resource_of(c.key) not in store_server.busy]
    if fresh:
        fail(outcome, fresh)
    # Only resources an earlier call made changed: checkpoints, expiries and
    # failovers may have done that meanwhile. Let them settle, then call again.
    STORE_STATS["(replayed after a change to a busy resource)"] += 1
    settle(etcd)
    again, changes_again = call()
    if again.code in REJECTED and changes_again:
        fail(again, changes_again, " (twice: the second time after etcd had settled)")


def settle(etcd: EtcdWatcher, quiet_s: float = 1.2, limit_s: float = 6.0) -> None:
    """Wait until no key but the background ones changed for ``quiet_s`` seconds."""
    deadline = time.monotonic() + limit_s
    seen = etcd.revision()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
        time.sleep(0.1)
        now = etcd.revision()
        if any(not is_background(c.key) for c in etcd.between(seen, now)):
            quiet_since = time.monotonic()
        seen = now


def test_watch_features_resumed_where_no_feature_changed_since(fuzz_server: Server) -> None:
    """Found by the fuzzing above. Resuming WatchFeatures from a revision after which
    no feature or breaker changed (the revision of the SYNCED message just received,
    or any later one) must wait for changes; it answered UNKNOWN (IndexError in
    FeatureManager.watch's convert, handed an empty replay by store.streams.follow)."""
    rpc = RPCS["/bulwark.v1.FeatureService/WatchFeatures"]
    first = rpc.request()
    stream = fuzz_server.channel.unary_stream(
        rpc.method,
        request_serializer=type(first).SerializeToString,
        response_deserializer=rpc.response.FromString,
    )(first, timeout=5)
    try:
        synced = next(m for m in stream if m.type == watch_pb2.WATCH_EVENT_TYPE_SYNCED)
    finally:
        stream.cancel()
    for start in (synced.revision, 2**31 - 1):
        request = rpc.request(start_revision=start)
        outcome = invoke(fuzz_server.channel, rpc, request)
        assert outcome.code not in NEVER, (
            f"WatchFeatures with {{{show(request)}}} answered {outcome.code.name}: "
            f"{outcome.details!r}"
        )


@pytest.mark.parametrize("method", ["PutLimit", "GetLimit", "DeleteLimit"])
def test_limit_with_longest_domain_and_name(fuzz_server: Server, method: str) -> None:
    """Found by the fuzzing above. Domain and name are each valid up to 128
    characters, but "<domain>/<name>" is then 257 > 256 bytes (store.keys.MAX_NAME_BYTES):
    store.keys.key_for raised ValueError and the call answered INTERNAL."""
    longest = "n" * 128
    limit = ratelimit_pb2.Limit(
        domain=longest,
        name=longest,
        descriptor=[ratelimit_pb2.DescriptorEntry(key="k")],
        rate=ratelimit_pb2.Rate(requests_per_unit=5, unit=ratelimit_pb2.RATE_UNIT_SECOND),
    )
    request = {
        "PutLimit": ratelimit_pb2.PutLimitRequest(limit=limit),
        "GetLimit": ratelimit_pb2.GetLimitRequest(domain=longest, name=longest),
        "DeleteLimit": ratelimit_pb2.DeleteLimitRequest(domain=longest, name=longest),
    }[method]
    rpc = RPCS[f"/bulwark.v1.RateLimitService/{method}"]
    outcome = invoke(fuzz_server.channel, rpc, request)
    assert outcome.code not in NEVER, (
        f"{method} with {{{show(request)}}} answered {outcome.code.name}: {outcome.details!r}"
    )


def test_servers_are_still_healthy(fuzz_server: Server, store_server: StoreServer) -> None:
    """Last: both replicas alive, SERVING and still leading after all of the above."""
    for server in (fuzz_server, store_server.server):
        assert server.replica.running, server.replica.tail()
        health = health_pb2_grpc.HealthStub(server.channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        leader = get_leader(server.replica.address)
        assert leader is not None and leader.is_self
    print(f"\nstore check, calls by status: {dict(STORE_STATS.most_common())}")
    total = sum(STATS.values())
    print(f"all calls ({total}) by status: {dict(STATS.most_common())}")
    for method in sorted(BY_METHOD):
        print(f"  {method}: {dict(BY_METHOD[method].most_common())}")
