"""Rate-limit configuration: validation, defaults and the load-scaled effective rate.

The stored limit always has its defaults filled (algorithm, burst, adaptive
floor), so the counters and the service never have to know which defaults
apply; ``normalize_limit`` is the only place that does. Pure: no I/O.

A rate of 0 requests per unit (a unit is still required) is a limit that blocks
every request it matches, as envoyproxy/ratelimit's ``requests_per_unit: 0``
("Black list IP"). ``blocks_all`` is the one rule that tells it, on either form:

* the API form (``normalize_limit``'s result, what PutLimit/GetLimit/ListLimits
  show): ``blocks_all`` set, rate 0 per the unit, burst 0, effective rate 0;
* the stored form (``stored_limit``; ``presented_limit`` turns it back): the
  same with rate 1 per the unit and burst 1. A replica of a version that does
  not know ``blocks_all`` ignores the flag and enforces 1 request per unit
  (nearly closed) instead of failing on a rate of 0, which it cannot count.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

from bulwark.v1 import ratelimit_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import validate_name, validate_pair

SECOND = ratelimit_pb2.RATE_UNIT_SECOND
MINUTE = ratelimit_pb2.RATE_UNIT_MINUTE
HOUR = ratelimit_pb2.RATE_UNIT_HOUR
DAY = ratelimit_pb2.RATE_UNIT_DAY
TOKEN_BUCKET = ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET
FIXED_WINDOW = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW

UNIT_SECONDS: dict[int, int] = {SECOND: 1, MINUTE: 60, HOUR: 3600, DAY: 86400}

MAX_REQUESTS_PER_UNIT = 1_000_000_000
MAX_BURST = 1_000_000_000
MAX_DESCRIPTOR_ENTRIES = 16
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
DEFAULT_ADAPTIVE_FLOOR = 0.1
MAX_REPLACES = 16
# A trailing "*" in a pattern value matches any value with the preceding prefix.
WILDCARD = "*"


def limit_key(domain: str, name: str) -> str:
    """The store name of a limit: both parts are validated names, so '/' is unambiguous."""
    return f"{domain}/{name}"


def normalize_limit(limit: ratelimit_pb2.Limit) -> ratelimit_pb2.Limit:
    """A new, validated Limit with every default filled; ``revision`` and ``effective_rate`` clear.

    Raises InvalidArgument naming the first offending field as ``limit.<field>``.
    The input message is left untouched and shares no sub-message with the result.
    """
    out = ratelimit_pb2.Limit()
    validate_pair(limit.domain, limit.name, "limit.domain", "limit.name")
    out.domain = limit.domain
    out.name = limit.name
    out.descriptor.extend(_pattern(limit.descriptor))
    out.unlimited = limit.unlimited
    out.shadow_mode = limit.shadow_mode
    out.detailed_metric = limit.detailed_metric
    blocking = limit.blocks_all or (limit.HasField("rate") and limit.rate.requests_per_unit == 0)

    algorithm = limit.algorithm
    if algorithm == ratelimit_pb2.LIMIT_ALGORITHM_UNSPECIFIED:
        algorithm = TOKEN_BUCKET
    elif algorithm not in (TOKEN_BUCKET, FIXED_WINDOW):
        raise InvalidArgument("limit.algorithm", f"unknown algorithm {algorithm}")

    # An unlimited limit needs no rate, but a rate it does carry (kept for when the
    # operator turns limiting back on) must be as valid as any other.
    if limit.HasField("rate") or not limit.unlimited:
        if not limit.HasField("rate"):
            raise InvalidArgument(
                "limit.rate.requests_per_unit", "is required (0 with a unit blocks every request)"
            )
        out.rate.CopyFrom(_rate(limit.rate))
        if blocking:
            out.blocks_all = True
            out.rate.requests_per_unit = 0
            out.burst = _blocking_burst(limit.burst, limit.rate.requests_per_unit)
        else:
            out.burst = _burst(limit.burst, out.rate.requests_per_unit, algorithm)
    elif limit.burst:
        raise InvalidArgument("limit.burst", "needs a rate to be measured against")
    elif blocking:
        raise InvalidArgument("limit.blocks_all", "needs a rate's unit (0 per the unit)")
    out.algorithm = algorithm

    if limit.HasField("adaptive"):
        out.adaptive.CopyFrom(limit.adaptive)
        floor = _fraction(limit.adaptive.floor, "limit.adaptive.floor")
        _fraction(limit.adaptive.load, "limit.adaptive.load")
        if limit.adaptive.enabled and floor == 0.0:
            out.adaptive.floor = DEFAULT_ADAPTIVE_FLOOR
    if len(limit.replaces) > MAX_REPLACES:
        raise InvalidArgument("limit.replaces", f"at most {MAX_REPLACES} names")
    for i, replaced in enumerate(limit.replaces):
        validate_name(replaced, f"limit.replaces[{i}]")
        if replaced == limit.name:
            raise InvalidArgument(f"limit.replaces[{i}]", "a limit cannot replace itself")
        if replaced not in out.replaces:
            out.replaces.append(replaced)
    return out


def blocks_all(limit: ratelimit_pb2.Limit) -> bool:
    """True for a limit that rejects every request it matches (API or stored form)."""
    return limit.blocks_all and not limit.unlimited


def stored_limit(limit: ratelimit_pb2.Limit) -> ratelimit_pb2.Limit:
    """What is written to etcd for a normalized limit: a copy, a blocking rate as 1 per unit.

    Only a limit with ``blocks_all`` (set by ``normalize_limit`` for a rate of 0)
    changes: rate 1 per its unit and burst 1, a limit every earlier version
    accepts and counts. ``normalize_limit`` of the result is ``limit`` again.
    """
    return _blocking_rate(limit, 1)


def presented_limit(stored: ratelimit_pb2.Limit) -> ratelimit_pb2.Limit:
    """A stored limit as the API shows it (a copy): a blocking one with rate 0 and burst 0."""
    return _blocking_rate(stored, 0)


def _blocking_rate(limit: ratelimit_pb2.Limit, per_unit: int) -> ratelimit_pb2.Limit:
    """A copy of ``limit``; a blocking one with ``per_unit`` as its rate and burst."""
    out = ratelimit_pb2.Limit()
    out.CopyFrom(limit)
    if out.blocks_all and out.HasField("rate"):
        out.rate.requests_per_unit = per_unit
        out.burst = per_unit
    return out


def effective_per_unit(limit: ratelimit_pb2.Limit) -> float:
    """Requests per unit after adaptive scaling: base * max(floor, 1 - load).

    Without adaptive scaling this is the base rate. The result is never below 1
    when the base is at least 1, so a fully loaded limit still lets a trickle
    through. Expects a normalized limit; a load outside 0..1 is clamped.
    """
    return float(_scaled(limit))


def effective_rate(limit: ratelimit_pb2.Limit) -> ratelimit_pb2.Rate:
    """The effective rate in the limit's unit, requests rounded down and at least 1.

    A limit without a rate (an unlimited one) has an empty effective rate; a
    blocking limit (``blocks_all``) has 0 per its unit.
    """
    # Fields are set one by one: a message made with keyword arguments costs twice as
    # much, and a decision makes several of these.
    out = ratelimit_pb2.Rate()
    rate = limit.rate
    unit = rate.unit
    if not unit:
        return out
    out.unit = unit
    if blocks_all(limit):
        return out  # 0 per the unit
    if not limit.adaptive.enabled:
        # No load to scale by: the rate as stored (what ``_scaled`` gives, without
        # the exact fractions, which cost more than the rest of a decision).
        requests = rate.requests_per_unit
        if requests > 0:
            out.requests_per_unit = requests
        return out
    out.requests_per_unit = math.floor(_scaled(limit))
    return out


def _scaled(limit: ratelimit_pb2.Limit) -> Fraction:
    base = 0 if blocks_all(limit) else limit.rate.requests_per_unit
    adaptive = limit.adaptive
    if base < 1 or not adaptive.enabled:
        return Fraction(max(base, 0))
    # float fields are float32 on the wire: 0.3 reads back as 0.30000001192..., and
    # 100 * (1 - that) would floor to 69. Exact fractions of the decimal the
    # operator wrote keep 100 at load 0.3 at exactly 70.
    floor = _decimal(adaptive.floor) or _decimal(DEFAULT_ADAPTIVE_FLOOR)
    load = _decimal(adaptive.load)
    factor = min(Fraction(1), max(floor, 1 - min(Fraction(1), max(Fraction(0), load))))
    return max(Fraction(1), base * factor)


def _decimal(value: float) -> Fraction:
    """The shortest decimal that reads back as the same float32, as an exact fraction."""
    if not math.isfinite(value):
        return Fraction(0)
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack("<f", float(text)) == packed:
            return Fraction(text)
    return Fraction(value)


def _pattern(
    entries: list[ratelimit_pb2.DescriptorEntry],
) -> list[ratelimit_pb2.DescriptorEntry]:
    if not entries:
        raise InvalidArgument("limit.descriptor", "needs at least one entry")
    if len(entries) > MAX_DESCRIPTOR_ENTRIES:
        raise InvalidArgument(
            "limit.descriptor",
            f"has {len(entries)} entries, at most {MAX_DESCRIPTOR_ENTRIES} allowed",
        )
    seen: set[str] = set()
    out = []
    for i, entry in enumerate(entries):
        key, value = entry.key, entry.value
        field = f"limit.descriptor[{i}]"
        if not key:
            raise InvalidArgument(f"{field}.key", "is required")
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidArgument(
                f"{field}.key", f"must be 1-{MAX_KEY_LENGTH} printable characters"
            )
        if key in seen:
            raise InvalidArgument(f"{field}.key", f"duplicate key {key[:64]!r}")
        seen.add(key)
        if len(value) > MAX_VALUE_LENGTH or not value.isprintable():
            raise InvalidArgument(
                f"{field}.value", f"must be 0-{MAX_VALUE_LENGTH} printable characters"
            )
        if WILDCARD in value[:-1]:
            raise InvalidArgument(
                f"{field}.value", "'*' is only allowed as the last character (a prefix match)"
            )
        out.append(ratelimit_pb2.DescriptorEntry(key=key, value=value))
    return out


def _rate(rate: ratelimit_pb2.Rate) -> ratelimit_pb2.Rate:
    requests = rate.requests_per_unit
    if not 0 <= requests <= MAX_REQUESTS_PER_UNIT:
        raise InvalidArgument(
            "limit.rate.requests_per_unit",
            f"must be 0-{MAX_REQUESTS_PER_UNIT} (0 blocks every request), got {requests}",
        )
    if rate.unit not in UNIT_SECONDS:
        raise InvalidArgument(
            "limit.rate.unit", f"must be SECOND, MINUTE, HOUR or DAY, got {rate.unit}"
        )
    return ratelimit_pb2.Rate(requests_per_unit=requests, unit=rate.unit)


def _blocking_burst(burst: int, requests: int) -> int:
    # Nothing is ever admitted, so there is nothing to admit at once. A blocking
    # limit's rate may come as 0, or as its stored form (1 per unit, burst 1)
    # when a client of an earlier version read it from an earlier replica and
    # writes it back with the flag it kept as an unknown field.
    if requests > 1:
        raise InvalidArgument(
            "limit.rate.requests_per_unit",
            f"must be 0 when the limit blocks every request, got {requests}",
        )
    if burst not in (0, requests):
        raise InvalidArgument("limit.burst", "a rate of 0 blocks every request; leave 0")
    return 0


def _burst(burst: int, requests: int, algorithm: int) -> int:
    if algorithm == FIXED_WINDOW:
        # A window admits requests_per_unit per window, all at once if they come at once.
        if burst not in (0, requests):
            raise InvalidArgument(
                "limit.burst", f"a fixed window has no burst; leave 0 or set {requests}"
            )
        return requests
    if burst == 0:
        return requests
    if burst < requests:
        raise InvalidArgument(
            "limit.burst", f"burst below the sustained rate ({burst} < {requests})"
        )
    if burst > MAX_BURST:
        raise InvalidArgument("limit.burst", f"must be at most {MAX_BURST}, got {burst}")
    return burst


def _fraction(value: float, field: str) -> float:
    # NaN compares false with everything, so it must be rejected explicitly.
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(field, f"must be within 0-1, got {value:g}")
    return value
