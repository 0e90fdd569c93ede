"""Unit tests for bulwark_server.features.rules: definitions, statuses, reasons and expiries."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bulwark.v1 import feature_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.features import rules

NOW = 1_700_000_000.0
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED
FEATURE = feature_pb2.DEPENDENCY_KIND_FEATURE
BREAKER = feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER


def _dep(kind: int, name: str) -> feature_pb2.Dependency:
    return feature_pb2.Dependency(kind=kind, name=name)


def _field(call: object) -> str:
    with pytest.raises(InvalidArgument) as err:
        call()  # type: ignore[operator]
    return err.value.field


def test_normalize_defaults_the_status_on_a_copy() -> None:
    given = feature_pb2.Feature(name="search")
    out = rules.normalize_feature(given, NOW)
    assert out.status == AVAILABLE
    assert given.status == feature_pb2.FEATURE_STATUS_UNSPECIFIED


def test_normalize_keeps_a_valid_definition() -> None:
    given = feature_pb2.Feature(
        name="search",
        status=DEGRADED,
        reason="r" * 1024,
        fallback="cached results",
        depends_on=[_dep(FEATURE, "index"), _dep(BREAKER, "index")],
        expires_at=Timestamp(seconds=int(NOW) + 60),
    )
    assert rules.normalize_feature(given, NOW) == given


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": 42}, "feature.status"),
        ({"reason": "r" * 1025}, "feature.reason"),
        ({"fallback": "f" * 257}, "feature.fallback"),
        ({"fallback": "line\nbreak"}, "feature.fallback"),
        ({"depends_on": [_dep(FEATURE, f"f{i}") for i in range(65)]}, "feature.depends_on"),
        ({"depends_on": [_dep(0, "x")]}, "feature.depends_on[0].kind"),
        ({"depends_on": [_dep(FEATURE, "bad name")]}, "feature.depends_on[0].name"),
        (
            {"depends_on": [_dep(BREAKER, "x"), _dep(BREAKER, "x")]},
            "feature.depends_on[1]",
        ),
        ({"status": DISABLED, "expires_at": Timestamp(seconds=-(10**12))}, "feature.expires_at"),
    ],
)
def test_normalize_refuses(fields: dict[str, object], field: str) -> None:
    feature = feature_pb2.Feature(name="search", **fields)  # type: ignore[arg-type]
    assert _field(lambda: rules.normalize_feature(feature, NOW)) == field


def test_expiry_only_for_degraded_or_disabled_and_in_the_future() -> None:
    later = Timestamp(seconds=int(NOW) + 1)
    rules.check_expiry(DISABLED, later, NOW, "expires_at")
    rules.check_expiry(AVAILABLE, None, NOW, "expires_at")
    assert _field(lambda: rules.check_expiry(AVAILABLE, later, NOW, "expires_at")) == "expires_at"
    now_ts = Timestamp(seconds=int(NOW))
    assert _field(lambda: rules.check_expiry(DEGRADED, now_ts, NOW, "x")) == "x"
    # A definition without a status is AVAILABLE, so an expiry is refused.
    feature = feature_pb2.Feature(name="search", expires_at=later)
    assert _field(lambda: rules.normalize_feature(feature, NOW)) == "feature.expires_at"


def test_parse_status() -> None:
    assert rules.parse_status(0, "status", required=False) == AVAILABLE
    assert rules.parse_status(DISABLED, "status", required=True) == DISABLED
    assert _field(lambda: rules.parse_status(0, "status", required=True)) == "status"
    assert _field(lambda: rules.parse_status(9, "status", required=False)) == "status"


def test_check_reason() -> None:
    assert rules.check_reason("r" * 1024, "reason") == "r" * 1024
    assert _field(lambda: rules.check_reason("r" * 1025, "reason")) == "reason"
