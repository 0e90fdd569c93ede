"""How a follower answers a Check when the leader, which keeps the counters, is away."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bulwark.v1 import ratelimit_pb2

# A decision on the request path must not wait long for a leader that does not
# answer: past this, the replica decides on its own share of each limit.
LEADER_TIMEOUT_S = 0.25


@dataclass(frozen=True)
class LocalCheck:
    """Decide on this replica's share (``local_fallback`` set in the answer) once the
    leader has not answered within ``timeout_s``."""

    decide: Callable[[], ratelimit_pb2.CheckResponse]
    timeout_s: float = LEADER_TIMEOUT_S
