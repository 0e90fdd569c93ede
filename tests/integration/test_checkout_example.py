"""The checkout example's gRPC server against a real Bulwark, driven as a load generator would.

Requests are built from the descriptors the server's reflection serves (as grpcurl
and load generators do), not from the example's generated code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    cluster_pb2,
    feature_pb2,
    feature_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from tests.integration.conftest import get_leader, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_SERVER = ROOT / "clients" / "python" / "examples" / "checkout_server.py"
SERVICE = "demo.checkout.v1.CheckoutService"
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVING = re.compile(r"serving \S+ on (\S+) as instance (\S+)")


class CheckoutProcess:
    """``checkout_server.py`` as a child process on a free port, its output in a file."""

    def __init__(self, log: Path, endpoint: str, *extra: str) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, str(CHECKOUT_SERVER)),
                    *("--listen=127.0.0.1:0", f"--endpoint={endpoint}", *extra),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.address = self.instance = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (match := SERVING.search(self.output())) is None:
            assert self.process.poll() is None, f"checkout server exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"checkout server not serving:\n{self.output()}"
            time.sleep(0.05)
        self.address, self.instance = match.group(1), match.group(2)

    def terminate(self, timeout: float = 10) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def checkout_factory(tmp_path: Path) -> Iterator[Callable[..., CheckoutProcess]]:
    started: list[CheckoutProcess] = []

    def start(name: str, endpoint: str, *extra: str) -> CheckoutProcess:
        started.append(CheckoutProcess(tmp_path / f"{name}.log", endpoint, *extra))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def reflected_checkout(channel: grpc.Channel) -> tuple[list[str], Callable[..., dict[str, Any]]]:
    """The services the server lists, and Checkout called from its reflected descriptors."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = list(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName(SERVICE).methods_by_name["Checkout"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{SERVICE}/Checkout",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )

    def checkout(**fields: Any) -> dict[str, Any]:
        response = call(json_format.ParseDict(fields, request_class()), timeout=5)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    return services, checkout


def test_checkout_server_serves_degrades_and_stops_cleanly(
    etcd: EtcdMember,
    replica_factory: Callable[..., ReplicaProcess],
    checkout_factory: Callable[..., CheckoutProcess],
) -> None:
    replica = replica_factory("r1", [etcd.endpoint])
    wait_for(lambda: (get_leader(replica.address) or cluster_pb2.GetLeaderResponse()).is_self, 10)
    # Two instances side by side (their setups race, harmlessly): one whose payment
    # provider fails every charge.
    checkout = checkout_factory("checkout", replica.address, "--chaos")
    failing = checkout_factory("failing", replica.address, "--payments-failure-rate=1")
    checkout.wait_serving()
    failing.wait_serving()

    bulwark = grpc.insecure_channel(replica.address)
    channel = grpc.insecure_channel(checkout.address)
    failing_channel = grpc.insecure_channel(failing.address)
    try:
        # A payment that fails with the breaker closed fails the call (one failure
        # is far below the breaker's 50 calls minimum: it stays CLOSED).
        _, failing_checkout = reflected_checkout(failing_channel)
        with pytest.raises(grpc.RpcError) as failed:
            failing_checkout(user_id="bob", amount_cents=500)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "payment failed" in (failed.value.details() or "")
        assert failing.terminate() == 0

        services, call = reflected_checkout(channel)
        assert SERVICE in services
        assert "grpc.reflection.v1alpha.ServerReflection" in services
        paid = call(
            order_id="o-1", user_id="alice", amount_cents=1299, items=[{"sku": "A", "quantity": 1}]
        )
        assert paid == {
            "order_id": "o-1",
            "status": "CHECKOUT_STATUS_PAID",
            "path": "express",
            "message": "paid $12.99 with the saved card",
        }
        with pytest.raises(grpc.RpcError) as invalid:
            call(user_id="alice", amount_cents=0)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        if Path(GRPCURL).exists():  # the README's command
            out = subprocess.run(
                [
                    *(GRPCURL, "-plaintext", "-d", '{"user_id": "alice", "amount_cents": 1299}'),
                    *(checkout.address, f"{SERVICE}/Checkout"),
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            assert json.loads(out)["status"] == "CHECKOUT_STATUS_PAID"

        registry = registry_pb2_grpc.RegistryServiceStub(bulwark)
        listed = registry.ListInstances(registry_pb2.ListInstancesRequest(service="checkout"))
        assert [(i.id, i.address) for i in listed.instances] == [
            (checkout.instance, checkout.address)
        ]

        # The breaker forced open: payments are queued, express checkout is off.
        breaker_pb2_grpc.CircuitBreakerServiceStub(bulwark).ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments",
                state=breaker_pb2.BREAKER_STATE_FORCED_OPEN,
                actor="test",
                reason="payments provider outage",
            ),
            timeout=5,
        )
        queued = wait_for(
            lambda: (
                (got := call(user_id="alice", amount_cents=250))["status"]
                == "CHECKOUT_STATUS_PAYMENT_QUEUED"
                and got["path"] == "standard"
                and got
            ),
            timeout=10,
        )
        assert "charged later" in queued["message"]
        feature = feature_pb2_grpc.FeatureServiceStub(bulwark).GetFeature(
            feature_pb2.GetFeatureRequest(name="express-checkout"), timeout=5
        )
        assert feature.feature.effective_status != feature_pb2.FEATURE_STATUS_AVAILABLE

        assert checkout.terminate() == 0
        output = checkout.output()
        assert "stopping" in output and "summary" in output, output
        listed = registry.ListInstances(registry_pb2.ListInstancesRequest(service="checkout"))
        assert list(listed.instances) == []
    finally:
        for open_channel in (bulwark, channel, failing_channel):
            open_channel.close()
