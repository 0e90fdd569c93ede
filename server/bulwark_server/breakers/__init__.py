"""Circuit breakers with resilience4j's meaning and defaults, as pure logic (no I/O).

    CLOSED ──rate >= threshold──▶ OPEN ──wait passed (Allow, or tick if automatic)──▶ HALF_OPEN
      ▲                            ▲                                                    │
      │                            └──── trial rate >= threshold, or max wait passed ───┤
      └──────────────────────────── trial rates below thresholds ───────────────────────┘

    Operators: force FORCED_OPEN (refuse all), DISABLED (allow all, count nothing),
    METRICS_ONLY (allow all, count, never trip), or CLOSED (reset) from any state.

``config`` normalizes and validates a BreakerConfig, ``window`` counts recent
outcomes, and ``machine`` moves a shared BreakerStatus from state to state.
``deferral`` decides which changed windows a checkpoint round writes;
``checkpoints`` writes them in batched, fenced transactions and restores them.
"""

from __future__ import annotations

from bulwark_server.breakers.config import normalize_config, seconds
from bulwark_server.breakers.machine import (
    Decision,
    allow,
    check_force,
    force,
    initial_status,
    next_due,
    on_outcomes,
    state_name,
    tick,
)
from bulwark_server.breakers.window import SlidingWindow

__all__ = [
    "Decision",
    "SlidingWindow",
    "allow",
    "check_force",
    "force",
    "initial_status",
    "next_due",
    "normalize_config",
    "on_outcomes",
    "seconds",
    "state_name",
    "tick",
]
