"""Instance picking without I/O: which SERVING instance a PickInstance call gets.

* Only SERVING instances are ever picked; NOT_SERVING, DRAINING and UNSPECIFIED
  never are (UNSPECIFIED is filled in at registration, so a stored instance
  still showing it was not written by RegisterInstance).
* ``rendezvous_pick`` is deterministic across processes and machines: it hashes
  with BLAKE2b, never Python's salted ``hash()``, so every replica maps a key to
  the same instance. When an instance stops being pickable, only the keys that
  were on it move; every other key stays where it was.
* ``least_loaded`` prefers the caller's zone only while some instance there is
  SERVING, and counts the picks this replica handed out since each instance's
  last load report.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from bulwark.v1 import registry_pb2


def pickable(instance: registry_pb2.Instance) -> bool:
    """True when ``instance`` may be picked: it reported SERVING."""
    return instance.health == registry_pb2.INSTANCE_HEALTH_SERVING


def rendezvous_pick(
    key: str, instances: Sequence[registry_pb2.Instance]
) -> registry_pb2.Instance | None:
    """The pickable instance with the highest rendezvous score for ``key``, or None.

    Ties (two ids with the same 64-bit score) go to the lowest id, so the answer
    does not depend on the order of ``instances``. Ids are unique within a service.
    """
    best: registry_pb2.Instance | None = None
    best_rank: tuple[int, str] | None = None
    for instance in instances:
        if not pickable(instance):
            continue
        # Negated score so that one min() order covers "highest score, then lowest id".
        rank = (-_score(key, instance.id), instance.id)
        if best_rank is None or rank < best_rank:
            best, best_rank = instance, rank
    return best


def least_loaded(
    instances: Sequence[registry_pb2.Instance],
    zone: str,
    pending: Mapping[str, int],
    rng: random.Random,
) -> registry_pb2.Instance | None:
    """The pickable instance with the least work, preferring ``zone``; None if none is pickable.

    Work is the reported ``load.in_flight`` plus ``pending[id]``, the picks this
    replica handed out since the instance last reported its load: between
    heartbeats the reported load does not move, so without it every pick would
    go to the same instance. Ties are broken uniformly at random with ``rng``,
    so replicas seeing the same loads do not all pile onto one instance.
    """
    candidates = [instance for instance in instances if pickable(instance)]
    if zone:
        local = [instance for instance in candidates if instance.zone == zone]
        if local:
            candidates = local
    if not candidates:
        return None
    works = [instance.load.in_flight + pending.get(instance.id, 0) for instance in candidates]
    least = min(works)
    tied = [instance for instance, work in zip(candidates, works, strict=True) if work == least]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def _score(key: str, instance_id: str) -> int:
    """64-bit rendezvous weight of (key, instance id), the same in every process."""
    key_bytes = key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(digest_size=8)
    # Length-prefixing the key keeps the encoding unambiguous whatever the key
    # holds: ("ab", "c") and ("a", "bc") must hash differently.
    digest.update(len(key_bytes).to_bytes(8, "big"))
    digest.update(key_bytes)
    digest.update(instance_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(digest.digest(), "big")
