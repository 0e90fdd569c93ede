"""RemediationManager: playbooks, remediations and the pause switch in etcd.

* Playbooks and the pause switch are configuration: any replica writes them,
  checked by ``playbooks.check_playbook`` first.
* Remediations are written by the leader only (fenced): a deposed leader cannot
  record a step, and a new one resumes from what is stored (``engine``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from bulwark.v1 import remediation_pb2, watch_pb2
from bulwark_server.cluster.election import Election
from bulwark_server.errors import NotFound
from bulwark_server.remediation.playbooks import check_playbook
from bulwark_server.store import (
    Entry,
    EtcdStore,
    Event,
    EventType,
    Page,
    follow,
    put_message,
    scan_page,
    with_revision,
)
from bulwark_server.store.keys import (
    PLAYBOOK_KIND,
    REMEDIATION_KIND,
    REMEDIATION_PAUSE_NAME,
    REMEDIATION_SWITCH_KIND,
    kind_prefix,
)

SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT, DELETE = watch_pb2.WATCH_EVENT_TYPE_PUT, watch_pb2.WATCH_EVENT_TYPE_DELETE


def _playbook(entry: Entry) -> remediation_pb2.Playbook:
    return with_revision(remediation_pb2.Playbook, entry)


def _remediation(entry: Entry) -> remediation_pb2.Remediation:
    return with_revision(remediation_pb2.Remediation, entry)


class RemediationManager:
    """See the module docstring."""

    def __init__(
        self, store: EtcdStore, election: Election, check_url: Callable[[str, str], None]
    ) -> None:
        self._store = store
        self._election = election
        self._check_url = check_url

    # -- playbooks ----------------------------------------------------------------

    async def put_playbook(
        self, playbook: remediation_pb2.Playbook, expected_revision: int = 0
    ) -> remediation_pb2.Playbook:
        check_playbook(playbook, self._check_url)
        stored, _ = await put_message(
            self._store, PLAYBOOK_KIND, playbook.name, playbook, expected_revision=expected_revision
        )
        return stored

    def playbook(self, name: str) -> remediation_pb2.Playbook:
        entry = self._store.get(PLAYBOOK_KIND, name)
        if entry is None:
            raise NotFound(f"playbook {name!r} does not exist")
        return _playbook(entry)

    def playbooks(self) -> list[remediation_pb2.Playbook]:
        """Every playbook, in name order, from the cache."""
        return [_playbook(e) for e in self._store.scan(PLAYBOOK_KIND)]

    def list_playbooks(self, size: int, start_after: str) -> Page[remediation_pb2.Playbook]:
        page = scan_page(self._store.cache, kind_prefix(PLAYBOOK_KIND), size, start_after)
        return page.map(_playbook)

    async def delete_playbook(self, name: str) -> int:
        try:
            return await self._store.delete(PLAYBOOK_KIND, name)
        except NotFound:
            raise NotFound(f"playbook {name!r} does not exist") from None

    # -- the pause switch -------------------------------------------------------

    @property
    def paused(self) -> bool:
        entry = self._store.get(REMEDIATION_SWITCH_KIND, REMEDIATION_PAUSE_NAME)
        return (
            entry is not None
            and remediation_pb2.SetRemediationPausedRequest.FromString(entry.value).paused
        )

    async def set_paused(self, paused: bool, reason: str) -> bool:
        value = remediation_pb2.SetRemediationPausedRequest(
            paused=paused, reason=reason
        ).SerializeToString()
        await self._store.upsert(REMEDIATION_SWITCH_KIND, REMEDIATION_PAUSE_NAME, lambda _: value)
        return paused

    # -- remediations -------------------------------------------------------------

    def remediations(self) -> list[remediation_pb2.Remediation]:
        """Every remediation, in id order, from the cache."""
        return [_remediation(e) for e in self._store.scan(REMEDIATION_KIND)]

    def list_remediations(
        self, playbook: str, size: int, start_after: str
    ) -> Page[remediation_pb2.Remediation]:
        prefix = kind_prefix(REMEDIATION_KIND)
        under = prefix + f"{playbook}:".encode() if playbook else prefix
        page = scan_page(self._store.cache, under, size, start_after, names_under=prefix)
        return page.map(_remediation)

    async def record(self, remediation: remediation_pb2.Remediation) -> None:
        """Store the leader's record of a remediation (fenced)."""
        stored, _ = await put_message(
            self._store, REMEDIATION_KIND, remediation.id, remediation, fence=self._election.fence()
        )
        remediation.revision = stored.revision

    async def forget(self, remediation_id: str) -> None:
        """Delete an old remediation record (fenced)."""
        try:
            await self._store.delete(REMEDIATION_KIND, remediation_id, fence=self._election.fence())
        except NotFound:
            pass

    def watch(
        self, start_revision: int = 0
    ) -> AsyncIterator[remediation_pb2.WatchRemediationsResponse]:
        """A snapshot of the remediations (SNAPSHOT events, then SYNCED), then a PUT or
        DELETE for each change."""
        prefix = kind_prefix(REMEDIATION_KIND)
        response = remediation_pb2.WatchRemediationsResponse

        def snapshot() -> tuple[list[remediation_pb2.WatchRemediationsResponse], int]:
            revision = self._store.cache.revision
            out = [
                response(type=SNAPSHOT, remediation=r, revision=revision)
                for r in self.remediations()
            ]
            out.append(response(type=SYNCED, revision=revision))
            return out, revision

        def convert(events: list[Event]) -> list[remediation_pb2.WatchRemediationsResponse]:
            out = []
            for event in events:
                if event.type == EventType.DELETE:
                    gone = remediation_pb2.Remediation(id=event.entry.key[len(prefix) :].decode())
                    out.append(response(type=DELETE, remediation=gone, revision=event.revision))
                else:
                    out.append(
                        response(
                            type=PUT, remediation=_remediation(event.entry), revision=event.revision
                        )
                    )
            return out

        return follow(self._store, (prefix,), start_revision, snapshot, convert)
