"""The one table from every RPC to the role it needs, its audit rule and its shedding class.

* Roles are ordered: ``admin`` may do what ``operator`` may, which may do what
  ``dataplane`` may.
* ``AUDIT_ALWAYS`` calls are recorded whatever their outcome; ``AUDIT_ON_WRITE``
  calls (data-plane decisions and reports, frequent by nature) are recorded when
  they changed stored state; ``AUDIT_NEVER`` calls only read.
* Under overload, ``SHED_FIRST`` calls (configuration, listing, operations) are
  refused before ``SHED_LAST`` ones: the decisions data planes wait on, and the
  emergency controls (forcing a breaker, a switchover, a feature's status,
  revoking a token) that are needed most when a fleet is in trouble.
* Health checking and reflection stay open to everyone; a method missing from
  the table is refused (``tests/unit/test_roles.py`` fails when one is missing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bulwark.v1 import auth_pb2


class Role(enum.IntEnum):
    """What a caller may do; values are those of ``bulwark.v1.AccessRole``."""

    DATAPLANE = auth_pb2.ACCESS_ROLE_DATAPLANE
    OPERATOR = auth_pb2.ACCESS_ROLE_OPERATOR
    ADMIN = auth_pb2.ACCESS_ROLE_ADMIN

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role | None:
        """The role named ``text`` ("dataplane", "operator", "admin"), or None."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            return None


class Audit(enum.Enum):
    NEVER = "never"
    ON_WRITE = "on_write"
    ALWAYS = "always"


class Shed(enum.IntEnum):
    FIRST = 0
    LAST = 1


@dataclass(frozen=True)
class Rule:
    role: Role
    audit: Audit
    shed: Shed
    # Spoken between replicas only: a caller must be a replica (its own token).
    replicas_only: bool = False


OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

DP, OP, ADMIN = Role.DATAPLANE, Role.OPERATOR, Role.ADMIN
REPLICAS_ONLY = True
_READ = Audit.NEVER
_WRITE = Audit.ON_WRITE
_ALWAYS = Audit.ALWAYS


def _rules(
    service: str, table: dict[str, tuple[Role, Audit, Shed] | tuple[Role, Audit, Shed, bool]]
) -> dict[str, Rule]:
    return {f"/{service}/{method}": Rule(*spec) for method, spec in table.items()}


RULES: dict[str, Rule] = {
    **_rules(
        "bulwark.v1.ClusterService",
        {
            "GetClusterStatus": (OP, _READ, Shed.FIRST),
            "GetLeader": (DP, _READ, Shed.FIRST),
        },
    ),
    **_rules(
        "bulwark.v1.CircuitBreakerService",
        {
            "PutBreaker": (OP, _ALWAYS, Shed.FIRST),
            "GetBreaker": (DP, _READ, Shed.FIRST),
            "ListBreakers": (DP, _READ, Shed.FIRST),
            "DeleteBreaker": (OP, _ALWAYS, Shed.FIRST),
            "Allow": (DP, _WRITE, Shed.LAST),
            "ReportOutcomes": (DP, _WRITE, Shed.LAST),
            "ForceState": (OP, _ALWAYS, Shed.LAST),
            "WatchBreakers": (DP, _READ, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.BulkheadService",
        {
            "PutBulkhead": (OP, _ALWAYS, Shed.FIRST),
            "GetBulkhead": (DP, _READ, Shed.FIRST),
            "ListBulkheads": (DP, _READ, Shed.FIRST),
            "DeleteBulkhead": (OP, _ALWAYS, Shed.FIRST),
            "Acquire": (DP, _WRITE, Shed.LAST),
            "Release": (DP, _WRITE, Shed.LAST),
            "ExtendPermit": (DP, _WRITE, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.RateLimitService",
        {
            "PutLimit": (OP, _ALWAYS, Shed.FIRST),
            "GetLimit": (DP, _READ, Shed.FIRST),
            "ListLimits": (DP, _READ, Shed.FIRST),
            "DeleteLimit": (OP, _ALWAYS, Shed.FIRST),
            "Check": (DP, _WRITE, Shed.LAST),
            "LeaseQuota": (DP, _WRITE, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.CounterService",
        {"Exchange": (DP, _READ, Shed.LAST, REPLICAS_ONLY)},
    ),
    **_rules(
        "envoy.service.ratelimit.v3.RateLimitService",
        {"ShouldRateLimit": (DP, _WRITE, Shed.LAST)},
    ),
    **_rules(
        "bulwark.v1.RegistryService",
        {
            "RegisterInstance": (DP, _ALWAYS, Shed.LAST),
            "Heartbeat": (DP, _WRITE, Shed.LAST),
            "DeregisterInstance": (DP, _ALWAYS, Shed.LAST),
            "ListInstances": (DP, _READ, Shed.FIRST),
            "WatchInstances": (DP, _READ, Shed.LAST),
            "PickInstance": (DP, _READ, Shed.LAST),
            "GetPrimary": (DP, _READ, Shed.LAST),
            "WatchPrimary": (DP, _READ, Shed.LAST),
            "Switchover": (OP, _ALWAYS, Shed.LAST),
            # Signals live in the leader's memory: reporting changes no stored state.
            # A report shed under overload is kept by the client for its next one.
            "ReportSignals": (DP, _READ, Shed.FIRST),
            "GetServiceSignals": (DP, _READ, Shed.FIRST),
            "WatchServiceSignals": (DP, _READ, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.BackpressureService",
        {
            "PutBackpressurePolicy": (OP, _ALWAYS, Shed.FIRST),
            "GetBackpressurePolicy": (DP, _READ, Shed.FIRST),
            "ListBackpressurePolicies": (DP, _READ, Shed.FIRST),
            "DeleteBackpressurePolicy": (OP, _ALWAYS, Shed.FIRST),
            "WatchBackpressurePolicies": (DP, _READ, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.RemediationService",
        {
            "PutPlaybook": (OP, _ALWAYS, Shed.FIRST),
            "GetPlaybook": (DP, _READ, Shed.FIRST),
            "ListPlaybooks": (DP, _READ, Shed.FIRST),
            "DeletePlaybook": (OP, _ALWAYS, Shed.FIRST),
            "ListRemediations": (DP, _READ, Shed.FIRST),
            "WatchRemediations": (DP, _READ, Shed.LAST),
            # The fleet-wide stop: needed most when a fleet is in trouble.
            "SetRemediationPaused": (OP, _ALWAYS, Shed.LAST),
            "GetScalingRecommendation": (DP, _READ, Shed.FIRST),
            "WatchScalingRecommendations": (DP, _READ, Shed.LAST),
        },
    ),
    # Chaos is an operator's tool. Data planes read the fault rules only: the client
    # library watches them to apply them (where its process opted in).
    **_rules(
        "bulwark.v1.ChaosService",
        {
            "PutFaultRule": (OP, _ALWAYS, Shed.FIRST),
            "GetFaultRule": (DP, _READ, Shed.FIRST),
            "ListFaultRules": (DP, _READ, Shed.FIRST),
            "DeleteFaultRule": (OP, _ALWAYS, Shed.LAST),
            "WatchFaultRules": (DP, _READ, Shed.LAST),
            "StartExperiment": (OP, _ALWAYS, Shed.FIRST),
            "GetExperiment": (OP, _READ, Shed.FIRST),
            "ListExperiments": (OP, _READ, Shed.FIRST),
            # Stopping, renewing and the kill switch end faults: needed most under load.
            "StopExperiment": (OP, _ALWAYS, Shed.LAST),
            "WatchExperiment": (OP, _READ, Shed.LAST),
            "RenewExperiment": (OP, _READ, Shed.LAST),
            "SetChaosHalted": (OP, _ALWAYS, Shed.LAST),
            "GetChaosStatus": (OP, _READ, Shed.FIRST),
        },
    ),
    # KEDA's external scaler protocol: what an autoscaler reads (a dataplane identity,
    # by the client certificate KEDA's trigger is given).
    **_rules(
        "externalscaler.ExternalScaler",
        {
            "IsActive": (DP, _READ, Shed.FIRST),
            "StreamIsActive": (DP, _READ, Shed.LAST),
            "GetMetricSpec": (DP, _READ, Shed.FIRST),
            "GetMetrics": (DP, _READ, Shed.FIRST),
        },
    ),
    **_rules(
        "bulwark.v1.AlertService",
        {
            "ListAlerts": (DP, _READ, Shed.FIRST),
            "WatchAlerts": (DP, _READ, Shed.LAST),
            "AcknowledgeAlert": (OP, _ALWAYS, Shed.FIRST),
            "PutSilence": (OP, _ALWAYS, Shed.FIRST),
            "ListSilences": (DP, _READ, Shed.FIRST),
            "DeleteSilence": (OP, _ALWAYS, Shed.FIRST),
            "PutAlertRoute": (OP, _ALWAYS, Shed.FIRST),
            "GetAlertRoute": (DP, _READ, Shed.FIRST),
            "ListAlertRoutes": (DP, _READ, Shed.FIRST),
            "DeleteAlertRoute": (OP, _ALWAYS, Shed.FIRST),
        },
    ),
    **_rules(
        "bulwark.v1.FeatureService",
        {
            "PutFeature": (OP, _ALWAYS, Shed.FIRST),
            "SetFeatureStatus": (OP, _ALWAYS, Shed.LAST),
            "GetFeature": (DP, _READ, Shed.LAST),
            "ListFeatures": (DP, _READ, Shed.FIRST),
            "WatchFeatures": (DP, _READ, Shed.LAST),
        },
    ),
    **_rules(
        "bulwark.v1.AuthService",
        {
            "CreateToken": (ADMIN, _ALWAYS, Shed.FIRST),
            "ListTokens": (ADMIN, _READ, Shed.FIRST),
            "RevokeToken": (ADMIN, _ALWAYS, Shed.LAST),
            "WhoAmI": (DP, _READ, Shed.FIRST),
        },
    ),
    **_rules(
        "bulwark.v1.AuditService",
        {"ListAuditEvents": (ADMIN, _READ, Shed.FIRST)},
    ),
    **_rules(
        "bulwark.v1.KeyBackupService",
        {
            # A data plane backs up its own keys; reading material back is for admins
            # (and is audited like a change).
            "BackupKey": (DP, _ALWAYS, Shed.FIRST),
            "RestoreKey": (ADMIN, _ALWAYS, Shed.FIRST),
            "ListKeyBackups": (OP, _READ, Shed.FIRST),
            "VerifyKeyBackups": (OP, _READ, Shed.FIRST),
            "RotateKeyEncryptionKey": (ADMIN, _ALWAYS, Shed.FIRST),
        },
    ),
    **_rules(
        "bulwark.v1.RecoveryService",
        {
            "CreateSnapshot": (OP, _ALWAYS, Shed.FIRST),
            "ListSnapshots": (OP, _READ, Shed.FIRST),
            "RestoreSnapshot": (ADMIN, _ALWAYS, Shed.FIRST),
            "RunDrill": (ADMIN, _ALWAYS, Shed.FIRST),
        },
    ),
}


def is_open(method: str) -> bool:
    """True for methods anyone may call (health checking, reflection)."""
    return method.lstrip("/").rpartition("/")[0] in OPEN_SERVICES


def rule_for(method: str) -> Rule | None:
    """The rule of a full method name ("/pkg.Service/Method"), or None if it has none."""
    return RULES.get(method)
