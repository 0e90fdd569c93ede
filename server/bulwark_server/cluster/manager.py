"""The control plane's own health: replicas, leader, etcd members, cache lag, components."""

from __future__ import annotations

import time
from collections.abc import Callable

from bulwark.v1 import alert_pb2, cluster_pb2
from bulwark_server.cluster.election import Election, read_leader
from bulwark_server.errors import StoreUnavailable
from bulwark_server.store import EtcdStore, MemberInfo, StoreStatus
from bulwark_server.store.keys import REPLICA_KIND

HEALTHY = cluster_pb2.COMPONENT_STATE_HEALTHY
DEGRADED = cluster_pb2.COMPONENT_STATE_DEGRADED
UNHEALTHY = cluster_pb2.COMPONENT_STATE_UNHEALTHY

# Cache lag beyond this means the watch fell behind (progress is confirmed every probe).
CACHE_LAG_DEGRADED_S = 5.0
MEMBERS_MAX_AGE_S = 1.0


class ClusterManager:
    """The control plane's view of itself: answers from memory, except etcd member health
    (refreshed at most once a second)."""

    def __init__(
        self,
        store: EtcdStore,
        election: Election,
        *,
        draining: Callable[[], bool] = lambda: False,
        alerts: Callable[[], alert_pb2.AlertSummary] = alert_pb2.AlertSummary,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._election = election
        self._draining = draining
        self._alerts = alerts
        self._clock = clock
        self._members: list[MemberInfo] = []
        self._members_error = ""
        self._members_at = float("-inf")

    def leader(self) -> cluster_pb2.GetLeaderResponse:
        """Who leads, as this replica's cache knows it."""
        response = cluster_pb2.GetLeaderResponse(
            answered_by=self._election.replica.id,
            is_self=self._election.is_leader,
            stale=self._store.status().stale,
        )
        leader = read_leader(self._store)
        if leader is not None:
            response.leader.CopyFrom(leader)
        return response

    async def status(self) -> cluster_pb2.GetClusterStatusResponse:
        """Replicas, leader, etcd members, the cache's lag, each component's health, and
        the alerts' summary (``alerts``: the alert center's, asked)."""
        status = self._store.status()
        response = cluster_pb2.GetClusterStatusResponse(
            replica_id=self._election.replica.id, stale=status.stale, alerts=self._alerts()
        )
        leader = read_leader(self._store)
        if leader is not None:
            response.leader.CopyFrom(leader)
        for entry in self._store.scan(REPLICA_KIND):
            response.replicas.append(cluster_pb2.Replica.FromString(entry.value))
        for member in await self._etcd_members():
            response.etcd_members.append(
                cluster_pb2.EtcdMember(
                    id=member.id,
                    name=member.name,
                    client_urls=member.client_urls,
                    healthy=member.healthy,
                    is_raft_leader=member.is_raft_leader,
                    version=member.version,
                    db_size_bytes=member.db_size_bytes,
                    error=member.error,
                )
            )
        cache = response.cache
        cache.revision = status.revision
        cache.etcd_revision = status.etcd_revision
        cache.lag_revisions = max(0, status.etcd_revision - status.revision)
        cache.lag.FromMilliseconds(round(status.lag_seconds * 1000))
        cache.keys = status.keys
        cache.stale = status.stale
        cache.resyncs = status.resyncs
        response.components.extend(self._components(status, leader is not None))
        return response

    async def _etcd_members(self) -> list[MemberInfo]:
        now = self._clock()
        if now - self._members_at >= MEMBERS_MAX_AGE_S:
            self._members_at = now
            try:
                self._members = await self._store.members()
                self._members_error = ""
            except StoreUnavailable as exc:
                self._members_error = exc.message
        return self._members

    def _components(
        self, status: StoreStatus, has_leader: bool
    ) -> list[cluster_pb2.ComponentStatus]:
        out = []
        if status.reachable:
            out.append(cluster_pb2.ComponentStatus(name="store", state=HEALTHY))
        else:
            out.append(
                cluster_pb2.ComponentStatus(
                    name="store",
                    state=UNHEALTHY,
                    message=f"etcd unreachable ({status.last_error}); writes fail, reads are stale",
                )
            )
        if status.stale:
            cache_state, cache_msg = DEGRADED, "not following etcd; serving the last state seen"
        elif status.lag_seconds > CACHE_LAG_DEGRADED_S:
            cache_state, cache_msg = DEGRADED, f"last confirmed {status.lag_seconds:.1f}s ago"
        else:
            cache_state, cache_msg = HEALTHY, ""
        out.append(cluster_pb2.ComponentStatus(name="cache", state=cache_state, message=cache_msg))
        if has_leader:
            out.append(cluster_pb2.ComponentStatus(name="election", state=HEALTHY))
        else:
            out.append(
                cluster_pb2.ComponentStatus(
                    name="election", state=DEGRADED, message="no leader at the moment"
                )
            )
        members_state = HEALTHY
        members_msg = ""
        if self._members_error:
            members_state, members_msg = UNHEALTHY, self._members_error
        elif any(not m.healthy for m in self._members):
            down = [m.name for m in self._members if not m.healthy]
            members_state, members_msg = DEGRADED, f"etcd members not answering: {', '.join(down)}"
        out.append(
            cluster_pb2.ComponentStatus(name="etcd", state=members_state, message=members_msg)
        )
        if self._draining():
            out.append(
                cluster_pb2.ComponentStatus(name="grpc", state=UNHEALTHY, message="shutting down")
            )
        else:
            out.append(cluster_pb2.ComponentStatus(name="grpc", state=HEALTHY))
        return out
