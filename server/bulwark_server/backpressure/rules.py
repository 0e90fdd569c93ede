"""What a backpressure policy must be. Pure.

Bounds follow the client library's cores (``bulwark._adaptive``): zero means the
default there (the client's Gradient2 settings for the concurrency limit, the SRE
book's for the throttle), so a policy names only what it changes.
"""

from __future__ import annotations

import math

from bulwark.v1 import backpressure_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.validation import duration_seconds, validate_name

MAX_LIMIT = 100_000


def check_policy(policy: backpressure_pb2.BackpressurePolicy) -> None:
    """InvalidArgument naming the first field that is wrong."""
    validate_name(policy.name, "policy.name")
    c = policy.concurrency
    where = "policy.concurrency"
    for field in ("initial_limit", "min_limit", "max_limit", "long_window"):
        if not 0 <= getattr(c, field) <= MAX_LIMIT:
            raise InvalidArgument(f"{where}.{field}", f"must be 0-{MAX_LIMIT} (0: the default)")
    if c.max_limit and c.min_limit > c.max_limit:
        raise InvalidArgument(f"{where}.max_limit", "must be at least min_limit")
    if c.initial_limit and (
        (c.min_limit and c.initial_limit < c.min_limit)
        or (c.max_limit and c.initial_limit > c.max_limit)
    ):
        raise InvalidArgument(f"{where}.initial_limit", "must be within min_limit and max_limit")
    if not (math.isfinite(c.smoothing) and 0 <= c.smoothing <= 1):
        raise InvalidArgument(f"{where}.smoothing", "must be 0-1 (0: the default)")
    if not (math.isfinite(c.rtt_tolerance) and (c.rtt_tolerance == 0 or c.rtt_tolerance >= 1)):
        raise InvalidArgument(f"{where}.rtt_tolerance", "must be at least 1 (0: the default)")
    if not (math.isfinite(c.queue_size) and 0 <= c.queue_size <= MAX_LIMIT):
        raise InvalidArgument(f"{where}.queue_size", f"must be 0-{MAX_LIMIT} (0: the default)")
    t = policy.throttle
    if not (math.isfinite(t.k) and (t.k == 0 or 1 <= t.k <= 100)):
        raise InvalidArgument("policy.throttle.k", "must be 1-100 (0: the default)")
    if t.HasField("window"):
        duration_seconds(t.window, "policy.throttle.window", minimum=1, maximum=3600)
