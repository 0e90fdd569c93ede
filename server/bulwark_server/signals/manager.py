"""The signals front: reports summed on the leader, answers read from there.

``ReportSignals`` and ``GetServiceSignals`` run on the leader (the servicer routes
them; a follower forwards), so one table holds the fleet's sums and nothing is
double-counted. A client reports about once a second, so the leader's cost follows
the number of reporting processes, not their call rates. Nothing is written to
etcd: a leader knows what was reported to it while it led (``ServiceSignals.window``
says how much of the asked window that covers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Protocol

from bulwark.v1 import signals_pb2
from bulwark_server import timestamps
from bulwark_server.signals.table import SignalTable, Sums, histogram_pairs, per_second, total


class Instances(Protocol):
    """What the registry says of a service's instances (asked, never read from its keys)."""

    def serving_load(self, service: str) -> tuple[int, int]:
        """(SERVING instances, the sum of their reported in-flight requests)."""
        ...


class SignalsManager:
    """Holds the table; see the module docstring."""

    def __init__(self, instances: Instances, clock: Callable[[], float] = time.time) -> None:
        self._instances = instances
        self._clock = clock
        self.table = SignalTable(clock)

    def services(self) -> list[str]:
        """Every service reported on, in name order."""
        return self.table.services()

    @property
    def dropped(self) -> int:
        """Reports not kept for want of room."""
        return self.table.dropped

    def report(self, request: signals_pb2.ReportSignalsRequest) -> int:
        """Add a reporter's counts (checked by ``rules.check_report``); how many were kept."""
        kept = 0
        for report in request.reports:
            counts = report.counts
            kept += self.table.add(
                request.reporter,
                report.service,
                counts.calls,
                counts.errors,
                histogram_pairs(counts.latency.offset, counts.latency.counts),
            )
        return kept

    def signals(self, service: str, window_s: float) -> signals_pb2.ServiceSignals:
        """What was reported of ``service`` over the last ``window_s`` (see the proto)."""
        covered = self.table.covered(window_s)
        callers = self.table.inbound(service, window_s)
        called = self.table.downstream(service, window_s)
        serving, in_flight = self._instances.serving_load(service)
        out = signals_pb2.ServiceSignals(
            service=service,
            inbound=to_signals(total(callers), covered),
            in_flight=in_flight,
            serving_instances=serving,
            at=timestamps.at(self._clock()),
        )
        out.window.FromNanoseconds(int(covered * 1e9))
        _fill(out.by_caller, callers, covered)
        _fill(out.downstream, called, covered)
        return out


def _fill(
    target: MutableMapping[str, signals_pb2.Signals], parts: dict[str, Sums], seconds: float
) -> None:
    for name, sums in parts.items():
        if sums.calls:
            target[name].CopyFrom(to_signals(sums, seconds))


def to_signals(sums: Sums, seconds: float) -> signals_pb2.Signals:
    """A window's sums as the API says them."""
    out = signals_pb2.Signals(
        calls=sums.calls,
        errors=sums.errors,
        calls_per_second=per_second(sums.calls, seconds),
        error_rate=sums.errors / sums.calls if sums.calls else 0.0,
    )
    for field, q in (("latency_p50", 0.5), ("latency_p90", 0.9), ("latency_p99", 0.99)):
        ms = sums.quantile(q)
        if ms is not None:
            getattr(out, field).FromNanoseconds(int(ms * 1e6))
    return out
