"""ChaosManager: the fault rules, the kill switch and the experiments, in one front.

``faults`` (``FaultRules``) any replica serves; ``engine`` (``ExperimentEngine``)
works on the leader (its loop is a ``LeaderTask`` body; the servicer routes
starts, stops and renewals there); ``experiments`` reads the records from the
cache on any replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bulwark.v1 import chaos_pb2
from bulwark_server.chaos.engine import ExperimentEngine, Hands
from bulwark_server.chaos.experiments import Experiments
from bulwark_server.chaos.faults import FaultRules
from bulwark_server.chaos.probes import SteadyState
from bulwark_server.store import EtcdStore, Fence


class ChaosManager:
    """See the module docstring."""

    def __init__(
        self,
        store: EtcdStore,
        fence: Callable[[], Fence],
        view: SteadyState,
        hands: Hands,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.faults = FaultRules(store, clock)
        self.experiments = Experiments(store, fence)
        self.engine = ExperimentEngine(self.faults, self.experiments, view, hands, clock=clock)

    def experiment_counts(self) -> dict[tuple[int, int], int]:
        """Experiments kept, by (state, verdict)."""
        counts: dict[tuple[int, int], int] = {}
        for experiment in self.experiments.all():
            key = (experiment.state, experiment.verdict)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def status(self) -> chaos_pb2.GetChaosStatusResponse:
        halted = self.faults.halted
        return chaos_pb2.GetChaosStatusResponse(
            halted=halted is not None,
            reason=halted or "",
            running=[e.id for e in self.experiments.running()],
            fault_rules=len(self.faults.all()),
        )
