"""What a decision reads of a stored limit, worked out once per stored form.

Every decision on a stored limit reads its name, effective rate and shadow flag,
whether it is unlimited or blocks every request, what it replaces and whether
shares of it are worth holding. Each read of a message's field makes a new object,
and the effective rate is a new message: for a Check of 100 descriptors of one
limit, that was most of the work. ``facts_of`` works them out once per stored form
(the index's bytes of the limit), with the result a decision starts from (as the
bytes ``answers`` writes it from) and where its counters' slot hash starts. Pure.
"""

from __future__ import annotations

from typing import NamedTuple

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.config import UNIT_SECONDS, blocks_all, effective_rate
from bulwark_server.ratelimits.exchange import shareable
from bulwark_server.ratelimits.index import DECODED, Indexed
from bulwark_server.ratelimits.sharding import slot_start


class Facts(NamedTuple):
    """A stored limit as decisions read it. Shared: never to be changed."""

    limit: ratelimit_pb2.Limit
    replaces: tuple[str, ...]
    unlimited: bool
    blocks_all: bool
    # Seconds of the limit's unit (0 for an unlimited limit without a rate).
    unit_seconds: int
    shareable: bool
    shadow: bool
    # The result of a decision before its counter is charged, serialized: code OK,
    # the limit's name, and its effective rate and shadow flag (or ``unlimited``).
    head: bytes
    # ``sharding.slot_start`` of the limit's counters.
    start: int
    # The effective rate's requests per unit.
    per_unit: int
    # Decisions are also counted per descriptor value (``tallies.Tallies.detail``).
    detailed: bool


_held: dict[bytes, Facts] = {}


def facts_of(found: Indexed) -> Facts:
    """The facts of the limit ``found``; the ``DECODED`` latest ones are kept."""
    held = _held.get(found.stored)
    if held is not None:
        return held
    limit = found.limit
    rate = effective_rate(limit)
    result = ratelimit_pb2.DescriptorResult(code=ratelimit_pb2.CHECK_CODE_OK, limit_name=found.name)
    unlimited = limit.unlimited
    if unlimited:
        result.unlimited = True
    else:
        result.current_limit.CopyFrom(rate)
        result.shadow = limit.shadow_mode
    made = Facts(
        limit,
        tuple(limit.replaces),
        unlimited,
        blocks_all(limit),
        UNIT_SECONDS.get(rate.unit, 0),
        not unlimited and not blocks_all(limit) and shareable(limit),
        limit.shadow_mode,
        result.SerializeToString(),
        slot_start(found.domain, found.name),
        rate.requests_per_unit,
        limit.detailed_metric,
    )
    if len(_held) >= DECODED:
        del _held[next(iter(_held))]  # the oldest
    _held[found.stored] = made
    return made
