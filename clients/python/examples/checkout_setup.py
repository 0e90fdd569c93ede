"""What the checkout server needs in Bulwark: created at its start, and its registration.

With idempotent calls of the generated stubs in ``bulwark.v1``, so the server runs
against an empty Bulwark and can start again (or many times side by side):

* the ``payments`` circuit breaker, configured to trip fast under load;
* the ``express-checkout`` degradable feature, which depends on that breaker, so that
  it is not AVAILABLE while the breaker is open, with no one to flip it;
* this instance in the registry, as service ``checkout``, kept by heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import grpc.aio

from bulwark import ClientOptions
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

SERVICE = "checkout"
PAYMENTS_BREAKER = "payments"
EXPRESS_FEATURE = "express-checkout"
# How long a start waits for Bulwark to answer (a replica just started has no leader yet).
SETUP_PATIENCE = 10.0
# The registration's lease, and how often a heartbeat renews it (well within it).
TTL = 10
HEARTBEAT_INTERVAL = 3.0


def payments_breaker_config() -> breaker_pb2.BreakerConfig:
    """Trips within a fraction of a second when 30 % of the payments fail at ~500 calls/s.

    A window of the last 100 calls is 0.2 s of traffic at 500 calls/s: short, so the
    breaker trips fast, yet long enough that a 30 % failure rate is reliably at or
    over the 20 % threshold (100 calls at 30 % hold fewer than 20 failures about once
    in 90 windows, and the window slides with every report) while stray failures
    never reach it. 50 calls at least, so a quiet minute's few calls decide nothing.
    After 5 s OPEN it lets 20 trial calls through (HALF_OPEN) by itself, so the
    feature that depends on it follows without waiting for traffic; trials that
    never report send it back OPEN after 5 s.
    """
    config = breaker_pb2.BreakerConfig(
        failure_rate_threshold=20,
        sliding_window_type=breaker_pb2.SLIDING_WINDOW_TYPE_COUNT_BASED,
        sliding_window_size=100,
        minimum_number_of_calls=50,
        permitted_number_of_calls_in_half_open_state=20,
        automatic_transition_from_open_to_half_open_enabled=True,
    )
    config.wait_duration_in_open_state.FromSeconds(5)
    config.max_wait_duration_in_half_open_state.FromSeconds(5)
    return config


async def set_up(endpoint: str, options: ClientOptions) -> list[str]:
    """Create the breaker and the feature; return what was done, in words.

    Retries while Bulwark is UNAVAILABLE, for up to ``SETUP_PATIENCE`` seconds.
    """
    deadline = time.monotonic() + SETUP_PATIENCE
    async with grpc.aio.insecure_channel(endpoint) as channel:
        while True:
            try:
                return await _set_up(channel, options.metadata())
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)


async def _set_up(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    # PutBreaker keeps the breaker's state: putting the same config again changes nothing.
    breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
    put = await breakers.PutBreaker(
        breaker_pb2.PutBreakerRequest(name=PAYMENTS_BREAKER, config=payments_breaker_config()),
        timeout=5,
        metadata=metadata,
    )
    done = [f"breaker {PAYMENTS_BREAKER}: {'created' if put.created else 'configured'}"]
    # PutFeature would reset the feature's own status: an operator's DEGRADED must
    # survive a restart of the service, so a feature that already depends on the
    # breaker is left as it is.
    features = feature_pb2_grpc.FeatureServiceStub(channel)
    try:
        got = await features.GetFeature(
            feature_pb2.GetFeatureRequest(name=EXPRESS_FEATURE), timeout=5, metadata=metadata
        )
        if _depends_on_payments(got.feature.feature):
            return [*done, f"feature {EXPRESS_FEATURE}: kept"]
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    feature = feature_pb2.Feature(
        name=EXPRESS_FEATURE,
        status=feature_pb2.FEATURE_STATUS_AVAILABLE,
        fallback="standard",
        depends_on=[
            feature_pb2.Dependency(
                kind=feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER, name=PAYMENTS_BREAKER
            )
        ],
        updated_by="checkout-example",
    )
    await features.PutFeature(
        feature_pb2.PutFeatureRequest(feature=feature), timeout=5, metadata=metadata
    )
    return [*done, f"feature {EXPRESS_FEATURE}: defined, depending on breaker {PAYMENTS_BREAKER}"]


def _depends_on_payments(feature: feature_pb2.Feature) -> bool:
    return any(
        d.kind == feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER and d.name == PAYMENTS_BREAKER
        for d in feature.depends_on
    )


class Registration:
    """This instance in Bulwark's registry, as service ``checkout``, renewed by heartbeats.

    A heartbeat carries the calls in flight (``in_flight()``), which Bulwark's
    PickInstance uses to choose the least loaded instance.
    """

    def __init__(
        self,
        endpoint: str,
        options: ClientOptions,
        instance_id: str,
        address: str,
        in_flight: Callable[[], int],
    ) -> None:
        self.instance_id = instance_id
        self._address = address
        self._in_flight = in_flight
        self._metadata = options.metadata()
        self._channel = grpc.aio.insecure_channel(endpoint)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def register(self) -> None:
        instance = registry_pb2.Instance(
            service=SERVICE, id=self.instance_id, address=self._address
        )
        instance.ttl.FromSeconds(TTL)
        await self._stub.RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=instance),
            timeout=5,
            metadata=self._metadata,
        )

    async def heartbeats(self, say: Callable[[str], None]) -> None:
        """Forever: renew the lease; register again when it has ended (Bulwark was away)."""
        missed = False
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            request = registry_pb2.HeartbeatRequest(
                service=SERVICE,
                instance_id=self.instance_id,
                health=registry_pb2.INSTANCE_HEALTH_SERVING,
                load=registry_pb2.Load(in_flight=self._in_flight()),
            )
            try:
                await self._stub.Heartbeat(request, timeout=2, metadata=self._metadata)
                missed = False
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    say(f"registration of {self.instance_id} lapsed: registering again")
                    await self._register_quietly()
                elif not missed:  # once per outage: the lease outlives a few misses
                    missed = True
                    say(f"heartbeat failed: {error.code().name} {error.details()}")

    async def _register_quietly(self) -> None:
        try:
            await self.register()
        except grpc.aio.AioRpcError:
            pass  # the next heartbeat finds it missing again and retries

    async def leave(self) -> None:
        """Deregister (callers stop picking this instance at once), then close the channel."""
        try:
            await self._stub.DeregisterInstance(
                registry_pb2.DeregisterInstanceRequest(
                    service=SERVICE, instance_id=self.instance_id
                ),
                timeout=2,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError:
            pass  # the lease ends by itself within TTL seconds
        await self._channel.close()
