"""Fault rules and the kill switch in etcd, read from the cache.

Layout: ``/bulwark/v1/fault-rules/<name>`` holds a ``FaultRule`` (revision cleared);
``/bulwark/v1/chaos-switch/halted`` holds the kill switch's reason while it is on.
Any replica writes rules (checked by ``rules`` first, refused while halted) and
turns the switch; clients watch the rules as they watch breakers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from bulwark.v1 import chaos_pb2, watch_pb2
from bulwark_server import timestamps
from bulwark_server.chaos.rules import check_rule
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.store import (
    MAX_TXN_OPS,
    Entry,
    EtcdStore,
    Event,
    EventType,
    Fence,
    Page,
    follow,
    put_message,
    scan_page,
    with_revision,
)
from bulwark_server.store.keys import (
    CHAOS_HALT_NAME,
    CHAOS_SWITCH_KIND,
    FAULT_RULE_KIND,
    kind_prefix,
)

SNAPSHOT, SYNCED = watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT, watch_pb2.WATCH_EVENT_TYPE_SYNCED
PUT, DELETE = watch_pb2.WATCH_EVENT_TYPE_PUT, watch_pb2.WATCH_EVENT_TYPE_DELETE
Rule = chaos_pb2.FaultRule
Response = chaos_pb2.WatchFaultRulesResponse


def _rule(entry: Entry) -> chaos_pb2.FaultRule:
    return with_revision(Rule, entry)


class FaultRules:
    """See the module docstring."""

    def __init__(self, store: EtcdStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    # -- the kill switch ------------------------------------------------------------

    @property
    def halted(self) -> str | None:
        """The kill switch's reason while it is on, else None."""
        entry = self._store.get(CHAOS_SWITCH_KIND, CHAOS_HALT_NAME)
        return None if entry is None else entry.value.decode()

    def refuse_if_halted(self) -> None:
        reason = self.halted
        if reason is not None:
            raise FailedPrecondition(f"chaos is halted by the kill switch: {reason}")

    async def set_halted(self, halted: bool, reason: str) -> bool:
        """Turn the switch; on, every rule is deleted at once (the leader aborts the
        experiments on its next round and deletes any rule that raced the switch)."""
        if halted:
            await self._store.upsert(CHAOS_SWITCH_KIND, CHAOS_HALT_NAME, lambda _: reason.encode())
            await self.delete_all()
        else:
            try:
                await self._store.delete(CHAOS_SWITCH_KIND, CHAOS_HALT_NAME)
            except NotFound:
                pass
        return halted

    # -- rules ----------------------------------------------------------------------

    async def put(
        self,
        rule: chaos_pb2.FaultRule,
        expected_revision: int = 0,
        fence: Fence | None = None,
    ) -> chaos_pb2.FaultRule:
        check_rule(rule, self._clock())
        self.refuse_if_halted()
        stored, _ = await put_message(
            self._store,
            FAULT_RULE_KIND,
            rule.name,
            rule,
            expected_revision=expected_revision,
            fence=fence,
        )
        return stored

    def get(self, name: str) -> chaos_pb2.FaultRule:
        entry = self._store.get(FAULT_RULE_KIND, name)
        if entry is None:
            raise NotFound(f"fault rule {name!r} does not exist")
        return _rule(entry)

    def all(self) -> list[chaos_pb2.FaultRule]:
        """Every rule, in name order, from the cache."""
        return [_rule(e) for e in self._store.scan(FAULT_RULE_KIND)]

    def list(self, size: int, start_after: str) -> Page[chaos_pb2.FaultRule]:
        page = scan_page(self._store.cache, kind_prefix(FAULT_RULE_KIND), size, start_after)
        return page.map(_rule)

    async def delete(self, name: str) -> int:
        try:
            return await self._store.delete(FAULT_RULE_KIND, name)
        except NotFound:
            raise NotFound(f"fault rule {name!r} does not exist") from None

    async def delete_many(self, names: list[str]) -> int:
        """Delete these rules (absent ones are no error) in one transaction."""
        revision = 0
        for start in range(0, len(names), MAX_TXN_OPS):
            part = names[start : start + MAX_TXN_OPS]
            revision = await self._store.delete_many(FAULT_RULE_KIND, part)
        return revision

    async def delete_all(self) -> int:
        return await self.delete_many([r.name for r in self.all()])

    async def sweep(self, running: frozenset[str], *, everything: bool = False) -> list[str]:
        """Delete expired rules, and rules of experiments that are not running (left
        by a leader that stopped between creating them and recording the end); with
        ``everything`` (the kill switch is on), every rule."""
        now = self._clock()
        gone = [
            r.name
            for r in self.all()
            if everything
            or timestamps.unix(r.expires_at) <= now
            or (r.experiment and r.experiment not in running)
        ]
        await self.delete_many(gone)
        return gone

    def watch(self, start_revision: int = 0) -> AsyncIterator[chaos_pb2.WatchFaultRulesResponse]:
        """A snapshot of the rules, then each change."""
        prefix = kind_prefix(FAULT_RULE_KIND)

        def snapshot() -> tuple[list[Response], int]:
            revision = self._store.cache.revision
            out = [
                Response(type=SNAPSHOT, rule=_rule(e), revision=revision)
                for e in self._store.scan(FAULT_RULE_KIND)
            ]
            out.append(Response(type=SYNCED, revision=revision))
            return out, revision

        def convert(events: list[Event]) -> list[chaos_pb2.WatchFaultRulesResponse]:
            out = []
            for event in events:
                if event.type == EventType.DELETE:
                    name = event.entry.key[len(prefix) :].decode()
                    out.append(Response(type=DELETE, rule=Rule(name=name), revision=event.revision))
                else:
                    out.append(Response(type=PUT, rule=_rule(event.entry), revision=event.revision))
            return out

        return follow(self._store, (prefix,), start_revision, snapshot, convert)
