"""The other replicas as this replica's cache sees them: who owns counters, and where.

Replicas that advertise ``counter_owner`` in their ``Replica`` record (every
replica of this version) own the rate-limit counters together
(``ratelimits.sharding``). A replica of an earlier version does not advertise it
and forwards every decision to the leader, so the counters are shared out only
while the leader is an owner itself; under a leader of an earlier version every
replica forwards to it, as that version expects (``PeerView.sharded``).

``Peers.view()`` is recomputed only when a replica record or the leader key
changed since the last call (two cache subscriptions, drained without waiting),
so a decision pays a dictionary lookup for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bulwark.v1 import cluster_pb2
from bulwark_server.cluster.election import Election, read_leader
from bulwark_server.store import EtcdStore, Event
from bulwark_server.store.keys import ELECTION_KIND, REPLICA_KIND


@dataclass(frozen=True)
class PeerView:
    """One consistent picture of the replicas.

    ``owners``: ids of the replicas owning counters, sorted (this one included).
    ``addresses``: every live replica's address by id. ``sharded``: the counters are
    shared out among ``owners`` (the leader is one); otherwise the leader, of an
    earlier version, keeps them all. ``generation`` grows with every change seen.
    """

    self_id: str
    owners: tuple[str, ...] = ()
    addresses: dict[str, str] = field(default_factory=dict)
    leader_id: str = ""
    sharded: bool = False
    generation: int = 0
    slots: tuple[str, ...] = ()
    """The owner of each counter slot (``ratelimits.sharding.assign`` of ``owners``)."""


class Peers:
    """Follows the replica records and the leader key; see the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        assign: Callable[[Sequence[str]], tuple[str, ...]],
    ) -> None:
        """``assign``: the owner of each slot for a list of owners (the rate-limit
        capability's rule, handed in by the runner)."""
        self._store = store
        self._election = election
        self._assign = assign
        self._queues: list[asyncio.Queue[list[Event]]] = []
        self._view = PeerView(self_id=election.replica.id)

    def view(self) -> PeerView:
        """The replicas as of the cache's latest change to them."""
        if not self._queues:
            self._queues = [
                self._store.subscribe(REPLICA_KIND),
                self._store.subscribe(ELECTION_KIND),
            ]
            return self._rebuild()
        changed = False
        for queue in self._queues:
            while not queue.empty():
                queue.get_nowait()
                changed = True
        return self._rebuild() if changed else self._view

    def close(self) -> None:
        for queue in self._queues:
            self._store.unsubscribe(queue)
        self._queues = []

    def _rebuild(self) -> PeerView:
        owners: list[str] = []
        addresses: dict[str, str] = {}
        for entry in self._store.scan(REPLICA_KIND):
            replica = cluster_pb2.Replica.FromString(entry.value)
            addresses[replica.id] = replica.address
            if replica.counter_owner:
                owners.append(replica.id)
        leader = read_leader(self._store)
        leader_id = leader.replica_id if leader is not None else ""
        # This replica's own record may not be written yet: it owns counters all the same.
        self_id = self._election.replica.id
        if self_id not in owners:
            owners.append(self_id)
            addresses.setdefault(self_id, self._election.replica.address)
        # Between a leader's end and the next election the counters stay where they are.
        sharded = leader_id in owners if leader_id else self._view.sharded
        self._view = PeerView(
            self_id=self_id,
            owners=tuple(sorted(owners)),
            addresses=addresses,
            leader_id=leader_id,
            sharded=sharded,
            generation=self._view.generation + 1,
            slots=self._assign(tuple(sorted(owners))),
        )
        return self._view
