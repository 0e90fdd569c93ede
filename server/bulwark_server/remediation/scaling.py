"""Scaling recommendations on the leader: the HPA's arithmetic over what instances and
callers report, and the values a KEDA trigger reads.

Readings, per SERVING instance: requests in flight and CPU from the heartbeats'
``Load`` (an instance that reported none counts as not reporting, as a pod without
metrics does for the HPA), calls per second from the callers' signals (the last
minute's rate over the SERVING instances). One ``hpa.Autoscaler`` per service and
spec remembers the recommendations for the stabilization windows, at most
``MAX_HISTORIES`` of them (the one asked for longest ago goes first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from bulwark.v1 import registry_pb2, remediation_pb2, signals_pb2
from bulwark_server import timestamps
from bulwark_server.remediation import hpa
from bulwark_server.remediation.scaling_rules import METRIC_NAMES, ScalerQuery, hpa_settings

MAX_HISTORIES = 1000


class ScalingManager:
    """See the module docstring."""

    def __init__(
        self,
        serving: Callable[[str], Sequence[registry_pb2.Instance]],
        signals: Callable[[str], signals_pb2.Signals],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``serving``: a service's SERVING instances (the registry's); ``signals``: its
        inbound signals over the last minute (the signals')."""
        self._serving = serving
        self._signals = signals
        self._clock = clock
        self._wall = wall
        self._histories: OrderedDict[tuple[str, bytes], hpa.Autoscaler] = OrderedDict()

    def recommend(
        self, service: str, spec: remediation_pb2.ScalingSpec
    ) -> remediation_pb2.ScalingRecommendation:
        """How many instances ``service`` should run (the spec checked first)."""
        settings = hpa_settings(spec)
        instances = self._serving(service)
        current = len(instances)
        metrics = [self._metric(service, t, instances) for t in spec.targets]
        answer = self._autoscaler(service, spec, settings).recommend(
            current, metrics, self._clock()
        )
        out = remediation_pb2.ScalingRecommendation(
            service=service,
            current_replicas=current,
            desired_replicas=answer.desired if answer.desired is not None else current,
            recommended_replicas=answer.replicas,
            reason=answer.reason,
            at=timestamps.at(self._wall()),
        )
        for target, metric in zip(spec.targets, metrics, strict=True):
            reading = out.readings.add(metric=target.metric, target=target.target)
            if metric.current is not None:
                reading.current = metric.current
                reading.desired_replicas = (
                    hpa.replicas_for_metric(current, metric, settings.tolerance) if current else 0
                )
        return out

    def value(self, query: ScalerQuery) -> float:
        """The value of a KEDA trigger's metric: a total over the SERVING instances
        (KEDA's HPA divides it by the target per instance), the error rate, or the
        recommended count."""
        if query.spec is not None:
            return float(self.recommend(query.service, query.spec).recommended_replicas)
        if query.metric in ("callsPerSecond", "errorRate"):
            inbound = self._signals(query.service)
            return (
                inbound.calls_per_second if query.metric == "callsPerSecond" else inbound.error_rate
            )
        instances = self._serving(query.service)
        if query.metric == "inFlight":
            return float(sum(i.load.in_flight for i in instances))
        return sum(i.load.cpu for i in instances)

    def _metric(
        self,
        service: str,
        target: remediation_pb2.ScalingTarget,
        instances: Sequence[registry_pb2.Instance],
    ) -> hpa.Metric:
        name = METRIC_NAMES[target.metric]
        reported = [i for i in instances if i.HasField("load")]
        if target.metric == remediation_pb2.SCALING_METRIC_IN_FLIGHT:
            return hpa.Metric.average_of(name, [i.load.in_flight for i in reported], target.target)
        if target.metric == remediation_pb2.SCALING_METRIC_CPU:
            return hpa.Metric.average_of(name, [i.load.cpu for i in reported], target.target)
        if not instances:
            return hpa.Metric(name, hpa.TargetType.AVERAGE_VALUE, target.target, None)
        rate = self._signals(service).calls_per_second
        return hpa.Metric(name, hpa.TargetType.AVERAGE_VALUE, target.target, rate / len(instances))

    def _autoscaler(
        self, service: str, spec: remediation_pb2.ScalingSpec, settings: hpa.HpaSettings
    ) -> hpa.Autoscaler:
        key = (service, spec.SerializeToString(deterministic=True))
        found = self._histories.get(key)
        if found is None:
            if len(self._histories) >= MAX_HISTORIES:
                self._histories.popitem(last=False)
            found = self._histories[key] = hpa.Autoscaler(settings)
        else:
            self._histories.move_to_end(key)
        return found
