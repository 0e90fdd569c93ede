"""Which replica owns a counter: slots of a hash, assigned by bounded-load rendezvous.

Pure. Every replica computes the same answer from the same list of owners.

* A counter's **slot** is the CRC-32 of its identity (domain, limit name, values)
  modulo ``SLOTS``: the same in every process (Python's ``hash`` is not).
* Slots are **assigned** to the owners by rendezvous hashing with exact parts:
  every owner holds ``SLOTS // owners`` slots or one more (21 or 22 of 64 for
  three owners, where plain rendezvous can give one 30), the strongest
  (owner, slot) pairs first. An owner joining or leaving moves its part of the
  slots and a few more evened out between the others (at most 12 more of 64
  in 20,000 random fleets of 2 to 10 owners), not most of them.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

SLOTS = 64
"""Slots per limit: enough that three owners hold at most 22 each, a third and a slot."""

_SEP = "\x1f"


def slot_of(domain: str, name: str, values: Sequence[str]) -> int:
    """The slot of the counter of ``values`` under limit ``name`` of ``domain``."""
    return zlib.crc32(_SEP.join((domain, name, *values)).encode()) % SLOTS


def slot_start(domain: str, name: str) -> int:
    """What ``slot_after`` continues from for the counters of limit ``name`` of ``domain``:
    the CRC-32 of their identity's common beginning, worked out once per limit."""
    return zlib.crc32(f"{domain}{_SEP}{name}{_SEP}".encode())


def slot_after(start: int, values: Sequence[str]) -> int:
    """``slot_of`` given ``slot_start`` of its domain and name: a CRC-32 goes on from the
    CRC of what came before, so only the values are hashed per counter."""
    return zlib.crc32(_SEP.join(values).encode(), start) % SLOTS


def assign(owners: Sequence[str], slots: int = SLOTS) -> tuple[str, ...]:
    """The owner of each slot (index = slot) among ``owners`` (replica ids; any order).

    Empty when there is no owner.
    """
    ids = sorted(set(owners))
    if not ids:
        return ()
    base, extra = divmod(slots, len(ids))
    # Exact parts that add up to ``slots``: the owners ranking highest on a fixed
    # key hold one more.
    by_key = sorted(ids, key=lambda owner: _rank(owner, -1), reverse=True)
    room = {owner: base + (i < extra) for i, owner in enumerate(by_key)}
    # Every (owner, slot) pair, strongest first: a slot goes to the strongest owner
    # that still has room, so a pair keeps its slot unless a stronger one needs it.
    pairs = sorted(
        ((_rank(owner, slot), slot, owner) for slot in range(slots) for owner in ids),
        reverse=True,
    )
    out: list[str | None] = [None] * slots
    for _, slot, owner in pairs:
        if out[slot] is None and room[owner]:
            out[slot] = owner
            room[owner] -= 1
    return tuple(owner for owner in out if owner is not None)


def _rank(owner: str, slot: int) -> int:
    digest = hashlib.blake2b(f"{owner}{_SEP}{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
