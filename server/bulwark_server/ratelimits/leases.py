"""Quota leases (Doorman-style): clients lease a share of a limit and decide locally.

A counter's leases are kept by the replica that owns the counter, and draw on its
one budget: the rate leased out is kept back from the counter (``reserved``,
``due``), so Checks and the replicas' shares get only what the leases leave.

Guarantees, per limit counter:

* The granted shares never sum above the capacity, at any moment: a client's
  new grant is at most what the other clients' current grants leave free.
* Shares follow demand: the target of each client is its max-min fair share of
  the capacity (everyone gets what they want if it fits; otherwise the
  capacity is split evenly, and what a small client leaves is shared by the
  others). A client moves to its target when it renews; clients shrinking to
  theirs free capacity that growing clients get at their next renewal.
* The counter's other users (Checks decided on it, replicas' shares) are one more
  claimant, wanting the rate they drew since the last lease request (with
  ``HEADROOM``): leases cannot crowd out the traffic that does not lease.
* A lease not renewed within its term expires and its share returns to the pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LEASE_TERM_S = 10.0
"""How long a lease lasts unless renewed."""

HEADROOM = 1.5
"""The counter's other users may grow this much between two lease requests."""

CENTRAL = ""
"""The claimant standing for the counter's other users (a client id is never empty)."""


@dataclass
class Lease:
    """One client's share of one counter."""

    wanted: int
    granted: int
    expires_at: float


def fair_shares(capacity: int, wanted: dict[str, int]) -> dict[str, int]:
    """Max-min fair integer shares of ``capacity`` for the given demands (water-filling)."""
    shares = {client: 0 for client in wanted}
    left = max(0, capacity)
    pending = sorted(wanted, key=lambda c: (wanted[c], c))
    while pending and left > 0:
        even = left // len(pending)
        smallest = pending[0]
        need = wanted[smallest] - shares[smallest]
        if need <= even:
            shares[smallest] += need
            left -= need
            pending.pop(0)
            continue
        if even == 0:
            # Fewer units than clients: one each, by the order above, until none is left.
            for client in pending[:left]:
                shares[client] += 1
            left = 0
            break
        for client in pending:
            shares[client] += even
        left -= even * len(pending)
    return shares


@dataclass
class LeasePool:
    """The leases on one counter, and what the counter's other users drew."""

    leases: dict[str, Lease] = field(default_factory=dict)
    # Hits the counter decided (or granted as shares) since ``since``.
    central: int = 0
    since: float | None = None
    # The leased rate is charged to a bucket as time passes: last charged at, and
    # the fraction of a token not charged yet.
    charged_at: float | None = None
    carry: float = 0.0

    def expire(self, before: float) -> None:
        """Forget the leases that ended before ``before``."""
        for client in [c for c, lease in self.leases.items() if lease.expires_at <= before]:
            del self.leases[client]

    def granted_total(self) -> int:
        return sum(lease.granted for lease in self.leases.values())

    def reserved(self, since: float) -> int:
        """Requests per unit of the leases in force at any time from ``since`` on: what
        a window starting at ``since`` keeps back (a lease ending within the window
        may have been spent in it)."""
        return sum(lease.granted for lease in self.leases.values() if lease.expires_at > since)

    def due(self, per_second: float, now: float) -> int:
        """Whole tokens the leases may have spent since last asked, at ``per_second``
        per unit of rate leased (a bucket refills meanwhile; the leases' part of the
        refill is taken back)."""
        start = now if self.charged_at is None else self.charged_at
        self.charged_at = now
        owed = self.carry + per_second * sum(
            lease.granted * max(0.0, min(now, lease.expires_at) - start)
            for lease in self.leases.values()
        )
        whole = math.floor(owed)
        self.carry = owed - whole
        return whole

    def request(
        self,
        client: str,
        wanted: int,
        capacity: int,
        now: float,
        term: float = LEASE_TERM_S,
        unit_seconds: float = 1.0,
    ) -> Lease:
        """Renew (or take) ``client``'s lease for ``term`` seconds; return it."""
        live = {c: lease for c, lease in self.leases.items() if lease.expires_at > now}
        demands = {c: lease.wanted for c, lease in live.items()}
        demands[client] = max(0, wanted)
        if self.since is not None and now > self.since:
            drawn = self.central / (now - self.since) * unit_seconds
            demands[CENTRAL] = min(capacity, math.ceil(drawn * HEADROOM))
        self.central, self.since = 0, now
        shares = fair_shares(capacity, demands)
        others = sum(lease.granted for c, lease in live.items() if c != client)
        # The other users' fair part stays with the counter.
        granted = max(0, min(shares[client], capacity - others - shares.get(CENTRAL, 0)))
        lease = Lease(wanted=max(0, wanted), granted=granted, expires_at=now + term)
        self.leases[client] = lease
        return lease
