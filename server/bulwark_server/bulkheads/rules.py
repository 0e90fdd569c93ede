"""Bulkhead rules without I/O: request validation, permit ids, slot choice, retry hints.

Every check raises ``InvalidArgument`` naming the offending request field, so
a rejected request stores nothing and never surfaces as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from google.protobuf import duration_pb2

from bulwark.v1 import bulkhead_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds, validate_id, validate_name

MAX_CONCURRENT_LIMIT = 10_000
MAX_WAIT_LIMIT_S = 300.0
DEFAULT_PERMIT_TTL_S = 30.0
MIN_PERMIT_TTL_S = 1.0
MAX_PERMIT_TTL_S = 3600.0
# Retry hint when nothing better is known; also the longest hint given, because
# permits are usually released long before their TTL ends.
DEFAULT_RETRY_AFTER_S = 1.0
MIN_RETRY_AFTER_S = 0.05

# "<slot>-<32 hex digits>": the slot lets Release and ExtendPermit go straight to
# the one key that can hold the permit, and read it from etcd when the cache lags.
PERMIT_ID_RE = re.compile(r"^(0|[1-9][0-9]{0,4})-([0-9a-f]{32})$")


@dataclass(frozen=True)
class BulkheadSpec:
    """A validated bulkhead configuration (durations in seconds)."""

    name: str
    max_concurrent: int
    max_wait: float
    default_permit_ttl: float

    def to_proto(self) -> bulkhead_pb2.Bulkhead:
        """The stored form: every field set, ``revision`` and ``in_use`` left at zero."""
        return bulkhead_pb2.Bulkhead(
            name=self.name,
            max_concurrent=self.max_concurrent,
            max_wait=_duration(self.max_wait),
            default_permit_ttl=_duration(self.default_permit_ttl),
        )

    @classmethod
    def from_proto(cls, message: bulkhead_pb2.Bulkhead) -> BulkheadSpec:
        """Read a stored configuration back (trusted: it was validated when written)."""
        ttl = _seconds(message.default_permit_ttl) or DEFAULT_PERMIT_TTL_S
        return cls(message.name, message.max_concurrent, _seconds(message.max_wait), ttl)


@dataclass(frozen=True)
class AcquireSpec:
    """A validated Acquire request; ``None`` means "use the bulkhead's setting"."""

    bulkhead: str
    holder: str
    ttl: float | None
    max_wait: float | None


@dataclass(frozen=True)
class PermitRef:
    """A validated (bulkhead, permit id) pair and the slot the id points at."""

    bulkhead: str
    permit_id: str
    slot: int


# -- request validation ----------------------------------------------------------


def parse_bulkhead(message: bulkhead_pb2.Bulkhead, field: str = "bulkhead") -> BulkheadSpec:
    """Validate a Bulkhead from PutBulkhead and fill defaults (output-only fields ignored).

    An unset or zero ``default_permit_ttl`` means 30 s; an unset ``max_wait`` means 0.
    """
    name = validate_name(message.name, f"{field}.name")
    if not 1 <= message.max_concurrent <= MAX_CONCURRENT_LIMIT:
        raise InvalidArgument(
            f"{field}.max_concurrent",
            f"must be 1-{MAX_CONCURRENT_LIMIT}, got {message.max_concurrent}",
        )
    max_wait = duration_seconds(
        message.max_wait, f"{field}.max_wait", minimum=0.0, maximum=MAX_WAIT_LIMIT_S
    )
    ttl = DEFAULT_PERMIT_TTL_S
    if _is_set(message, "default_permit_ttl"):
        ttl = duration_seconds(
            message.default_permit_ttl,
            f"{field}.default_permit_ttl",
            minimum=MIN_PERMIT_TTL_S,
            maximum=MAX_PERMIT_TTL_S,
        )
    return BulkheadSpec(name, message.max_concurrent, max_wait, ttl)


def parse_expected_revision(value: int, field: str = "expected_revision") -> int:
    """0 (no precondition) or a positive etcd revision."""
    if value < 0:
        raise InvalidArgument(field, f"must be 0 or a revision returned by the API, got {value}")
    return value


def parse_acquire(request: bulkhead_pb2.AcquireRequest) -> AcquireSpec:
    """Validate an Acquire request.

    An unset or zero ttl uses the bulkhead's default; an unset max_wait uses the
    bulkhead's, while an explicit 0 means "do not wait".
    """
    bulkhead = validate_name(request.bulkhead, "bulkhead")
    holder = validate_id(request.holder, "holder")
    ttl = None
    if _is_set(request, "ttl"):
        ttl = duration_seconds(
            request.ttl, "ttl", minimum=MIN_PERMIT_TTL_S, maximum=MAX_PERMIT_TTL_S
        )
    max_wait = None
    if request.HasField("max_wait"):
        max_wait = duration_seconds(
            request.max_wait, "max_wait", minimum=0.0, maximum=MAX_WAIT_LIMIT_S
        )
    return AcquireSpec(bulkhead, holder, ttl, max_wait)


def parse_permit_ref(bulkhead: str, permit_id: str) -> PermitRef:
    """Validate the bulkhead name and permit id of Release and ExtendPermit."""
    name = validate_name(bulkhead, "bulkhead")
    if not permit_id:
        raise InvalidArgument("permit_id", "is required")
    match = PERMIT_ID_RE.match(permit_id)
    if match is None or int(match.group(1)) >= MAX_CONCURRENT_LIMIT:
        raise InvalidArgument("permit_id", f"{permit_id[:64]!r} is not a permit id from Acquire")
    return PermitRef(name, permit_id, int(match.group(1)))


# -- permits and slots -------------------------------------------------------------


def permit_name(bulkhead: str, slot: int) -> str:
    """Store name of a slot's permit key: ``<bulkhead>/<slot>``."""
    return f"{bulkhead}/{slot}"


def permit_prefix(bulkhead: str) -> str:
    """Store-name prefix shared by every permit key of ``bulkhead`` (names have no '/')."""
    return f"{bulkhead}/"


def slot_of(name: str) -> tuple[str, int] | None:
    """(bulkhead, slot) of a permit key's store name, or None if it is not one."""
    bulkhead, sep, slot = name.partition("/")
    if not sep or not slot.isdigit():
        return None
    return bulkhead, int(slot)


def new_permit_id(slot: int, token: str) -> str:
    """A permit id: the slot, then 32 hex digits of ``token`` (a fresh uuid4 hex)."""
    return f"{slot}-{token}"


def effective_wait(requested: float | None, bulkhead_max_wait: float) -> float:
    """How long an Acquire may wait: what it asked for, never more than the bulkhead allows."""
    if requested is None:
        return bulkhead_max_wait
    return min(requested, bulkhead_max_wait)


def lease_seconds(ttl: float) -> int:
    """etcd leases count whole seconds: round a TTL up so a permit never lives shorter."""
    return max(1, math.ceil(ttl - 1e-9))


def pick_slots(
    max_concurrent: int, held: Collection[int], count: int, rng: random.Random
) -> list[int]:
    """Up to ``count`` distinct free slots below ``max_concurrent``, in random order.

    ``held`` may contain slots at or above ``max_concurrent`` (left over after the
    limit was lowered): they count against the limit, so nothing is offered
    while the permits held reach ``max_concurrent``. Random order spreads replicas
    (whose caches show the same free slots) over different keys instead of all
    racing for the lowest.
    """
    available = max_concurrent - len(held)
    want = min(count, available)
    if want <= 0:
        return []
    free_below = max_concurrent - sum(1 for slot in held if 0 <= slot < max_concurrent)
    if free_below * 2 >= max_concurrent:
        # Mostly free: rejection sampling needs about two draws per slot, while
        # listing the free slots would cost max_concurrent steps.
        out: list[int] = []
        seen: set[int] = set()
        while len(out) < want:
            slot = rng.randrange(max_concurrent)
            if slot not in held and slot not in seen:
                seen.add(slot)
                out.append(slot)
        return out
    free = [slot for slot in range(max_concurrent) if slot not in held]
    return rng.sample(free, min(want, len(free)))


def retry_hint(expiries: Iterable[float], now: float) -> float:
    """Seconds to suggest before retrying a full bulkhead.

    ``expiries`` are the times (same clock as ``now``) when held permits end unless
    renewed: the earliest future one bounds the wait, capped at 1 s and floored at
    50 ms. Without any, 1 s.
    """
    ahead = [t - now for t in expiries if t > now]
    hint = min([DEFAULT_RETRY_AFTER_S, *ahead])
    return max(MIN_RETRY_AFTER_S, hint)


# -- helpers ----------------------------------------------------------------------


def _is_set(message: object, field: str) -> bool:
    """True when a Duration field is present and non-zero (zero means "the default")."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return False
    value: duration_pb2.Duration = getattr(message, field)
    return bool(value.seconds or value.nanos)


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out
