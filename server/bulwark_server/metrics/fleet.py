"""The fleet's state as metrics, exported by the leader only (see ``replica``).

Each source reads the cache through its capability's listing at scrape time, so
the figures are those every replica serves, and nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bulwark.v1 import (
    breaker_pb2,
    bulkhead_pb2,
    chaos_pb2,
    feature_pb2,
    recovery_pb2,
    registry_pb2,
    remediation_pb2,
    signals_pb2,
)
from bulwark_server import timestamps
from bulwark_server.registry.manager import ServiceSummary
from bulwark_server.store import Page, every_item

Source = Callable[[], Iterator[Metric]]


def label_values(enum: object, prefix: str) -> dict[int, str]:
    """An enum's values (but UNSPECIFIED) as label values: names lower-cased, unprefixed."""
    return {
        value.number: value.name.removeprefix(prefix).lower()
        for value in enum.DESCRIPTOR.values  # type: ignore[attr-defined]
        if value.number
    }


BREAKER_STATES = label_values(breaker_pb2.BreakerState, "BREAKER_STATE_")
HEALTH = label_values(registry_pb2.InstanceHealth, "INSTANCE_HEALTH_")
FEATURE_STATUS = label_values(feature_pb2.FeatureStatus, "FEATURE_STATUS_")


class Breakers(Protocol):
    def states(self) -> list[tuple[str, int]]: ...


class Registry(Protocol):
    def summary(self) -> list[ServiceSummary]: ...

    @property
    def failovers(self) -> Mapping[str, int]: ...


class Bulkheads(Protocol):
    def list(self, size: int, start_after: str = "") -> Page[bulkhead_pb2.Bulkhead]: ...


class Recovery(Protocol):
    newest_snapshot_at: float
    interval: float

    def last_drill(self) -> recovery_pb2.DrillRecord | None: ...


class Features(Protocol):
    def list(self, size: int, start_after: str) -> Page[feature_pb2.FeatureView]: ...


def one_of(
    name: str,
    documentation: str,
    label: str,
    key: str,
    items: Iterator[tuple[str, int]],
    values: dict[int, str],
) -> GaugeMetricFamily:
    """A gauge of 1 for each item's current value and 0 for its other values."""
    family = GaugeMetricFamily(name, documentation, labels=[label, key])
    for item, current in items:
        for number, text in values.items():
            family.add_metric([item, text], 1 if number == current else 0)
    return family


def fleet(
    leading: Callable[[], bool],
    breakers: Breakers,
    registry: Registry,
    bulkheads: Bulkheads,
    features: Features,
) -> Source:
    """Breaker states, services and their primaries, bulkhead permits and feature
    statuses, while this replica leads (nothing otherwise)."""

    def collect() -> Iterator[Metric]:
        if not leading():
            return
        yield one_of(
            "bulwark_breaker_state",
            "1 for each breaker's current state, 0 for its other states.",
            "breaker",
            "state",
            iter(breakers.states()),
            BREAKER_STATES,
        )
        yield from _services(registry)
        held = GaugeMetricFamily(
            "bulwark_bulkhead_permits_held", "Permits held now, by bulkhead.", labels=["bulkhead"]
        )
        most = GaugeMetricFamily(
            "bulwark_bulkhead_permits_max",
            "Most permits a bulkhead lets be held at once.",
            labels=["bulkhead"],
        )
        for bulkhead in every_item(bulkheads.list):
            held.add_metric([bulkhead.name], bulkhead.in_use)
            most.add_metric([bulkhead.name], bulkhead.max_concurrent)
        yield held
        yield most
        yield one_of(
            "bulwark_feature_status",
            "1 for each feature's effective status, 0 for its other statuses.",
            "feature",
            "status",
            ((view.feature.name, view.effective_status) for view in every_item(features.list)),
            FEATURE_STATUS,
        )

    return collect


def _services(registry: Registry) -> Iterator[Metric]:
    instances = GaugeMetricFamily(
        "bulwark_instances",
        "Registered instances by service and health.",
        labels=["service", "health"],
    )
    has_primary = GaugeMetricFamily(
        "bulwark_service_has_primary",
        "1 while the service has a primary, else 0.",
        labels=["service"],
    )
    epoch = GaugeMetricFamily(
        "bulwark_primary_epoch", "Epoch of the service's primary record.", labels=["service"]
    )
    summaries = registry.summary()
    for summary in summaries:
        for number, health in HEALTH.items():
            instances.add_metric([summary.service, health], summary.by_health.get(number, 0))
        has_primary.add_metric([summary.service], 1 if summary.has_primary else 0)
        epoch.add_metric([summary.service], summary.epoch)
    failovers = CounterMetricFamily(
        "bulwark_primary_failovers",
        "Primaries replaced (failovers and switchovers) by this replica while it led.",
        labels=["service"],
    )
    # Every known service from 0, so that increase() sees its first failover.
    counts = {summary.service: 0 for summary in summaries} | dict(registry.failovers)
    for service, count in sorted(counts.items()):
        failovers.add_metric([service], count)
    yield from (instances, has_primary, epoch, failovers)


class Signals(Protocol):
    def services(self) -> list[str]: ...

    def signals(self, service: str, window_s: float) -> signals_pb2.ServiceSignals: ...

    @property
    def dropped(self) -> int: ...


class Remediations(Protocol):
    def remediations(self) -> list[remediation_pb2.Remediation]: ...

    @property
    def paused(self) -> bool: ...


class Chaos(Protocol):
    def experiment_counts(self) -> dict[tuple[int, int], int]: ...

    def status(self) -> chaos_pb2.GetChaosStatusResponse: ...


REMEDIATION_STATES = label_values(remediation_pb2.RemediationState, "REMEDIATION_STATE_")
EXPERIMENT_STATES = label_values(chaos_pb2.ExperimentState, "EXPERIMENT_STATE_")
VERDICTS = label_values(chaos_pb2.Verdict, "VERDICT_")
SIGNAL_WINDOW_S = 60.0
QUANTILES = (("0.5", "latency_p50"), ("0.9", "latency_p90"), ("0.99", "latency_p99"))


def signals(leading: Callable[[], bool], reported: Signals) -> Source:
    """What callers report of each service over the last minute, while this replica
    leads (it sums the reports)."""

    def collect() -> Iterator[Metric]:
        if not leading():
            return
        rate = GaugeMetricFamily(
            "bulwark_service_calls_per_second",
            "Calls to the service per second over the last minute, as its callers report them.",
            labels=["service"],
        )
        errors = GaugeMetricFamily(
            "bulwark_service_error_ratio",
            "Failed calls to the service over the last minute, as a share of its calls.",
            labels=["service"],
        )
        latency = GaugeMetricFamily(
            "bulwark_service_latency_seconds",
            "Latency of calls to the service over the last minute, by quantile.",
            labels=["service", "quantile"],
        )
        for service in reported.services():
            inbound = reported.signals(service, SIGNAL_WINDOW_S).inbound
            if not inbound.calls:
                continue
            rate.add_metric([service], inbound.calls_per_second)
            errors.add_metric([service], inbound.error_rate)
            for quantile, field in (
                ("0.5", "latency_p50"),
                ("0.9", "latency_p90"),
                ("0.99", "latency_p99"),
            ):
                latency.add_metric(
                    [service, quantile], getattr(inbound, field).ToNanoseconds() / 1e9
                )
        yield from (rate, errors, latency)
        yield CounterMetricFamily(
            "bulwark_signal_reports_dropped",
            "Signal reports not kept: past 5,000 (caller, service) pairs.",
            value=reported.dropped,
        )

    return collect


def remediations(leading: Callable[[], bool], records: Remediations) -> Source:
    """Remediations by playbook and state, and the pause switch, while this replica leads."""

    def collect() -> Iterator[Metric]:
        if not leading():
            return
        counts: dict[tuple[str, str], int] = {}
        for record in records.remediations():
            state = REMEDIATION_STATES.get(record.state, "unspecified")
            counts[(record.playbook, state)] = counts.get((record.playbook, state), 0) + 1
        family = GaugeMetricFamily(
            "bulwark_remediations",
            "Remediations kept (the last day's), by playbook and state.",
            labels=["playbook", "state"],
        )
        for (playbook, state), count in sorted(counts.items()):
            family.add_metric([playbook, state], count)
        yield family
        yield GaugeMetricFamily(
            "bulwark_remediation_paused",
            "1 while remediation is paused fleet-wide.",
            value=1 if records.paused else 0,
        )

    return collect


def recovery(
    leading: Callable[[], bool], snapshots: Recovery, clock: Callable[[], float]
) -> Source:
    """The newest snapshot's age and the latest drill's outcome, while this replica leads."""

    def collect() -> Iterator[Metric]:
        if not leading():
            return
        now = clock()
        yield GaugeMetricFamily(
            "bulwark_snapshot_interval_seconds",
            "Seconds between the leader's scheduled snapshots (0: none are scheduled).",
            value=snapshots.interval,
        )
        if snapshots.newest_snapshot_at:
            yield GaugeMetricFamily(
                "bulwark_snapshot_age_seconds",
                "Seconds since the newest snapshot the leader knows of was taken.",
                value=max(0.0, now - snapshots.newest_snapshot_at),
            )
        drill = snapshots.last_drill()
        if drill is None:
            return
        yield GaugeMetricFamily(
            "bulwark_drill_age_seconds",
            "Seconds since the latest drill ended.",
            value=max(0.0, now - timestamps.unix(drill.finished_at)),
        )
        yield GaugeMetricFamily(
            "bulwark_drill_succeeded",
            "1 when the latest drill restored a copy that matched its snapshot, else 0.",
            value=1 if drill.succeeded else 0,
        )
        if drill.HasField("report"):
            yield GaugeMetricFamily(
                "bulwark_drill_rto_seconds",
                "Restore time of the latest drill.",
                value=drill.report.rto.ToNanoseconds() / 1e9,
            )
            yield GaugeMetricFamily(
                "bulwark_drill_rpo_seconds",
                "Age of the snapshot the latest drill restored, when it ran.",
                value=drill.report.rpo.ToNanoseconds() / 1e9,
            )

    return collect


def chaos(leading: Callable[[], bool], experiments: Chaos) -> Source:
    """Experiments by state and verdict, fault rules and the kill switch, while this
    replica leads (it runs the experiments)."""

    def collect() -> Iterator[Metric]:
        if not leading():
            return
        family = GaugeMetricFamily(
            "bulwark_chaos_experiments",
            "Chaos experiments kept (the last week's), by state and verdict.",
            labels=["state", "verdict"],
        )
        for (state, verdict), count in sorted(experiments.experiment_counts().items()):
            family.add_metric(
                [EXPERIMENT_STATES.get(state, "unspecified"), VERDICTS.get(verdict, "unspecified")],
                count,
            )
        yield family
        status = experiments.status()
        yield GaugeMetricFamily(
            "bulwark_chaos_fault_rules",
            "Fault rules stored (applied by the clients that opted in to chaos).",
            value=status.fault_rules,
        )
        yield GaugeMetricFamily(
            "bulwark_chaos_halted", "1 while the chaos kill switch is on.", value=int(status.halted)
        )

    return collect
