"""How charges reach the owner of their counters: one ``CounterService/Exchange`` stream
per owner, carrying batches.

``CounterClient`` is the rate-limit capability's ``CounterPeers``. Charges for one
owner wait in one queue; a batch leaves with every charge queued (up to
``MAX_CHARGES``) as soon as the previous batch is written, and the owner answers
batches in order on the same stream. So an idle replica sends a charge at once,
and a busy one sends few messages of many charges, and no message pays for a
call of its own (a unary call costs several times a stream message in Python
gRPC). A stream that fails fails the batches it carried; the next charge opens a
new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import counter_pb2, counter_pb2_grpc
from bulwark_server.api.counters import MAX_CHARGES
from bulwark_server.api.forwarding import as_domain_error, open_channel
from bulwark_server.errors import NotLeader

log = logging.getLogger(__name__)

Outcomes = list[counter_pb2.CounterOutcome]
Waiter = tuple[Sequence[counter_pb2.CounterCharge], "asyncio.Future[Outcomes]"]


@dataclass
class _Owner:
    address: str
    stub: counter_pb2_grpc.CounterServiceStub
    channel: grpc.aio.Channel
    waiting: deque[Waiter] = field(default_factory=deque)
    # Batches written and not yet answered, oldest first.
    sent: deque[tuple[int, list[Waiter]]] = field(default_factory=deque)
    call: Any = None
    reader: asyncio.Task[None] | None = None
    writing: bool = False
    scheduled: bool = False


class CounterClient:
    """Batched charges to the owners of counters; see the module docstring."""

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
        self._batches = itertools.count(1)

    async def take(
        self, address: str, charges: Sequence[counter_pb2.CounterCharge], deadline_s: float
    ) -> Sequence[counter_pb2.CounterOutcome]:
        """The owner's outcomes for ``charges``, in order (NotLeader when it does not
        answer within ``deadline_s``)."""
        if not address:
            raise NotLeader("the counters' owner has no known address")
        owner = self._owner(address)
        future: asyncio.Future[Outcomes] = asyncio.get_running_loop().create_future()
        owner.waiting.append((charges, future))
        if not owner.scheduled and not owner.writing:
            # After the callbacks already due: Checks arriving together share a batch.
            owner.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, owner)
        try:
            async with asyncio.timeout(deadline_s):
                return await future
        except TimeoutError:
            raise NotLeader(f"counter owner {address} did not answer in {deadline_s}s") from None

    def _owner(self, address: str) -> _Owner:
        owner = self._owners.get(address)
        if owner is None:
            channel = open_channel(address, self._credentials)
            owner = self._owners[address] = _Owner(
                address, counter_pb2_grpc.CounterServiceStub(channel), channel
            )
        return owner

    def _flush(self, owner: _Owner) -> None:
        owner.scheduled = False
        if owner.writing or not owner.waiting:
            return
        batch: list[Waiter] = []
        size = 0
        while owner.waiting and size < MAX_CHARGES:
            charges, future = owner.waiting.popleft()
            if not future.done():  # else its caller gave up waiting
                batch.append((charges, future))
                size += len(charges)
        if batch:
            owner.writing = True
            asyncio.get_running_loop().create_task(self._write(owner, batch))

    async def _write(self, owner: _Owner, batch: list[Waiter]) -> None:
        number = next(self._batches)
        request = counter_pb2.ExchangeRequest(replica_id=self._replica_id, batch=number)
        for charges, _ in batch:
            request.charges.extend(charges)
        try:
            if owner.call is None:
                self._open(owner)
            owner.sent.append((number, batch))
            await owner.call.write(request)
        except Exception as exc:
            self._fail(owner, exc)
        finally:
            owner.writing = False
            if owner.waiting:
                self._flush(owner)

    def _open(self, owner: _Owner) -> None:
        token = self._token()
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        owner.call = owner.stub.Exchange(metadata=metadata)
        owner.reader = asyncio.get_running_loop().create_task(self._read(owner, owner.call))

    async def _read(self, owner: _Owner, call: Any) -> None:
        try:
            async for response in call:
                if not owner.sent:
                    raise NotLeader(f"counter owner {owner.address} answered a batch not sent")
                number, batch = owner.sent.popleft()
                if response.batch != number or len(response.outcomes) != sum(
                    len(charges) for charges, _ in batch
                ):
                    raise NotLeader(f"counter owner {owner.address} answered out of order")
                start = 0
                for charges, future in batch:
                    if not future.done():
                        future.set_result(list(response.outcomes[start : start + len(charges)]))
                    start += len(charges)
            raise NotLeader(f"counter owner {owner.address} ended the stream")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if owner.call is call:
                self._fail(owner, exc)

    def _fail(self, owner: _Owner, exc: Exception) -> None:
        """End the stream: every batch it carried fails; the next charge opens another."""
        error = (
            as_domain_error(exc, owner.address) if isinstance(exc, grpc.aio.AioRpcError) else exc
        )
        log.debug("stream to counter owner %s failed: %s", owner.address, error)
        call, owner.call = owner.call, None
        if call is not None:
            call.cancel()
        while owner.sent:
            _, batch = owner.sent.popleft()
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)

    def retain(self, addresses: set[str]) -> None:
        """End the streams to replicas not among ``addresses``: a stopping replica's
        server waits for the streams into it, so they end as soon as it leaves."""
        for address in [a for a in self._owners if a not in addresses]:
            owner = self._owners.pop(address)
            self._fail(owner, NotLeader(f"counter owner {address} left"))
            if owner.reader is not None:
                owner.reader.cancel()
            asyncio.get_running_loop().create_task(owner.channel.close())

    async def close(self) -> None:
        for owner in self._owners.values():
            if owner.call is not None:
                owner.call.cancel()
            if owner.reader is not None:
                owner.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await owner.reader
            await owner.channel.close()
        self._owners.clear()
