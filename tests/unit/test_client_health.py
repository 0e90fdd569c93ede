"""The client's own encoding of the standard health check, against grpc_health's messages."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from bulwark._watching import HEALTH_CHECK_METHOD, health_request, health_status

Status = health_pb2.HealthCheckResponse


def test_the_request_is_the_whole_server_check() -> None:
    assert health_request() == health_pb2.HealthCheckRequest().SerializeToString()
    assert health_pb2.HealthCheckRequest.FromString(health_request()).service == ""
    assert HEALTH_CHECK_METHOD == "/grpc.health.v1.Health/Check"


@pytest.mark.parametrize("status", list(Status.ServingStatus.values()))
def test_every_status_reads_back(status: int) -> None:
    assert health_status(Status(status=status).SerializeToString()) == status


def test_unknown_fields_are_skipped() -> None:
    # A newer server may add fields: a string (wire type 2), a fixed64 and a varint.
    extra = b"\x12\x03abc" + b"\x19" + bytes(8) + b"\x20\x96\x01"
    assert health_status(extra + Status(status=Status.SERVING).SerializeToString()) == 1
    assert health_status(Status(status=Status.NOT_SERVING).SerializeToString() + extra) == 2


@pytest.mark.parametrize("data", [b"\x08", b"\x12\x05ab", b"\x0f", b"\x08\x80"])
def test_a_malformed_answer_reads_as_unknown(data: bytes) -> None:
    assert health_status(data) == 0
