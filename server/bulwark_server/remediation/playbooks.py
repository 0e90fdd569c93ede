"""What a playbook must be, its defaults, and the guards' arithmetic. Pure.

Defaults: each action's verification deadline 60 s; guards: a minimum healthy share
of 0.5, a cooldown of 300 s per target, 10 actions per hour per playbook. The
fleet-wide cap (``FLEET_ACTIONS_PER_HOUR``) holds over every playbook together.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bulwark.v1 import breaker_pb2, feature_pb2, remediation_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds, validate_name

MAX_ACTIONS = 10
MAX_DESCRIPTION = 1024
MAX_URL = 2048
DEFAULT_VERIFY_S = 60.0
DEFAULT_MIN_HEALTHY = 0.5
DEFAULT_COOLDOWN_S = 300.0
DEFAULT_ACTIONS_PER_HOUR = 10
FLEET_ACTIONS_PER_HOUR = 30
DEFAULT_SIGNAL_WINDOW_S = 60.0
HOUR_S = 3600.0
SEVERITIES = ("critical", "warning", "info")
FORCEABLE = {
    breaker_pb2.BREAKER_STATE_FORCED_OPEN,
    breaker_pb2.BREAKER_STATE_CLOSED,
    breaker_pb2.BREAKER_STATE_DISABLED,
}
SETTABLE = {
    feature_pb2.FEATURE_STATUS_AVAILABLE,
    feature_pb2.FEATURE_STATUS_DEGRADED,
    feature_pb2.FEATURE_STATUS_DISABLED,
}
# Actions that need an instance as the target, and those that need a service.
ON_INSTANCES = {"drain", "deregister"}
ON_SERVICES = {"failover"}


def check_playbook(
    playbook: remediation_pb2.Playbook, check_url: Callable[[str, str], None]
) -> None:
    """InvalidArgument naming the first field that is wrong."""
    validate_name(playbook.name, "playbook.name")
    if len(playbook.description) > MAX_DESCRIPTION:
        raise InvalidArgument("playbook.description", f"at most {MAX_DESCRIPTION} characters")
    kind = _check_condition(playbook.condition)
    if not playbook.actions:
        raise InvalidArgument("playbook.actions", "name at least one action")
    if len(playbook.actions) > MAX_ACTIONS:
        raise InvalidArgument("playbook.actions", f"at most {MAX_ACTIONS}")
    for i, action in enumerate(playbook.actions):
        _check_action(action, f"playbook.actions[{i}]", kind, check_url)
    if playbook.HasField("verify_within"):
        duration_seconds(
            playbook.verify_within, "playbook.verify_within", minimum=1, maximum=HOUR_S
        )
    guards = playbook.guards
    if guards.HasField("min_healthy_share") and not 0 <= guards.min_healthy_share <= 1:
        raise InvalidArgument("playbook.guards.min_healthy_share", "must be 0-1")
    if guards.HasField("cooldown"):
        duration_seconds(guards.cooldown, "playbook.guards.cooldown", maximum=24 * HOUR_S)
    if not 0 <= guards.max_actions_per_hour <= 1000:
        raise InvalidArgument("playbook.guards.max_actions_per_hour", "must be 0-1000")


def _check_condition(condition: remediation_pb2.Condition) -> str:
    kind = condition.WhichOneof("kind")
    field = f"playbook.condition.{kind}"
    if kind is None:
        raise InvalidArgument("playbook.condition", "name one condition")
    if kind == "instance":
        validate_name(condition.instance.service, f"{field}.service")
        if not 0 <= condition.instance.missed_heartbeats <= 2:
            raise InvalidArgument(f"{field}.missed_heartbeats", "must be 0-2 (at 3 the lease ends)")
    elif kind == "breaker":
        validate_name(condition.breaker.breaker, f"{field}.breaker")
        duration_seconds(condition.breaker.open_for, f"{field}.open_for", maximum=24 * HOUR_S)
    elif kind == "signal":
        signal = condition.signal
        validate_name(signal.service, f"{field}.service")
        if signal.signal not in remediation_pb2.ServiceSignal.values() or not signal.signal:
            raise InvalidArgument(f"{field}.signal", "name a signal")
        if not signal.anomalous and not (math.isfinite(signal.above) and signal.above >= 0):
            raise InvalidArgument(f"{field}.above", "must be a number >= 0")
        if signal.HasField("window"):
            duration_seconds(signal.window, f"{field}.window", minimum=10, maximum=300)
    else:
        validate_name(condition.no_primary.service, f"{field}.service")
        duration_seconds(condition.no_primary.vacant_for, f"{field}.vacant_for", maximum=HOUR_S)
    return kind


def _check_action(
    action: remediation_pb2.Action,
    field: str,
    condition: str,
    check_url: Callable[[str, str], None],
) -> None:
    kind = action.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(field, "name one action")
    if kind in ON_INSTANCES and condition != "instance":
        raise InvalidArgument(f"{field}.{kind}", "acts on an instance: needs an instance condition")
    if kind in ON_SERVICES and condition == "breaker":
        raise InvalidArgument(f"{field}.{kind}", "acts on a service: needs a service's condition")
    if kind == "force_breaker":
        force = action.force_breaker
        if force.breaker:
            validate_name(force.breaker, f"{field}.force_breaker.breaker")
        elif condition != "breaker":
            raise InvalidArgument(f"{field}.force_breaker.breaker", "is required here")
        if force.state not in FORCEABLE:
            raise InvalidArgument(f"{field}.force_breaker.state", "FORCED_OPEN, CLOSED or DISABLED")
    elif kind == "set_feature":
        validate_name(action.set_feature.feature, f"{field}.set_feature.feature")
        if action.set_feature.status not in SETTABLE:
            raise InvalidArgument(f"{field}.set_feature.status", "AVAILABLE, DEGRADED or DISABLED")
    elif kind == "webhook":
        if len(action.webhook.url) > MAX_URL:
            raise InvalidArgument(f"{field}.webhook.url", f"at most {MAX_URL} characters")
        check_url(action.webhook.url, f"{field}.webhook.url")
    elif kind == "alert":
        if action.alert.severity and action.alert.severity not in SEVERITIES:
            raise InvalidArgument(f"{field}.alert.severity", ", ".join(SEVERITIES))
        if len(action.alert.summary) > MAX_DESCRIPTION:
            raise InvalidArgument(f"{field}.alert.summary", f"at most {MAX_DESCRIPTION} characters")


@dataclass(frozen=True)
class Guards:
    """A playbook's guards with their defaults filled in."""

    min_healthy_share: float
    cooldown_s: float
    max_actions_per_hour: int
    verify_s: float


def guards_of(playbook: remediation_pb2.Playbook) -> Guards:
    guards = playbook.guards
    return Guards(
        min_healthy_share=(
            guards.min_healthy_share
            if guards.HasField("min_healthy_share")
            else DEFAULT_MIN_HEALTHY
        ),
        cooldown_s=(
            duration_seconds(guards.cooldown, "cooldown")
            if guards.HasField("cooldown")
            else DEFAULT_COOLDOWN_S
        ),
        max_actions_per_hour=guards.max_actions_per_hour or DEFAULT_ACTIONS_PER_HOUR,
        verify_s=(
            duration_seconds(playbook.verify_within, "verify_within")
            if playbook.HasField("verify_within")
            else DEFAULT_VERIFY_S
        ),
    )


def actions_within(started: Iterable[float], now: float) -> int:
    """How many of the actions started at ``started`` fall in the last hour."""
    return sum(1 for at in started if now - at < HOUR_S)


def healthy_enough(serving: int, total: int, share: float) -> bool:
    """Whether acting on one of ``total`` instances, ``serving`` of them SERVING, keeps
    at least ``share`` of them healthy: never heal the last instances into the ground."""
    if total == 0:
        return True
    return serving / total >= share


def remediation_id(playbook: str, target: str, started: float) -> str:
    """An id that sorts by start time within a playbook and target. Parts are joined
    with ':', which names never hold, so one playbook's ids never start as another's."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in target)
    if len(safe) > 100:  # cut, but unique: targets may share their first 100 characters
        safe = f"{safe[:91]}-{hashlib.sha256(target.encode()).hexdigest()[:8]}"
    return f"{playbook}:{safe}:{int(started * 1000):015d}"
