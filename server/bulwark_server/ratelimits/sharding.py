"""Which replica owns a counter: slots of a hash, assigned by bounded-load rendezvous.

Pure. Every replica computes the same answer from the same list of owners.

* A counter's **slot** is the CRC-32 of its identity (domain, limit name, values)
  modulo ``SLOTS``: the same in every process (Python's ``hash`` is not).
* Slots are **assigned** to the owners by rendezvous hashing with a bound on the
  load: each slot, in order, goes to the owner that ranks it highest among those
  holding fewer than ``ceil(SLOTS / owners)`` slots. So the owners hold 21 or 22
  of 64 slots each (plain rendezvous spreads them as unevenly as 15 and 30), and
  an owner joining or leaving moves few slots, not most of them.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence

SLOTS = 64
"""Slots per limit: enough that three owners hold within one slot of a third each."""

_SEP = "\x1f"


def slot_of(domain: str, name: str, values: Sequence[str]) -> int:
    """The slot of the counter of ``values`` under limit ``name`` of ``domain``."""
    return zlib.crc32(_SEP.join((domain, name, *values)).encode()) % SLOTS


def assign(owners: Sequence[str], slots: int = SLOTS) -> tuple[str, ...]:
    """The owner of each slot (index = slot) among ``owners`` (replica ids; any order).

    Empty when there is no owner.
    """
    ids = sorted(set(owners))
    if not ids:
        return ()
    cap = math.ceil(slots / len(ids))
    held = dict.fromkeys(ids, 0)
    out: list[str] = []
    for slot in range(slots):
        ranked = sorted(ids, key=lambda owner: _rank(owner, slot), reverse=True)
        chosen = next(owner for owner in ranked if held[owner] < cap)
        held[chosen] += 1
        out.append(chosen)
    return tuple(out)


def _rank(owner: str, slot: int) -> int:
    digest = hashlib.blake2b(f"{owner}{_SEP}{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
