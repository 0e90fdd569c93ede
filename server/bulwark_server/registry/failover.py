"""Who is primary: the leader's failover decisions, as pure functions.

``decide`` looks at one service's primary record and its instances and says
what the record must become, or None. Rules:

* A primary that is gone (its lease ended, or it deregistered) or reports
  NOT_SERVING is replaced by the best SERVING backup; without one the
  service has no primary (the record keeps its epoch, so epochs only grow).
* A primary that reports DRAINING is replaced when a backup is SERVING, and
  otherwise stays (it still holds the data and the epoch).
* A service without a primary gets the best SERVING instance.
* A switchover in progress completes once the primary reports DRAINING,
  leaves, stops serving, or the deadline passes: the target if it is SERVING,
  else the best backup. With no SERVING candidate it is abandoned and the old
  primary stays (unless it is gone or NOT_SERVING).
* A SERVING primary is never replaced on its own: no failback when a
  higher-priority instance returns, so the role moves only when it must.

Every promotion is epoch + 1. "Best" is the highest priority, then the lowest
replication lag, then the old primary's zone, then the smallest id (so every
replica would choose the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bulwark.v1 import registry_pb2
from bulwark_server import timestamps
from bulwark_server.errors import FailedPrecondition, NotFound

SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
NOT_SERVING = registry_pb2.INSTANCE_HEALTH_NOT_SERVING
DRAINING = registry_pb2.INSTANCE_HEALTH_DRAINING


def _lag(instance: registry_pb2.Instance) -> int:
    lag = instance.load.replication_lag
    return lag.seconds * 1_000_000_000 + lag.nanos


def best_backup(
    instances: Iterable[registry_pb2.Instance], *, exclude: str = "", zone: str = ""
) -> registry_pb2.Instance | None:
    """The SERVING instance to promote (not ``exclude``), or None."""
    candidates = [i for i in instances if i.health == SERVING and i.id != exclude]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda i: (-i.priority, _lag(i), not (zone and i.zone == zone), i.id),
    )


# Why a primary is replaced without anyone asking (its reason: "primary <id> <cause>").
LEFT = "left (deregistered or its lease ended)"
REPORTED_NOT_SERVING = "reported NOT_SERVING"


def failed_over(record: registry_pb2.Primary) -> bool:
    """Whether the record's primary replaced another that left or reported NOT_SERVING:
    not a first promotion, a switchover, a drain, nor a switchover given up."""
    if not (record.instance_id and record.previous_instance_id):
        return False
    replaced = f"primary {record.previous_instance_id} "
    return record.reason.startswith((replaced + LEFT, replaced + REPORTED_NOT_SERVING))


def _promote(
    service: str,
    current: registry_pb2.Primary | None,
    chosen: registry_pb2.Instance,
    reason: str,
    now: float,
) -> registry_pb2.Primary:
    return registry_pb2.Primary(
        service=service,
        instance_id=chosen.id,
        address=chosen.address,
        zone=chosen.zone,
        epoch=(current.epoch if current else 0) + 1,
        since=timestamps.at(now),
        reason=reason,
        previous_instance_id=current.instance_id if current else "",
    )


def _vacant(
    service: str, current: registry_pb2.Primary, reason: str, now: float
) -> registry_pb2.Primary:
    return registry_pb2.Primary(
        service=service,
        epoch=current.epoch,
        since=timestamps.at(now),
        reason=reason,
        previous_instance_id=current.instance_id,
    )


def decide(
    service: str,
    current: registry_pb2.Primary | None,
    instances: Mapping[str, registry_pb2.Instance],
    now: float,
) -> registry_pb2.Primary | None:
    """The primary record ``service`` must have now, or None to leave it as it is."""
    if current is None or not current.instance_id:
        chosen = best_backup(instances.values())
        if chosen is None:
            return None
        why = "first SERVING instance" if current is None else "no primary before"
        return _promote(service, current, chosen, f"promoted: {why}", now)

    old = current.instance_id
    primary = instances.get(old)
    # Once the primary's key is gone, the record still knows where it ran.
    zone = primary.zone if primary is not None else current.zone
    if primary is None:
        cause = f"primary {old} {LEFT}"
    elif primary.health == NOT_SERVING:
        cause = f"primary {old} {REPORTED_NOT_SERVING}"
    else:
        cause = ""

    if current.HasField("switchover_target"):
        if not cause and primary is not None:
            deadline = timestamps.unix(current.switchover_deadline)
            if primary.health == DRAINING:
                cause = f"switchover: primary {old} drained"
            elif now >= deadline:
                cause = f"switchover: primary {old} did not drain in time"
            else:
                return None  # still draining
        target = instances.get(current.switchover_target)
        if target is not None and target.health == SERVING and target.id != old:
            chosen: registry_pb2.Instance | None = target
        else:
            chosen = best_backup(instances.values(), exclude=old, zone=zone)
        if chosen is not None:
            return _promote(service, current, chosen, cause, now)
        if primary is None or primary.health == NOT_SERVING:
            return _vacant(service, current, f"{cause}; no SERVING backup", now)
        kept = registry_pb2.Primary()
        kept.CopyFrom(current)
        kept.ClearField("switchover_target")
        kept.ClearField("switchover_deadline")
        kept.ClearField("revision")
        kept.reason = f"switchover abandoned: no SERVING backup; {old} stays primary"
        return kept

    if cause:
        chosen = best_backup(instances.values(), exclude=old, zone=zone)
        if chosen is None:
            return _vacant(service, current, f"{cause}; no SERVING backup", now)
        return _promote(service, current, chosen, cause, now)
    if primary is not None and primary.health == DRAINING:
        chosen = best_backup(instances.values(), exclude=old, zone=zone)
        if chosen is not None:
            return _promote(service, current, chosen, f"primary {old} reported DRAINING", now)
    return None


def request_switchover(
    current: registry_pb2.Primary | None,
    instances: Mapping[str, registry_pb2.Instance],
    target: str,
    drain_timeout: float,
    now: float,
) -> registry_pb2.Primary:
    """The primary record asking the primary to drain for ``target`` ("" for the best backup).

    FailedPrecondition when there is no primary, no SERVING backup, or the
    target is the primary or not SERVING; NotFound for an unknown target.
    """
    if current is None or not current.instance_id:
        raise FailedPrecondition("the service has no primary to switch over from")
    if target:
        chosen = instances.get(target)
        if chosen is None:
            raise NotFound(f"target_instance_id: instance {target!r} is not registered")
        if chosen.id == current.instance_id:
            raise FailedPrecondition(f"target_instance_id: {target!r} is already the primary")
        if chosen.health != SERVING:
            state = registry_pb2.InstanceHealth.Name(chosen.health).removeprefix("INSTANCE_HEALTH_")
            raise FailedPrecondition(f"target_instance_id: {target!r} is {state}, not SERVING")
    elif best_backup(instances.values(), exclude=current.instance_id) is None:
        raise FailedPrecondition("no SERVING backup to switch over to")
    out = registry_pb2.Primary()
    out.CopyFrom(current)
    out.ClearField("revision")
    out.switchover_target = target
    out.switchover_deadline.CopyFrom(timestamps.at(now + drain_timeout))
    return out
