"""The wire side of counters: what a charge names, and the owner's answer to charges.

* ``counter_of``: the counter (table, value, slot) a descriptor charges, the same on
  the replica that sends a charge and on the owner that decides it.
* ``charge_of``: the ``CounterCharge`` a replica sends for it.
* ``serve``: the owner's side of ``CounterService/Exchange``: each charge of a batch
  decided on this replica's tables, in order (debits of hits admitted alone, shares
  given back, the hits, a share asked for; or a client's quota lease).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from bulwark.v1 import counter_pb2, ratelimit_pb2
from bulwark_server.ratelimits.config import UNIT_SECONDS, blocks_all, effective_rate
from bulwark_server.ratelimits.descriptors import own_limit
from bulwark_server.ratelimits.index import LimitIndex
from bulwark_server.ratelimits.owned import CounterTables, TableId
from bulwark_server.ratelimits.sharding import slot_after, slot_of, slot_start
from bulwark_server.ratelimits.shares import MIN_SHARE_RATE, SHARE_TERM_S
from bulwark_server.ratelimits.tables import Value, value_of


class CounterPeers(Protocol):
    """How charges reach another replica (``CounterService/Exchange``, batched)."""

    async def take(
        self, address: str, charges: Sequence[counter_pb2.CounterCharge], deadline_s: float
    ) -> Sequence[counter_pb2.CounterOutcome]:
        """The owner's outcomes, in order; raises when it does not answer in time."""
        ...

    def retain(self, addresses: set[str]) -> None:
        """Let go of the streams to replicas not among ``addresses`` (they left)."""
        ...


class Counter(NamedTuple):
    """One counter a descriptor charges: its table, value and slot.

    A named tuple: one is made per descriptor, and a frozen dataclass costs several
    times as much to make."""

    table: TableId
    value: Value
    slot: int
    limit_name: str
    values: tuple[str, ...]


def counter_of(
    domain: str, name: str, own: ratelimit_pb2.Rate | None, values: Sequence[str]
) -> Counter:
    """The counter of ``values`` under limit ``name`` (or under a descriptor's own limit,
    whose ``values`` are its entries' keys and values in turn)."""
    if own is not None:
        unit = str(own.unit)
        slot = slot_of(domain, "", (unit, *values))
        return Counter((domain, "", unit, slot), value_of(values), slot, "", tuple(values))
    return counter_at(domain, name, slot_start(domain, name), tuple(values))


def counter_at(domain: str, name: str, start: int, values: tuple[str, ...]) -> Counter:
    """``counter_of`` a stored limit, given ``sharding.slot_start(domain, name)``."""
    slot = slot_after(start, values)
    return Counter(
        (domain, name, slot), values[0] if len(values) == 1 else values, slot, name, values
    )


def shareable(limit: ratelimit_pb2.Limit) -> bool:
    """Whether a limit admits enough per second for shares of it to be worth holding."""
    rate = effective_rate(limit)
    return rate.requests_per_unit / UNIT_SECONDS[rate.unit] >= MIN_SHARE_RATE


@dataclass(slots=True)
class Pending:
    index: int  # of its result (``answers.Answers``); -1 when it has none
    limit: ratelimit_pb2.Limit
    created: int
    counter: Counter
    hits: int
    share: bool
    at: float = 0.0  # of a debt: when its hits were last admitted


def serve(
    index: LimitIndex,
    owned: CounterTables,
    holder: str,
    charges: Sequence[counter_pb2.CounterCharge],
    now: float,
) -> list[counter_pb2.CounterOutcome]:
    """The owner's side of ``CounterService/Exchange``: each charge decided here, in order."""
    out = []
    for charge in charges:
        outcome = counter_pb2.CounterOutcome()
        out.append(outcome)
        if charge.limit_name:
            found = index.get(charge.domain, charge.limit_name)
            if found is None or found.created != charge.limit_create_revision:
                outcome.unknown = True
                continue
            limit, created, own = found.limit, found.created, None
        else:
            limit, created, own = own_limit(charge.domain, charge.own_rate), 0, charge.own_rate
        if limit.unlimited or blocks_all(limit):
            outcome.unknown = True
            continue
        counter = counter_of(charge.domain, charge.limit_name, own, charge.values)
        if charge.lease_client:
            outcome.lease_granted = owned.lease(
                counter.table,
                limit,
                created,
                counter.value,
                charge.lease_client,
                charge.lease_wanted,
                now,
            )
            continue
        if charge.debit:
            owned.debit(
                counter.table, limit, created, counter.value, charge.debit, charge.debit_at, now
            )
        if charge.share_returned:
            owned.give_back(counter.table, counter.value, charge.share_returned, now)
        decided = owned.take(counter.table, limit, created, counter.value, charge.hits, now)
        outcome.allowed = decided.allowed
        outcome.remaining = decided.remaining
        outcome.reset_after_s = decided.reset_after
        outcome.retry_after_s = decided.retry_after
        if charge.share_wanted and shareable(limit):
            outcome.share_granted = owned.grant(
                counter.table, limit, created, counter.value, holder, charge.share_wanted, now
            )
            outcome.share_valid_s = share_term(limit, decided.reset_after)
    return out


def charge_of(item: Pending, wanted: int) -> counter_pb2.CounterCharge:
    counter = item.counter
    charge = counter_pb2.CounterCharge(
        domain=counter.table[0],
        limit_name=counter.limit_name,
        limit_create_revision=item.created,
        values=counter.values,
        hits=item.hits,
        share_wanted=wanted,
    )
    if not counter.limit_name:
        charge.own_rate.CopyFrom(item.limit.rate)
    return charge


def share_term(limit: ratelimit_pb2.Limit, reset_after: float) -> float:
    """How long a grant may be spent: a window's within its window, a bucket's term."""
    if limit.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW:
        return min(SHARE_TERM_S, reset_after)
    return SHARE_TERM_S
