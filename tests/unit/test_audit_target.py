"""What an audit event says a request acts on."""

from __future__ import annotations

from bulwark.v1 import breaker_pb2, registry_pb2
from bulwark_server.security.audit import describe_target


def test_the_target_comes_from_the_request_or_one_nested_message() -> None:
    assert describe_target(breaker_pb2.GetBreakerRequest(name="payments")) == "name=payments"
    nested = registry_pb2.RegisterInstanceRequest(
        instance=registry_pb2.Instance(service="orders", id="o-1", address="127.0.0.1:1")
    )
    assert describe_target(nested) == "service=orders id=o-1"


def test_a_request_stream_has_no_target_before_it_is_read() -> None:
    # A bidi stream refused at admission hands the interceptor gRPC's receiver, not a
    # message; the event is still recorded, without a target.
    assert describe_target(object()) == ""  # type: ignore[arg-type]
