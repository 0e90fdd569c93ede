"""A real etcd serving its client URL over mutual TLS with certificates from the local CA."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bulwark.v1 import breaker_pb2, breaker_pb2_grpc, cluster_pb2, cluster_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, EtcdTls
from bulwark_server.security.certs import issue_more, write_bundle
from bulwark_server.store._etcd_client import Etcd3Client


@pytest.fixture
def bundle(tmp_path: Path) -> dict[str, Path]:
    return write_bundle(
        tmp_path / "pki", ["localhost", "127.0.0.1", "::1"], [("replica", "dataplane")]
    )


@pytest.fixture
def tls_etcd(tmp_path: Path, bundle: dict[str, Path]) -> Iterator[EtcdMember]:
    tls = EtcdTls(bundle["server"], bundle["server-key"], bundle["ca"], client_cert_auth=True)
    member = EtcdMember("tls", tmp_path / "etcd", unsafe_no_fsync=True, tls=tls)
    member.start()
    try:
        member.wait_healthy()
        yield member
    finally:
        member.stop()


def context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def get_health(url: str, ctx: ssl.SSLContext | None = None) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/health", timeout=5, context=ctx) as resp:
        return dict(json.loads(resp.read()))


def test_member_with_tls_becomes_healthy(tls_etcd: EtcdMember) -> None:
    assert tls_etcd.endpoint == f"127.0.0.1:{tls_etcd.client_port}"
    assert tls_etcd.client_url == f"https://127.0.0.1:{tls_etcd.client_port}"
    assert tls_etcd.peer_url.startswith("http://")
    assert tls_etcd.healthy()


def test_https_with_a_client_certificate_gets_health(
    tls_etcd: EtcdMember, bundle: dict[str, Path]
) -> None:
    ctx = context(bundle["ca"], bundle["replica"], bundle["replica-key"])
    assert get_health(tls_etcd.client_url, ctx)["health"] == "true"


def test_plain_http_is_refused(tls_etcd: EtcdMember) -> None:
    # URLError, HTTPError (Go's 400 to plain HTTP) and resets are all OSError.
    with pytest.raises(OSError):
        get_health(f"http://{tls_etcd.endpoint}")
    plain = EtcdMember("plain", tls_etcd.data_dir, client_port=tls_etcd.client_port)
    assert not plain.healthy()


def test_https_without_a_client_certificate_is_refused(
    tls_etcd: EtcdMember, bundle: dict[str, Path]
) -> None:
    with pytest.raises(OSError):
        get_health(tls_etcd.client_url, context(bundle["ca"]))


def test_client_certificate_from_another_ca_is_refused(
    tls_etcd: EtcdMember, tmp_path: Path, bundle: dict[str, Path]
) -> None:
    other = write_bundle(tmp_path / "other", ["localhost"], [("intruder", "admin")])
    with pytest.raises(OSError):
        get_health(
            tls_etcd.client_url, context(bundle["ca"], other["intruder"], other["intruder-key"])
        )


def test_a_later_client_certificate_from_the_same_ca_is_accepted(
    tls_etcd: EtcdMember, bundle: dict[str, Path]
) -> None:
    more = issue_more(bundle["ca"].parent, [("late", "operator")])
    ctx = context(bundle["ca"], more["late"], more["late-key"])
    assert get_health(tls_etcd.client_url, ctx)["health"] == "true"


async def test_grpc_client_reads_and_writes_over_mutual_tls(
    tls_etcd: EtcdMember, bundle: dict[str, Path]
) -> None:
    async with Etcd3Client(
        [tls_etcd.endpoint],
        ca_cert=bundle["ca"].read_bytes(),
        cert_key=bundle["replica-key"].read_bytes(),
        cert_chain=bundle["replica"].read_bytes(),
    ) as client:
        await client.kv.put("/bulwark-tls-test", "ok", timeout=5)
        response = await client.kv.get("/bulwark-tls-test", timeout=5)
        assert [kv.value for kv in response.kvs] == [b"ok"]


def test_wait_healthy_reports_why_the_probe_fails(tmp_path: Path, bundle: dict[str, Path]) -> None:
    # The server certificate does not name 127.0.0.1, so no client could verify it.
    wrong = write_bundle(tmp_path / "wrong", ["elsewhere.example"], [])
    tls = EtcdTls(wrong["server"], wrong["server-key"], wrong["ca"])
    member = EtcdMember("wrong", tmp_path / "etcd-wrong", unsafe_no_fsync=True, tls=tls)
    member.start()
    try:
        with pytest.raises(
            RuntimeError, match=r"last probe: URLError: [^)]*CERTIFICATE_VERIFY_FAILED"
        ):
            member.wait_healthy(timeout=3)
    finally:
        member.stop()


def test_client_cert_auth_needs_a_ca(bundle: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        EtcdTls(bundle["server"], bundle["server-key"], client_cert_auth=True)


def test_a_replica_keeps_its_state_in_an_etcd_that_requires_client_certificates(
    tls_etcd: EtcdMember,
    bundle: dict[str, Path],
    replica_factory: Callable[..., ReplicaProcess],
) -> None:
    replica = replica_factory(
        "r1",
        [f"localhost:{tls_etcd.client_port}"],
        f"--etcd-ca={bundle['ca']}",
        f"--etcd-cert={bundle['replica']}",
        f"--etcd-key={bundle['replica-key']}",
    )
    with grpc.insecure_channel(replica.address) as channel:
        stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        stub.PutBreaker(breaker_pb2.PutBreakerRequest(name="over-tls"), timeout=5)
        status = cluster_pb2_grpc.ClusterServiceStub(channel).GetClusterStatus(
            cluster_pb2.GetClusterStatusRequest(), timeout=5
        )
    assert status.etcd_members[0].healthy, status.etcd_members[0].error
    # The breaker is in etcd: read it back over mutual TLS, as the replica wrote it.
    client = Etcd3Client(
        [tls_etcd.endpoint],
        ca_cert=bundle["ca"].read_bytes(),
        cert_key=bundle["replica-key"].read_bytes(),
        cert_chain=bundle["replica"].read_bytes(),
    )

    async def read() -> int:
        await client.connect()
        try:
            resp = await client.kv.get(b"/bulwark/v1/breakers/over-tls")
            return len(resp.kvs)
        finally:
            await client.close()

    assert asyncio.run(read()) == 1


def test_a_replica_without_the_client_certificate_is_refused_by_etcd(
    tls_etcd: EtcdMember, bundle: dict[str, Path], tmp_path: Path
) -> None:
    replica = ReplicaProcess(
        "r1",
        [f"localhost:{tls_etcd.client_port}"],
        tmp_path / "r1.log",
        extra_args=[f"--etcd-ca={bundle['ca']}", "--etcd-timeout=0.5"],
    )
    replica.start()
    try:
        # It keeps trying (etcd may be fixed meanwhile) but never serves without its state.
        with pytest.raises(RuntimeError, match="not serving"):
            replica.wait_serving(timeout=4)
        assert "BAD_CERTIFICATE" in replica.tail()
        # Waiting for etcd, it still stops when asked, rather than waiting to be killed.
        replica.signal(signal.SIGTERM)
        assert replica.wait(5) == 0
        assert "stopped before etcd answered" in replica.tail()
    finally:
        replica.stop()
