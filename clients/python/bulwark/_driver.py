"""What ``Client`` and ``AsyncClient`` set up alike before they differ in how they do I/O."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

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
