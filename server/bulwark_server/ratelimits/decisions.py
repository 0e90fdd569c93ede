"""Every replica decides: a Check charged where each counter lives, from memory.

For each descriptor of a Check the replica finds the limit that applies (the
catalog's index), the counter it charges and that counter's slot
(``sharding.slot_of``); the slot's owner (``PeerView.slots``) decides:

* **Owned here**: charged on this replica's table, exactly.
* **A share held here** (a busy counter of another owner, ``shares``): decided
  from memory, allowed while the share lasts.
* **Within this replica's part** (``shares.PART_OF_LIMIT``) of a counter owned
  elsewhere: admitted here, and reported to the owner at the next refresh (as
  the hits admitted alone below), so a low-rate counter costs no message.
* **Owned elsewhere**: sent to the owner in a batch (``CounterPeers``: one
  message on one stream per owner for all the charges waiting, however many
  Checks they came from), which decides exactly. A busy counter's charge also asks for a share.
* **The owner does not answer** within ``LEADER_TIMEOUT_S``: decided on this
  replica's own share of the limit (the limit divided by the owners, rounded up)
  and marked ``local_fallback``, as when the leader was away before. The hits
  admitted so are a debt, charged to the counter's owner (the same or the next
  one) at the next refresh that reaches it, so they count once the owner is back.

``serve`` is the owner's side: the charges other replicas sent, in order.
``lease`` grants a client's quota lease where its counter lives, from the
counter's budget (``owned``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator, Sequence

from bulwark.v1 import counter_pb2, ratelimit_pb2
from bulwark_server.cluster.peers import Peers, PeerView
from bulwark_server.errors import PeerUnavailable
from bulwark_server.ratelimits.answers import OK_HEAD, Answers
from bulwark_server.ratelimits.catalog import LimitCatalog
from bulwark_server.ratelimits.config import UNIT_SECONDS, blocks_all, effective_rate
from bulwark_server.ratelimits.counters import Outcome, blocked
from bulwark_server.ratelimits.descriptors import own_limit
from bulwark_server.ratelimits.exchange import (
    Counter,
    CounterPeers,
    Pending,
    charge_of,
    counter_at,
    counter_of,
    serve,
    share_term,
    shareable,
)
from bulwark_server.ratelimits.facts import facts_of
from bulwark_server.ratelimits.fallback import LEADER_TIMEOUT_S
from bulwark_server.ratelimits.index import Indexed
from bulwark_server.ratelimits.owned import CounterTables, Setting, TableId
from bulwark_server.ratelimits.shares import REFRESH_S, ShareBook, part_divisor, share_outcome
from bulwark_server.ratelimits.tables import Value, values_of
from bulwark_server.ratelimits.tallies import Tallies

log = logging.getLogger(__name__)

MAX_DEBTS = 100_000
"""Counters whose hits admitted alone are remembered for their owner at most."""

OK = ratelimit_pb2.CHECK_CODE_OK
Entries = Sequence[ratelimit_pb2.DescriptorEntry]
Own = Sequence[ratelimit_pb2.Rate | None] | None


class Decisions:
    """Decides Checks where their counters live; see the module docstring."""

    def __init__(
        self,
        catalog: LimitCatalog,
        peers: Peers,
        owned: CounterTables,
        local: CounterTables,
        parts: CounterTables,
        sender: CounterPeers,
        clock: Callable[[], float],
    ) -> None:
        self._catalog = catalog
        self._peers = peers
        self.owned = owned
        self.local = local
        self.parts = parts
        self._sender = sender
        self._clock = clock
        self.book = ShareBook()
        self.tallies = Tallies()
        # Hits admitted on this replica's own share while their owner did not answer.
        self.debts: dict[tuple[TableId, Value], Pending] = {}
        self._generation = -1

    def view(self) -> PeerView:
        """The replicas as now; tables of slots this replica no longer owns are dropped."""
        view = self._peers.view()
        if view.generation != self._generation:
            self._generation = view.generation
            mine = {i for i, owner in enumerate(view.slots) if owner == view.self_id}
            if view.slots:
                self.owned.drop(lambda key: int(key[-1]) in mine)
            # A replica that left may be stopping: its server waits for open streams.
            self._sender.retain(set(view.addresses.values()))
        return view

    async def decide(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        own: Own = None,
    ) -> ratelimit_pb2.CheckResponse:
        """Charge ``hits[i]`` to descriptor i's counter wherever it lives.

        ``own[i]``, when set, is descriptor i's own limit (see ``_resolve``).
        """
        now = self._clock()
        view = self.view()
        answers = Answers()
        settle = answers.settle
        outcomes = answers.outcomes
        remote: dict[str, list[Pending]] = {}
        slots, self_id = view.slots, view.self_id
        owned = self.owned
        # What a limit's tables are set to, worked out once per request for the
        # descriptors of one limit (most often all of a batch), not once each.
        set_for: ratelimit_pb2.Limit | None = None
        setting: Setting | None = None
        for item in self._resolve(domain, descriptors, hits, own, answers, now):
            counter = item.counter
            owner = slots[counter.slot] if slots else self_id
            if owner == self_id:
                # ``_own`` written out for a counter no other replica holds shares of.
                limit, table, value = item.limit, counter.table, counter.value
                if limit is not set_for:
                    set_for, setting = limit, owned.setting(limit)
                if item.share and owned.ledgers and owned.contested(table, value, self_id, now):
                    outcomes[item.index] = self._own(view, item, now)
                else:
                    outcomes[item.index] = owned.take(
                        table, limit, item.created, value, item.hits, now, setting
                    )
                continue
            if item.share:
                spent = self.book.spend((counter.table, counter.value), item.hits, now)
                if spent is not None:
                    settle(item.index, share_outcome(*spent, item.hits, now))
                    continue
            part = self._from_part(view, item, now)
            if part is not None:
                settle(item.index, part)
                continue
            remote.setdefault(owner, []).append(item)
        if remote:
            await asyncio.gather(
                *(self._ask(view, owner, items, answers) for owner, items in remote.items())
            )
        return answers.response()

    def _from_part(self, view: PeerView, item: Pending, now: float) -> Outcome | None:
        """Hits of a counter owned elsewhere admitted within this replica's part of it
        (reported to the owner at the next refresh); None: ask the owner."""
        per_unit = effective_rate(item.limit).requests_per_unit
        if not item.hits or per_unit < part_divisor(len(view.owners)):
            return None
        counter = item.counter
        outcome = self.parts.take(
            counter.table, item.limit, item.created, counter.value, item.hits, now
        )
        if not outcome.allowed:
            return None
        self._owe(item, now)
        # What this replica knows: the limit less what it admitted itself.
        part = math.ceil(per_unit / part_divisor(len(view.owners)))
        return outcome._replace(remaining=max(0, per_unit - part + outcome.remaining))

    def _own(self, view: PeerView, item: Pending, now: float) -> Outcome:
        """A charge on a counter this replica owns: exact, unless other replicas hold
        shares of it; then from a share of its own, so its traffic gets its fair part."""
        counter = item.counter
        table, value = counter.table, counter.value
        if not (item.share and self.owned.contested(table, value, view.self_id, now)):
            return self.owned.take(table, item.limit, item.created, value, item.hits, now)
        key = (table, value)
        spent = self.book.spend(key, item.hits, now)
        if spent is not None:
            return share_outcome(*spent, item.hits, now)
        outcome = self.owned.take(table, item.limit, item.created, value, item.hits, now)
        if self.book.busy(key):
            self._grant_own(view, item, self.book.wanted(key), now)
        return outcome

    def _grant_own(self, view: PeerView, item: Pending, wanted: int, now: float) -> None:
        counter = item.counter
        granted = self.owned.grant(
            counter.table, item.limit, item.created, counter.value, view.self_id, wanted, now
        )
        looked = self.owned.take(counter.table, item.limit, item.created, counter.value, 0, now)
        self.book.granted(
            (counter.table, counter.value),
            wanted,
            granted,
            share_term(item.limit, looked.reset_after),
            looked.remaining,
            looked.reset_after,
            now,
        )

    def decide_local(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        own: Own = None,
    ) -> ratelimit_pb2.CheckResponse:
        """Decide on this replica's own share of each limit (no owner or leader answers)."""
        now = self._clock()
        answers = Answers(local_fallback=True)
        for item in self._resolve(domain, descriptors, hits, own, answers, now):
            counter = item.counter
            outcome = self.local.take(
                counter.table, item.limit, item.created, counter.value, item.hits, now
            )
            answers.settle(item.index, outcome)
        return answers.response()

    def _resolve(
        self,
        domain: str,
        descriptors: Sequence[Entries],
        hits: Sequence[int],
        own: Own,
        answers: Answers,
        now: float,
    ) -> Iterator[Pending]:
        """Add a result per descriptor to ``answers``; yield those a counter decides.

        Which limits apply is decided for the whole request before anything is
        charged, so a limit replaces another matched by any descriptor, whatever the
        hits of each. ``own[i]``, when set, is descriptor i's own limit
        (``descriptors.own_limit``): it applies instead of any stored one.
        Unlimited and blocking limits are answered here.
        """
        lookup = self._catalog.current().lookup
        own = own or [None] * len(descriptors)
        matched: list[Indexed | None] = [
            None if limit is not None else lookup(domain, entries)
            for entries, limit in zip(descriptors, own, strict=True)
        ]
        # envoyproxy/ratelimit's `replaces`: a limit replaced by another limit this
        # request matches is not applied.
        replaced: set[str] = set()
        last: Indexed | None = None
        for m in matched:
            if m is not None and m is not last:  # a batch most often matches one limit
                last = m
                replaced.update(facts_of(m).replaces)
        add, settle = answers.add, answers.settle
        heads, shadows, outcomes = answers.heads, answers.shadows, answers.outcomes
        tallies = answers.tallies
        last = None
        for entries, found, charge, rate in zip(descriptors, matched, hits, own, strict=True):
            if rate is None:
                if found is None or found.name in replaced:
                    add(OK_HEAD)
                    continue
                # A stored limit: its result so far the one made once for it. A batch
                # most often names one limit: its facts are looked up once.
                if found is not last:
                    last, facts = found, facts_of(found)
                    tally = self.tallies.of(domain, found.name, facts.per_unit)
                # ``answers.add`` written out: it runs per descriptor.
                index = len(heads)
                heads.append(facts.head)
                shadows.append(facts.shadow)
                outcomes.append(None)
                tallies.append(
                    self.tallies.detail(domain, found.name, entries, tally)
                    if facts.detailed
                    else tally
                )
                if facts.unlimited:
                    continue
                if facts.blocks_all:
                    settle(index, blocked(facts.unit_seconds, now))
                    continue
                values = (
                    (entries[0].value,) if len(entries) == 1 else tuple([e.value for e in entries])
                )
                counter = counter_at(domain, found.name, facts.start, values)
                yield Pending(index, facts.limit, found.created, counter, charge, facts.shareable)
                continue
            result = ratelimit_pb2.DescriptorResult()
            result.code = OK
            limit, created = own_limit(domain, rate), 0
            values = [part for e in entries for part in (e.key, e.value)]
            result.limit_name = limit.name
            current = effective_rate(limit)
            own_tally = self.tallies.of(domain, limit.name, current.requests_per_unit)
            if limit.unlimited:
                result.unlimited = True
                add(result.SerializeToString(), tally=own_tally)
                continue
            result.current_limit.CopyFrom(current)
            result.shadow = limit.shadow_mode
            index = add(result.SerializeToString(), limit.shadow_mode, own_tally)
            if blocks_all(limit):
                settle(index, blocked(UNIT_SECONDS[current.unit], now))
                continue
            counter = counter_of(domain, limit.name, rate, values)
            yield Pending(index, limit, created, counter, charge, shareable(limit))

    async def _ask(
        self,
        view: PeerView,
        owner: str,
        items: list[Pending],
        answers: Answers,
    ) -> None:
        charges = []
        for item in items:
            key = (item.counter.table, item.counter.value)
            wanted = self.book.wanted(key) if item.share and self.book.busy(key) else 0
            charges.append(charge_of(item, wanted))
        try:
            outcomes = await self._sender.take(
                view.addresses.get(owner, ""), charges, LEADER_TIMEOUT_S
            )
        except Exception as exc:  # any failure of the owner: decide here, and say so
            log.debug("counter owner %s did not answer: %s", owner, exc)
            outcomes = [None] * len(items)
        now = self._clock()
        for item, charge, outcome in zip(items, charges, outcomes, strict=True):
            if outcome is None or outcome.unknown:
                answers.local_fallback = True
                decided = self.local.take(
                    item.counter.table, item.limit, item.created, item.counter.value, item.hits, now
                )
                if decided.allowed and item.hits and outcome is None:
                    self._owe(item, now)
            else:
                decided = Outcome(
                    outcome.allowed, outcome.remaining, outcome.reset_after_s, outcome.retry_after_s
                )
                if charge.share_wanted or outcome.share_granted:
                    self.book.granted(
                        (item.counter.table, item.counter.value),
                        charge.share_wanted,
                        outcome.share_granted,
                        outcome.share_valid_s,
                        outcome.remaining,
                        outcome.reset_after_s,
                        now,
                    )
            answers.settle(item.index, decided)

    def _owe(self, item: Pending, now: float) -> None:
        """Remember hits admitted here (from a part, or alone while the owner did not
        answer), to charge to the owner at the next refresh that reaches it."""
        key = (item.counter.table, item.counter.value)
        owed = self.debts.get(key)
        if owed is None and len(self.debts) < MAX_DEBTS:
            self.debts[key] = Pending(item.index, item.limit, item.created, item.counter, 0, False)
            owed = self.debts[key]
        if owed is not None:
            owed.hits += item.hits
            owed.at = now

    async def lease(
        self, domain: str, found: Indexed, entries: Entries, client: str, wanted: int
    ) -> int:
        """Lease ``client`` up to ``wanted`` requests per unit of the stored limit
        ``found``'s counter for ``entries``, on the counter's owner; what it granted."""
        view = self.view()
        counter = counter_of(domain, found.limit.name, None, [e.value for e in entries])
        owner = view.slots[counter.slot] if view.slots else view.self_id
        if owner == view.self_id:
            return self.owned.lease(
                counter.table,
                found.limit,
                found.created,
                counter.value,
                client,
                wanted,
                self._clock(),
            )
        item = Pending(-1, found.limit, found.created, counter, 0, False)
        charge = charge_of(item, 0)
        charge.lease_client, charge.lease_wanted = client, wanted
        try:
            (outcome,) = await self._sender.take(
                view.addresses.get(owner, ""), [charge], LEADER_TIMEOUT_S
            )
        except Exception as exc:
            # No fallback: a client keeps its last lease, or its safe rate, meanwhile.
            raise PeerUnavailable(
                f"replica {owner!r}, which keeps this counter, did not answer"
            ) from exc
        if outcome.unknown:
            raise PeerUnavailable(f"replica {owner!r} does not know limit {found.limit.name!r} yet")
        return outcome.lease_granted

    def serve(
        self, holder: str, charges: Sequence[counter_pb2.CounterCharge]
    ) -> list[counter_pb2.CounterOutcome]:
        """The owner's side of ``CounterService/Exchange``: each charge decided here."""
        self.view()
        return serve(self._catalog.current(), self.owned, holder, charges, self._clock())

    async def refresh(self) -> int:
        """Top up the shares of busy counters (one batch per owner); how many were asked."""
        now = self._clock()
        view = self.view()  # every round: replicas that left are let go of at once
        due = self.book.due(now)
        if not due and not self.debts:
            return 0
        index = self._catalog.current()
        by_owner: dict[str, list[tuple[Pending, int, int]]] = {}
        debts, self.debts = self.debts, {}
        for owed in debts.values():
            owner = view.slots[owed.counter.slot] if view.slots else view.self_id
            if owner == view.self_id:
                counter = owed.counter
                self.owned.debit(
                    counter.table, owed.limit, owed.created, counter.value, owed.hits, owed.at, now
                )
            else:
                by_owner.setdefault(owner, []).append((owed, 0, 0))
        for refresh in due:
            table, value = refresh.key  # type: ignore[misc]
            domain, name = str(table[0]), str(table[1])
            if not name:
                continue  # own limits are not shared: no Limit to name them by
            found = index.get(domain, name)
            if found is None or not shareable(found.limit):
                self.book.drop(refresh.key)
                continue
            slot = int(table[-1])  # type: ignore[call-overload]
            owner = view.slots[slot] if view.slots else view.self_id
            counter = Counter(table, value, slot, name, tuple(values_of(value)))
            item = Pending(-1, found.limit, found.created, counter, 0, True)
            if owner != view.self_id:
                by_owner.setdefault(owner, []).append((item, refresh.wanted, refresh.returned))
            elif refresh.returned or not self.owned.contested(table, value, view.self_id, now):
                # Its own counter, no longer shared out: decided exactly again.
                self.book.drop(refresh.key)
                self.owned.give_back(table, value, refresh.returned, now)
            else:
                self._grant_own(view, item, refresh.wanted, now)
        await asyncio.gather(*(self._top_up(view, o, items) for o, items in by_owner.items()))
        return len(due)

    async def _top_up(
        self, view: PeerView, owner: str, items: list[tuple[Pending, int, int]]
    ) -> None:
        charges = []
        for item, wanted, returned in items:
            charge = charge_of(item, wanted)
            charge.share_returned = returned
            if item.hits:  # a debt: hits admitted alone, charged as they are
                charge.hits, charge.debit, charge.debit_at = 0, item.hits, item.at
            charges.append(charge)
        try:
            outcomes = await self._sender.take(view.addresses.get(owner, ""), charges, REFRESH_S)
        except Exception as exc:
            log.debug("counter owner %s did not answer a refresh: %s", owner, exc)
            for item, _, _ in items:
                if item.hits:
                    self._owe(item, item.at)
            return
        now = self._clock()
        for (item, wanted, returned), outcome in zip(items, outcomes, strict=True):
            if returned or item.hits or outcome.unknown:
                continue
            self.book.granted(
                (item.counter.table, item.counter.value),
                wanted,
                outcome.share_granted,
                outcome.share_valid_s,
                outcome.remaining,
                outcome.reset_after_s,
                now,
            )
