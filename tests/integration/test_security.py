"""Security against real etcd and real `bulwark serve` processes on 127.0.0.1.

* Mutual TLS: certificates of the configured CA are admitted with the role of
  their OU; no certificate, another CA's, an expired one and plaintext are
  refused at the handshake. TLS without a client CA admits bearer tokens only.
* Every RPC of ``security.roles.RULES`` is called with no credentials and with a
  token of each role: below the rule's role it is refused, at or above it the
  call reaches the service (health checking and reflection stay open).
* Tokens: a revocation reaches another replica within a second, a token's TTL
  ends it, secrets are never listed, malformed tokens are refused.
* The audit trail records each state change (and each refusal) with the actor,
  method, target, code and etcd revision; reads are not recorded; retention
  bounds the number of events.
* Overload shedding: configuration and listing are refused first, decisions
  last, with a ``retry-after-ms`` hint; the replica recovers when load passes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import pkgutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import bulwark.v1
from bulwark.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    watch_pb2,
)
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2
from bulwark_server.keda_api import externalscaler_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.security import certs
from bulwark_server.security.identity import REPLICA_TOKEN_CREATOR
from bulwark_server.security.roles import OPEN_SERVICES, RULES, Role
from bulwark_server.security.tokens import TokenStore
from bulwark_server.store import EtcdStore
from tests.integration.conftest import wait_for

Code = grpc.StatusCode
AUTH_CODES = frozenset({Code.UNAUTHENTICATED, Code.PERMISSION_DENIED})
HOSTS = ["localhost", "127.0.0.1", "::1"]
CLIENTS = [("admin", "admin"), ("operator", "operator"), ("dataplane", "dataplane")]
Factory = Callable[..., ReplicaProcess]

# Every service of the generated modules (bulwark.v1's, and Envoy's rate limiting).
SERVICES: dict[str, ServiceDescriptor] = {
    service.full_name: service
    for module in [
        importlib.import_module(f"bulwark.v1.{info.name}")
        for info in pkgutil.iter_modules(bulwark.v1.__path__)
        if info.name.endswith("_pb2")
    ]
    + [rls_pb2, externalscaler_pb2]
    for service in module.DESCRIPTOR.services_by_name.values()
}
# Services the replica served when this file was written: the matrix covers at least these.
CORE_SERVICES = frozenset(
    {
        "bulwark.v1.ClusterService",
        "bulwark.v1.CircuitBreakerService",
        "bulwark.v1.BulkheadService",
        "bulwark.v1.RateLimitService",
        "bulwark.v1.RegistryService",
        "bulwark.v1.FeatureService",
        "bulwark.v1.AuthService",
        "bulwark.v1.AuditService",
        "envoy.service.ratelimit.v3.RateLimitService",
    }
)


# -- helpers --------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: Callable[[], object]) -> Code:
    """The status code a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]
    return Code.OK


def dur(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def bootstrap_token(etcd: EtcdMember, name: str, role: str) -> str:
    """`bulwark token create`: the first admin token of a deployment, straight into etcd."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bulwark_server", "token", "create"),
            *("--name", name, "--role", role, "--etcd-endpoints", etcd.endpoint),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("bwk.") and "\n" not in token, done.stdout
    return token


def replica_token(etcd: EtcdMember, replica_id: str) -> str:
    """The token a replica makes for itself at its start (the only kind of caller the
    replicas-only methods admit)."""

    async def make() -> str:
        store = EtcdStore([etcd.endpoint], timeout=5.0)
        await store.start(wait=10)
        try:
            token, _ = await TokenStore(store).create(
                f"replica-{replica_id}", Role.DATAPLANE, REPLICA_TOKEN_CREATOR
            )
            return token
        finally:
            await store.close()

    return asyncio.run(make())


def create_token(
    channel: grpc.Channel, admin: str, name: str, role: Role, ttl: float | None = None
) -> auth_pb2.CreateTokenResponse:
    request = auth_pb2.CreateTokenRequest(name=name, role=role.value)
    if ttl is not None:
        request.ttl.CopyFrom(dur(ttl))
    return auth_pb2_grpc.AuthServiceStub(channel).CreateToken(
        request, timeout=5, metadata=bearer(admin)
    )


def create_token_with_cert(
    channel: grpc.Channel, name: str, role: Role
) -> auth_pb2.CreateTokenResponse:
    """CreateToken as the caller of the channel's client certificate."""
    return auth_pb2_grpc.AuthServiceStub(channel).CreateToken(
        auth_pb2.CreateTokenRequest(name=name, role=role.value), timeout=5
    )


def whoami(channel: grpc.Channel, metadata: Any = ()) -> auth_pb2.WhoAmIResponse:
    return auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(
        auth_pb2.WhoAmIRequest(), timeout=5, metadata=metadata
    )


def whoami_code(channel: grpc.Channel, token: str) -> Code:
    return code_of(lambda: whoami(channel, bearer(token)))


def service_of(full_method: str) -> str:
    """ "bulwark.v1.AuthService" of "/bulwark.v1.AuthService/WhoAmI"."""
    return full_method.lstrip("/").rpartition("/")[0]


def method_descriptor(full_method: str) -> MethodDescriptor:
    return SERVICES[service_of(full_method)].methods_by_name[full_method.rpartition("/")[2]]


def invoke(channel: grpc.Channel, full_method: str, metadata: Any) -> Code:
    """Call any RPC with an empty request; read one message of a stream, then cancel it."""
    method = method_descriptor(full_method)
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    if method.server_streaming:
        stream = channel.unary_stream(
            full_method,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(request_type(), timeout=1.0, metadata=metadata)
        try:
            next(stream)
        except StopIteration:
            return Code.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined, no-any-return]
        finally:
            stream.cancel()
        return Code.OK
    unary = channel.unary_unary(
        full_method,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return code_of(lambda: unary(request_type(), timeout=3.0, metadata=metadata))


def reflected_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), timeout=5)
    return {s.name for r in responses for s in r.list_services_response.service}


def health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status  # type: ignore[no-any-return]


def list_events(channel: grpc.Channel, admin: str, **filters: Any) -> list[audit_pb2.AuditEvent]:
    """Every audit event matching ``filters``, one page of 1000 at a time."""
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=1000, page_token=token, **filters),
            timeout=5,
            metadata=bearer(admin) if admin else (),
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def calls(event: audit_pb2.AuditEvent) -> int:
    """How many calls an event stands for (tallied events carry a count)."""
    if "count" in event.DESCRIPTOR.fields_by_name:
        return int(event.count)
    return 1


def client_credentials(ca_pem: bytes, pair: certs.Issued | None = None) -> grpc.ChannelCredentials:
    if pair is None:
        return grpc.ssl_channel_credentials(ca_pem)
    return grpc.ssl_channel_credentials(ca_pem, pair.key_pem, pair.cert_pem)


def pair_of(paths: dict[str, Path], name: str) -> certs.Issued:
    return certs.Issued(paths[name].read_bytes(), paths[f"{name}-key"].read_bytes())


# -- TLS and mutual TLS ---------------------------------------------------------------


def test_mutual_tls_admits_certificates_of_its_ca_only(
    etcd: EtcdMember, replica_factory: Factory, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    paths = certs.write_bundle(pki, HOSTS, CLIENTS)
    ca_pem = paths["ca"].read_bytes()
    mtls = replica_factory(
        "mtls",
        [etcd.endpoint],
        f"--tls-cert={paths['server']}",
        f"--tls-key={paths['server-key']}",
        f"--tls-client-ca={paths['ca']}",
        "--auth=auto",  # the default: on, since the port speaks TLS
    )

    def on_mtls(creds: grpc.ChannelCredentials, call: Callable[[grpc.Channel], object]) -> Any:
        with grpc.secure_channel(mtls.address, creds) as channel:
            return call(channel)

    # Certificates of the CA: the CN is the name, the OU the role.
    admin = client_credentials(ca_pem, pair_of(paths, "admin"))
    me = on_mtls(admin, whoami)
    assert (me.name, me.role, me.method) == ("admin", auth_pb2.ACCESS_ROLE_ADMIN, "certificate")
    dataplane = client_credentials(ca_pem, pair_of(paths, "dataplane"))
    me = on_mtls(dataplane, whoami)
    assert (me.name, me.role, me.method) == (
        "dataplane",
        auth_pb2.ACCESS_ROLE_DATAPLANE,
        "certificate",
    )
    put = breaker_pb2.PutBreakerRequest(name="payments")
    denied = on_mtls(
        dataplane,
        lambda ch: code_of(lambda: breaker_pb2_grpc.CircuitBreakerServiceStub(ch).PutBreaker(put)),
    )
    assert denied is Code.PERMISSION_DENIED
    operator = client_credentials(ca_pem, pair_of(paths, "operator"))
    stored = on_mtls(
        operator,
        lambda ch: breaker_pb2_grpc.CircuitBreakerServiceStub(ch).PutBreaker(put, timeout=5),
    )
    assert stored.breaker.name == "payments"
    # A certificate of the CA without a role in its OU (the server's own) may do nothing.
    roleless = client_credentials(ca_pem, pair_of(paths, "server"))
    assert on_mtls(roleless, lambda ch: code_of(lambda: whoami(ch))) is Code.PERMISSION_DENIED

    # A follower forwards outcome reports to the leader over mutual TLS, as itself.
    follower = replica_factory(
        "mtls-2",
        [etcd.endpoint],
        f"--tls-cert={paths['server']}",
        f"--tls-key={paths['server-key']}",
        f"--tls-client-ca={paths['ca']}",
        "--auth=auto",  # the default: on, since the port speaks TLS
    )
    report = breaker_pb2.ReportOutcomesRequest(
        reporter="test",
        outcomes=[
            breaker_pb2.BreakerOutcomes(
                name="payments", counts=breaker_pb2.OutcomeCounts(successes=1)
            )
        ],
    )
    with grpc.secure_channel(follower.address, dataplane) as channel:
        cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
        leader = wait_for(
            lambda: cluster.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=5).leader.replica_id,
            3,
        )
        assert leader == "mtls"  # the first replica leads
        reported = breaker_pb2_grpc.CircuitBreakerServiceStub(channel).ReportOutcomes(
            report, timeout=5
        )
        assert reported.accepted == 1

    # A token sent over mutual TLS identifies the caller instead of the certificate.
    gateway = on_mtls(admin, lambda ch: create_token_with_cert(ch, "gateway", Role.DATAPLANE)).token
    me = on_mtls(admin, lambda ch: whoami(ch, bearer(gateway)))
    assert (me.name, me.role, me.method) == ("gateway", auth_pb2.ACCESS_ROLE_DATAPLANE, "token")

    # Refused at the handshake: no certificate, another CA's, an expired one, plaintext.
    ca = certs.load_ca(pki)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    refused = {
        "no client certificate": client_credentials(ca_pem),
        "another CA": client_credentials(
            ca_pem, certs.issue_client(certs.new_ca("Another CA"), "admin", "admin")
        ),
        "expired": client_credentials(
            ca_pem, certs.issue_client(ca, "admin", "admin", days=1, not_before=long_ago)
        ),
    }
    for what, creds in refused.items():
        assert on_mtls(creds, lambda ch: code_of(lambda: whoami(ch))) is Code.UNAVAILABLE, what
    with grpc.insecure_channel(mtls.address) as channel:
        assert code_of(lambda: whoami(channel)) is Code.UNAVAILABLE, "plaintext"
        assert code_of(lambda: health(channel)) is Code.UNAVAILABLE, "plaintext health"

    # TLS without a client CA (authentication on by default): tokens only.
    tls = replica_factory(
        "tls",
        [etcd.endpoint],
        f"--tls-cert={paths['server']}",
        f"--tls-key={paths['server-key']}",
        "--auth=auto",
    )
    with grpc.secure_channel(tls.address, client_credentials(ca_pem)) as channel:
        wait_for(lambda: code_of(lambda: whoami(channel, bearer(gateway))) is Code.OK, 3)
        me = whoami(channel, bearer(gateway))
        assert (me.name, me.method) == ("gateway", "token")
        assert code_of(lambda: whoami(channel)) is Code.UNAUTHENTICATED
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
    # The server asks for no certificate, so one of any CA identifies no one.
    rogue = certs.issue_client(certs.new_ca("Rogue CA"), "admin", "admin")
    with grpc.secure_channel(tls.address, client_credentials(ca_pem, rogue)) as channel:
        assert code_of(lambda: whoami(channel)) is Code.UNAUTHENTICATED
    with grpc.insecure_channel(tls.address) as channel:
        assert code_of(lambda: whoami(channel, bearer(gateway))) is Code.UNAVAILABLE


# -- the role of every RPC ------------------------------------------------------------


def test_every_rpc_needs_the_role_of_its_rule(etcd: EtcdMember, replica_factory: Factory) -> None:
    admin = bootstrap_token(etcd, "root", "admin")
    replica = replica_factory("matrix", [etcd.endpoint], "--auth=on")
    with grpc.insecure_channel(replica.address) as channel:
        # Open to everyone, without credentials.
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        served = reflected_services(channel) - OPEN_SERVICES
        # Every method of every service the replica serves has a rule.
        assert served >= CORE_SERVICES
        for service in served:
            for method in SERVICES[service].methods:
                assert f"/{service}/{method.name}" in RULES, f"{service}/{method.name}"

        tokens = {Role.ADMIN: admin}
        for role in (Role.OPERATOR, Role.DATAPLANE):
            tokens[role] = create_token(channel, admin, f"matrix-{role.label}", role).token
        peer = replica_token(etcd, "peer")

        wrong = []
        for full_method, rule in sorted(RULES.items()):
            if service_of(full_method) not in served:
                # A rule ahead of its service: nothing answers it yet, whoever calls.
                for metadata in [(), bearer(admin)]:
                    got = invoke(channel, full_method, metadata)
                    if got is not Code.UNIMPLEMENTED:
                        wrong.append(f"{full_method} (not served): {got.name}")
                continue
            got = invoke(channel, full_method, ())
            if got is not Code.UNAUTHENTICATED:
                wrong.append(f"{full_method} without credentials: {got.name}")
            if rule.replicas_only:
                # Spoken between replicas: a replica's own token, and no one else's.
                for role, token in tokens.items():
                    got = invoke(channel, full_method, bearer(token))
                    if got is not Code.PERMISSION_DENIED:
                        wrong.append(f"{full_method} as {role.label} (no replica): {got.name}")
                got = invoke(channel, full_method, bearer(peer))
                if got in AUTH_CODES:
                    wrong.append(f"{full_method} as a replica: {got.name}")
                continue
            for role, token in tokens.items():
                got = invoke(channel, full_method, bearer(token))
                if role < rule.role and got is not Code.PERMISSION_DENIED:
                    wrong.append(f"{full_method} as {role.label} (< {rule.role.label}): {got.name}")
                if role >= rule.role and got in AUTH_CODES:
                    wrong.append(
                        f"{full_method} as {role.label} (>= {rule.role.label}): {got.name}"
                    )
        assert not wrong, "\n".join(wrong)


# -- tokens ---------------------------------------------------------------------------


def test_tokens_are_revoked_everywhere_expire_and_stay_secret(
    etcd: EtcdMember, replica_factory: Factory
) -> None:
    admin = bootstrap_token(etcd, "root", "admin")
    a = replica_factory("tokens-a", [etcd.endpoint], "--auth=on")
    b = replica_factory("tokens-b", [etcd.endpoint], "--auth=on")
    with grpc.insecure_channel(a.address) as channel, grpc.insecure_channel(b.address) as other:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        created = create_token(channel, admin, "gateway", Role.DATAPLANE)
        token = created.token
        assert created.record.secret_sha256 == b""
        assert created.record.created_by == "root"
        assert whoami_code(channel, token) is Code.OK
        wait_for(lambda: whoami_code(other, token) is Code.OK, 2)
        me = whoami(other, bearer(token))
        assert (me.name, me.role, me.method, me.token_id) == (
            "gateway",
            auth_pb2.ACCESS_ROLE_DATAPLANE,
            "token",
            created.record.id,
        )

        # Revoked through A: refused by B within a second, without a restart.
        auth.RevokeToken(
            auth_pb2.RevokeTokenRequest(id=created.record.id), timeout=5, metadata=bearer(admin)
        )
        wait_for(lambda: whoami_code(other, token) is Code.UNAUTHENTICATED, 1.0, 0.02)
        assert whoami_code(channel, token) is Code.UNAUTHENTICATED
        again = auth_pb2.RevokeTokenRequest(id=created.record.id)
        assert code_of(lambda: auth.RevokeToken(again, timeout=5, metadata=bearer(admin))) is (
            Code.NOT_FOUND
        )

        # A token with a TTL of one second works, then stops working.
        short = create_token(channel, admin, "short-lived", Role.OPERATOR, ttl=1.0)
        born = time.monotonic()
        assert short.record.HasField("expires_at")
        assert whoami_code(channel, short.token) is Code.OK
        wait_for(lambda: whoami_code(channel, short.token) is Code.UNAUTHENTICATED, 2.5, 0.05)
        assert time.monotonic() - born >= 0.5
        assert whoami_code(other, short.token) is Code.UNAUTHENTICATED

        # Listing pages through records without their secrets; revoked ones are gone.
        listed: list[auth_pb2.Token] = []
        page_token = ""
        while True:
            page = auth.ListTokens(
                auth_pb2.ListTokensRequest(page_size=2, page_token=page_token),
                timeout=5,
                metadata=bearer(admin),
            )
            assert len(page.tokens) <= 2
            listed.extend(page.tokens)
            page_token = page.next_page_token
            if not page_token:
                break
        names = [t.name for t in listed]
        assert "root" in names and "short-lived" in names
        assert "replica-tokens-a" in names and "replica-tokens-b" in names
        assert created.record.id not in {t.id for t in listed}
        assert all(t.secret_sha256 == b"" for t in listed), listed
        assert [t.id for t in listed] == sorted(t.id for t in listed)

        # Malformed, unknown or tampered tokens, and other schemes, are refused.
        token_id = admin.split(".")[1]
        secret = admin.split(".")[2]
        tampered = f"bwk.{token_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
        unknown = f"bwk.{'0' * 16}.{secret}"
        bad = [
            bearer("garbage"),
            bearer(""),
            bearer("bwk.zz.yy"),
            bearer(tampered),
            bearer(unknown),
            bearer(admin + "x" * 200),
            (("authorization", f"Basic {admin}"),),
        ]
        for metadata in bad:
            assert code_of(lambda m=metadata: whoami(channel, m)) is Code.UNAUTHENTICATED, metadata
        assert whoami(channel, bearer(admin)).name == "root"


# -- the audit trail ------------------------------------------------------------------


def test_state_changes_and_refusals_are_audited(etcd: EtcdMember, replica_factory: Factory) -> None:
    admin = bootstrap_token(etcd, "root", "admin")
    replica = replica_factory("audit", [etcd.endpoint], "--auth=on")
    with grpc.insecure_channel(replica.address) as channel:
        ops = bearer(create_token(channel, admin, "ops", Role.OPERATOR).token)
        dp = bearer(create_token(channel, admin, "dp", Role.DATAPLANE).token)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(channel)

        put = breakers.PutBreaker(
            breaker_pb2.PutBreakerRequest(name="payments"), timeout=5, metadata=ops
        )
        bad = breaker_pb2.PutBreakerRequest(
            name="payments", config=breaker_pb2.BreakerConfig(failure_rate_threshold=150)
        )
        assert code_of(lambda: breakers.PutBreaker(bad, timeout=5, metadata=ops)) is (
            Code.INVALID_ARGUMENT
        )
        denied = breaker_pb2.PutBreakerRequest(name="payments")
        assert code_of(lambda: breakers.PutBreaker(denied, timeout=5, metadata=dp)) is (
            Code.PERMISSION_DENIED
        )
        anonymous = breaker_pb2.PutBreakerRequest(name="payments")
        assert code_of(lambda: breakers.PutBreaker(anonymous, timeout=5)) is Code.UNAUTHENTICATED
        # With authentication on, the actor a request claims does not replace the caller's.
        forced = breakers.ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments",
                state=breaker_pb2.BREAKER_STATE_FORCED_OPEN,
                reason="drill",
                actor="mallory",
            ),
            timeout=5,
            metadata=ops,
        )
        assert forced.breaker.status.state == breaker_pb2.BREAKER_STATE_FORCED_OPEN
        assert forced.breaker.status.last_transition.actor == "ops"
        breakers.GetBreaker(breaker_pb2.GetBreakerRequest(name="payments"), timeout=5, metadata=ops)
        deleted = breakers.DeleteBreaker(
            breaker_pb2.DeleteBreakerRequest(name="payments"), timeout=5, metadata=ops
        )

        # One event per call; refusals are tallied, so they may come a moment later.
        expected = [
            ("ops", "PutBreaker", "OK"),
            ("ops", "PutBreaker", "INVALID_ARGUMENT"),
            ("dp", "PutBreaker", "PERMISSION_DENIED"),
            ("unknown", "PutBreaker", "UNAUTHENTICATED"),
            ("ops", "ForceState", "OK"),
            ("ops", "DeleteBreaker", "OK"),
        ]

        def about_payments() -> list[audit_pb2.AuditEvent] | None:
            found = [e for e in list_events(channel, admin) if e.target == "name=payments"]
            return found if len(found) >= len(expected) else None

        events = wait_for(about_payments, 1.0)
        assert isinstance(events, list)
        outcomes = [(e.actor, e.method.rpartition("/")[2], e.code) for e in events]
        assert sorted(outcomes) == sorted(expected)
        assert all(calls(e) == 1 for e in events)
        by_outcome = dict(zip(outcomes, events, strict=True))
        put_ev, bad_ev, denied_ev, anonymous_ev, forced_ev, deleted_ev = (
            by_outcome[key] for key in expected
        )
        # Calls let in are written before they answer: in the order they were made.
        admitted = [e.id for e in events if e.code not in {"PERMISSION_DENIED", "UNAUTHENTICATED"}]
        assert admitted == [put_ev.id, bad_ev.id, forced_ev.id, deleted_ev.id]
        assert put_ev.method == "/bulwark.v1.CircuitBreakerService/PutBreaker"
        assert put_ev.revision == put.breaker.revision > 0
        assert forced_ev.revision == forced.breaker.revision > put.breaker.revision
        assert deleted_ev.revision == deleted.revision > forced.breaker.revision
        assert bad_ev.revision == denied_ev.revision == anonymous_ev.revision == 0
        assert bad_ev.message and denied_ev.message and anonymous_ev.message
        assert (put_ev.role, put_ev.auth_method) == (auth_pb2.ACCESS_ROLE_OPERATOR, "token")
        assert denied_ev.role == auth_pb2.ACCESS_ROLE_DATAPLANE
        assert all(e.replica == "audit" and e.peer for e in events)
        assert [e.id for e in events] == sorted(e.id for e in events)
        # Reads are not recorded.
        assert list_events(channel, admin, method="GetBreaker") == []

        # Data-plane calls that write are recorded too, within a second (batched).
        bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="pool", max_concurrent=2)
            ),
            timeout=5,
            metadata=ops,
        )
        permit = bulkheads.Acquire(
            bulkhead_pb2.AcquireRequest(bulkhead="pool", holder="worker-1", ttl=dur(10)),
            timeout=5,
            metadata=dp,
        ).permit
        released = bulkheads.Release(
            bulkhead_pb2.ReleaseRequest(bulkhead="pool", permit_id=permit.id),
            timeout=5,
            metadata=dp,
        )

        def data_plane() -> list[audit_pb2.AuditEvent] | None:
            found = list_events(channel, admin, actor="dp")
            found = [e for e in found if e.method.endswith(("/Acquire", "/Release"))]
            return found if len(found) == 2 else None

        acquire_ev, release_ev = wait_for(data_plane, 1.0)  # type: ignore[misc]
        assert calls(acquire_ev) == calls(release_ev) == 1
        assert acquire_ev.method == "/bulwark.v1.BulkheadService/Acquire"
        assert acquire_ev.target.startswith("bulkhead=pool") and acquire_ev.code == "OK"
        assert 0 < acquire_ev.revision < released.revision
        assert release_ev.method == "/bulwark.v1.BulkheadService/Release"
        assert release_ev.target == f"bulkhead=pool permit_id={permit.id}"
        assert release_ev.revision == released.revision

        # Paging, order and filters.
        every = list_events(channel, admin)
        ids = [e.id for e in every]
        assert len(ids) >= 10 and ids == sorted(ids)
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        for newest_first in (False, True):
            paged: list[str] = []
            token = ""
            while True:
                page = audit.ListAuditEvents(
                    audit_pb2.ListAuditEventsRequest(
                        page_size=2, page_token=token, newest_first=newest_first
                    ),
                    timeout=5,
                    metadata=bearer(admin),
                )
                assert len(page.events) <= 2
                paged.extend(e.id for e in page.events)
                token = page.next_page_token
                if not token:
                    break
            assert paged == (ids[::-1] if newest_first else ids)
        by_ops = list_events(channel, admin, actor="ops")
        assert [e.id for e in by_ops] == [e.id for e in every if e.actor == "ops"]
        assert {e.actor for e in every} >= {"root", "ops", "dp"}
        puts = [e.id for e in every if e.method.endswith("/PutBreaker")]
        assert len(puts) == 4
        assert [e.id for e in list_events(channel, admin, method="PutBreaker")] == puts
        full_name = "/bulwark.v1.CircuitBreakerService/PutBreaker"
        assert [e.id for e in list_events(channel, admin, method=full_name)] == puts
        assert [e.id for e in list_events(channel, admin, actor="dp", method="PutBreaker")] == [
            denied_ev.id
        ]


def test_audit_retention_keeps_the_newest_events(
    etcd: EtcdMember, replica_factory: Factory
) -> None:
    # Authentication off: every caller is the anonymous admin.
    replica = replica_factory("retention", [etcd.endpoint], "--auth=off", "--audit-max-events=100")
    with grpc.insecure_channel(replica.address) as channel:
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        for i in range(130):
            breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name=f"b-{i:03d}"), timeout=5)
        assert len(list_events(channel, "")) > 100
        wait_for(lambda: len(list_events(channel, "")) <= 100, 8, 0.2)
        kept = list_events(channel, "")
        assert len(kept) == 100
        assert [e.target for e in kept] == [f"name=b-{i:03d}" for i in range(30, 130)]
        assert {e.actor for e in kept} == {"anonymous"}


# -- overload shedding ----------------------------------------------------------------


def test_overload_sheds_configuration_first_and_decisions_last(
    etcd: EtcdMember, replica_factory: Factory
) -> None:
    replica = replica_factory("shed", [etcd.endpoint], "--auth=off", "--max-in-flight=8")
    with (
        grpc.insecure_channel(replica.address) as channel,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(channel)
        breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="pool", max_concurrent=1, max_wait=dur(10))
            ),
            timeout=5,
        )
        held = bulkheads.Acquire(
            bulkhead_pb2.AcquireRequest(bulkhead="pool", holder="holder", ttl=dur(30)), timeout=5
        ).permit

        def wait_then_release(holder: str, max_wait: float) -> Code:
            """Acquire (blocking while the bulkhead is full), then give the permit back."""
            request = bulkhead_pb2.AcquireRequest(
                bulkhead="pool", holder=holder, ttl=dur(30), max_wait=dur(max_wait)
            )
            try:
                permit = bulkheads.Acquire(request, timeout=max_wait + 5).permit
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[attr-defined, no-any-return]
            bulkheads.Release(
                bulkhead_pb2.ReleaseRequest(bulkhead="pool", permit_id=permit.id), timeout=5
            )
            return Code.OK

        def shed(call: Callable[..., Any], request: Any) -> str | None:
            """The retry hint of a call refused for overload, None if it was admitted."""
            try:
                call(request, timeout=2)
            except grpc.RpcError as exc:
                if exc.code() is not Code.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                    raise
                trailing = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
                return str(trailing.get("retry-after-ms", "missing"))
            return None

        listing = breaker_pb2.ListBreakersRequest()
        allow = breaker_pb2.AllowRequest(name="payments", caller="test")
        assert shed(breakers.ListBreakers, listing) is None

        # Six decisions in flight: listing is refused (beyond 4), decisions are not.
        waiting = [pool.submit(wait_then_release, f"w{i}", 8.0) for i in range(6)]
        wait_for(lambda: shed(breakers.ListBreakers, listing) is not None, 3)
        time.sleep(0.3)  # let the last of the six arrive
        assert shed(breakers.ListBreakers, listing) == "500"
        assert shed(breakers.Allow, allow) is None
        assert shed(bulkheads.GetBulkhead, bulkhead_pb2.GetBulkheadRequest(name="pool")) == "500"

        # Eight in flight: decisions are refused too, with a shorter hint.
        late = [pool.submit(wait_then_release, f"late{i}", 1.5) for i in range(2)]
        assert wait_for(lambda: shed(breakers.Allow, allow) == "50", 1.5, 0.02)
        release = bulkhead_pb2.ReleaseRequest(bulkhead="pool", permit_id=held.id)
        assert shed(bulkheads.Release, release) == "50"
        assert all(not f.done() for f in waiting)

        # The two late ones give up waiting; the held permit then passes down the six.
        assert [f.result(timeout=10) for f in late] == [Code.RESOURCE_EXHAUSTED] * 2
        assert shed(bulkheads.Release, release) is None
        assert [f.result(timeout=10) for f in waiting] == [Code.OK] * 6

        assert shed(breakers.ListBreakers, listing) is None
        assert breakers.Allow(allow, timeout=2).allowed
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        state = bulkheads.GetBulkhead(bulkhead_pb2.GetBulkheadRequest(name="pool"), timeout=5)
        assert state.bulkhead.in_use == 0


def test_a_revoked_token_ends_the_streams_it_opened(
    etcd: EtcdMember, replica_factory: Factory
) -> None:
    admin = bootstrap_token(etcd, "root", "admin")
    replica = replica_factory("streams", [etcd.endpoint], "--auth=on")
    with grpc.insecure_channel(replica.address) as channel:
        watcher = create_token(channel, admin, "watcher", Role.DATAPLANE)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        stream = breakers.WatchBreakers(
            breaker_pb2.WatchBreakersRequest(), timeout=20, metadata=bearer(watcher.token)
        )
        types = []
        outcome: list[Code] = []

        def read() -> None:
            try:
                for event in stream:
                    types.append(event.type)
            except grpc.RpcError as exc:
                outcome.append(exc.code())

        reader = threading.Thread(target=read)
        reader.start()
        try:
            wait_for(lambda: watch_pb2.WATCH_EVENT_TYPE_SYNCED in types, 5)
            put = breaker_pb2.PutBreakerRequest(name="watched-1")
            breakers.PutBreaker(put, timeout=5, metadata=bearer(admin))
            wait_for(lambda: watch_pb2.WATCH_EVENT_TYPE_PUT in types, 5)
            seen = len(types)
            auth_pb2_grpc.AuthServiceStub(channel).RevokeToken(
                auth_pb2.RevokeTokenRequest(id=watcher.record.id),
                timeout=5,
                metadata=bearer(admin),
            )
            # The next change would have been sent: the stream ends instead.
            put = breaker_pb2.PutBreakerRequest(name="watched-2")
            breakers.PutBreaker(put, timeout=5, metadata=bearer(admin))
            reader.join(5)
            assert outcome == [Code.UNAUTHENTICATED]
            assert len(types) == seen
        finally:
            stream.cancel()
            reader.join(5)


def test_a_forwarded_call_is_audited_as_its_caller_via_the_replica(
    etcd: EtcdMember, replica_factory: Factory
) -> None:
    admin = bootstrap_token(etcd, "root", "admin")
    a = replica_factory("fwd-a", [etcd.endpoint], "--auth=on")
    b = replica_factory("fwd-b", [etcd.endpoint], "--auth=on")
    with grpc.insecure_channel(a.address) as ca, grpc.insecure_channel(b.address) as cb:
        leader = cluster_pb2_grpc.ClusterServiceStub(ca).GetLeader(
            cluster_pb2.GetLeaderRequest(), timeout=5, metadata=bearer(admin)
        )
        follower = cb if leader.is_self else ca
        follower_id = "fwd-b" if leader.is_self else "fwd-a"
        gateway = create_token(ca, admin, "gateway", Role.DATAPLANE).token
        config = breaker_pb2.BreakerConfig(minimum_number_of_calls=5, sliding_window_size=5)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(follower)
        breakers.PutBreaker(
            breaker_pb2.PutBreakerRequest(name="forwarded", config=config),
            timeout=5,
            metadata=bearer(admin),
        )
        # Failures reported to the follower are aggregated on the leader, and trip it.
        report = breaker_pb2.ReportOutcomesRequest(
            reporter="gw-1",
            outcomes=[
                breaker_pb2.BreakerOutcomes(
                    name="forwarded", counts=breaker_pb2.OutcomeCounts(failures=5)
                )
            ],
        )
        breakers.ReportOutcomes(report, timeout=5, metadata=bearer(gateway))

        def reports() -> list[audit_pb2.AuditEvent]:
            return [
                e
                for e in list_events(ca, admin, method="ReportOutcomes")
                if e.target == "name=forwarded" or e.actor.startswith("gateway")
            ]

        events = wait_for(reports, 3)
        assert events[0].actor == f"gateway via replica-{follower_id}", events[0]
        assert events[0].revision > 0
        # The header means nothing from a caller's own token.
        spoofed = (*bearer(gateway), ("bulwark-on-behalf-of", "mallory"))
        me = auth_pb2_grpc.AuthServiceStub(ca).WhoAmI(
            auth_pb2.WhoAmIRequest(), timeout=5, metadata=spoofed
        )
        assert me.name == "gateway"
