"""Registry rules without I/O: instance TTLs, priorities, loads and switchover drains.

Pure functions over messages; every check raises ``InvalidArgument`` naming
the offending request field, and runs before the registry manager reads or
writes anything, so a refused request stores nothing (and takes no lease).
Names, ids, addresses, metadata sizes and enum values are the request's shape,
checked by the servicer.
"""

from __future__ import annotations

import math

from google.protobuf import duration_pb2

from bulwark.v1 import registry_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds

DEFAULT_TTL_S = 10.0
MIN_TTL_S = 2.0  # etcd's own floor for a lease with its default election timeout
MAX_TTL_S = 300.0
MAX_PRIORITY = 1000
MAX_IN_FLIGHT = 10**9
MAX_UTILIZATION = 1000.0
MAX_LAG_S = 86400.0 * 365
DEFAULT_DRAIN_S = 10.0
MAX_DRAIN_S = 300.0


def validate_load(load: registry_pb2.Load, field: str) -> registry_pb2.Load:
    """A reported load within bounds: in-flight 0-1e9, cpu and memory 0-1000, lag up to a year."""
    if not 0 <= load.in_flight <= MAX_IN_FLIGHT:
        raise InvalidArgument(f"{field}.in_flight", f"must be 0-{MAX_IN_FLIGHT}")
    for name in ("cpu", "memory"):
        value = getattr(load, name)
        if not (math.isfinite(value) and 0 <= value <= MAX_UTILIZATION):
            raise InvalidArgument(f"{field}.{name}", f"must be 0-{MAX_UTILIZATION:g}, got {value}")
    duration_seconds(load.replication_lag, f"{field}.replication_lag", maximum=MAX_LAG_S)
    return load


def registration(instance: registry_pb2.Instance) -> registry_pb2.Instance:
    """A copy of a registration with the registry's rules checked and defaults applied.

    Priority within ±1000 and the load within bounds; the TTL 2-300 s, 10 s when
    unset, rounded up to whole seconds (the TTL an etcd lease really has, so the
    stored TTL is what the instance gets); health SERVING when unspecified.
    """
    if abs(instance.priority) > MAX_PRIORITY:
        raise InvalidArgument(
            "instance.priority",
            f"must be -{MAX_PRIORITY} to {MAX_PRIORITY}, got {instance.priority}",
        )
    validate_load(instance.load, "instance.load")
    out = registry_pb2.Instance()
    out.CopyFrom(instance)
    if instance.HasField("ttl"):
        duration_seconds(instance.ttl, "instance.ttl", minimum=MIN_TTL_S, maximum=MAX_TTL_S)
    else:
        out.ttl.FromNanoseconds(int(DEFAULT_TTL_S * 1e9))
    # etcd leases count whole seconds: store the TTL the lease really has.
    out.ttl.FromSeconds(math.ceil(out.ttl.seconds + out.ttl.nanos / 1e9))
    if out.health == registry_pb2.INSTANCE_HEALTH_UNSPECIFIED:
        out.health = registry_pb2.INSTANCE_HEALTH_SERVING
    return out


def drain_seconds(value: duration_pb2.Duration | None) -> float:
    """How long a switchover lets the primary drain: up to 300 s, 10 s when unset (None)."""
    if value is None:
        return DEFAULT_DRAIN_S
    return duration_seconds(value, "drain_timeout", maximum=MAX_DRAIN_S)
