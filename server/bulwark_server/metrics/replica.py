"""What a replica exports at each scrape, read from the parts that hold it.

Two kinds of series (the README's "Metrics" lists each):

* this replica's own facts (its RPCs, decisions, refusals, shedding, etcd and
  cache), exported by every replica: sum them across replicas;
* the fleet's state (``fleet``: breaker states, services and primaries,
  bulkheads, features), exported only by the leader, so that a sum or a count
  across replicas never counts a breaker twice. After a failover the series come
  from another ``instance``: aggregate without that label.

Nothing is counted here: each part counts where it decides (plain integers, no
locks, no label lookups on its hot path), and the collector turns the counts
into metric families when Prometheus asks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Protocol

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bulwark_server.cluster.election import Election, read_leader
from bulwark_server.config import split_host_port
from bulwark_server.metrics import fleet
from bulwark_server.metrics.endpoint import MetricsEndpoint
from bulwark_server.ratelimits.tallies import Tallies
from bulwark_server.store import EtcdStore, StoreStatus

Source = Callable[[], Iterable[Metric]]

log = logging.getLogger(__name__)
DROPPED = "bulwark_metrics_series_dropped"

# A ``_created`` series per counter and histogram doubles what a scrape carries, and
# neither go-grpc-prometheus nor the shipped rules read one.
prometheus_client.disable_created_metrics()


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    @property
    def elections_won(self) -> int: ...


class KeyBackups(Protocol):
    verified: int
    damaged: int | None


class Decider(Protocol):
    @property
    def tallies(self) -> Tallies: ...


class Breakers(fleet.Breakers, Protocol):
    refusals: Mapping[str, int]


class ReplicaMetrics:
    """The registry a replica's scrape endpoint serves; parts are added as sources."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._sources: list[Source] = []
        self.registry.register(_Sources(self._sources))

    async def serve(self, listen: str) -> Callable[[], Awaitable[None]]:
        """Serve the registry on ``listen`` (host:port; port 0 picks one); its closer."""
        host, port = split_host_port(listen, "metrics_listen")
        endpoint = MetricsEndpoint(self.registry, host, port)
        await endpoint.start()
        log.info(
            "metrics on http://%s:%d/metrics",
            host,
            endpoint.port,
            extra={"event": "metrics.serving", "port": endpoint.port},
        )
        return endpoint.close

    def add(self, source: Source) -> None:
        """``source`` is called at each scrape for the families it yields."""
        self._sources.append(source)

    def watch(
        self,
        store: EtcdStore,
        election: Election,
        *,
        limiter: Decider,
        breakers: Breakers,
        registry: fleet.Registry,
        bulkheads: fleet.Bulkheads,
        features: fleet.Features,
        keys: KeyBackups,
        recovery: fleet.Recovery,
        signals: fleet.Signals,
        remediations: fleet.Remediations,
        chaos: fleet.Chaos,
    ) -> None:
        """Export what this replica counts, and (while it leads) the fleet's state."""

        def term() -> int:
            leader = read_leader(store)
            return 0 if leader is None else leader.term

        def leading() -> bool:
            return election.is_leader

        self.add(leadership(election, term))
        self.add(store_health(store.status))
        self.add(breaker_refusals(breakers.refusals))
        self.add(ratelimit_decisions(lambda: limiter.tallies))
        self.add(key_backups(keys))
        self.add(fleet.fleet(leading, breakers, registry, bulkheads, features))
        self.add(fleet.recovery(leading, recovery, time.time))
        self.add(fleet.signals(leading, signals))
        self.add(fleet.remediations(leading, remediations))
        self.add(fleet.chaos(leading, chaos))


class _Sources(Collector):
    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            DROPPED,
            "Samples not recorded because their metric had reached its cap of series.",
            labels=["metric"],
        )
        for source in self._sources:
            for family in source():
                if family.name == DROPPED:
                    dropped.samples.extend(family.samples)
                else:
                    yield family
        yield dropped


def leadership(election: Leadership, leader_term: Callable[[], int]) -> Source:
    """``bulwark_is_leader``, ``bulwark_leader_term`` and ``bulwark_elections_won_total``."""

    def collect() -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bulwark_is_leader",
            "1 on the replica that leads the cluster, else 0.",
            value=1 if election.is_leader else 0,
        )
        yield GaugeMetricFamily(
            "bulwark_leader_term",
            "Term of the leader as this replica knows it (0: none known).",
            value=leader_term(),
        )
        yield CounterMetricFamily(
            "bulwark_elections_won",
            "Terms this replica began as leader.",
            value=election.elections_won,
        )

    return collect


def store_health(status: Callable[[], StoreStatus]) -> Source:
    """``bulwark_etcd_reachable``, ``bulwark_cache_lag_seconds``, ``bulwark_cache_revision``."""

    def collect() -> Iterator[Metric]:
        now = status()
        yield GaugeMetricFamily(
            "bulwark_etcd_reachable",
            "1 while this replica reaches etcd, else 0.",
            value=1 if now.reachable else 0,
        )
        yield GaugeMetricFamily(
            "bulwark_cache_lag_seconds",
            "Seconds since this replica's cache last heard from etcd (a change or a "
            "progress notice).",
            value=now.lag_seconds,
        )
        yield GaugeMetricFamily(
            "bulwark_cache_revision",
            "etcd revision this replica's cache reflects.",
            value=now.revision,
        )

    return collect


def ratelimit_decisions(tallies: Callable[[], Tallies]) -> Source:
    """``bulwark_ratelimit_decisions_total{domain,limit,outcome}``."""

    def collect() -> Iterator[Metric]:
        counted = tallies()
        family = CounterMetricFamily(
            "bulwark_ratelimit_decisions",
            "Rate-limit decisions made on this replica, one per descriptor, by limit "
            "and outcome (within_limit, near_limit, over_limit, shadow_mode).",
            labels=["domain", "limit", "outcome"],
        )
        for domain, name, outcome, count in counted.counts():
            family.add_metric([domain, name, outcome], count)
        yield family
        detailed = CounterMetricFamily(
            "bulwark_ratelimit_detailed_decisions",
            "Decisions of limits with detailed_metric, by descriptor value (capped per "
            "replica; past the cap a value counts under its limit only).",
            labels=["domain", "limit", "descriptor", "outcome"],
        )
        for domain, name, descriptor, outcome, count in counted.detailed_counts():
            detailed.add_metric([domain, name, descriptor, outcome], count)
        yield detailed
        dropped = CounterMetricFamily(DROPPED, "", labels=["metric"])
        dropped.add_metric(["bulwark_ratelimit_decisions_total"], counted.dropped)
        dropped.add_metric(["bulwark_ratelimit_detailed_decisions_total"], counted.detailed_dropped)
        yield dropped

    return collect


def breaker_refusals(refusals: Mapping[str, int]) -> Source:
    """``bulwark_breaker_refusals_total{breaker}``."""

    def collect() -> Iterator[Metric]:
        family = CounterMetricFamily(
            "bulwark_breaker_refusals",
            "Allow calls this replica refused, by breaker.",
            labels=["breaker"],
        )
        for name, count in sorted(refusals.items()):
            family.add_metric([name], count)
        yield family

    return collect


def shedding(shed: Mapping[str, int]) -> Source:
    """``bulwark_requests_shed_total{grpc_service,grpc_method}``."""

    def collect() -> Iterator[Metric]:
        family = CounterMetricFamily(
            "bulwark_requests_shed",
            "Calls refused with RESOURCE_EXHAUSTED because this replica was overloaded.",
            labels=["grpc_service", "grpc_method"],
        )
        for method, count in sorted(shed.items()):
            service, _, name = method.lstrip("/").rpartition("/")
            family.add_metric([service, name], count)
        yield family

    return collect


def key_backups(keys: KeyBackups) -> Source:
    """``bulwark_backups_verified_total`` and, once this replica verified,
    ``bulwark_backups_damaged``."""

    def collect() -> Iterator[Metric]:
        yield CounterMetricFamily(
            "bulwark_backups_verified",
            "Key backup versions this replica verified.",
            value=keys.verified,
        )
        if keys.damaged is not None:
            yield GaugeMetricFamily(
                "bulwark_backups_damaged",
                "Damaged or missing key backup copies found by this replica's latest verification.",
                value=keys.damaged,
            )

    return collect
