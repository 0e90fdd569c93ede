"""Which changed windows a checkpoint round must write, and which may wait.

A checkpoint exists for one reader: the next leader, which goes on from it after
a failover. A window whose change since its last written checkpoint cannot turn
that leader's decisions against the fleet need not cost an etcd write every
interval. Pure: the caller passes ``now`` (Unix seconds).

The rule (``must_write``): a changed window is written in this round when any of

1. it has no written checkpoint this leader knows of (``saved`` is None);
2. it was reset (re-entered CLOSED) or gained a failure or a slow call since
   (``adverse``): that is what trips breakers, and a stale reset would bring back
   the failures of before the trip;
3. its written checkpoint is ``max_deferral`` seconds old or older;
4. its written checkpoint is near a threshold: its failures, or its slow calls,
   are at least ``NEAR`` (half) of the threshold rate of its calls
   (``100 * failures >= NEAR * failure_rate_threshold * calls``, likewise for slow
   calls), counted on raw counts, whether or not the minimum number of calls is
   reached.

Otherwise (successes only, since a checkpoint younger than ``max_deferral`` whose
rates are below half of both thresholds) the window waits for a later round. What
a failover may lose of it: at most ``max_deferral`` seconds of successes. The
restored window then holds fewer successes than the lost one, its rates below
half the thresholds, so it does not trip on its own; later failures weigh more in
it than they would have, by no more than those seconds of successes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulwark.v1 import breaker_pb2

NEAR = 0.5
"""A written checkpoint at this fraction of a threshold rate or above is 'near'."""


@dataclass(frozen=True, slots=True)
class Saved:
    """What a window's last written checkpoint holds, and when it was written."""

    calls: int
    failures: int
    slow: int
    at: float


def near_threshold(saved: Saved, config: breaker_pb2.BreakerConfig) -> bool:
    """True when the saved counts are at ``NEAR`` of a threshold rate or above."""
    if saved.calls <= 0:
        return False
    failure_limit = NEAR * config.failure_rate_threshold * saved.calls
    slow_limit = NEAR * config.slow_call_rate_threshold * saved.calls
    return 100 * saved.failures >= failure_limit or 100 * saved.slow >= slow_limit


def must_write(
    saved: Saved | None,
    adverse: bool,
    config: breaker_pb2.BreakerConfig,
    now: float,
    max_deferral: float,
) -> bool:
    """Whether a changed window is written this round (see the module's rule)."""
    if saved is None or adverse:
        return True
    if now - saved.at >= max_deferral:
        return True
    return near_threshold(saved, config)
