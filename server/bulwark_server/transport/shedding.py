"""Overload shedding: a bound on the unary RPCs a replica works on at once.

* Calls beyond the bound are refused at once with ``RESOURCE_EXHAUSTED`` and a
  ``retry-after-ms`` trailing hint, before any work, so a replica under a
  flood keeps answering the calls it admitted instead of falling over.
* Shedding is by class (``security.roles``): ``SHED_FIRST`` calls
  (configuration, listing, operations) are admitted only while fewer than
  ``first_share`` of the bound are in flight; decisions (``SHED_LAST``) up to
  the bound itself. So configuration and listing are refused first and the
  data plane's decisions last.
* Then by the caller's priority (``security.priority``: the ``bulwark-priority``
  metadata, capped by the identity's maximum): a ``sheddable`` call is admitted
  only below ``PRIORITY_SHARE`` (half) of its class's bound, a ``default`` one
  below 90 % of it, a ``critical`` one up to the bound.
* Then by caller, for fairness: once half the bound is in flight, a caller that
  already holds its fair share (the bound divided by the callers with calls in
  flight, itself included) is refused, so one caller's flood leaves room for the
  others. A caller is its identity; with authentication off, its address.
* Streams (watches, long operations) are long-lived: they are bounded apart,
  at ``STREAMS_PER_SLOT`` times the bound, so a caller opening watch after
  watch cannot exhaust the replica either. Health checking and reflection are
  never shed.
* It runs after authentication, so callers Bulwark refuses anyway do not
  take the slots of those it serves.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from bulwark_server.security.identity import Identity, current_caller
from bulwark_server.security.priority import METADATA_KEY, Priority, claimed
from bulwark_server.security.roles import Shed, is_open, rule_for
from bulwark_server.transport.handlers import rewrap

# Retry hints: decisions come back soon; configuration and listing can wait longer.
RETRY_LAST_MS = 50
RETRY_FIRST_MS = 500
STREAMS_PER_SLOT = 10
# The share of its class's bound a call of each priority may use.
PRIORITY_SHARE = {Priority.SHEDDABLE: 0.5, Priority.DEFAULT: 0.9, Priority.CRITICAL: 1.0}
# Fairness between callers applies from this share of the bound in flight.
FAIR_FROM = 0.5


class LoadShedder(grpc.aio.ServerInterceptor):
    """Admit unary calls while in flight < bound (or < first_share of it for SHED_FIRST)."""

    def __init__(self, max_in_flight: int, first_share: float = 0.5) -> None:
        self.max_in_flight = max_in_flight
        self.first_limit = max(1, int(max_in_flight * first_share))
        self.in_flight = 0
        self.fair_from = max(1, int(max_in_flight * FAIR_FROM))
        # Calls in flight by caller (``_who``): only callers with calls in flight.
        self.by_caller: collections.Counter[str] = collections.Counter()
        self.max_streams = max_in_flight * STREAMS_PER_SLOT
        self.streams = 0
        # Calls refused, by full method name (for the metrics endpoint).
        self.shed: collections.Counter[str] = collections.Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return self.wrap(details.method, await continuation(details))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """``handler`` bounded (None, health and reflection stay as they are): what
        ``intercept_service`` returns, the same for every call of ``method``."""
        if handler is None or is_open(method):
            return handler
        rule = rule_for(method)
        last = rule is not None and rule.shed is Shed.LAST
        return rewrap(
            handler,
            lambda behavior: self._unary(method, last, behavior),
            lambda behavior: self._streaming(method, behavior),
        )

    def _unary(
        self, method: str, last: bool, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        class_limit = self.max_in_flight if last else self.first_limit
        limits = {p: max(1, int(class_limit * share)) for p, share in PRIORITY_SHARE.items()}
        retry_ms = RETRY_LAST_MS if last else RETRY_FIRST_MS
        kind = "decisions" if last else "configuration and listing calls"

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            caller = current_caller()
            priority = claimed(_metadata(context, METADATA_KEY), _most(caller))
            who = _who(caller, context)
            limit = limits[priority]
            refusal = ""
            if self.in_flight >= limit:
                refusal = (
                    f"{self.in_flight} calls in progress; {priority.label} {kind} are "
                    f"refused beyond {limit}"
                )
            elif self.in_flight >= self.fair_from:
                share = max(1, self.max_in_flight // len(self.by_caller.keys() | {who}))
                if self.by_caller[who] >= share:
                    refusal = f"this caller holds {self.by_caller[who]} calls, its fair share"
            if refusal:
                self.shed[method] += 1
                context.set_trailing_metadata((("retry-after-ms", str(retry_ms)),))
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"overloaded: {refusal}; retry after {retry_ms} ms",
                )
            self.in_flight += 1
            self.by_caller[who] += 1
            try:
                return await behavior(request, context)
            finally:
                self.in_flight -= 1
                left = self.by_caller[who] - 1
                if left:
                    self.by_caller[who] = left
                else:
                    del self.by_caller[who]

        return wrapper

    def _streaming(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if self.streams >= self.max_streams:
                self.shed[method] += 1
                context.set_trailing_metadata((("retry-after-ms", str(RETRY_FIRST_MS)),))
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"overloaded: {self.streams} streams open; retry after {RETRY_FIRST_MS} ms",
                )
            self.streams += 1
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                self.streams -= 1

        return wrapper


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def _most(caller: Identity | None) -> Priority:
    return caller.max_priority if caller is not None else Priority.DEFAULT


def _who(caller: Identity | None, context: grpc.aio.ServicerContext) -> str:
    """The caller fairness counts: its identity, or (authentication off) its address."""
    if caller is not None and caller.method != "none":
        return caller.name
    peer = context.peer() or ""
    return peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer
