"""Feature rules without I/O: what a feature definition and a status change may hold.

Pure functions over messages and an injected ``now``; every check raises
``InvalidArgument`` naming the offending request field, and runs before the
feature manager reads or writes anything, so a refused request stores nothing.
Whether dependencies exist and the graph stays acyclic needs the store: that
is the manager's (with ``graph``).
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from bulwark.v1 import feature_pb2
from bulwark_server import timestamps
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import timestamp_seconds, validate_name

MAX_REASON = 1024
MAX_FALLBACK = 256
MAX_DEPENDENCIES = 64
STATUSES = frozenset(feature_pb2.FeatureStatus.values())
KINDS = (feature_pb2.DEPENDENCY_KIND_FEATURE, feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER)
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
UNSPECIFIED = feature_pb2.FEATURE_STATUS_UNSPECIFIED


def parse_status(value: int, field: str, *, required: bool) -> int:
    """A known status; an unset one is AVAILABLE, or refused when ``required``."""
    if value not in STATUSES:
        raise InvalidArgument(field, f"unknown status {value}")
    if value == UNSPECIFIED:
        if required:
            raise InvalidArgument(field, "is required (AVAILABLE, DEGRADED or DISABLED)")
        return AVAILABLE
    return value


def check_reason(value: str, field: str) -> str:
    """A reason of at most ``MAX_REASON`` characters."""
    if len(value) > MAX_REASON:
        raise InvalidArgument(field, f"longer than {MAX_REASON} characters")
    return value


def check_expiry(
    status: int, expires_at: timestamp_pb2.Timestamp | None, now: float, field: str
) -> None:
    """An expiry only for DEGRADED or DISABLED (it returns the feature to AVAILABLE),
    and only in the future (Unix seconds ``now``). None means no expiry."""
    if expires_at is None:
        return
    if status in (AVAILABLE, UNSPECIFIED):
        raise InvalidArgument(field, "is only for DEGRADED or DISABLED")
    if timestamps.unix(expires_at) <= now:
        raise InvalidArgument(field, "must be in the future")


def normalize_feature(feature: feature_pb2.Feature, now: float) -> feature_pb2.Feature:
    """A copy of a PutFeature definition with defaults applied (status AVAILABLE).

    Checks the status, reason, fallback, expiry (``check_expiry``) and the
    dependency list (at most 64, kinds FEATURE or CIRCUIT_BREAKER, valid names,
    none twice). The feature's name and ``updated_by`` are the request's shape,
    checked by the servicer.
    """
    out = feature_pb2.Feature()
    out.CopyFrom(feature)
    out.status = parse_status(feature.status, "feature.status", required=False)
    check_reason(feature.reason, "feature.reason")
    if len(feature.fallback) > MAX_FALLBACK or not feature.fallback.isprintable():
        raise InvalidArgument(
            "feature.fallback", f"must be printable and at most {MAX_FALLBACK} characters"
        )
    if feature.HasField("expires_at"):
        timestamp_seconds(feature.expires_at, "feature.expires_at")
    if len(feature.depends_on) > MAX_DEPENDENCIES:
        raise InvalidArgument("feature.depends_on", f"at most {MAX_DEPENDENCIES} dependencies")
    seen = set()
    for i, dep in enumerate(feature.depends_on):
        if dep.kind not in KINDS:
            raise InvalidArgument(
                f"feature.depends_on[{i}].kind", "must be FEATURE or CIRCUIT_BREAKER"
            )
        validate_name(dep.name, f"feature.depends_on[{i}].name")
        if (dep.kind, dep.name) in seen:
            raise InvalidArgument(f"feature.depends_on[{i}]", f"{dep.name!r} is listed twice")
        seen.add((dep.kind, dep.name))
    expires_at = out.expires_at if out.HasField("expires_at") else None
    check_expiry(out.status, expires_at, now, "feature.expires_at")
    return out
