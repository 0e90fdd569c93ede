"""The RPC → role table: every method served has exactly one rule, and the rules make sense."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bulwark.v1
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2
from bulwark_server.keda_api import externalscaler_pb2
from bulwark_server.security.roles import (
    OPEN_SERVICES,
    RULES,
    Audit,
    Role,
    Shed,
    is_open,
    rule_for,
)


def served_methods() -> set[str]:
    """Every method of every service in bulwark.v1, Envoy's ShouldRateLimit and KEDA's
    external scaler."""
    files = [rls_pb2.DESCRIPTOR, externalscaler_pb2.DESCRIPTOR]
    for module in pkgutil.iter_modules(bulwark.v1.__path__):
        if module.name.endswith("_pb2"):
            files.append(importlib.import_module(f"bulwark.v1.{module.name}").DESCRIPTOR)
    return {
        f"/{service.full_name}/{method.name}"
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    }


def test_every_served_method_has_a_rule() -> None:
    missing = sorted(served_methods() - RULES.keys())
    assert not missing, f"methods without a rule in security/roles.py: {missing}"


def test_every_rule_names_a_served_method() -> None:
    stale = sorted(RULES.keys() - served_methods())
    assert not stale, f"rules for methods that do not exist: {stale}"


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.DATAPLANE < Role.OPERATOR < Role.ADMIN
    assert Role.parse("Operator") is Role.OPERATOR
    assert Role.parse(" admin ") is Role.ADMIN
    assert Role.parse("root") is None


def test_reads_are_never_audited_and_changes_always_are() -> None:
    for method, rule in RULES.items():
        name = method.rpartition("/")[2]
        if name.startswith(("Get", "List", "Watch", "Pick", "WhoAmI")):
            assert rule.audit is Audit.NEVER, method
        if name.startswith(("Put", "Delete", "Set", "Force", "Create", "Revoke", "Switchover")):
            assert rule.audit is Audit.ALWAYS, method
            assert rule.role >= Role.OPERATOR, method


def test_configuration_is_shed_before_decisions() -> None:
    assert rule_for("/bulwark.v1.CircuitBreakerService/Allow").shed is Shed.LAST
    assert rule_for("/bulwark.v1.RateLimitService/Check").shed is Shed.LAST
    assert rule_for("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit").shed is (
        Shed.LAST
    )
    assert rule_for("/bulwark.v1.CircuitBreakerService/PutBreaker").shed is Shed.FIRST
    assert rule_for("/bulwark.v1.CircuitBreakerService/ListBreakers").shed is Shed.FIRST
    # The emergency controls stay available as long as decisions do.
    for control in ("CircuitBreakerService/ForceState", "AuthService/RevokeToken"):
        assert rule_for(f"/bulwark.v1.{control}").shed is Shed.LAST


@pytest.mark.parametrize(
    "method",
    [
        "/bulwark.v1.AuthService/CreateToken",
        "/bulwark.v1.AuthService/RevokeToken",
        "/bulwark.v1.AuthService/ListTokens",
        "/bulwark.v1.AuditService/ListAuditEvents",
    ],
)
def test_token_management_and_the_audit_trail_need_admin(method: str) -> None:
    assert rule_for(method).role is Role.ADMIN


def test_health_and_reflection_are_open_and_nothing_else_is() -> None:
    assert is_open("/grpc.health.v1.Health/Check")
    assert is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not is_open("/bulwark.v1.ClusterService/GetLeader")
    assert not any(is_open(m) for m in RULES)
    assert rule_for("/bulwark.v1.Unknown/Method") is None
    assert "grpc.health.v1.Health" in OPEN_SERVICES
