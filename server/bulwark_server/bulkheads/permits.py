"""Permit keys: finding, minting and releasing them, and revoking their leases.

``/bulwark/v1/permits/<name>/<slot>`` holds one ``Permit`` on a lease of its
own. Guarantees:

* **Release never frees someone else's permit**: a release deletes the key
  only at the mod revision of the key that carries the caller's permit id.
* **Nothing leaks**: a lease revocation, once started, finishes even if the
  calling request is cancelled; when etcd cannot be reached the lease ends by
  its TTL, taking its key with it.
* Lookups read the cache first and ask etcd before answering NotFound, so a
  permit acquired through another replica is found through this one at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from google.protobuf import duration_pb2

from bulwark.v1 import bulkhead_pb2
from bulwark_server import timestamps
from bulwark_server.bulkheads.rules import (
    PermitRef,
    new_permit_id,
    permit_name,
    permit_prefix,
    slot_of,
)
from bulwark_server.errors import Conflict, NotFound, StoreUnavailable
from bulwark_server.store import Entry, EtcdStore, split_key
from bulwark_server.store.keys import PERMIT_KIND, kind_prefix

log = logging.getLogger(__name__)


def not_held(permit_id: str, why: str = "already released or expired") -> NotFound:
    """The NotFound of Release and ExtendPermit for a permit that is no longer held."""
    return NotFound(f"permit {permit_id} is not held ({why})")


def decode(entry: Entry) -> bulkhead_pb2.Permit:
    """The permit a permit key holds."""
    return bulkhead_pb2.Permit.FromString(entry.value)


class Permits:
    """The permit keys of every bulkhead, as this replica reads and writes them."""

    def __init__(
        self,
        store: EtcdStore,
        *,
        wall: Callable[[], float],
        token: Callable[[], str],
    ) -> None:
        self._store = store
        self._wall = wall
        self._token = token
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Wait (briefly) for lease revocations still under way."""
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)

    def held(self, name: str) -> dict[int, Entry]:
        """Permit keys of ``name`` in the cache, by slot (slots >= the limit included)."""
        prefix = kind_prefix(PERMIT_KIND) + permit_prefix(name).encode()
        out: dict[int, Entry] = {}
        for entry in self._store.cache.scan(prefix):
            parsed = slot_of(split_key(entry.key)[1])
            if parsed is not None:
                out[parsed[1]] = entry
        return out

    def cached(self, name: str, slot: int) -> Entry | None:
        """The slot's permit key as the cache holds it."""
        return self._store.get(PERMIT_KIND, permit_name(name, slot))

    async def find(self, ref: PermitRef) -> Entry:
        """The key holding permit ``ref`` (cache first, then etcd); NotFound otherwise."""
        key_name = permit_name(ref.bulkhead, ref.slot)
        entry = self._store.get(PERMIT_KIND, key_name)
        if entry is None or decode(entry).id != ref.permit_id:
            # The permit may come from another replica whose write this cache has
            # not seen yet: only etcd can say it is not held.
            entry = await self._store.read(PERMIT_KIND, key_name)
        if entry is None or decode(entry).id != ref.permit_id:
            raise not_held(ref.permit_id)
        return entry

    def mint(self, name: str, slot: int, holder: str, ttl: int) -> bulkhead_pb2.Permit:
        """A new permit for ``slot`` (not yet stored), acquired now, with a fresh id."""
        acquired_at = timestamps.at(self._wall())
        return bulkhead_pb2.Permit(
            id=new_permit_id(slot, self._token()),
            bulkhead=name,
            holder=holder,
            acquired_at=acquired_at,
            ttl=duration_pb2.Duration(seconds=ttl),
        )

    async def create(self, permit: bulkhead_pb2.Permit, slot: int, lease: int) -> int:
        """Store ``permit`` in its slot on ``lease`` if the slot is free; its revision.

        AlreadyExists when the slot is held: the compare-and-swap that keeps the bound.
        """
        return await self._store.create(
            PERMIT_KIND,
            permit_name(permit.bulkhead, slot),
            permit.SerializeToString(),
            lease=lease,
        )

    async def release(self, ref: PermitRef) -> int:
        """Delete permit ``ref`` (at its key's mod revision) and revoke its lease.

        Returns the revision of the release; NotFound when it is not held.
        """
        entry = await self.find(ref)
        try:
            revision = await self._store.delete(
                PERMIT_KIND,
                permit_name(ref.bulkhead, ref.slot),
                expected_mod_revision=entry.mod_revision,
            )
        except (NotFound, Conflict):
            raise not_held(ref.permit_id) from None
        await self.revoke(entry.lease)
        return revision

    async def release_entry(self, entry: Entry) -> bool:
        """Delete one permit key (at its mod revision) and revoke its lease; False if gone."""
        kind, key_name = split_key(entry.key)
        try:
            await self._store.delete(kind, key_name, expected_mod_revision=entry.mod_revision)
            released = True
        except (NotFound, Conflict):
            released = False
        except StoreUnavailable as exc:
            log.warning("permit %s not released (%s); it ends with its lease", key_name, exc)
            return False
        await self.revoke(entry.lease)
        return released

    async def revoke(self, lease: int) -> None:
        """Revoke a lease, even if the calling request is cancelled meanwhile.

        Failure is logged, not raised: the lease then ends by its TTL.
        """
        if not lease:
            return

        async def revoke() -> None:
            try:
                await self._store.revoke_lease(lease)
            except StoreUnavailable as exc:
                log.warning("lease %x not revoked (%s); it ends with its TTL", lease, exc)

        task = asyncio.create_task(revoke())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Shielded: a client hanging up must not leave the lease (and a key) behind.
        await asyncio.shield(task)
