"""The I/O-free core shared by the synchronous ``Client`` and the ``AsyncClient``.

Everything a client decides lives here, in the httpx/httpcore spirit: the
sync and async clients only move bytes (gRPC calls, watch streams, timers)
and feed what they receive into these objects, so both behave the same and
all of it is testable without a server. This module is the core's one import
point; the parts live in private modules by concern:

* ``_states``: breaker states, ``Decision``, clock conversions;
* ``_caches``: the watch-fed caches (breakers, features, primaries, instances);
* ``_local_breaker``: the breaker decided in-process while Bulwark is away;
* ``_quota``: leased and fallback rate limits;
* ``_outcomes``: the outcome buffer behind the batched reports;
* ``_endpoints``: endpoint backoff, retry safety, one call's attempts;
* ``_policy``: ``ClientPolicy``, which combines them into every decision a
  client makes and names the remote call when one is needed.

Guarantees:

* No I/O: nothing here calls gRPC, starts threads, touches asyncio or reads a
  clock. Every time-dependent method takes ``now`` (seconds from
  ``time.monotonic()``); wall-clock times from the server are converted with an
  explicit ``now_wall`` (``time.time()``) taken by the caller at the same moment.
  The one side effect is logging, through the ``bulwark`` logger, of what the
  application should hear about (a dropped report, a refused watch).
* Not thread-safe: each object is meant to be owned by one thread or one event
  loop; the clients serialize access themselves.
* Bounded memory: the outcome buffer holds one entry per breaker however many
  calls are recorded, counts saturate instead of growing without limit, and a
  local breaker holds at most its window of outcomes.
* Watch caches follow ``WatchEventType``'s contract: the SNAPSHOT events up to
  the next SYNCED replace the whole view (objects absent from a new snapshot
  are gone); ``revision`` only moves once a snapshot is complete, so resuming
  from it never skips objects of a half-received snapshot.
* Fail safe, not fail silent: when the cache cannot decide a breaker it says
  ``"remote-needed"`` instead of guessing, and every fallback (local breaker,
  fallback rate) is explicit.

None of these modules imports ``bulwark_server``.
"""

from __future__ import annotations

from bulwark._caches import (
    BreakerCache,
    BreakerView,
    Feature,
    FeatureCache,
    InstanceCache,
    PrimaryCache,
)
from bulwark._endpoints import AWAY, CallPlan, Endpoints, retryable
from bulwark._local_breaker import LocalBreaker
from bulwark._outcomes import COUNT_CAP, MAX_REPORT_ENTRIES, OutcomeBuffer
from bulwark._policy import ClientPolicy, Remote
from bulwark._quota import MAX_QUOTA_BUCKETS, QuotaBucket, quota_for
from bulwark._states import Decision, monotonic_from_wall, per_second
from bulwark._watching import Watch, WatchRetry, report_pause, serving

__all__ = [
    "AWAY",
    "COUNT_CAP",
    "MAX_QUOTA_BUCKETS",
    "MAX_REPORT_ENTRIES",
    "BreakerCache",
    "BreakerView",
    "CallPlan",
    "ClientPolicy",
    "Decision",
    "Endpoints",
    "Feature",
    "FeatureCache",
    "InstanceCache",
    "LocalBreaker",
    "OutcomeBuffer",
    "PrimaryCache",
    "QuotaBucket",
    "Remote",
    "Watch",
    "WatchRetry",
    "monotonic_from_wall",
    "per_second",
    "quota_for",
    "report_pause",
    "retryable",
    "serving",
]
