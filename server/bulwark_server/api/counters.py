"""CounterService: rate-limit counters decided by their owner, for the other replicas.

``CounterServicer`` (the owner) reads batches of charges from a replica's stream,
validates each and hands it to the rate-limit capability
(``RateLimitManager.take``), and answers each in order. The asking side is
``counter_client.CounterClient``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from bulwark.v1 import counter_pb2, counter_pb2_grpc
from bulwark_server.api.ratelimit import MAX_HITS
from bulwark_server.api.status import rpc_stream
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits.config import MAX_DESCRIPTOR_ENTRIES, MAX_VALUE_LENGTH
from bulwark_server.ratelimits.manager import RateLimitManager
from bulwark_server.validation import NAME_RE, validate_id

MAX_CHARGES = 4096


def _validate(request: counter_pb2.ExchangeRequest) -> None:
    validate_id(request.replica_id, "replica_id")
    if len(request.charges) > MAX_CHARGES:
        raise InvalidArgument("charges", f"at most {MAX_CHARGES}, got {len(request.charges)}")
    for i, charge in enumerate(request.charges):
        if not NAME_RE.fullmatch(charge.domain):
            raise InvalidArgument(f"charges[{i}].domain", "is not a valid name")
        if charge.limit_name and not NAME_RE.fullmatch(charge.limit_name):
            raise InvalidArgument(f"charges[{i}].limit_name", "is not a valid name")
        if not 1 <= len(charge.values) <= 2 * MAX_DESCRIPTOR_ENTRIES:
            raise InvalidArgument(f"charges[{i}].values", "must hold 1-32 values")
        if any(len(value) > MAX_VALUE_LENGTH for value in charge.values):
            raise InvalidArgument(f"charges[{i}].values", f"longer than {MAX_VALUE_LENGTH}")
        if charge.hits > MAX_HITS:
            raise InvalidArgument(f"charges[{i}].hits", f"must be 0-{MAX_HITS}")


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    """Thin layer over ``RateLimitManager.take``."""

    def __init__(self, limits: RateLimitManager) -> None:
        self._limits = limits

    @rpc_stream
    async def Exchange(
        self,
        requests: AsyncIterator[counter_pb2.ExchangeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[counter_pb2.ExchangeResponse]:
        async for request in requests:
            _validate(request)
            outcomes = self._limits.take(request.replica_id, request.charges)
            yield counter_pb2.ExchangeResponse(outcomes=outcomes, batch=request.batch)
