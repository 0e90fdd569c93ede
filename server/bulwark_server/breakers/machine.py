"""The circuit-breaker state machine over BreakerStatus messages, with resilience4j's rules.

Pure functions: the shared status lives in etcd and is changed by whichever
replica decides, so every function takes the current status and ``now`` (Unix
seconds, wall clock, because several machines compare the same timestamps) and
returns a new status, or None when nothing changes. Input messages are never
mutated, so a caller can compare-and-swap the old value it read.

``config`` must come from ``normalize_config`` (every field set).

The sliding window is the caller's: it feeds ``on_outcomes`` the window's
stats after adding the batch, and should reset the window whenever a status
returned here enters CLOSED (resilience4j starts a fresh window there).
"""

from __future__ import annotations

from dataclasses import dataclass

from bulwark.v1 import breaker_pb2
from bulwark_server.breakers.config import seconds
from bulwark_server.errors import InvalidArgument
from bulwark_server.timestamps import at, unix

CLOSED = breaker_pb2.BREAKER_STATE_CLOSED
OPEN = breaker_pb2.BREAKER_STATE_OPEN
HALF_OPEN = breaker_pb2.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = breaker_pb2.BREAKER_STATE_FORCED_OPEN
DISABLED = breaker_pb2.BREAKER_STATE_DISABLED
METRICS_ONLY = breaker_pb2.BREAKER_STATE_METRICS_ONLY

FORCEABLE_STATES = (FORCED_OPEN, DISABLED, METRICS_ONLY, CLOSED)
MAX_FORCE_REASON = 1024
# How long a caller refused in HALF_OPEN should wait for the trial calls to report.
HALF_OPEN_RETRY_AFTER = 1.0
NOT_EVALUATED = -1.0


@dataclass(frozen=True)
class Decision:
    """The answer to "may I call?"; ``new_status`` is set when the answer changed the status."""

    allowed: bool
    trial: bool
    retry_after: float
    new_status: breaker_pb2.BreakerStatus | None


def state_name(state: int) -> str:
    """The short name of a BreakerState ("CLOSED", "HALF_OPEN", ...), for reasons and logs."""
    try:
        return breaker_pb2.BreakerState.Name(state).removeprefix("BREAKER_STATE_")
    except ValueError:
        return f"UNKNOWN({state})"


def initial_status(now: float) -> breaker_pb2.BreakerStatus:
    """The status of a new breaker: CLOSED since ``now``, with no transition recorded."""
    status = breaker_pb2.BreakerStatus(state=CLOSED, transitions=0)
    status.state_since.CopyFrom(at(now))
    return status


def on_outcomes(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    counts: breaker_pb2.OutcomeCounts,
    window_stats: breaker_pb2.WindowStats,
    now: float,
) -> breaker_pb2.BreakerStatus | None:
    """The status after a batch of outcomes, or None when it does not change.

    CLOSED trips on ``window_stats`` (which already includes ``counts``); HALF_OPEN
    accumulates ``counts`` as trial outcomes and decides once enough have arrived.
    Every other state ignores outcomes here (METRICS_ONLY counts only in the window).
    """
    if status.state == CLOSED:
        return _closed_outcomes(config, status, window_stats, now)
    if status.state == HALF_OPEN:
        return _half_open_outcomes(config, status, counts, now)
    return None


def allow(
    config: breaker_pb2.BreakerConfig, status: breaker_pb2.BreakerStatus, now: float
) -> Decision:
    """Whether one call may go ahead; OPEN past its wait and HALF_OPEN hand out trial permits."""
    state = status.state
    if state == FORCED_OPEN:
        # No timer ends a forced open; the wait is only a polite polling interval.
        return Decision(False, False, seconds(config.wait_duration_in_open_state), None)
    if state == OPEN:
        open_until = _open_until(config, status)
        if now < open_until:
            return Decision(False, False, open_until - now, None)
        half_open = _to_half_open(config, status, now, automatic=False)
        half_open.half_open_permits_granted = 1
        return Decision(True, True, 0.0, half_open)
    if state == HALF_OPEN:
        if status.half_open_permits_granted < config.permitted_number_of_calls_in_half_open_state:
            granted = _copy(status)
            granted.half_open_permits_granted += 1
            return Decision(True, True, 0.0, granted)
        retry_after = HALF_OPEN_RETRY_AFTER
        max_wait = seconds(config.max_wait_duration_in_half_open_state)
        if max_wait > 0:
            left = unix(status.state_since) + max_wait - now
            retry_after = max(0.0, min(retry_after, left))
        return Decision(False, False, retry_after, None)
    # CLOSED, DISABLED, METRICS_ONLY; an unknown state fails open rather than cut traffic.
    return Decision(True, False, 0.0, None)


def tick(
    config: breaker_pb2.BreakerConfig, status: breaker_pb2.BreakerStatus, now: float
) -> breaker_pb2.BreakerStatus | None:
    """Timer-driven transitions (run by the leader): OPEN→HALF_OPEN when automatic, and
    HALF_OPEN→OPEN when trials outlast the max wait. None when nothing is due."""
    if status.state == OPEN:
        if config.automatic_transition_from_open_to_half_open_enabled and now >= _open_until(
            config, status
        ):
            return _to_half_open(config, status, now, automatic=True)
        return None
    if status.state == HALF_OPEN:
        max_wait = seconds(config.max_wait_duration_in_half_open_state)
        if max_wait > 0 and now >= unix(status.state_since) + max_wait:
            outcomes = status.half_open_outcomes
            reported = outcomes.successes + outcomes.failures
            permitted = config.permitted_number_of_calls_in_half_open_state
            reason = (
                f"trial calls did not complete within {max_wait:g}s in HALF_OPEN "
                f"({reported} of {permitted} reported)"
            )
            return _transition(config, status, OPEN, reason, now, calls=reported)
    return None


def next_due(config: breaker_pb2.BreakerConfig, status: breaker_pb2.BreakerStatus) -> float | None:
    """When ``tick`` would next change this status (Unix seconds), or None if never.

    ``tick(config, status, now)`` is None for every ``now`` before the time returned
    and not None from it on; with None, ``tick`` never changes the status. So the
    leader only needs to tick a breaker once its due time has passed, and again
    whenever its record changes.
    """
    if status.state == OPEN:
        if config.automatic_transition_from_open_to_half_open_enabled:
            return _open_until(config, status)
        return None
    if status.state == HALF_OPEN:
        max_wait = seconds(config.max_wait_duration_in_half_open_state)
        if max_wait > 0:
            return unix(status.state_since) + max_wait
    return None


def check_force(state: int, reason: str) -> None:
    """ForceState's rules: a forceable state, and a reason of at most 1024 characters.

    Pure, so it runs before the breaker is read or written: a refused request
    changes nothing, whether or not the breaker exists. Raises InvalidArgument
    naming the field.
    """
    if state not in FORCEABLE_STATES:
        raise InvalidArgument(
            "state", "must be FORCED_OPEN, DISABLED, METRICS_ONLY or CLOSED (to reset)"
        )
    if len(reason) > MAX_FORCE_REASON:
        raise InvalidArgument("reason", f"longer than {MAX_FORCE_REASON} characters")


def force(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    state: int,
    actor: str,
    reason: str,
    now: float,
) -> breaker_pb2.BreakerStatus:
    """An operator's override: FORCED_OPEN, DISABLED, METRICS_ONLY, or CLOSED to reset.

    Always records a transition, even to the current state, so the audit trail
    shows who acted and why. InvalidArgument when ``check_force`` refuses.
    """
    check_force(state, reason)
    reason = reason or f"forced by {actor or 'an operator'}"
    return _transition(config, status, state, reason, now, actor=actor)


def _closed_outcomes(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    stats: breaker_pb2.WindowStats,
    now: float,
) -> breaker_pb2.BreakerStatus | None:
    if stats.failure_rate < 0:
        return None  # Below the minimum number of calls: resilience4j does not evaluate.
    reasons = _exceeded(config, stats.failure_rate, stats.slow_call_rate)
    if not reasons:
        return None
    reason = f"{' and '.join(reasons)} over {stats.calls} calls"
    return _transition(
        config,
        status,
        OPEN,
        reason,
        now,
        failure_rate=stats.failure_rate,
        slow_call_rate=stats.slow_call_rate,
        calls=stats.calls,
    )


def _half_open_outcomes(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    counts: breaker_pb2.OutcomeCounts,
    now: float,
) -> breaker_pb2.BreakerStatus | None:
    if counts.successes == 0 and counts.failures == 0 and counts.slow_calls == 0:
        return None
    updated = _copy(status)
    outcomes = updated.half_open_outcomes
    outcomes.successes += counts.successes
    outcomes.failures += counts.failures
    outcomes.slow_calls += counts.slow_calls
    trials = outcomes.successes + outcomes.failures
    if trials < config.permitted_number_of_calls_in_half_open_state:
        return updated
    failure_rate = outcomes.failures * 100.0 / trials
    slow_call_rate = outcomes.slow_calls * 100.0 / trials
    exceeded = _exceeded(config, failure_rate, slow_call_rate)
    if exceeded:
        to_state = OPEN
        reason = f"trial calls: {' and '.join(exceeded)} over {trials} calls"
    else:
        to_state = CLOSED
        reason = (
            f"trial calls: failure rate {failure_rate:.1f}% < "
            f"{config.failure_rate_threshold:.1f}% and slow-call rate {slow_call_rate:.1f}% < "
            f"{config.slow_call_rate_threshold:.1f}% over {trials} calls"
        )
    return _transition(
        config,
        status,
        to_state,
        reason,
        now,
        failure_rate=failure_rate,
        slow_call_rate=slow_call_rate,
        calls=trials,
    )


def _exceeded(
    config: breaker_pb2.BreakerConfig, failure_rate: float, slow_call_rate: float
) -> list[str]:
    """Phrases for each threshold reached; empty when none is."""
    reasons = []
    if failure_rate >= config.failure_rate_threshold:
        reasons.append(f"failure rate {failure_rate:.1f}% >= {config.failure_rate_threshold:.1f}%")
    if slow_call_rate >= config.slow_call_rate_threshold:
        reasons.append(
            f"slow-call rate {slow_call_rate:.1f}% >= {config.slow_call_rate_threshold:.1f}%"
        )
    return reasons


def _to_half_open(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    now: float,
    *,
    automatic: bool,
) -> breaker_pb2.BreakerStatus:
    wait = seconds(config.wait_duration_in_open_state)
    how = "automatic transition" if automatic else "first call after it"
    reason = f"wait of {wait:g}s in OPEN has passed ({how})"
    return _transition(config, status, HALF_OPEN, reason, now)


def _transition(
    config: breaker_pb2.BreakerConfig,
    status: breaker_pb2.BreakerStatus,
    to_state: int,
    reason: str,
    now: float,
    *,
    failure_rate: float = NOT_EVALUATED,
    slow_call_rate: float = NOT_EVALUATED,
    calls: int = 0,
    actor: str = "",
) -> breaker_pb2.BreakerStatus:
    """A copy of ``status`` moved to ``to_state``, with the bookkeeping every transition needs."""
    out = _copy(status)
    out.state = to_state
    out.state_since.CopyFrom(at(now))
    out.transitions += 1
    # Permits and trial outcomes belong to one HALF_OPEN episode only.
    out.half_open_permits_granted = 0
    out.ClearField("half_open_outcomes")
    if to_state == OPEN:
        out.open_until.CopyFrom(at(now + seconds(config.wait_duration_in_open_state)))
    else:
        out.ClearField("open_until")
    out.last_transition.CopyFrom(
        breaker_pb2.Transition(
            from_state=status.state,
            to_state=to_state,
            reason=reason,
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            calls=calls,
            actor=actor,
            at=at(now),
        )
    )
    return out


def _open_until(config: breaker_pb2.BreakerConfig, status: breaker_pb2.BreakerStatus) -> float:
    # A status written without open_until still leaves OPEN after the configured wait.
    if status.HasField("open_until"):
        return unix(status.open_until)
    return unix(status.state_since) + seconds(config.wait_duration_in_open_state)


def _copy(status: breaker_pb2.BreakerStatus) -> breaker_pb2.BreakerStatus:
    out = breaker_pb2.BreakerStatus()
    out.CopyFrom(status)
    return out
