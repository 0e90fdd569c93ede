"""The loop behind ``bulwark instance``: keep one instance registered for a process.

For processes that cannot embed the client library, so it needs only the
generated stubs, grpc and the standard library.

Registers the instance, heartbeats every third of its TTL, and prints one JSON
line on stdout whenever its role or the epoch changes (``{"event": "role",
"role": "PRIMARY", "epoch": 3, ...}``), so a wrapper script or an operator
can follow failovers. When a switchover asks the primary to drain, it reports
DRAINING at once: this agent holds no writes of its own. A registration that
ended (NOT_FOUND) is renewed with a new RegisterInstance. SIGTERM or SIGINT
deregisters and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Protocol

import grpc
import grpc.aio

from bulwark.v1 import registry_pb2, registry_pb2_grpc

# Transient failures are retried after this long, well within any TTL.
RETRY_S = 0.2


class Target(Protocol):
    """Where the agent calls: what :class:`bulwark_server.cli.channel.ServerTarget` offers."""

    @property
    def address(self) -> str: ...

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]: ...

    def aio_channel(self) -> grpc.aio.Channel: ...


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "time": round(time.time(), 3), **fields}), flush=True)


class InstanceAgent:
    """Register, heartbeat and report role changes until stopped."""

    def __init__(self, target: Target, instance: registry_pb2.Instance, timeout: float) -> None:
        self._target = target
        self._server = target.address
        self._instance = instance
        self._timeout = timeout
        self._metadata = target.metadata
        self._stopping = asyncio.Event()
        self._seen: tuple[int, int] | None = None
        self._health = registry_pb2.INSTANCE_HEALTH_SERVING

    def stop(self) -> None:
        """Ask the loop to deregister the instance and end."""
        self._stopping.set()

    async def run(self) -> int:
        """Register, heartbeat until stopped, deregister; 1 when the registration is refused."""
        async with self._target.aio_channel() as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            try:
                ttl = await self._register(stub)
            except grpc.aio.AioRpcError as exc:
                print(
                    f"bulwark instance: {self._server} refused the registration: "
                    f"{exc.code().name}: {exc.details()}",
                    file=sys.stderr,
                )
                return 1
            last_ok = time.monotonic()
            ok = True
            while not self._stopping.is_set():
                try:
                    # After a failure, retry soon: a third of the TTL twice over loses the lease.
                    async with asyncio.timeout(ttl / 3 if ok else RETRY_S):
                        await self._stopping.wait()
                    break
                except TimeoutError:
                    pass
                ttl, ok = await self._beat(stub, ttl)
                if ok:
                    last_ok = time.monotonic()
                elif time.monotonic() - last_ok >= ttl:
                    # Unheard for a whole TTL: a backup may lead by now, so this one must not.
                    self._note(registry_pb2.ROLE_UNSPECIFIED, 0)
            try:
                await stub.DeregisterInstance(
                    registry_pb2.DeregisterInstanceRequest(
                        service=self._instance.service, instance_id=self._instance.id
                    ),
                    timeout=self._timeout,
                    metadata=self._metadata,
                )
                _emit("deregistered", service=self._instance.service, id=self._instance.id)
            except grpc.aio.AioRpcError as exc:
                _emit("deregister_failed", code=exc.code().name, details=exc.details())
        return 0

    async def _register(self, stub: registry_pb2_grpc.RegistryServiceStub) -> float:
        response = await stub.RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=self._instance),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        self._health = registry_pb2.INSTANCE_HEALTH_SERVING
        stored = response.instance
        _emit(
            "registered",
            service=stored.service,
            id=stored.id,
            ttl=stored.ttl.seconds,
            revision=stored.revision,
        )
        role = (
            registry_pb2.ROLE_PRIMARY
            if response.primary.instance_id == stored.id
            else registry_pb2.ROLE_BACKUP
        )
        self._note(role, response.primary.epoch)
        return float(stored.ttl.seconds)

    async def _beat(
        self, stub: registry_pb2_grpc.RegistryServiceStub, ttl: float
    ) -> tuple[float, bool]:
        """One heartbeat; (the TTL to keep to, whether Bulwark answered)."""
        epoch = self._seen[1] if self._seen and self._seen[0] == registry_pb2.ROLE_PRIMARY else 0
        request = registry_pb2.HeartbeatRequest(
            service=self._instance.service,
            instance_id=self._instance.id,
            health=self._health,
            epoch=epoch,
        )
        try:
            response = await stub.Heartbeat(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                _emit("expired", details=exc.details())
                self._note(registry_pb2.ROLE_UNSPECIFIED, 0)
                try:
                    return await self._register(stub), True
                except grpc.aio.AioRpcError:
                    return ttl, False
            _emit("heartbeat_failed", code=exc.code().name, details=exc.details())
            return ttl, False
        self._note(response.role, response.epoch)
        draining = self._health == registry_pb2.INSTANCE_HEALTH_DRAINING
        if response.drain and not draining:
            self._health = registry_pb2.INSTANCE_HEALTH_DRAINING
            _emit("draining", epoch=response.epoch)
            # Say so now rather than a third of a TTL later: the switchover waits for it.
            return await self._beat(stub, ttl)
        if not response.drain and draining:
            # The switchover is over (done, or abandoned with this one still primary).
            self._health = registry_pb2.INSTANCE_HEALTH_SERVING
        return float(response.ttl.seconds or ttl), True

    def _note(self, role: int, epoch: int) -> None:
        if self._seen == (role, epoch):
            return
        self._seen = (role, epoch)
        _emit(
            "role",
            service=self._instance.service,
            id=self._instance.id,
            role=registry_pb2.Role.Name(role).removeprefix("ROLE_"),
            epoch=epoch,
        )


def run(target: Target, instance: registry_pb2.Instance, timeout: float) -> int:
    """Run the agent until SIGTERM or SIGINT; the exit status."""

    async def main() -> int:
        agent = InstanceAgent(target, instance, timeout)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        return await agent.run()

    return asyncio.run(main())
