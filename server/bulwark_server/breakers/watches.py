"""WatchBreakers: the breakers' stream, on the store's ``follow``.

It begins with a snapshot (or resumes after a revision the replica's history
still covers), then sends every change, none skipped and none repeated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bulwark.v1 import breaker_pb2, watch_pb2
from bulwark_server.store import EtcdStore, Event, EventType, follow
from bulwark_server.store.keys import BREAKER_KIND, kind_prefix


def watch_breakers(
    store: EtcdStore, names: frozenset[str], start_revision: int = 0
) -> AsyncIterator[breaker_pb2.WatchBreakersResponse]:
    """The breakers named (all when ``names`` is empty), then every change to them."""

    def convert(events: list[Event]) -> list[breaker_pb2.WatchBreakersResponse]:
        return [r for ev in events if (r := _event(ev, names)) is not None]

    return follow(
        store,
        (kind_prefix(BREAKER_KIND),),
        start_revision,
        lambda: _snapshot(store, names),
        convert,
    )


def _snapshot(
    store: EtcdStore, names: frozenset[str]
) -> tuple[list[breaker_pb2.WatchBreakersResponse], int]:
    revision = store.cache.revision
    out = []
    for entry in store.scan(BREAKER_KIND):
        breaker = breaker_pb2.CircuitBreaker.FromString(entry.value)
        if names and breaker.name not in names:
            continue
        breaker.revision = entry.mod_revision
        out.append(
            breaker_pb2.WatchBreakersResponse(
                type=watch_pb2.WATCH_EVENT_TYPE_SNAPSHOT,
                breaker=breaker,
                revision=entry.mod_revision,
            )
        )
    out.append(
        breaker_pb2.WatchBreakersResponse(type=watch_pb2.WATCH_EVENT_TYPE_SYNCED, revision=revision)
    )
    return out, revision


def _event(ev: Event, names: frozenset[str]) -> breaker_pb2.WatchBreakersResponse | None:
    name = ev.entry.key[len(kind_prefix(BREAKER_KIND)) :].decode()
    if names and name not in names:
        return None
    if ev.type is EventType.DELETE:
        return breaker_pb2.WatchBreakersResponse(
            type=watch_pb2.WATCH_EVENT_TYPE_DELETE,
            breaker=breaker_pb2.CircuitBreaker(name=name),
            revision=ev.revision,
        )
    breaker = breaker_pb2.CircuitBreaker.FromString(ev.entry.value)
    breaker.revision = ev.entry.mod_revision
    return breaker_pb2.WatchBreakersResponse(
        type=watch_pb2.WATCH_EVENT_TYPE_PUT, breaker=breaker, revision=ev.revision
    )
