"""envoy.service.ratelimit.v3.RateLimitService: Envoy's rate-limit protocol on Bulwark's limits.

Envoy's ``ratelimit`` HTTP and network filters call ``ShouldRateLimit`` as they
would call envoyproxy/ratelimit. Guarantees:

* Every decision is a native Check decided by the rate-limit capability as
  ``bulwark.v1.RateLimitService/Check`` decides it (``decide``; each
  descriptor carries its own hits, and is checked as the native Check checks
  it; the native request is made only to forward it): the same
  limits, the same counters on the leader, the same forwarding from followers and
  the same local fallback (with its ``bulwark-ratelimit-mode: local`` trailing
  metadata). Envoy's protocol adds no state of its own.
* As envoyproxy/ratelimit: an empty domain or descriptor list is INVALID_ARGUMENT
  ("rate limit domain must not be empty", "rate limit descriptor list must not be
  empty"); ``hits_addend`` 0 means 1, and a descriptor's own ``hits_addend``
  (0 allowed: look without counting) replaces it for that descriptor; a
  descriptor no limit matches (an unknown domain included) is OK without
  ``current_limit``; an unlimited limit answers OK with ``limit_remaining``
  4294967295; a limit in shadow mode answers OK even when over (with
  ``limit_remaining`` 0) and never makes the request OVER_LIMIT; a limit of
  ``requests_per_unit`` 0 answers OVER_LIMIT (``limit_remaining`` 0) to every
  request it matches; the overall code is OVER_LIMIT iff any descriptor's code is.
* ``duration_until_reset`` is in whole seconds, rounded up (envoyproxy/ratelimit
  reports the seconds left in the window, 1 to the unit's length).
* A descriptor's ``limit`` override applies instead of any configured limit
  (as the descriptor's own limit of the native Check): a fixed window counted per
  (domain, entries, unit) as envoyproxy/ratelimit keys it, reported with an
  unnamed ``current_limit``. Its unit must be SECOND to DAY (INVALID_ARGUMENT
  otherwise); its counter is not checkpointed.
* With ``headers`` (the ``limit_response_headers_enabled`` setting, as
  envoyproxy/ratelimit's ``LIMIT_RESPONSE_HEADERS_ENABLED``),
  ``response_headers_to_add`` carries three headers of one descriptor: the last
  one OVER_LIMIT if any, else the first with the least ``limit_remaining`` among
  those with a ``current_limit``; none when no descriptor has one. Values: the
  limit's ``requests_per_unit``, its ``limit_remaining``, and the whole seconds
  to the end of the epoch-aligned unit (1 to the unit's length), as that service
  computes them.

Differences:

* a request of more than 100 descriptors is decided in native Checks of 100, and
  ``replaces`` holds within each (it holds across the whole of a smaller one,
  whatever each descriptor's ``hits_addend``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc.aio

from bulwark.v1 import ratelimit_pb2
from bulwark_server.api.ratelimit import MAX_HITS, decide, validate_own
from bulwark_server.api.routing import LeaderRouter
from bulwark_server.api.status import rpc
from bulwark_server.envoy_api.config.core.v3.base_pb2 import HeaderValue
from bulwark_server.envoy_api.extensions.common.ratelimit.v3 import ratelimit_pb2 as envoy_common
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from bulwark_server.envoy_api.type.v3 import ratelimit_unit_pb2 as envoy_units
from bulwark_server.errors import BulwarkError, InvalidArgument
from bulwark_server.ratelimits.config import (
    MAX_DESCRIPTOR_ENTRIES,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
)
from bulwark_server.ratelimits.config import UNIT_SECONDS as NATIVE_UNIT_SECONDS
from bulwark_server.ratelimits.descriptors import MAX_DESCRIPTORS, Entry
from bulwark_server.ratelimits.manager import RateLimitManager
from bulwark_server.validation import NAME_RE

SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
MAX_UINT32 = 2**32 - 1
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
_Unit = rls_pb2.RateLimitResponse.RateLimit
_Status = rls_pb2.RateLimitResponse.DescriptorStatus
UNITS: dict[int, int] = {
    ratelimit_pb2.RATE_UNIT_SECOND: _Unit.SECOND,
    ratelimit_pb2.RATE_UNIT_MINUTE: _Unit.MINUTE,
    ratelimit_pb2.RATE_UNIT_HOUR: _Unit.HOUR,
    ratelimit_pb2.RATE_UNIT_DAY: _Unit.DAY,
}
OVERRIDE_UNITS: dict[int, int] = {
    envoy_units.SECOND: ratelimit_pb2.RATE_UNIT_SECOND,
    envoy_units.MINUTE: ratelimit_pb2.RATE_UNIT_MINUTE,
    envoy_units.HOUR: ratelimit_pb2.RATE_UNIT_HOUR,
    envoy_units.DAY: ratelimit_pb2.RATE_UNIT_DAY,
}
# Seconds of each Envoy unit, from the native units' own table.
UNIT_SECONDS: dict[int, int] = {UNITS[native]: s for native, s in NATIVE_UNIT_SECONDS.items()}
_NANOS = 1_000_000_000


@dataclass(frozen=True)
class ResponseHeaders:
    """The names of the headers ShouldRateLimit adds to its responses when enabled."""

    limit: str = "RateLimit-Limit"
    remaining: str = "RateLimit-Remaining"
    reset: str = "RateLimit-Reset"


class EnvoyInvalid(InvalidArgument):
    """INVALID_ARGUMENT in envoyproxy/ratelimit's own words, which name no field first."""

    def __init__(self, message: str) -> None:
        BulwarkError.__init__(self, message)
        self.field = ""


class EnvoyRateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    """Translates ShouldRateLimit into native Checks and their results back."""

    def __init__(
        self,
        limits: RateLimitManager,
        router: LeaderRouter,
        *,
        headers: ResponseHeaders | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._router = router
        self._headers = headers
        self._clock = clock

    @rpc
    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        domain = request.domain
        if not domain:
            raise EnvoyInvalid("rate limit domain must not be empty")
        descriptors = request.descriptors
        if not descriptors:
            raise EnvoyInvalid("rate limit descriptor list must not be empty")
        response = rls_pb2.RateLimitResponse()
        # Filled in place (statuses made apart were copied into the response); one
        # loop, no comprehensions: most requests carry one descriptor.
        add = response.statuses.add
        statuses = []
        for _ in range(len(descriptors)):
            status = add()
            status.code = OK
            statuses.append(status)
        over = False
        # A domain that is not a valid Bulwark name cannot have limits: every
        # descriptor is unknown, which Envoy's protocol answers with OK.
        if NAME_RE.fullmatch(domain):
            default, indexes, entries, hits, overridden = _plan(request)
            for start in range(0, len(indexes), MAX_DESCRIPTORS):
                end = start + MAX_DESCRIPTORS
                batch = indexes[start:end]
                # Decided from Envoy's entries, read and checked once (by _plan and
                # _own, as the native Check would check them).
                decided = await decide(
                    self._router,
                    self._limits,
                    context,
                    domain,
                    entries[start:end],
                    hits[start:end],
                    _own([descriptors[i] for i in batch]) if overridden else None,
                    None,
                    functools.partial(_native_check, request, batch, hits[start:end], default),
                )
                for i, result in zip(batch, decided.results, strict=True):
                    over = _fill(statuses[i], result) or over
        response.overall_code = OVER_LIMIT if over else OK
        if self._headers is not None:
            response.response_headers_to_add.extend(
                _headers(self._headers, statuses, int(self._clock()))
            )
        return response


def _headers(names: ResponseHeaders, statuses: Sequence[_Status], now: int) -> list[HeaderValue]:
    """The limit, remaining and reset headers of the descriptor closest to its limit."""
    chosen: _Status | None = None
    least = MAX_UINT32
    for status in statuses:
        if status.HasField("current_limit") and status.limit_remaining < least:
            chosen, least = status, status.limit_remaining
        if status.code == OVER_LIMIT:
            chosen, least = status, 0
    if chosen is None:
        return []
    unit = UNIT_SECONDS.get(chosen.current_limit.unit, 1)
    return [
        HeaderValue(key=names.limit, value=str(chosen.current_limit.requests_per_unit)),
        HeaderValue(key=names.remaining, value=str(chosen.limit_remaining)),
        HeaderValue(key=names.reset, value=str(unit - now % unit)),
    ]


def _plan(
    request: rls_pb2.RateLimitRequest,
) -> tuple[int, list[int], list[tuple[Entry, ...]], list[int], bool]:
    """The request's hits; the index, entries (read once) and hits of each descriptor a
    limit could match; and whether any of those carries a ``limit`` override.

    Descriptors no Bulwark limit can match by their shape (no entries, more than
    16, an empty or over-long key) are left out: OK, no limit.
    """
    default = request.hits_addend or 1
    if default > MAX_HITS:
        raise EnvoyInvalid(f"hits_addend: must be at most {MAX_HITS}, got {default}")
    indexes: list[int] = []
    read: list[tuple[Entry, ...]] = []
    each: list[int] = []
    overridden = False
    for i, descriptor in enumerate(request.descriptors):
        entries = tuple([Entry(entry.key, entry.value) for entry in descriptor.entries])
        if not _matchable(entries):
            continue
        for j, entry in enumerate(entries):
            # A long value could still match an any-value limit: refuse it, as the
            # native API does, rather than let it pass uncounted.
            if len(entry.value) > MAX_VALUE_LENGTH:
                raise EnvoyInvalid(
                    f"descriptors[{i}].entries[{j}].value: longer than "
                    f"{MAX_VALUE_LENGTH} characters"
                )
        hits = default
        if descriptor.HasField("hits_addend"):
            hits = descriptor.hits_addend.value
            if hits > MAX_HITS:
                raise EnvoyInvalid(
                    f"descriptors[{i}].hits_addend: must be at most {MAX_HITS}, got {hits}"
                )
        if descriptor.HasField("limit"):
            overridden = True
        indexes.append(i)
        read.append(entries)
        each.append(hits)
    return default, indexes, read, each, overridden


def _matchable(entries: Sequence[Entry]) -> bool:
    """False when no stored limit can match: stored patterns have 1-16 entries, keys 1-128."""
    if not 1 <= len(entries) <= MAX_DESCRIPTOR_ENTRIES:
        return False
    for key, _ in entries:
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            return False
    return True


def _own(
    descriptors: Sequence[envoy_common.RateLimitDescriptor],
) -> list[ratelimit_pb2.Rate | None] | None:
    """The batch's overrides as native rates (None when it has none), checked as the
    native Check of the batch (``_native_check``) checks its descriptors' own limits."""
    own = [_override(d) if d.HasField("limit") else None for d in descriptors]
    if not any(rate is not None for rate in own):
        return None
    for j, rate in enumerate(own):
        if rate is not None:
            validate_own(rate, f"descriptors[{j}].limit")
    return own


def _native_check(
    request: rls_pb2.RateLimitRequest, batch: Sequence[int], hits: Sequence[int], default: int
) -> ratelimit_pb2.CheckRequest:
    """The native Check of ``batch`` (``hits`` each): what is forwarded to a leader of an
    earlier version."""
    return ratelimit_pb2.CheckRequest(
        domain=request.domain,
        descriptors=[
            _native(request.descriptors[i], charge) for i, charge in zip(batch, hits, strict=True)
        ],
        hits=default,
    )


def _native(
    descriptor: envoy_common.RateLimitDescriptor, hits: int
) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.DescriptorEntry(key=entry.key, value=entry.value)
            for entry in descriptor.entries
        ],
        hits=hits,
        limit=_override(descriptor) if descriptor.HasField("limit") else None,
    )


def _override(descriptor: envoy_common.RateLimitDescriptor) -> ratelimit_pb2.Rate:
    """The native rate of a descriptor's ``limit`` override (EnvoyInvalid for other units)."""
    unit = OVERRIDE_UNITS.get(descriptor.limit.unit)
    if unit is None:
        raise EnvoyInvalid(
            f"descriptor limit override unit {descriptor.limit.unit}: Bulwark supports "
            "SECOND, MINUTE, HOUR and DAY"
        )
    return ratelimit_pb2.Rate(requests_per_unit=descriptor.limit.requests_per_unit, unit=unit)


def _fill(status: _Status, result: ratelimit_pb2.DescriptorResult) -> bool:
    """Envoy's status (``code`` OK so far) for one native result (see the module
    docstring for the rules); whether it is OVER_LIMIT."""
    if not result.limit_name and not result.HasField("current_limit"):
        return False
    if result.unlimited:
        status.limit_remaining = MAX_UINT32
        return False
    # Shadow mode reports OK, as envoyproxy/ratelimit does, but keeps the counts.
    over = result.code == ratelimit_pb2.CHECK_CODE_OVER_LIMIT and not result.shadow
    if over:
        status.code = OVER_LIMIT
    current, limit = result.current_limit, status.current_limit
    limit.name = result.limit_name
    limit.requests_per_unit = min(current.requests_per_unit, MAX_UINT32)
    limit.unit = UNITS.get(current.unit, _Unit.UNKNOWN)
    status.limit_remaining = min(max(0, result.remaining), MAX_UINT32)
    reset = result.reset_after
    nanos = max(0, reset.seconds * _NANOS + reset.nanos)
    status.duration_until_reset.seconds = -(-nanos // _NANOS)
    return over
