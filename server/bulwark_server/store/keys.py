"""Key layout: every durable fact is ``/bulwark/v1/<kind>/<name>``."""

from __future__ import annotations

PREFIX = "/bulwark/v1/"
MAX_NAME_BYTES = 256

# Every kind of object, in one place: a capability names its keys with these and
# reads another capability's state only by asking that capability.
BREAKER_KIND = "breakers"
BREAKER_WINDOW_KIND = "breaker-windows"
BULKHEAD_KIND = "bulkheads"
PERMIT_KIND = "permits"
LIMIT_KIND = "limits"
LIMIT_COUNTER_KIND = "limit-counters"
INSTANCE_KIND = "instances"
PRIMARY_KIND = "primaries"
FEATURE_KIND = "features"
KEY_BACKUP_KIND = "keybackups"
ELECTION_KIND = "election"
LEADER_NAME = "leader"
REPLICA_KIND = "replicas"
TOKEN_KIND = "tokens"
TOKEN_REVOCATION_KIND = "token-revocations"
AUDIT_KIND = "audit"
DRILL_KIND = "drills"
RESTORE_KIND = "restores"
ALERT_KIND = "alerts"
SILENCE_KIND = "silences"
ALERT_ROUTE_KIND = "alert-routes"
BACKPRESSURE_KIND = "backpressure-policies"
PLAYBOOK_KIND = "playbooks"
REMEDIATION_KIND = "remediations"
REMEDIATION_SWITCH_KIND = "remediation-switch"
REMEDIATION_PAUSE_NAME = "paused"
FAULT_RULE_KIND = "fault-rules"
EXPERIMENT_KIND = "experiments"
CHAOS_SWITCH_KIND = "chaos-switch"
CHAOS_HALT_NAME = "halted"
LAST_DRILL_NAME = "last"
LAST_RESTORE_NAME = "last"


def key_for(kind: str, name: str) -> bytes:
    """Return the etcd key of object ``name`` of ``kind``.

    Raises ValueError when the kind contains '/' or either part is empty, so a
    caller cannot escape its kind's key range.
    """
    if not kind or "/" in kind:
        raise ValueError(f"kind must be non-empty without '/': {kind!r}")
    if not name:
        raise ValueError("name must be non-empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"name longer than {MAX_NAME_BYTES} bytes")
    return f"{PREFIX}{kind}/{name}".encode()


def kind_prefix(kind: str) -> bytes:
    """Return the key prefix holding every object of ``kind``."""
    if not kind or "/" in kind:
        raise ValueError(f"kind must be non-empty without '/': {kind!r}")
    return f"{PREFIX}{kind}/".encode()


def split_key(key: bytes) -> tuple[str, str]:
    """Return (kind, name) of a Bulwark key; ValueError for keys outside the layout."""
    text = key.decode()
    if not text.startswith(PREFIX):
        raise ValueError(f"not a Bulwark key: {text!r}")
    kind, sep, name = text[len(PREFIX) :].partition("/")
    if not sep or not kind or not name:
        raise ValueError(f"not a Bulwark key: {text!r}")
    return kind, name
