"""Unit tests for bulwark_server.security.certs: the local CA, issued certificates, bundles."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bulwark_server.security.certs import (
    ROLES,
    Issued,
    identity_of,
    issue_client,
    issue_more,
    issue_server,
    load_ca,
    new_ca,
    write_bundle,
)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return new_ca()


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(kind).value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_self_signed_leaf_only_ca(ca: Issued) -> None:
    cert = load(ca.cert_pem)
    cert.verify_directly_issued_by(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Bulwark local CA"
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.ca is True and constraints.path_length == 0
    usage = ext(cert, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).digest
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.signature_hash_algorithm.name == "sha256"


def test_ca_validity_follows_days() -> None:
    cert = load(new_ca("Other CA", days=10).cert_pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=10)
    assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC)
    assert cert.subject.rfc4514_string() == "CN=Other CA"


def test_server_cert_chains_to_ca_and_names_every_host(ca: Issued) -> None:
    server = issue_server(ca, ["localhost", "127.0.0.1", "::1", "etcd.internal"])
    cert, ca_cert = load(server.cert_pem), load(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    sans = ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "etcd.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert list(ext(cert, x509.ExtendedKeyUsage)) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert ext(cert, x509.BasicConstraints).ca is False
    assert (
        ext(cert, x509.AuthorityKeyIdentifier).key_identifier
        == ext(ca_cert, x509.SubjectKeyIdentifier).digest
    )


def test_server_cert_needs_hosts(ca: Issued) -> None:
    with pytest.raises(ValueError):
        issue_server(ca, [])
    with pytest.raises(ValueError):
        issue_server(ca, "localhost")


def test_cert_from_another_ca_does_not_verify(ca: Issued) -> None:
    stranger = issue_server(new_ca("Stranger"), ["localhost"])
    with pytest.raises((ValueError, InvalidSignature)):
        load(stranger.cert_pem).verify_directly_issued_by(load(ca.cert_pem))


@pytest.mark.parametrize("role", ROLES)
def test_client_cert_carries_role_in_ou(ca: Issued, role: str) -> None:
    client = issue_client(ca, "checkout", role)
    cert = load(client.cert_pem)
    cert.verify_directly_issued_by(load(ca.cert_pem))
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    assert list(ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName) == ["checkout"]
    assert identity_of(client.cert_pem) == ("checkout", role)


def test_client_name_that_is_no_dns_name_gets_no_san(ca: Issued) -> None:
    client = issue_client(ca, "ops_alice", "operator")
    with pytest.raises(x509.ExtensionNotFound):
        load(client.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert identity_of(client.cert_pem) == ("ops_alice", "operator")


@pytest.mark.parametrize("role", ["", "root", "Admin", "dataplane "])
def test_unknown_role_is_refused(ca: Issued, role: str) -> None:
    with pytest.raises(ValueError, match="role"):
        issue_client(ca, "checkout", role)


def test_empty_client_name_is_refused(ca: Issued) -> None:
    with pytest.raises(ValueError):
        issue_client(ca, "", "admin")


def test_identity_without_ou_or_cn(ca: Issued) -> None:
    server = issue_server(ca, ["localhost"])
    assert identity_of(server.cert_pem) == ("localhost", "")
    assert identity_of(ca.cert_pem) == ("Bulwark local CA", "")


def test_identity_falls_back_to_first_san() -> None:
    # Built by hand: issue_* always set a CN.
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("san-only.example")]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert identity_of(pem) == ("san-only.example", "")


def test_identity_is_cached_by_bytes(ca: Issued) -> None:
    client = issue_client(ca, "cached", "dataplane")
    identity_of.cache_clear()
    identity_of(client.cert_pem)
    identity_of(client.cert_pem)
    info = identity_of.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    assert info.maxsize == 1024


def test_identity_of_garbage_raises() -> None:
    with pytest.raises(ValueError):
        identity_of(b"not a certificate")


def test_expired_certificate_via_not_before(ca: Issued) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    client = issue_client(ca, "old", "dataplane", days=1, not_before=long_ago)
    cert = load(client.cert_pem)
    cert.verify_directly_issued_by(load(ca.cert_pem))
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)


def test_days_and_not_before_are_checked(ca: Issued) -> None:
    with pytest.raises(ValueError, match="days"):
        issue_client(ca, "x", "admin", days=0)
    with pytest.raises(ValueError, match="timezone"):
        issue_server(ca, ["localhost"], not_before=dt.datetime(2020, 1, 1))


def test_signing_with_a_mismatched_ca_key_is_refused(ca: Issued) -> None:
    other = new_ca("Other")
    with pytest.raises(ValueError, match="does not belong"):
        issue_client(Issued(ca.cert_pem, other.key_pem), "x", "admin")
    leaf = issue_server(ca, ["localhost"])
    with pytest.raises(ValueError, match="not marked as a CA"):
        issue_client(leaf, "x", "admin")


def test_write_bundle_files_modes_and_chain(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    paths = write_bundle(
        directory, ["localhost", "127.0.0.1"], [("checkout", "dataplane"), ("alice", "operator")]
    )
    assert set(paths) == {
        "ca",
        "ca-key",
        "server",
        "server-key",
        "checkout",
        "checkout-key",
        "alice",
        "alice-key",
    }
    assert paths["ca"] == directory / "ca.pem"
    assert paths["checkout-key"] == directory / "checkout-key.pem"
    assert mode(directory) == 0o700
    for label, path in paths.items():
        assert path.parent == directory
        assert mode(path) == (0o600 if label.endswith("-key") else 0o644), label
    ca_cert = load(paths["ca"].read_bytes())
    for label in ("server", "checkout", "alice"):
        load(paths[label].read_bytes()).verify_directly_issued_by(ca_cert)
    assert identity_of(paths["alice"].read_bytes()) == ("alice", "operator")
    # Every key matches its certificate.
    for label in ("ca", "server", "checkout", "alice"):
        key = serialization.load_pem_private_key(paths[f"{label}-key"].read_bytes(), password=None)
        assert key.public_key() == load(paths[label].read_bytes()).public_key()


def test_write_bundle_tightens_an_existing_folder_and_key_files(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    stale = tmp_path / "server-key.pem"
    stale.write_text("old")
    stale.chmod(0o644)
    paths = write_bundle(tmp_path, ["localhost"], [])
    assert mode(tmp_path) == 0o700
    assert mode(paths["server-key"]) == 0o600
    assert paths["server-key"].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_write_bundle_refuses_to_replace_a_ca(tmp_path: Path) -> None:
    paths = write_bundle(tmp_path, ["localhost"], [("checkout", "dataplane")])
    before = {label: path.read_bytes() for label, path in paths.items()}
    with pytest.raises(FileExistsError):
        write_bundle(tmp_path, ["localhost"], [("checkout", "dataplane")])
    assert {label: path.read_bytes() for label, path in paths.items()} == before


def test_write_bundle_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    directory = tmp_path / "pki"
    directory.mkdir()
    (directory / "server-key.pem").symlink_to(target)
    with pytest.raises(OSError):
        write_bundle(directory, ["localhost"], [])
    assert target.read_text() == "untouched"


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ([("checkout", "nobody")], "role"),
        ([("../escape", "admin")], "file name"),
        ([("a/b", "admin")], "file name"),
        ([(".hidden", "admin")], "file name"),
        ([("ca", "admin")], "clashes"),
        ([("server", "admin")], "clashes"),
        ([("checkout-key", "admin")], "clashes"),
        ([("x", "admin"), ("x", "operator")], "twice"),
    ],
)
def test_write_bundle_checks_clients_before_writing(
    tmp_path: Path, clients: list[tuple[str, str]], message: str
) -> None:
    directory = tmp_path / "pki"
    with pytest.raises(ValueError, match=message):
        write_bundle(directory, ["localhost"], clients)
    assert not directory.exists()


def test_issue_more_uses_the_existing_ca(tmp_path: Path) -> None:
    first = write_bundle(tmp_path, ["localhost"], [("checkout", "dataplane")])
    ca_before = first["ca"].read_bytes()
    more = issue_more(tmp_path, [("bob", "admin"), ("billing", "dataplane")])
    assert set(more) == {"bob", "bob-key", "billing", "billing-key"}
    assert first["ca"].read_bytes() == ca_before
    ca_cert = load(ca_before)
    for label in ("bob", "billing"):
        load(more[label].read_bytes()).verify_directly_issued_by(ca_cert)
        assert mode(more[f"{label}-key"]) == 0o600
    assert identity_of(more["bob"].read_bytes()) == ("bob", "admin")
    assert load_ca(tmp_path).cert_pem == ca_before


def test_issue_more_does_not_replace_a_client(tmp_path: Path) -> None:
    paths = write_bundle(tmp_path, ["localhost"], [("checkout", "dataplane")])
    before = paths["checkout"].read_bytes()
    with pytest.raises(FileExistsError):
        issue_more(tmp_path, [("fresh", "admin"), ("checkout", "admin")])
    assert paths["checkout"].read_bytes() == before
    assert not (tmp_path / "fresh.pem").exists()


def test_issue_more_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        issue_more(tmp_path, [("bob", "admin")])
