"""The checkout example's downstream: a payment provider, ``demo.payments.v1.PaymentService``.

A separate service in real life; here it runs in the checkout server's process, on
a port of its own, so that the checkout's calls to it cross a real gRPC channel
(and Bulwark's interceptor on it). ``failure_rate`` is the share of charges it fails
with UNAVAILABLE, for experiments by hand.
"""

from __future__ import annotations

import random
import uuid

import grpc
import grpc.aio

from demo.payments.v1 import payments_pb2, payments_pb2_grpc


class PaymentProvider(payments_pb2_grpc.PaymentServiceServicer):
    """Charges everything, except a random ``failure_rate`` share of the calls."""

    def __init__(self, failure_rate: float) -> None:
        self.failure_rate = failure_rate
        self.charged = 0
        self.failed = 0

    async def Charge(
        self, request: payments_pb2.ChargeRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.ChargeResponse:
        if random.random() < self.failure_rate:
            self.failed += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "payment provider unavailable")
        self.charged += 1
        return payments_pb2.ChargeResponse(payment_id=f"pay-{uuid.uuid4().hex[:16]}")


async def start_payments(
    listen: str, failure_rate: float
) -> tuple[grpc.aio.Server, str, PaymentProvider]:
    """Serve the provider on ``listen`` (port 0: a free one); return its actual address."""
    provider = PaymentProvider(failure_rate)
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(provider, server)
    host = listen.rpartition(":")[0]
    port = server.add_insecure_port(listen)
    await server.start()
    return server, f"{host}:{port}", provider
