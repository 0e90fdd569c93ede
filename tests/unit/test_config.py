"""Unit tests for bulwark_server.config: defaults, sources, precedence, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark_server import config
from bulwark_server.config import SettingsError, load, split_host_port


@pytest.fixture(autouse=True)
def fixed_hostname(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(config.socket, "gethostname", lambda: "node-a")
    return "node-a"


def test_defaults_without_flags_or_environment() -> None:
    settings = load({}, {})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.etcd_endpoints == ()
    assert settings.embedded_etcd is True
    assert settings.lease_ttl == 2
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.otel_exporter == "none"
    assert settings.data_dir == Path("var")


def test_defaults_resolve_replica_id_and_advertise_address() -> None:
    settings = load({}, {})
    assert settings.replica_id == "node-a-50051"
    assert settings.advertise_address == "127.0.0.1:50051"


def test_replica_id_default_uses_listen_port() -> None:
    settings = load({"listen": "0.0.0.0:6000", "allow_plaintext": "true"}, {})
    assert settings.replica_id == "node-a-6000"
    assert settings.advertise_address == "0.0.0.0:6000"


def test_explicit_replica_id_and_advertise_address_are_kept() -> None:
    settings = load({"replica_id": "r-1", "advertise_address": "10.0.0.5:7000"}, {})
    assert settings.replica_id == "r-1"
    assert settings.advertise_address == "10.0.0.5:7000"


def test_environment_variables_are_read() -> None:
    environ = {
        "BULWARK_LISTEN": "0.0.0.0:6001",
        "BULWARK_ALLOW_PLAINTEXT": "yes",
        "BULWARK_LEASE_TTL": "5",
        "BULWARK_ETCD_TIMEOUT": "1.5",
        "BULWARK_LOG_LEVEL": "DEBUG",
        "BULWARK_LOG_FORMAT": "text",
        "BULWARK_DATA_DIR": "/tmp/bulwark-data",
        "BULWARK_REPLICA_ID": "replica_1.east",
        "BULWARK_MAX_MESSAGE_BYTES": "2048",
        "BULWARK_SHUTDOWN_GRACE": "0",
    }
    settings = load({}, environ)
    assert settings.listen == "0.0.0.0:6001"
    assert settings.lease_ttl == 5
    assert settings.etcd_timeout == 1.5
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "text"
    assert settings.data_dir == Path("/tmp/bulwark-data")
    assert settings.replica_id == "replica_1.east"
    assert settings.max_message_bytes == 2048
    assert settings.shutdown_grace == 0.0


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load({}, {"LISTEN": "bogus", "BULWARK_UNKNOWN": "x", "lease_ttl": "0"})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.lease_ttl == 2


def test_flags_override_environment() -> None:
    environ = {"BULWARK_LISTEN": "0.0.0.0:6001", "BULWARK_LEASE_TTL": "5"}
    settings = load({"listen": "127.0.0.1:7001", "lease_ttl": "9"}, environ)
    assert settings.listen == "127.0.0.1:7001"
    assert settings.lease_ttl == 9


def test_flag_set_to_none_falls_back_to_environment() -> None:
    # argparse leaves unset flags as None; they must not hide the variable.
    settings = load({"lease_ttl": None}, {"BULWARK_LEASE_TTL": "7"})
    assert settings.lease_ttl == 7


def test_etcd_endpoints_parsed_to_tuple() -> None:
    environ = {"BULWARK_ETCD_ENDPOINTS": "etcd-0.etcd:2379, etcd-1.etcd:2379,,10.0.0.3:2379 "}
    settings = load({}, environ)
    assert settings.etcd_endpoints == ("etcd-0.etcd:2379", "etcd-1.etcd:2379", "10.0.0.3:2379")
    assert settings.embedded_etcd is False


def test_single_etcd_endpoint_is_a_one_tuple() -> None:
    settings = load({"etcd_endpoints": "localhost:2379"}, {})
    assert settings.etcd_endpoints == ("localhost:2379",)
    assert not settings.embedded_etcd


def test_empty_etcd_endpoints_means_embedded() -> None:
    settings = load({}, {"BULWARK_ETCD_ENDPOINTS": " , "})
    assert settings.etcd_endpoints == ()
    assert settings.embedded_etcd


def test_otel_endpoint_implies_otlp_exporter() -> None:
    settings = load({}, {"BULWARK_OTEL_ENDPOINT": "http://collector:4317"})
    assert settings.otel_endpoint == "http://collector:4317"
    assert settings.otel_exporter == "otlp"


def test_explicit_exporter_wins_over_endpoint_implication() -> None:
    settings = load({"otel_endpoint": "http://collector:4317", "otel_exporter": "console"}, {})
    assert settings.otel_exporter == "console"


def test_lowercase_log_level_is_accepted() -> None:
    assert load({"log_level": "debug"}, {}).log_level == "debug"


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        ({"listen": "no-port-here"}, "listen"),
        ({"listen": ":50051"}, "listen"),
        ({"listen": "127.0.0.1:http"}, "listen"),
        ({"listen": "127.0.0.1:70000"}, "listen"),
        ({"listen": "127.0.0.1:-1"}, "listen"),
        ({"advertise_address": "host-without-port"}, "advertise_address"),
        ({"etcd_endpoints": "etcd-0:2379,etcd-1"}, "etcd_endpoints"),
        ({"lease_ttl": "0"}, "lease_ttl"),
        ({"lease_ttl": "61"}, "lease_ttl"),
        ({"lease_ttl": "two"}, "lease_ttl"),
        ({"lease_ttl": "1.5"}, "lease_ttl"),
        ({"max_message_bytes": "4MiB"}, "max_message_bytes"),
        ({"max_message_bytes": "100"}, "max_message_bytes"),
        ({"etcd_timeout": "0"}, "etcd_timeout"),
        ({"etcd_timeout": "soon"}, "etcd_timeout"),
        ({"shutdown_grace": "-1"}, "shutdown_grace"),
        ({"log_level": "TRACE"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"otel_exporter": "jaeger"}, "otel_exporter"),
        ({"replica_id": "bad/replica"}, "replica_id"),
        ({"replica_id": "has space"}, "replica_id"),
        ({"replica_id": "colon:1"}, "replica_id"),
    ],
)
def test_each_bad_value_is_reported_naming_the_setting(flags: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(flags, {})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(setting)
    assert setting in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        load({}, {"BULWARK_LEASE_TTL": "abc"})
    (problem,) = info.value.problems
    assert "lease_ttl" in problem
    assert "BULWARK_LEASE_TTL" in problem
    assert "'abc'" in problem


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(SettingsError) as info:
        load({"lease_ttl": "abc"}, {})
    (problem,) = info.value.problems
    assert "lease_ttl" in problem
    assert "--lease-ttl" in problem


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid settings"):
        load({"lease_ttl": "0"}, {})


def test_several_validation_problems_are_reported_together() -> None:
    flags = {
        "listen": "nowhere",
        "lease_ttl": "0",
        "log_level": "LOUD",
        "otel_exporter": "zipkin",
        "replica_id": "a/b",
    }
    with pytest.raises(SettingsError) as info:
        load(flags, {})
    problems = info.value.problems
    assert len(problems) == 5
    for setting in ("listen", "lease_ttl", "log_level", "otel_exporter", "replica_id"):
        assert any(p.startswith(setting) for p in problems), setting
        assert setting in str(info.value)


def test_several_parse_problems_are_reported_together() -> None:
    environ = {"BULWARK_LEASE_TTL": "x", "BULWARK_MAX_MESSAGE_BYTES": "y"}
    with pytest.raises(SettingsError) as info:
        load({"etcd_timeout": "z"}, environ)
    problems = info.value.problems
    assert len(problems) == 3
    assert {p.split(" ", 1)[0] for p in problems} == {
        "lease_ttl",
        "max_message_bytes",
        "etcd_timeout",
    }


def test_validate_is_direct_and_returns_self() -> None:
    settings = config.Settings()
    assert settings.validate() is settings


def test_option_env_and_flag_names() -> None:
    by_name = {opt.name: opt for opt in config.OPTIONS}
    assert by_name["etcd_endpoints"].env == "BULWARK_ETCD_ENDPOINTS"
    assert by_name["etcd_endpoints"].flag == "--etcd-endpoints"
    # Every Settings field except ``extra`` has exactly one option.
    fields = set(config.Settings.__dataclass_fields__) - {"extra"}
    assert set(by_name) == fields
    assert len(config.OPTIONS) == len(by_name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("localhost:0", ("localhost", 0)),
        ("etcd-0.etcd.svc:65535", ("etcd-0.etcd.svc", 65535)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:db8::1]:2379", ("2001:db8::1", 2379)),
    ],
)
def test_split_host_port(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value, "thing") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("localhost", "expected host:port"),
        (":80", "expected host:port"),
        ("", "expected host:port"),
        ("[::1]", "IPv6 host in brackets"),
        ("::1:80", "IPv6 host in brackets"),
        (" host:80", "expected host:port"),
        ("host:1_0", "port must be a number"),
        ("host:abc", "port must be a number"),
        ("host:65536", "port must be 0-65535"),
        ("host:-5", "port must be a number"),
    ],
)
def test_split_host_port_rejects(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        split_host_port(value, "my_setting")
    assert str(info.value).startswith("my_setting: ")


def test_plaintext_is_refused_off_loopback_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not a loopback address"):
        load({"listen": "0.0.0.0:6000"}, {})
    allowed = load({"listen": "0.0.0.0:6000", "allow_plaintext": "true"}, {})
    assert not allowed.tls
    # Plaintext off loopback still requires callers to prove who they are.
    assert allowed.auth_enabled
    with pytest.raises(SettingsError, match="only allowed on a loopback"):
        load({"listen": "0.0.0.0:6000", "allow_plaintext": "true", "auth": "off"}, {})


def test_auth_defaults_off_only_for_the_development_default(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    assert not load({"listen": "127.0.0.1:0"}, {}).auth_enabled
    assert not load({"listen": "[::1]:0"}, {}).auth_enabled
    assert load({"listen": "127.0.0.1:0", "auth": "on"}, {}).auth_enabled
    # A loopback replica of a shared etcd must not make every local process admin.
    shared = load({"listen": "127.0.0.1:0", "etcd_endpoints": "10.0.0.1:2379"}, {})
    assert shared.auth_enabled
    assert not load(
        {"listen": "127.0.0.1:0", "etcd_endpoints": "10.0.0.1:2379", "auth": "off"}, {}
    ).auth_enabled
    tls = load({"listen": "127.0.0.1:0", "tls_cert": str(cert), "tls_key": str(key)}, {})
    assert tls.tls and tls.auth_enabled


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"tls_cert": "CERT"}, "set both"),
        ({"tls_client_ca": "CERT"}, "needs tls_cert"),
        ({"etcd_cert": "CERT", "etcd_key": "CERT"}, "needs etcd_ca"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "CERT"}, "no such file"),
        ({"auth": "maybe"}, "auto, on or off"),
        ({"max_in_flight": "0"}, "max_in_flight"),
        ({"audit_max_events": "5"}, "audit_max_events"),
        ({"audit_retention_days": "inf"}, "audit_retention_days"),
        ({"audit_retention_days": "nan"}, "audit_retention_days"),
        ({"allow_plaintext": "perhaps"}, "cannot parse"),
    ],
)
def test_bad_security_settings_are_named(
    tmp_path: Path, flags: dict[str, str], problem: str
) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    flags = {k: v.replace("CERT", str(cert)) for k, v in flags.items()}
    with pytest.raises(SettingsError, match=problem):
        load({"listen": "127.0.0.1:0", **flags}, {})


def test_limit_response_headers_setting_and_header_names() -> None:
    from bulwark_server.config import SettingsError, load

    default = load({}, {})
    assert not default.limit_response_headers_enabled
    assert (default.limit_limit_header, default.limit_remaining_header) == (
        "RateLimit-Limit",
        "RateLimit-Remaining",
    )
    assert default.limit_reset_header == "RateLimit-Reset"
    on = load({"limit_response_headers_enabled": "true"}, {"BULWARK_LIMIT_LIMIT_HEADER": "X-Limit"})
    assert on.limit_response_headers_enabled and on.limit_limit_header == "X-Limit"
    with pytest.raises(SettingsError) as err:
        load({}, {"BULWARK_LIMIT_RESET_HEADER": "bad header"})
    assert any("limit_reset_header" in p for p in err.value.problems)
