"""A small asyncio checkout service that uses every Bulwark capability.

Run ``make run`` in one terminal, then in another::

    .venv/bin/python clients/python/examples/checkout_service.py --seconds 10

For ``--seconds`` it serves simulated orders from a few users and prints what
Bulwark decided, then a summary, and exits 0. Each order goes through:

* a **rate limit** per user (``checkout`` domain, 5 orders a second each; one
  greedy user sends far more and gets refused);
* an **inventory** lookup over gRPC to a tiny downstream service started in
  this process, through ``AsyncBulwarkInterceptor`` on the outgoing channel
  (breaker ``inventory``); the downstream fails for a while, the breaker trips
  and calls fail fast without reaching it;
* an order write to the **primary** of ``orders-db`` (found with
  ``primary()``, followed with ``on_primary_change``) under a cluster-wide
  **bulkhead** permit (``orders-db``, 3 at a time); midway the primary leaves
  and the backup is promoted;
* a **payment** under the ``payments`` breaker; the payment provider has an
  outage midway, the breaker trips, payments are queued instead, and the
  breaker closes again once trial calls succeed;
* **recommendations**, a degradable feature: while it is not AVAILABLE (an
  operator degrades it for a few seconds midway) the fallback is used.

Everything it needs (breakers, bulkhead, limit, feature, registry instances)
is created at start with idempotent calls of the generated stubs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from bulwark import AsyncClient, BreakerOpenError, BulwarkError, ClientOptions
from bulwark.interceptors import REJECTED_BY_KEY, AsyncBulwarkInterceptor, Guard
from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

USERS = ["alice", "bob", "carol"]
GREEDY_USER = "mallory"
DB_SERVICE = "orders-db"
INVENTORY_METHOD = "/demo.Inventory/Reserve"


class PaymentFailed(Exception):
    """The (simulated) payment provider failed."""


class World:
    """The simulated outside world: when the dependencies misbehave."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.seconds = seconds

    def phase(self) -> float:
        """How far into the run we are, 0 to 1."""
        return (time.monotonic() - self.started) / self.seconds

    def inventory_down(self) -> bool:
        return 0.1 <= self.phase() < 0.3

    def payments_down(self) -> bool:
        return 0.4 <= self.phase() < 0.6


def say(world: World, message: str) -> None:
    print(f"[{time.monotonic() - world.started:5.2f}s] {message}", flush=True)


# -- setup: what an operator would create, idempotently ---------------------------------


async def set_up(endpoint: str, options: ClientOptions) -> None:
    metadata = options.metadata()
    async with grpc.aio.insecure_channel(endpoint) as channel:
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        for name in ("payments", "inventory"):
            config = breaker_pb2.BreakerConfig(
                failure_rate_threshold=50,
                sliding_window_size=10,
                minimum_number_of_calls=6,
                permitted_number_of_calls_in_half_open_state=2,
            )
            config.wait_duration_in_open_state.FromSeconds(2)
            await breakers.PutBreaker(
                breaker_pb2.PutBreakerRequest(name=name, config=config),
                timeout=5,
                metadata=metadata,
            )
        bulkhead = bulkhead_pb2.Bulkhead(name=DB_SERVICE, max_concurrent=3)
        await bulkhead_pb2_grpc.BulkheadServiceStub(channel).PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(bulkhead=bulkhead), timeout=5, metadata=metadata
        )
        limit = ratelimit_pb2.Limit(
            domain="checkout",
            name="orders-per-user",
            descriptor=[ratelimit_pb2.DescriptorEntry(key="user", value="")],
            rate=ratelimit_pb2.Rate(requests_per_unit=5, unit=ratelimit_pb2.RATE_UNIT_SECOND),
        )
        await ratelimit_pb2_grpc.RateLimitServiceStub(channel).PutLimit(
            ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5, metadata=metadata
        )
        feature = feature_pb2.Feature(
            name="recommendations",
            status=feature_pb2.FEATURE_STATUS_AVAILABLE,
            fallback="bestsellers",
        )
        await feature_pb2_grpc.FeatureServiceStub(channel).PutFeature(
            feature_pb2.PutFeatureRequest(feature=feature), timeout=5, metadata=metadata
        )


async def degrade_recommendations(endpoint: str, options: ClientOptions, seconds: float) -> None:
    """What an operator does during an incident: degrade a feature for a while."""
    expires = timestamp_pb2.Timestamp()
    expires.FromNanoseconds(int((time.time() + seconds) * 1e9))
    async with grpc.aio.insecure_channel(endpoint) as channel:
        await feature_pb2_grpc.FeatureServiceStub(channel).SetFeatureStatus(
            feature_pb2.SetFeatureStatusRequest(
                name="recommendations",
                status=feature_pb2.FEATURE_STATUS_DEGRADED,
                reason="recommender overloaded",
                expires_at=expires,
                updated_by="checkout-example",
            ),
            timeout=5,
            metadata=options.metadata(),
        )


class Database:
    """Two registered instances of ``orders-db``; Bulwark keeps one primary among them."""

    def __init__(self, endpoint: str, options: ClientOptions) -> None:
        self._channel = grpc.aio.insecure_channel(endpoint)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._metadata = options.metadata()
        self.live: dict[str, int] = {}  # instance id -> priority

    async def register(self, instance_id: str, priority: int) -> None:
        instance = registry_pb2.Instance(
            service=DB_SERVICE,
            id=instance_id,
            address=f"{instance_id}.db.internal:5432",
            priority=priority,
        )
        instance.ttl.FromSeconds(10)
        await self._stub.RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=instance),
            timeout=5,
            metadata=self._metadata,
        )
        self.live[instance_id] = priority

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(3)
            for instance_id in list(self.live):
                try:
                    await self._stub.Heartbeat(
                        registry_pb2.HeartbeatRequest(service=DB_SERVICE, instance_id=instance_id),
                        timeout=2,
                        metadata=self._metadata,
                    )
                except grpc.aio.AioRpcError:
                    pass  # a missed heartbeat is fine: the lease is 10 s

    async def leave(self, instance_id: str) -> None:
        self.live.pop(instance_id, None)
        try:
            await self._stub.DeregisterInstance(
                registry_pb2.DeregisterInstanceRequest(service=DB_SERVICE, instance_id=instance_id),
                timeout=5,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError:
            pass

    async def close(self) -> None:
        for instance_id in list(self.live):
            await self.leave(instance_id)
        await self._channel.close()


# -- the downstream inventory service (a separate service in real life) ----------------------


async def start_inventory(world: World) -> tuple[grpc.aio.Server, int, collections.Counter[str]]:
    calls: collections.Counter[str] = collections.Counter()

    async def reserve(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls["reached"] += 1
        if world.inventory_down():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "inventory database is down")
        return b"reserved:" + request

    handler = grpc.method_handlers_generic_handler(
        "demo.Inventory", {"Reserve": grpc.unary_unary_rpc_method_handler(reserve)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, calls


# -- the checkout itself --------------------------------------------------------------


class Checkout:
    def __init__(self, bulwark: AsyncClient, inventory: grpc.aio.Channel, world: World) -> None:
        self.bulwark = bulwark
        self.reserve = inventory.unary_unary(INVENTORY_METHOD)
        self.world = world
        self.stats: collections.Counter[str] = collections.Counter()

    async def pay(self, amount: float) -> None:
        await asyncio.sleep(0.01)
        if self.world.payments_down():
            raise PaymentFailed(f"provider refused {amount:.2f}")

    async def order(self, user: str) -> None:
        stats = self.stats
        # 1. Rate limit per user (Bulwark's global limit; a safe local rate while it is away).
        if not await self.bulwark.check("checkout", {"user": user}):
            stats["rate limited"] += 1
            return
        # 2. Inventory through the intercepted channel (breaker "inventory").
        try:
            await self.reserve(user.encode(), timeout=2)
        except grpc.aio.AioRpcError as error:
            metadata = dict(error.trailing_metadata() or ())
            if metadata.get(REJECTED_BY_KEY) == "breaker":
                stats["inventory: failed fast (breaker open)"] += 1
            else:
                stats[f"inventory: {error.code().name}"] += 1
            return
        # 3. Write the order to the primary database under the cluster-wide bulkhead.
        primary = self.bulwark.primary(DB_SERVICE)
        if primary is None:
            stats["no database primary"] += 1
            return
        try:
            async with self.bulwark.permit(DB_SERVICE, max_wait=0.05):
                await asyncio.sleep(random.uniform(0.02, 0.25))
        except BulwarkError as error:
            stats[f"database busy ({error.code.name})"] += 1
            return
        stats[f"written to {primary.instance_id}"] += 1
        # 4. Payment behind its breaker; when it is open the payment is queued.
        try:
            async with self.bulwark.breaker("payments"):
                await self.pay(random.uniform(5, 100))
            stats["paid"] += 1
        except BreakerOpenError:
            stats["payment queued (breaker open)"] += 1
        except PaymentFailed:
            stats["payment failed"] += 1
        # 5. Recommendations, or their fallback while the feature is degraded.
        feature = self.bulwark.feature("recommendations")
        if feature.available:
            stats["recommendations shown"] += 1
        else:
            stats[f"fallback shown: {feature.fallback}"] += 1


async def run(args: argparse.Namespace) -> int:
    options = ClientOptions(client_id="checkout-example", fallback_rate=5.0)
    try:
        await set_up(args.endpoint, options)
    except grpc.aio.AioRpcError as error:
        print(f"cannot set up against {args.endpoint}: {error.code().name} {error.details()}")
        print("is Bulwark running? (make run)")
        return 1

    world = World(args.seconds)
    server, port, inventory_calls = await start_inventory(world)
    db = Database(args.endpoint, options)
    tasks: set[asyncio.Task[None]] = set()
    async with AsyncClient(args.endpoint, options=options) as bulwark:
        bulwark.on_primary_change(
            DB_SERVICE,
            lambda service, primary: say(
                world,
                f"primary of {service}: "
                + (f"{primary.instance_id} (epoch {primary.epoch})" if primary else "none"),
            ),
        )
        await db.register("db-1", priority=10)
        await db.register("db-2", priority=0)
        heartbeats = asyncio.create_task(db.heartbeats())

        rules = {"/demo.Inventory/": Guard(breaker="inventory")}
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=[AsyncBulwarkInterceptor(bulwark, rules)]
        )
        checkout = Checkout(bulwark, channel, world)
        seen_states: dict[str, int] = {}
        degraded = failed_over = False
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            users = [random.choice(USERS)] + [GREEDY_USER] * 2
            for user in users:
                task = asyncio.create_task(checkout.order(user))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if not degraded and world.phase() >= 0.7:
                degraded = True
                say(world, "operator: recommendations DEGRADED for 20% of the run")
                await degrade_recommendations(args.endpoint, options, args.seconds * 0.2)
            if not failed_over and world.phase() >= 0.8:
                failed_over = True
                primary = bulwark.primary(DB_SERVICE)
                if primary is not None:
                    say(world, f"{primary.instance_id} leaves: the backup should be promoted")
                    await db.leave(primary.instance_id)
            for name in ("inventory", "payments"):
                view = bulwark.breakers.get(name)
                if view is not None and seen_states.get(name) != view.state:
                    seen_states[name] = view.state
                    state = breaker_pb2.BreakerState.Name(view.state)
                    say(world, f"breaker {name}: {state.removeprefix('BREAKER_STATE_')}")
            await asyncio.sleep(0.1)

        await asyncio.gather(*tasks, return_exceptions=True)
        heartbeats.cancel()
        await channel.close()
        staleness = bulwark.staleness()
    await db.close()
    await server.stop(None)

    print("\nsummary")
    for what, count in sorted(checkout.stats.items()):
        print(f"  {what:40} {count}")
    print(f"  {'inventory calls that reached it':40} {inventory_calls['reached']}")
    print(f"  {'cache staleness at the end (s)':40} {max(staleness.values()):.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", default="127.0.0.1:50051", help="a Bulwark replica")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
