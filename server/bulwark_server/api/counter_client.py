"""How charges reach the owner of their counters: batched ``CounterService/Take`` calls.

``CounterClient`` is the rate-limit capability's ``CounterPeers``. Charges for one
owner wait in one queue; at most ``IN_FLIGHT`` ``Take`` calls per owner are open
at a time, and each carries every charge queued when it leaves (up to
``MAX_CHARGES``). So an idle replica sends a charge at once, and a busy one sends
few calls of many charges: the cost of a call is shared by the Checks that waited
for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio

from bulwark.v1 import counter_pb2, counter_pb2_grpc
from bulwark_server.api.counters import MAX_CHARGES
from bulwark_server.api.forwarding import as_domain_error
from bulwark_server.errors import NotLeader

IN_FLIGHT = 2
CALL_TIMEOUT_S = 1.0

Outcomes = list[counter_pb2.CounterOutcome]
Waiter = tuple[Sequence[counter_pb2.CounterCharge], "asyncio.Future[Outcomes]"]


@dataclass
class _Owner:
    stub: counter_pb2_grpc.CounterServiceStub
    channel: grpc.aio.Channel
    waiting: deque[Waiter] = field(default_factory=deque)
    in_flight: int = 0
    scheduled: bool = False


class CounterClient:
    """Batched ``Take`` calls to the owners of counters; see the module docstring."""

    def __init__(
        self,
        replica_id: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._replica_id = replica_id
        self._credentials = credentials
        self._token = token
        self._owners: dict[str, _Owner] = {}

    async def take(
        self, address: str, charges: Sequence[counter_pb2.CounterCharge], deadline_s: float
    ) -> Sequence[counter_pb2.CounterOutcome]:
        """The owner's outcomes for ``charges``, in order (NotLeader when it does not
        answer within ``deadline_s``)."""
        if not address:
            raise NotLeader("the counters' owner has no known address")
        owner = self._owner(address)
        future: asyncio.Future[list[counter_pb2.CounterOutcome]] = (
            asyncio.get_running_loop().create_future()
        )
        owner.waiting.append((charges, future))
        if not owner.scheduled and owner.in_flight < IN_FLIGHT:
            # After the callbacks already due: Checks arriving together share the call.
            owner.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, address, owner)
        try:
            async with asyncio.timeout(deadline_s):
                return await future
        except TimeoutError:
            raise NotLeader(f"counter owner {address} did not answer in {deadline_s}s") from None

    def _owner(self, address: str) -> _Owner:
        owner = self._owners.get(address)
        if owner is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials)
            owner = self._owners[address] = _Owner(
                counter_pb2_grpc.CounterServiceStub(channel), channel
            )
        return owner

    def _flush(self, address: str, owner: _Owner) -> None:
        owner.scheduled = False
        while owner.waiting and owner.in_flight < IN_FLIGHT:
            batch: list[Waiter] = []
            size = 0
            while owner.waiting and size < MAX_CHARGES:
                charges, future = owner.waiting.popleft()
                if future.done():
                    continue  # its caller gave up waiting
                batch.append((charges, future))
                size += len(charges)
            if not batch:
                return
            owner.in_flight += 1
            asyncio.get_running_loop().create_task(self._send(address, owner, batch))

    async def _send(self, address: str, owner: _Owner, batch: list[Waiter]) -> None:
        request = counter_pb2.TakeRequest(replica_id=self._replica_id)
        for charges, _ in batch:
            request.charges.extend(charges)
        token = self._token()
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            response = await owner.stub.Take(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            outcomes = list(response.outcomes)
            if len(outcomes) != len(request.charges):
                raise NotLeader(f"counter owner {address} answered {len(outcomes)} outcomes")
        except Exception as exc:
            error = as_domain_error(exc, address) if isinstance(exc, grpc.aio.AioRpcError) else exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            start = 0
            for charges, future in batch:
                if not future.done():
                    future.set_result(outcomes[start : start + len(charges)])
                start += len(charges)
        finally:
            owner.in_flight -= 1
            if owner.waiting and not owner.scheduled:
                self._flush(address, owner)

    async def close(self) -> None:
        for owner in self._owners.values():
            await owner.channel.close()
        self._owners.clear()
