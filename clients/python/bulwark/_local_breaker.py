"""The local breaker: one dependency decided in-process while Bulwark is unreachable.

I/O-free and not thread-safe; holds at most its window of outcomes.
"""

from __future__ import annotations

from collections import deque

from bulwark._caches import BreakerView
from bulwark._states import (
    CLOSED,
    DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_MINIMUM_NUMBER_OF_CALLS,
    DEFAULT_SLIDING_WINDOW_SIZE,
    DEFAULT_WAIT_DURATION_IN_OPEN_STATE,
    HALF_OPEN,
    OPEN,
    Decision,
)

__all__ = ["LocalBreaker"]


class LocalBreaker:
    """One breaker decided in-process while Bulwark is unreachable.

    A count-based window of the last ``sliding_window_size`` outcomes; trips
    OPEN when it holds at least ``minimum_number_of_calls`` (capped at the
    window size, as resilience4j does) and the failure rate reaches the
    threshold; after the wait lets exactly one trial call through, whose
    success closes it and whose failure re-opens it.
    """

    def __init__(
        self,
        failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD,
        minimum_number_of_calls: int = DEFAULT_MINIMUM_NUMBER_OF_CALLS,
        sliding_window_size: int = DEFAULT_SLIDING_WINDOW_SIZE,
        wait_duration_in_open_state: float = DEFAULT_WAIT_DURATION_IN_OPEN_STATE,
    ) -> None:
        if sliding_window_size < 1:
            raise ValueError("sliding_window_size must be at least 1")
        self.failure_rate_threshold = failure_rate_threshold
        self.minimum_number_of_calls = max(1, min(minimum_number_of_calls, sliding_window_size))
        self.sliding_window_size = sliding_window_size
        self.wait_duration_in_open_state = wait_duration_in_open_state
        self._window: deque[bool] = deque(maxlen=sliding_window_size)
        self._failures = 0
        self.state = CLOSED
        self._open_until = 0.0
        self._trial_since: float | None = None

    @classmethod
    def from_view(cls, view: BreakerView) -> LocalBreaker:
        return cls(
            failure_rate_threshold=view.failure_rate_threshold,
            minimum_number_of_calls=view.minimum_number_of_calls,
            sliding_window_size=view.sliding_window_size,
            wait_duration_in_open_state=view.wait_duration_in_open_state,
        )

    @property
    def calls(self) -> int:
        return len(self._window)

    @property
    def failure_rate(self) -> float:
        """Failure rate in percent of the window, or -1 below the minimum of calls."""
        calls = len(self._window)
        if calls == 0 or calls < self.minimum_number_of_calls:
            return -1.0
        return self._failures * 100.0 / calls

    def retry_after(self, now: float) -> float | None:
        """Seconds until a trial call may go ahead while OPEN; None otherwise."""
        if self.state != OPEN:
            return None
        return max(0.0, self._open_until - now)

    def allowed(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now < self._open_until:
                return False
            self.state = HALF_OPEN
            self._trial_since = now
            return True
        # HALF_OPEN: one trial is out. If its outcome never comes (the caller lost
        # it), another trial is let through after a further wait instead of
        # refusing forever.
        if self._trial_since is not None and now - self._trial_since >= (
            self.wait_duration_in_open_state
        ):
            self._trial_since = now
            return True
        return False

    def record(self, success: bool, now: float) -> None:
        if self.state == OPEN:
            return  # Late outcomes of calls let through before tripping change nothing.
        if self.state == HALF_OPEN:
            if success:
                self._close()
            else:
                self._open(now)
            return
        if len(self._window) == self._window.maxlen and not self._window[0]:
            self._failures -= 1  # The oldest outcome, a failure, falls out of the window.
        self._window.append(success)
        if not success:
            self._failures += 1
        rate = self.failure_rate
        if rate >= 0 and rate >= self.failure_rate_threshold:
            self._open(now)

    def decide(self, now: float) -> Decision:
        """``allowed`` as a Decision with source ``"local"``."""
        allowed = self.allowed(now)
        return Decision(allowed, self.state, "local", None if allowed else self.retry_after(now))

    def reset(self) -> None:
        """Forget everything (Bulwark is reachable again and decides)."""
        self._close()

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._open_until = now + self.wait_duration_in_open_state
        self._trial_since = None
        self._window.clear()
        self._failures = 0

    def _close(self) -> None:
        self.state = CLOSED
        self._trial_since = None
        self._window.clear()
        self._failures = 0
