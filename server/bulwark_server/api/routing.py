"""Where a leader-only call runs: the one place that asks "do I lead?".

A servicer hands its request to ``LeaderRouter.run``: the leader decides it in
process; a follower forwards it to the leader once (a call that was itself
forwarded is never forwarded again, so a moving leadership cannot bounce it
between replicas: the caller gets UNAVAILABLE and retries). Calls on the
request path that must answer even without a leader use ``run_or_fallback``
with the capability's own fallback policy.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc.aio

from bulwark_server.api.forwarding import LeaderForwarder, StubMethod, was_forwarded
from bulwark_server.cluster.election import Election
from bulwark_server.errors import NotLeader, StoreUnavailable

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Fallback(Protocol[R_co]):
    """A capability's rule for deciding alone when the leader does not answer."""

    @property
    def timeout_s(self) -> float:
        """How long the leader's answer is worth waiting for."""
        ...

    def decide(self) -> R_co:
        """The decision this replica makes on its own."""
        ...


class LeaderRouter:
    """Runs leader-only work here when this replica leads, else on the leader."""

    def __init__(self, election: Election, forwarder: LeaderForwarder) -> None:
        self._election = election
        self._forwarder = forwarder

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        request: Any,
        method: StubMethod[R],
        on_leader: Callable[[], R | Awaitable[R]],
    ) -> R:
        """``on_leader()`` when this replica leads; else the leader's answer to ``request``
        sent with ``method`` (a stub method of the leader's channel).

        NotLeader (UNAVAILABLE) when this call was forwarded here but this replica
        no longer leads, or when no leader answers.
        """
        if self._election.is_leader:
            return await _result(on_leader())
        self._refuse_second_hop(context)
        return await self._forwarder.call(method, request)

    async def run_or_fallback(
        self,
        context: grpc.aio.ServicerContext,
        request: Any,
        method: StubMethod[R],
        on_leader: Callable[[], R | Awaitable[R]],
        fallback: Callable[[], Fallback[R]],
    ) -> tuple[R, bool]:
        """``run``, except that a follower whose leader does not answer within the
        fallback's ``timeout_s`` decides with its ``decide()``. ``fallback`` makes the
        capability's rule for this request; only a follower asks for it.

        Returns the answer and whether it came from the fallback. A call forwarded
        here by another replica never falls back: that replica has its own fallback.
        """
        if self._election.is_leader:
            return await _result(on_leader()), False
        self._refuse_second_hop(context)
        rule = fallback()
        try:
            return await self._forwarder.call(method, request, rule.timeout_s), False
        except (NotLeader, StoreUnavailable) as exc:
            log.debug("the leader did not answer; deciding here: %s", exc)
        return rule.decide(), True

    @staticmethod
    def _refuse_second_hop(context: grpc.aio.ServicerContext) -> None:
        if was_forwarded(context):
            raise NotLeader("this replica no longer leads; retry")


async def _result(value: R | Awaitable[R]) -> R:
    if inspect.isawaitable(value):
        return await value
    return value
