"""A small local certificate authority for Bulwark's mutual TLS.

Guarantees:

* Every key is EC P-256 and every signature ECDSA with SHA-256.
* The CA is self-signed with ``BasicConstraints(ca=True, path_length=0)``: it
  signs leaf certificates only, never another CA.
* Server certificates carry each host as a SAN (``IPAddress`` for IP literals,
  ``DNSName`` otherwise) and both ``serverAuth`` and ``clientAuth``, so one
  certificate serves an etcd member as server, peer and client.
* Client certificates carry the caller's role as the first OU of the subject;
  only the roles in :data:`ROLES` are issued. They are ``clientAuth`` only.
* Validity starts five minutes before issue (unless ``not_before`` is given) so a
  peer whose clock is slightly behind still accepts a fresh certificate.
* :func:`write_bundle` never replaces an existing ``ca.pem``, and private keys
  are written mode 0o600 inside a 0o700 folder.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES: tuple[str, ...] = ("dataplane", "operator", "admin")

# Covers a peer whose clock runs a little behind the issuer's.
_CLOCK_SKEW = dt.timedelta(minutes=5)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# File stems in a bundle folder: no separators, no dot files, no "..".
_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESERVED_STEMS = frozenset({"ca", "ca-key", "server", "server-key"})


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes


def new_ca(
    common_name: str = "Bulwark local CA",
    days: int = 3650,
    *,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A new self-signed CA that may sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(days, not_before)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _issued(builder.sign(key, hashes.SHA256()), key)


def issue_server(
    ca: Issued,
    hosts: Sequence[str],
    days: int = 825,
    *,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A server certificate for ``hosts`` (CN = the first), also usable as a TLS client."""
    if isinstance(hosts, str) or not hosts:
        raise ValueError("issue_server needs a non-empty sequence of host names or IPs")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return _issue_leaf(
        ca,
        subject,
        sans,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days,
        not_before,
    )


def issue_client(
    ca: Issued,
    name: str,
    role: str,
    days: int = 825,
    *,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A client certificate: CN = ``name``, OU = ``role`` (one of :data:`ROLES`).

    ``name`` is also a SAN ``DNSName`` when it is a valid DNS name (dot-separated
    labels), since some TLS stacks look at SANs only.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not name:
        raise ValueError("a client certificate needs a name")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name)] if _is_dns_name(name) else []
    return _issue_leaf(ca, subject, sans, [ExtendedKeyUsageOID.CLIENT_AUTH], days, not_before)


@functools.lru_cache(maxsize=1024)
def identity_of(cert_pem: bytes) -> tuple[str, str]:
    """``(name, role)`` of a PEM certificate: CN (else first SAN) and first OU ("" if none).

    Cached by the exact bytes, since the server asks once per request and a
    caller presents the same certificate for the life of its connection.
    Raises ValueError when ``cert_pem`` is not a PEM certificate.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else _first_san(cert)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    role = str(units[0].value) if units else ""
    return name, role


def write_bundle(
    directory: Path, hosts: Sequence[str], clients: Sequence[tuple[str, str]]
) -> dict[str, Path]:
    """Create a CA, a server certificate for ``hosts`` and one certificate per ``(name, role)``.

    Files: ``ca.pem``, ``ca-key.pem``, ``server.pem``, ``server-key.pem``,
    ``<name>.pem``, ``<name>-key.pem``; returned by label (the file stem).
    Raises FileExistsError if ``directory/ca.pem`` exists, so a CA that has
    signed certificates in use is never replaced; nothing is written then.
    """
    directory = Path(directory)
    ca_path = directory / "ca.pem"
    if ca_path.exists():
        raise FileExistsError(f"{ca_path} exists; refusing to replace a CA (use issue_more)")
    _check_client_names(clients)
    # Everything is issued before the first file is written, so a bad argument
    # leaves no half-written bundle behind.
    ca = new_ca()
    server = issue_server(ca, hosts)
    issued = {name: issue_client(ca, name, role) for name, role in clients}
    _make_private_dir(directory)
    # ca.pem is created exclusively and first: of two concurrent runs, one loses
    # here before it has overwritten anything of the other's.
    paths = {"ca": _write(ca_path, ca.cert_pem, 0o644, exclusive=True)}
    paths["ca-key"] = _write(directory / "ca-key.pem", ca.key_pem, 0o600)
    paths.update(_write_pair(directory, "server", server, exclusive=False))
    for name, pair in issued.items():
        paths.update(_write_pair(directory, name, pair, exclusive=False))
    return paths


def issue_more(directory: Path, clients: Sequence[tuple[str, str]]) -> dict[str, Path]:
    """Issue more client certificates from the CA in ``directory`` (``ca.pem``, ``ca-key.pem``).

    Raises FileExistsError rather than replace a client's existing certificate
    or key; delete them first to re-issue.
    """
    directory = Path(directory)
    ca = load_ca(directory)
    _check_client_names(clients)
    for name, _role in clients:
        for path in (directory / f"{name}.pem", directory / f"{name}-key.pem"):
            if path.exists():
                raise FileExistsError(f"{path} exists; delete it to re-issue {name!r}")
    issued = {name: issue_client(ca, name, role) for name, role in clients}
    paths: dict[str, Path] = {}
    for name, pair in issued.items():
        paths.update(_write_pair(directory, name, pair, exclusive=True))
    return paths


def load_ca(directory: Path) -> Issued:
    """The CA stored in ``directory``; ValueError if the key does not match or it is no CA."""
    directory = Path(directory)
    ca = Issued((directory / "ca.pem").read_bytes(), (directory / "ca-key.pem").read_bytes())
    _ca_parts(ca)
    return ca


def _validity(days: int, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if not_before is None:
        start = dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    elif not_before.tzinfo is None:
        raise ValueError("not_before must be timezone-aware")
    else:
        start = not_before
    return start, start + dt.timedelta(days=days)


def _ca_parts(ca: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    if key.public_key() != cert.public_key():
        raise ValueError("the CA key does not belong to the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("the CA certificate is not marked as a CA")
    return cert, key


def _issue_leaf(
    ca: Issued,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
    not_before: dt.datetime | None,
) -> Issued:
    ca_cert, ca_key = _ca_parts(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, not_before)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _issued(builder.sign(ca_key, hashes.SHA256()), key)


def _issued(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    return Issued(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _is_dns_name(name: str) -> bool:
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _first_san(cert: x509.Certificate) -> str:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for san in sans:
        return str(san.value)
    return ""


def _check_client_names(clients: Sequence[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for name, role in clients:
        # The name becomes a file name: keep it inside the folder and off the CA's files.
        if not _FILE_STEM.fullmatch(name) or ".." in name:
            raise ValueError(f"client name {name!r} is not usable as a file name")
        if name in _RESERVED_STEMS or name.endswith("-key"):
            raise ValueError(f"client name {name!r} clashes with the bundle's own files")
        if name in seen:
            raise ValueError(f"client name {name!r} given twice")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        seen.add(name)


def _make_private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask, and an existing folder keeps its own.
    directory.chmod(0o700)


def _write_pair(directory: Path, stem: str, pair: Issued, *, exclusive: bool) -> dict[str, Path]:
    return {
        stem: _write(directory / f"{stem}.pem", pair.cert_pem, 0o644, exclusive=exclusive),
        f"{stem}-key": _write(
            directory / f"{stem}-key.pem", pair.key_pem, 0o600, exclusive=exclusive
        ),
    }


def _write(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> Path:
    # O_NOFOLLOW: a planted symlink must not redirect a private key elsewhere.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    if exclusive:
        flags |= os.O_EXCL
    fd = os.open(path, flags, mode)
    try:
        # Set the mode before the first byte lands: the create mode is masked by
        # the umask, and a file that already existed keeps its old mode.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path
