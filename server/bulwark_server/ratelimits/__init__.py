"""Global rate limits as pure logic (no I/O): configuration, descriptors and counters.

* ``config``: ``normalize_limit`` validates a Limit and fills its defaults;
  ``effective_rate`` applies adaptive (load-based) scaling; ``blocks_all`` tells a
  limit that blocks every request, ``stored_limit``/``presented_limit`` turn a
  limit into its stored form (readable by earlier versions) and back.
* ``descriptors``: request validation, pattern matching, which limit applies
  (``best_match``) and which counter a request charges (``counter_key``).
* ``counters``: ``TokenBucket`` and ``FixedWindow`` (envoyproxy/ratelimit's
  epoch-aligned window), both driven by an injected clock.
* ``tables``: a limit's counters held together, one entry per descriptor value
  (a ``WindowTable`` decides as one ``FixedWindow`` per value would), and their
  checkpoints of bounded size; ``checkpoints`` writes and reads them.
* ``index``: ``LimitIndex``, the limits of each domain in a trie over their
  patterns, so finding the limit that applies costs the same at 100 limits and at
  100,000 (``best_match`` stays the reference it is tested against).
"""

from bulwark_server.ratelimits.config import (
    UNIT_SECONDS,
    effective_per_unit,
    effective_rate,
    normalize_limit,
)
from bulwark_server.ratelimits.counters import FixedWindow, Outcome, TokenBucket
from bulwark_server.ratelimits.descriptors import (
    best_match,
    counter_key,
    matches,
    specificity,
    validate_descriptor,
    validate_descriptors,
)

__all__ = [
    "UNIT_SECONDS",
    "FixedWindow",
    "Outcome",
    "TokenBucket",
    "best_match",
    "counter_key",
    "effective_per_unit",
    "effective_rate",
    "matches",
    "normalize_limit",
    "specificity",
    "validate_descriptor",
    "validate_descriptors",
]
