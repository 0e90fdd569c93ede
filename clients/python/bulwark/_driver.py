"""What ``Client`` and ``AsyncClient`` set up alike before they differ in how they do I/O."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from bulwark._caches import BackpressurePolicyCache
from bulwark._faults import Fault, FaultInjector
from bulwark._policy import ClientPolicy
from bulwark._settings import ClientOptions, channel_credentials


class Driver:
    """The options, the one ``ClientPolicy`` and its parts under the names callers know.

    Subclasses add only their I/O: channels, threads or tasks, and the loops that
    feed the policy what the network answers.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = options or ClientOptions(**kwargs)
        addresses = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        client_id = self.options.client_id or f"client-{uuid.uuid4().hex[:12]}"
        self._policy = policy = ClientPolicy(addresses, self.options, client_id)
        self._client_id = client_id
        # The policy's parts, under the names callers and tests know.
        self._endpoints = policy.endpoints
        self.breakers = policy.breakers
        self.features = policy.features
        self.primaries = policy.primaries
        self._outcomes = policy.outcomes
        self._credentials = channel_credentials(self.options)

    def _follow_lazily(self, name: str) -> Any:
        """The cache of watch ``name``, its watch started on the first call (by the driver)."""
        raise NotImplementedError

    def backpressure_policies(self) -> BackpressurePolicyCache:
        """The central backpressure policies (``BackpressureService``) from a watch-fed
        cache, as the interceptors apply them; the watch starts on the first call (for
        ``AsyncClient``, on the running event loop)."""
        return self._follow_lazily("backpressure")  # type: ignore[no-any-return]

    def faults(self) -> FaultInjector | None:
        """Bulwark's fault rules (``ChaosService``) as this process applies them to its
        guarded calls; None unless ``options.chaos`` opted in. The watch starts on the
        first call (for ``AsyncClient``, on the running event loop)."""
        if not self.options.chaos:
            return None
        if not self._policy.faults.followed:
            self._follow_lazily("faults")
        return self._policy.injector

    def _fault(self, downstream: str) -> Fault | None:
        """The fault a ``breaker(downstream)`` block gets (None: none, or chaos is off)."""
        injector = self.faults()
        return injector.decide(downstream) if injector is not None else None
