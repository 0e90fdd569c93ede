"""Settings: one validated object read from ``BULWARK_*`` variables and flags.

Flags win over environment variables, which win over defaults. Every setting
is declared once in ``OPTIONS`` so the flag, the variable, the default and the
``--help`` text cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "BULWARK_"


class SettingsError(ValueError):
    """Settings failed validation; ``problems`` lists one sentence per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed); raise ValueError naming ``what``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or any(c.isspace() for c in value):
        raise ValueError(f"{what}: expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError(f"{what}: bad bracketed IPv6 host in {value!r}")
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"{what}: put an IPv6 host in brackets, as [::1]:port, got {value!r}")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{what}: port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{what}: port must be 0-65535, got {port}")
    return host, port


@dataclass(frozen=True)
class Settings:
    """Everything a replica needs to start. Build with :func:`load`."""

    listen: str = "127.0.0.1:50051"
    advertise_address: str = ""
    replica_id: str = ""
    etcd_endpoints: tuple[str, ...] = ()
    data_dir: Path = Path("var")
    lease_ttl: int = 2
    etcd_timeout: float = 2.0
    etcd_max_request_bytes: int = 512 * 1024
    shutdown_grace: float = 5.0
    max_message_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    log_format: str = "json"
    otel_exporter: str = "none"
    otel_endpoint: str = ""
    metrics_listen: str = ""
    alertmanager_urls: tuple[str, ...] = ()
    limits_file: Path | None = None
    limit_response_headers_enabled: bool = False
    limit_limit_header: str = "RateLimit-Limit"
    limit_remaining_header: str = "RateLimit-Remaining"
    limit_reset_header: str = "RateLimit-Reset"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_peer_ca: Path | None = None
    allow_plaintext: bool = False
    auth: str = "auto"
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    max_in_flight: int = 1000
    audit_retention_days: float = 30.0
    audit_max_events: int = 100_000
    kek_file: Path | None = None
    keks: str = ""
    kek_active: str = ""
    backup_dirs: tuple[Path, ...] = ()
    snapshot_interval: float = 3600.0
    snapshot_retention: int = 24
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def embedded_etcd(self) -> bool:
        """True when no etcd is configured and Bulwark runs its own child etcd."""
        return not self.etcd_endpoints

    @property
    def tls(self) -> bool:
        """True when the gRPC port speaks TLS (mutual TLS with a client CA)."""
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        """True when the listen address is reachable from this machine only."""
        host, _ = split_host_port(self.listen, "listen")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def auth_enabled(self) -> bool:
        """Whether callers must prove an identity.

        ``auto`` turns it off only for the development default: plaintext on
        loopback with the embedded etcd. A replica of a shared etcd must not hand
        admin to every local process, whatever address it listens on.
        """
        if self.auth == "auto":
            return self.tls or not self.loopback or not self.embedded_etcd
        return self.auth == "on"

    def validate(self) -> Settings:
        """Return self, or raise SettingsError listing every problem at once."""
        problems: list[str] = []
        try:
            split_host_port(self.listen, "listen (BULWARK_LISTEN)")
        except ValueError as exc:
            problems.append(str(exc))
        if self.advertise_address:
            try:
                split_host_port(self.advertise_address, "advertise_address")
            except ValueError as exc:
                problems.append(str(exc))
        # The receivers' own rule for a URL, so a setting takes what a route takes.
        from bulwark_server.alerts.delivery import check_url
        from bulwark_server.errors import InvalidArgument

        for i, url in enumerate(self.alertmanager_urls):
            try:
                check_url(url, f"alertmanager_urls[{i}] (BULWARK_ALERTMANAGER_URLS)")
            except InvalidArgument as exc:
                problems.append(exc.message)
        if self.metrics_listen:
            try:
                split_host_port(self.metrics_listen, "metrics_listen (BULWARK_METRICS_LISTEN)")
            except ValueError as exc:
                problems.append(str(exc))
        for endpoint in self.etcd_endpoints:
            try:
                split_host_port(endpoint, "etcd_endpoints (BULWARK_ETCD_ENDPOINTS)")
            except ValueError as exc:
                problems.append(str(exc))
        if not 1 <= self.lease_ttl <= 60:
            problems.append(f"lease_ttl (BULWARK_LEASE_TTL): 1-60 seconds, got {self.lease_ttl}")
        if not 0.1 <= self.etcd_timeout <= 60:
            problems.append(
                f"etcd_timeout (BULWARK_ETCD_TIMEOUT): 0.1-60 s, got {self.etcd_timeout}"
            )
        if self.etcd_max_request_bytes < 16 * 1024:
            problems.append(
                "etcd_max_request_bytes (BULWARK_ETCD_MAX_REQUEST_BYTES): at least 16384, "
                f"got {self.etcd_max_request_bytes}"
            )
        if not 0 <= self.shutdown_grace <= 300:
            problems.append(
                f"shutdown_grace (BULWARK_SHUTDOWN_GRACE): 0-300 s, got {self.shutdown_grace}"
            )
        if self.max_message_bytes < 1024:
            problems.append(f"max_message_bytes: at least 1024, got {self.max_message_bytes}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            problems.append(
                f"log_level: one of DEBUG, INFO, WARNING, ERROR, got {self.log_level!r}"
            )
        if self.log_format not in {"json", "text"}:
            problems.append(f"log_format: json or text, got {self.log_format!r}")
        if self.otel_exporter not in {"none", "console", "otlp"}:
            problems.append(f"otel_exporter: none, console or otlp, got {self.otel_exporter!r}")
        if self.replica_id and not all(c.isalnum() or c in "-_." for c in self.replica_id):
            problems.append(
                f"replica_id: letters, digits, '-', '_' and '.' only, got {self.replica_id!r}"
            )
        if self.limits_file is not None:
            problems.extend(_limits_file_problems(self.limits_file))
        for name in ("limit_limit_header", "limit_remaining_header", "limit_reset_header"):
            if not _HEADER_NAME.fullmatch(getattr(self, name)):
                problems.append(
                    f"{name} (BULWARK_{name.upper()}): an HTTP header name, "
                    f"got {getattr(self, name)!r}"
                )
        problems.extend(self._security_problems())
        if problems:
            raise SettingsError(problems)
        return self

    def _security_problems(self) -> list[str]:
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key (BULWARK_TLS_CERT, BULWARK_TLS_KEY): set both")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("tls_client_ca: needs tls_cert and tls_key (mutual TLS is TLS first)")
        if (self.etcd_cert is None) != (self.etcd_key is None):
            problems.append("etcd_cert and etcd_key: set both")
        if self.etcd_cert is not None and self.etcd_ca is None:
            problems.append("etcd_cert: needs etcd_ca (client certificates go over TLS)")
        names = ("tls_cert", "tls_key", "tls_client_ca", "tls_peer_ca", "etcd_ca", "etcd_cert")
        for name in (*names, "etcd_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{name} (BULWARK_{name.upper()}): no such file: {path}")
        if self.auth not in {"auto", "on", "off"}:
            problems.append(f"auth (BULWARK_AUTH): auto, on or off, got {self.auth!r}")
        try:
            loopback = self.loopback
        except ValueError:
            return problems  # the listen address itself is reported above
        if not self.tls and not loopback and not self.allow_plaintext:
            problems.append(
                f"listen {self.listen} is not a loopback address: set tls_cert and tls_key, "
                "or allow_plaintext=true to serve without TLS anyway"
            )
        if self.auth == "off" and not loopback:
            problems.append(
                f"auth=off lets anyone who reaches {self.listen} act as admin: "
                "only allowed on a loopback address"
            )
        if self.max_in_flight < 1:
            problems.append(f"max_in_flight: at least 1, got {self.max_in_flight}")
        if not math.isfinite(self.audit_retention_days) or self.audit_retention_days <= 0:
            problems.append(f"audit_retention_days: more than 0, got {self.audit_retention_days:g}")
        if self.audit_max_events < 100:
            problems.append(f"audit_max_events: at least 100, got {self.audit_max_events}")
        if self.kek_file is not None and self.keks:
            problems.append("kek_file and keks (BULWARK_KEKS): set one, not both")
        if self.kek_file is not None and not self.kek_file.is_file():
            problems.append(f"kek_file (BULWARK_KEK_FILE): no such file: {self.kek_file}")
        if not 0 <= self.snapshot_interval <= 7 * 86400:
            problems.append(
                f"snapshot_interval: 0 (off) to 604800 s, got {self.snapshot_interval:g}"
            )
        if not 1 <= self.snapshot_retention <= 10_000:
            problems.append(f"snapshot_retention: 1-10000, got {self.snapshot_retention}")
        return problems

    def resolved(self) -> Settings:
        """Fill derived defaults (replica id, advertise address)."""
        _, port = split_host_port(self.listen, "listen")
        advertise = self.advertise_address or self.listen
        host_id = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
        replica_id = self.replica_id or f"{host_id}-{port}"
        return dataclasses.replace(self, advertise_address=advertise, replica_id=replica_id)


# An HTTP field name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _limits_file_problems(path: Path) -> list[str]:
    """The file must exist and hold valid limits now, so a bad one stops the start."""
    # Imported here: the parser pulls in protobuf code that settings do not otherwise need.
    from bulwark_server.ratelimits.envoy_config import EnvoyConfigError, load_file

    try:
        load_file(path)
    except EnvoyConfigError as exc:
        return [f"limits_file (BULWARK_LIMITS_FILE): {exc}"]
    return []


def _optional_path(text: str) -> Path | None:
    # An empty variable means "no file", not the current directory.
    return Path(text) if text.strip() else None


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(part) for part in _csv(text))


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    help: str
    choices: Sequence[str] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("listen", str, "host:port the gRPC server binds (default 127.0.0.1:50051)"),
    Option("advertise_address", str, "host:port other replicas and clients reach this one on"),
    Option("replica_id", str, "unique id of this replica (default hostname-port)"),
    Option(
        "etcd_endpoints",
        _csv,
        "comma-separated etcd host:port list; empty starts a private etcd under --data-dir",
    ),
    Option("data_dir", Path, "directory for the embedded etcd's data (default var/)"),
    Option("lease_ttl", int, "leader and replica lease TTL in whole seconds (default 2)"),
    Option("etcd_timeout", float, "timeout of one etcd request in seconds (default 2)"),
    Option(
        "etcd_max_request_bytes",
        int,
        "largest etcd write Bulwark makes; rate-limit checkpoints are trimmed to fit. "
        "Keep it below etcd's --max-request-bytes (default 524288; etcd's is 1.5 MiB)",
    ),
    Option("shutdown_grace", float, "seconds in-flight RPCs get to finish on SIGTERM (default 5)"),
    Option("max_message_bytes", int, "largest gRPC message accepted (default 1 MiB)"),
    Option("log_level", str, "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    Option("log_format", str, "json or text (default json)", ("json", "text")),
    Option(
        "otel_exporter", str, "none, console or otlp (default none)", ("none", "console", "otlp")
    ),
    Option("otel_endpoint", str, "OTLP gRPC endpoint; setting it selects the otlp exporter"),
    Option(
        "alertmanager_urls",
        _csv,
        "comma-separated Alertmanager base URLs: Bulwark's alerts go there when no route "
        "takes them, and its silences are copied there",
    ),
    Option(
        "metrics_listen",
        str,
        "host:port of the Prometheus scrape endpoint (GET /metrics); empty: none (default)",
    ),
    Option(
        "limits_file",
        _optional_path,
        "envoyproxy/ratelimit YAML file of rate limits, created or updated at start",
    ),
    Option(
        "limit_response_headers_enabled",
        _bool,
        "ShouldRateLimit adds the limit, remaining and reset headers of the descriptor "
        "closest to its limit to the response, as envoyproxy/ratelimit's "
        "LIMIT_RESPONSE_HEADERS_ENABLED (default false)",
    ),
    Option("limit_limit_header", str, "name of the limit header (default RateLimit-Limit)"),
    Option(
        "limit_remaining_header", str, "name of the remaining header (default RateLimit-Remaining)"
    ),
    Option("limit_reset_header", str, "name of the reset header (default RateLimit-Reset)"),
    Option("tls_cert", _optional_path, "PEM certificate of the gRPC port; turns TLS on"),
    Option("tls_key", _optional_path, "PEM private key of --tls-cert"),
    Option(
        "tls_client_ca",
        _optional_path,
        "PEM CA bundle that client certificates must chain to; turns mutual TLS on "
        "(every caller then presents a certificate, even with a token)",
    ),
    Option(
        "allow_plaintext",
        _bool,
        "serve without TLS on a non-loopback address (default false)",
    ),
    Option(
        "auth",
        str,
        "auto, on or off: whether callers must present a client certificate or token; "
        "auto is on except for plaintext on loopback with the embedded etcd (default auto)",
        ("auto", "on", "off"),
    ),
    Option(
        "tls_peer_ca",
        _optional_path,
        "PEM CA bundle to verify other replicas when forwarding to the leader "
        "(default: --tls-client-ca, else the system's)",
    ),
    Option("etcd_ca", _optional_path, "PEM CA bundle to verify etcd over TLS"),
    Option("etcd_cert", _optional_path, "PEM client certificate for etcd"),
    Option("etcd_key", _optional_path, "PEM private key of --etcd-cert"),
    Option(
        "max_in_flight",
        int,
        "unary RPCs in progress per replica before shedding with RESOURCE_EXHAUSTED "
        "(configuration and listing first, decisions last; default 1000)",
    ),
    Option("audit_retention_days", float, "days audit events are kept (default 30)"),
    Option("audit_max_events", int, "most audit events kept (default 100000)"),
    Option(
        "kek_file",
        _optional_path,
        "file (mode 0600) of key-encryption keys, one 'id=base64 of 32 bytes' per line; "
        "the last is active unless --kek-active says otherwise",
    ),
    Option("keks", str, "the same entries, comma-separated, instead of a file"),
    Option("kek_active", str, "id of the key-encryption key new backups are wrapped with"),
    Option(
        "backup_dirs",
        _paths,
        "comma-separated directories that hold copies of key backups and the snapshots "
        "(default with the embedded etcd: DATA_DIR/backups)",
    ),
    Option(
        "snapshot_interval",
        float,
        "seconds between scheduled snapshots taken by the leader; 0 turns them off (default 3600)",
    ),
    Option("snapshot_retention", int, "scheduled snapshots kept (default 24)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each flag's help names its environment variable."""
    for opt in OPTIONS:
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.name.split("_")[-1].upper(),
            help=f"{opt.help} [env {opt.env}]",
        )


def load(
    flags: Mapping[str, str | None] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build validated, resolved Settings from flags, then environment, then defaults."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for opt in OPTIONS:
        raw = flags.get(opt.name)
        source = opt.flag
        if raw is None and opt.env in environ:
            raw = environ[opt.env]
            source = opt.env
        if raw is None:
            continue
        try:
            values[opt.name] = opt.parse(raw)
        except ValueError:
            problems.append(f"{opt.name} ({source}): cannot parse {raw!r}")
    if values.get("otel_endpoint") and "otel_exporter" not in values:
        values["otel_exporter"] = "otlp"
    # Validate even after a parse failure, so every problem is reported at once.
    settings = Settings(**values)
    try:
        settings.validate()
    except SettingsError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SettingsError(problems)
    return settings.resolved()
