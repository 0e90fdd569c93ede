"""A checkout service with a gRPC API, for load generators and chaos experiments to drive.

It serves demo.checkout.v1.CheckoutService on --listen, with server reflection on
(grpcurl and load generators need no proto files), and uses Bulwark at --endpoint
through bulwark.AsyncClient (service "checkout"). Each Checkout call:

  * takes the express path while the degradable feature "express-checkout" is
    AVAILABLE in the client's cache, else the standard path;
  * charges the payment through demo.payments.v1.PaymentService, a payment provider
    served by this process on a port of its own (--payments-listen), over a channel
    guarded by AsyncBulwarkInterceptor with the "payments" circuit breaker. While the
    breaker is open the payment is queued (status PAYMENT_QUEUED) and charged later;
    a payment that fails otherwise fails the call with UNAVAILABLE.

At start it creates the "payments" breaker and the "express-checkout" feature,
which depends on it (so express checkout is off while the breaker is open), and
registers this instance in Bulwark's registry as service "checkout". It runs until
Ctrl-C or SIGTERM (or --seconds), then stops cleanly: it leaves the registry, lets
the calls in progress finish and prints a summary.

  make run                                                  # Bulwark, in one terminal
  .venv/bin/python clients/python/examples/checkout_server.py
  .venv/bin/grpcurl -plaintext -d '{"user_id": "alice", "amount_cents": 1299}' \\
      127.0.0.1:50061 demo.checkout.v1.CheckoutService/Checkout
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
import uuid

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection

from bulwark import AsyncClient, ClientOptions
from bulwark.interceptors import REJECTED_BY_KEY, AsyncBulwarkInterceptor, Guard
from bulwark.v1 import breaker_pb2, feature_pb2

from checkout_setup import EXPRESS_FEATURE, PAYMENTS_BREAKER, SERVICE, Registration, set_up
from demo.checkout.v1 import checkout_pb2, checkout_pb2_grpc
from demo.payments.v1 import payments_pb2, payments_pb2_grpc
from payments_provider import start_payments

CHECKOUT_SERVICE = checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name
PAYMENTS_PREFIX = "/demo.payments.v1.PaymentService/"
# A payment's own deadline; shorter when the Checkout call has less time left.
PAYMENT_TIMEOUT = 2.0
# How long the calls in progress may take to finish at shutdown.
GRACE = 2.0
# Queued payments kept at most (when full, the oldest are dropped), and how fast they are charged
# once the breaker lets calls through: a recovering provider gets no sudden burst.
QUEUE_LIMIT = 10_000
DRAIN_INTERVAL = 0.02

_started = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _started:7.2f}s] {message}", flush=True)


def forwarded(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The caller's ``x-`` headers, passed on to the payment call.

    So a chaos fault rule whose ``target.headers`` picks test traffic (a load
    generator's ``x-...`` header) hits the payments of that traffic only.
    """
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if key.startswith("x-") and not key.endswith("-bin") and isinstance(value, str)
    )


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


class PaymentQueue:
    """Payments taken while the breaker was open, charged once it lets calls through."""

    def __init__(self, charge: grpc.aio.UnaryUnaryMultiCallable) -> None:
        self._charge = charge
        self._pending: collections.deque[payments_pb2.ChargeRequest] = collections.deque(
            maxlen=QUEUE_LIMIT
        )
        self.charged_later = 0

    def put(self, request: payments_pb2.ChargeRequest) -> None:
        self._pending.append(request)

    def __len__(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Forever: charge the queued payments oldest first, through the same breaker."""
        while True:
            await asyncio.sleep(1.0)
            while self._pending:
                request = self._pending.popleft()
                try:
                    await self._charge(request, timeout=PAYMENT_TIMEOUT)
                except grpc.aio.AioRpcError:
                    # Refused by the breaker, or failed: first in line again in a second.
                    self._pending.appendleft(request)
                    break
                self.charged_later += 1
                await asyncio.sleep(DRAIN_INTERVAL)


class Checkout(checkout_pb2_grpc.CheckoutServiceServicer):
    """demo.checkout.v1.CheckoutService: the express or standard path, then the payment."""

    def __init__(self, bulwark: AsyncClient, payments: grpc.aio.Channel) -> None:
        self._express = bulwark.feature(EXPRESS_FEATURE)  # reads the cache at each use
        self._charge = payments_pb2_grpc.PaymentServiceStub(payments).Charge
        self.queue = PaymentQueue(self._charge)
        self.stats: collections.Counter[str] = collections.Counter()
        self.in_flight = 0

    async def Checkout(
        self, request: checkout_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> checkout_pb2.CheckoutResponse:
        if not request.user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is required")
        if request.amount_cents <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount_cents must be positive")
        self.in_flight += 1
        try:
            return await self._checkout(request, context)
        finally:
            self.in_flight -= 1

    async def _checkout(
        self, request: checkout_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> checkout_pb2.CheckoutResponse:
        order_id = request.order_id or f"order-{uuid.uuid4().hex[:12]}"
        express = self._express.available
        path = "express" if express else "standard"
        charge = payments_pb2.ChargeRequest(
            order_id=order_id,
            user_id=request.user_id,
            amount_cents=request.amount_cents,
            method="saved-card" if express else "card-entry",
        )
        remaining = context.time_remaining()
        timeout = PAYMENT_TIMEOUT if remaining is None else min(PAYMENT_TIMEOUT, remaining)
        amount = dollars(request.amount_cents)
        try:
            await self._charge(charge, timeout=timeout, metadata=forwarded(context))
        except grpc.aio.AioRpcError as error:
            if dict(error.trailing_metadata() or ()).get(REJECTED_BY_KEY) != "breaker":
                self.stats["failed (UNAVAILABLE)"] += 1
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"payment failed: {error.code().name}: {error.details()}",
                )
            # The breaker failed it fast, without reaching the provider: take the order.
            self.queue.put(charge)
            self.stats[f"queued ({path})"] += 1
            return checkout_pb2.CheckoutResponse(
                order_id=order_id,
                status=checkout_pb2.CHECKOUT_STATUS_PAYMENT_QUEUED,
                path=path,
                message=f"payments are unavailable: {amount} will be charged later",
            )
        self.stats[f"paid ({path})"] += 1
        how = "with the saved card" if express else "by card entry (express checkout is off)"
        return checkout_pb2.CheckoutResponse(
            order_id=order_id,
            status=checkout_pb2.CHECKOUT_STATUS_PAID,
            path=path,
            message=f"paid {amount} {how}",
        )


async def watch_states(bulwark: AsyncClient, checkout: Checkout) -> None:
    """Forever: print the breaker's and the feature's changes, and the traffic every 5 s."""
    seen: dict[str, str] = {}
    last_stats: dict[str, int] = {}
    next_stats = time.monotonic() + 5
    while True:
        view = bulwark.breakers.get(PAYMENTS_BREAKER)
        now = {
            f"breaker {PAYMENTS_BREAKER}": breaker_pb2.BreakerState.Name(view.state)
            if view is not None
            else "unknown",
            f"feature {EXPRESS_FEATURE}": feature_pb2.FeatureStatus.Name(
                bulwark.feature(EXPRESS_FEATURE).status
            ),
        }
        for what, state in now.items():
            if seen.get(what) != state:
                seen[what] = state
                short = state.removeprefix("BREAKER_STATE_").removeprefix("FEATURE_STATUS_")
                say(f"{what}: {short}")
        if time.monotonic() >= next_stats:
            next_stats += 5
            if dict(checkout.stats) != last_stats:
                last_stats = dict(checkout.stats)
                say("calls: " + ", ".join(f"{k} {v}" for k, v in sorted(last_stats.items())))
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    server = grpc.aio.server()
    try:
        port = server.add_insecure_port(args.listen)
    except RuntimeError as error:
        print(f"cannot listen on {args.listen}: {error}", file=sys.stderr)
        return 1
    address = f"{args.listen.rpartition(':')[0]}:{port}"
    instance = args.instance or os.environ.get("BULWARK_INSTANCE") or f"{SERVICE}-{port}"
    options = ClientOptions(
        service=SERVICE, instance=instance, client_id=instance, chaos=args.chaos
    )
    try:
        for line in await set_up(args.endpoint, options):
            say(line)
    except grpc.aio.AioRpcError as error:
        print(
            f"cannot set up against Bulwark at {args.endpoint}: "
            f"{error.code().name} {error.details()}\nis Bulwark running? (make run)",
            file=sys.stderr,
        )
        return 1

    payments_server, payments_address, provider = await start_payments(
        args.payments_listen, args.payments_failure_rate
    )
    async with AsyncClient(args.endpoint, options=options) as bulwark:
        # The guard's service names the downstream: the calls' signals go under it, and
        # a chaos fault rule targets it (target.downstream "payments").
        rules = {PAYMENTS_PREFIX: Guard(breaker=PAYMENTS_BREAKER, service="payments")}
        payments = grpc.aio.insecure_channel(
            payments_address, interceptors=[AsyncBulwarkInterceptor(bulwark, rules)]
        )
        checkout = Checkout(bulwark, payments)
        checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(checkout, server)
        reflection.enable_server_reflection((CHECKOUT_SERVICE, reflection.SERVICE_NAME), server)
        await server.start()
        registration = Registration(
            args.endpoint, options, instance, address, lambda: checkout.in_flight
        )
        try:
            await registration.register()
        except grpc.aio.AioRpcError as error:
            say(f"not registered yet ({error.code().name}): the heartbeats will retry")
        tasks = [
            asyncio.create_task(registration.heartbeats(say)),
            asyncio.create_task(checkout.queue.drain()),
            asyncio.create_task(watch_states(bulwark, checkout)),
        ]
        say(
            f"serving {CHECKOUT_SERVICE} on {address} as instance {instance} "
            f"(payments on {payments_address}, failure rate {args.payments_failure_rate:g}, "
            f"chaos {'on' if args.chaos else 'off'}; Bulwark at {args.endpoint})"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.seconds)

        say("stopping: leaving the registry, finishing the calls in progress")
        await registration.leave()
        await server.stop(GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await payments.close()
    await payments_server.stop(None)

    print("\nsummary")
    for what, count in sorted(checkout.stats.items()):
        print(f"  {what:36} {count}")
    print(f"  {'queued, charged later':36} {checkout.queue.charged_later}")
    print(f"  {'queued, never charged (lost at exit)':36} {len(checkout.queue)}")
    print(f"  {'provider: charged / failed':36} {provider.charged} / {provider.failed}")
    return 0


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:50061",
        help="host:port to serve the checkout API on (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint", default="127.0.0.1:50051", help="a Bulwark replica (default: %(default)s)"
    )
    parser.add_argument(
        "--payments-listen",
        default="127.0.0.1:0",
        help="host:port of the payment provider (default: %(default)s, a free port)",
    )
    parser.add_argument(
        "--payments-failure-rate",
        type=_rate,
        default=0.0,
        help="share of payments the provider fails with UNAVAILABLE, 0-1 (default: 0)",
    )
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="let Bulwark's fault rules (ChaosService) delay or fail this process's payments",
    )
    parser.add_argument(
        "--instance",
        default="",
        help="this instance's id in the registry and for fault rules "
        "(default: $BULWARK_INSTANCE, else checkout-<port>)",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=None,
        help="stop after this long (default: run until Ctrl-C or SIGTERM)",
    )
    args = parser.parse_args()
    # The client library's warnings (a breaker Bulwark does not know, a lost watch).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
