"""Quota leases (Doorman-style): clients lease a share of a limit and decide locally.

Guarantees, per limit counter:

* The granted shares never sum above the capacity, at any moment: a client's
  new grant is at most what the other clients' current grants leave free.
* Shares follow demand: the target of each client is its max-min fair share of
  the capacity (everyone gets what they want if it fits; otherwise the
  capacity is split evenly, and what a small client leaves is shared by the
  others). A client moves to its target when it renews; clients shrinking to
  theirs free capacity that growing clients get at their next renewal.
* A lease not renewed within its term expires and its share returns to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """The leases on one counter."""

    leases: dict[str, Lease] = field(default_factory=dict)

    def expire(self, now: float) -> None:
        for client in [c for c, lease in self.leases.items() if lease.expires_at <= now]:
            del self.leases[client]

    def granted_total(self) -> int:
        return sum(lease.granted for lease in self.leases.values())

    def request(self, client: str, wanted: int, capacity: int, now: float, term: float) -> Lease:
        """Renew (or take) ``client``'s lease for ``term`` seconds; return it."""
        self.expire(now)
        demands = {c: lease.wanted for c, lease in self.leases.items()}
        demands[client] = max(0, wanted)
        target = fair_shares(capacity, demands)[client]
        others = sum(lease.granted for c, lease in self.leases.items() if c != client)
        granted = max(0, min(target, capacity - others))
        lease = Lease(wanted=max(0, wanted), granted=granted, expires_at=now + term)
        self.leases[client] = lease
        return lease
