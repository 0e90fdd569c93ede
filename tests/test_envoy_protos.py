"""Envoy's rate-limit protocol: the generated code takes no top-level package, and the wire
is Envoy's (``test_vendored_protos.py`` checks the committed code is current).

The wire tests do not trust our .proto files: requests are encoded by hand with
the field numbers and wire types of Envoy's rls.proto and ratelimit.proto, and
responses are decoded by hand the same way.
"""

from __future__ import annotations

from pathlib import Path

from bulwark_server.envoy_api.extensions.common.ratelimit.v3 import ratelimit_pb2
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "server" / "bulwark_server" / "envoy_api"

VARINT, LENGTH = 0, 2


def test_generated_code_takes_no_top_level_envoy_package():
    for path in COMMITTED.rglob("*.py*"):
        if path.suffix not in (".py", ".pyi"):
            continue  # bytecode
        text = path.read_text()
        assert "from envoy." not in text and "import envoy" not in text, path


# -- names and numbers, as Envoy declares them -----------------------------------------


def _fields(message: type) -> dict[str, tuple[int, int]]:
    """name → (number, type) of a generated message class."""
    return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_full_names_and_field_numbers_are_envoys():
    from google.protobuf.descriptor import FieldDescriptor as F

    service = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"]
    assert service.full_name == "envoy.service.ratelimit.v3.RateLimitService"
    method = service.methods_by_name["ShouldRateLimit"]
    assert method.input_type.full_name == "envoy.service.ratelimit.v3.RateLimitRequest"
    assert method.output_type.full_name == "envoy.service.ratelimit.v3.RateLimitResponse"
    assert rls_pb2_grpc.RateLimitServiceStub is not None

    descriptor = ratelimit_pb2.RateLimitDescriptor
    assert descriptor.DESCRIPTOR.full_name == (
        "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor"
    )
    assert _fields(descriptor) == {
        "entries": (1, F.TYPE_MESSAGE),
        "limit": (2, F.TYPE_MESSAGE),
        "hits_addend": (3, F.TYPE_MESSAGE),
    }
    assert descriptor.DESCRIPTOR.fields_by_name["hits_addend"].message_type.full_name == (
        "google.protobuf.UInt64Value"
    )
    assert _fields(descriptor.Entry) == {"key": (1, F.TYPE_STRING), "value": (2, F.TYPE_STRING)}
    assert _fields(descriptor.RateLimitOverride) == {
        "requests_per_unit": (1, F.TYPE_UINT32),
        "unit": (2, F.TYPE_ENUM),
    }
    assert _fields(rls_pb2.RateLimitRequest) == {
        "domain": (1, F.TYPE_STRING),
        "descriptors": (2, F.TYPE_MESSAGE),
        "hits_addend": (3, F.TYPE_UINT32),
    }
    response = rls_pb2.RateLimitResponse
    assert _fields(response) == {
        "overall_code": (1, F.TYPE_ENUM),
        "statuses": (2, F.TYPE_MESSAGE),
        "response_headers_to_add": (3, F.TYPE_MESSAGE),
    }
    headers = response.DESCRIPTOR.fields_by_name["response_headers_to_add"].message_type
    assert headers.full_name == "envoy.config.core.v3.HeaderValue"
    assert {f.name: (f.number, f.type) for f in headers.fields} == {
        "key": (1, F.TYPE_STRING),
        "value": (2, F.TYPE_STRING),
    }
    assert _fields(response.DescriptorStatus) == {
        "code": (1, F.TYPE_ENUM),
        "current_limit": (2, F.TYPE_MESSAGE),
        "limit_remaining": (3, F.TYPE_UINT32),
        "duration_until_reset": (4, F.TYPE_MESSAGE),
    }
    assert _fields(response.RateLimit) == {
        "name": (3, F.TYPE_STRING),
        "requests_per_unit": (1, F.TYPE_UINT32),
        "unit": (2, F.TYPE_ENUM),
    }
    assert dict(response.Code.items()) == {"UNKNOWN": 0, "OK": 1, "OVER_LIMIT": 2}
    assert dict(response.RateLimit.Unit.items()) == {
        "UNKNOWN": 0,
        "SECOND": 1,
        "MINUTE": 2,
        "HOUR": 3,
        "DAY": 4,
        "MONTH": 5,
        "YEAR": 6,
    }


# -- hand-made wire bytes ---------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3 | VARINT) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | LENGTH) + _varint(len(data)) + data


def _decode(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: varints as ints, the rest as bytes."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            out.append((number, varint()))
        elif wire == LENGTH:
            size = varint()
            out.append((number, data[i : i + size]))
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def test_a_request_encoded_with_envoys_field_numbers_decodes():
    entry = _field(1, "remote_address") + _field(2, "10.0.0.1")
    override = _field(1, 7) + _field(2, 2)  # 7 per MINUTE
    hits = _field(1, 5)  # google.protobuf.UInt64Value{value: 5}
    descriptor = _field(1, entry) + _field(2, override) + _field(3, hits)
    wire = (
        _field(1, "edge")
        + _field(2, descriptor)
        + _field(2, _field(1, _field(1, "k")))
        + (_field(3, 4))
    )

    request = rls_pb2.RateLimitRequest.FromString(wire)
    assert request.domain == "edge"
    assert request.hits_addend == 4
    assert len(request.descriptors) == 2
    first = request.descriptors[0]
    assert [(e.key, e.value) for e in first.entries] == [("remote_address", "10.0.0.1")]
    assert first.limit.requests_per_unit == 7 and first.limit.unit == 2
    assert first.HasField("hits_addend") and first.hits_addend.value == 5
    second = request.descriptors[1]
    assert [(e.key, e.value) for e in second.entries] == [("k", "")]
    assert not second.HasField("hits_addend"), "unset must stay distinguishable from 0"
    assert request.SerializeToString() == wire


def test_a_zero_descriptor_hits_addend_is_present_on_the_wire():
    descriptor = ratelimit_pb2.RateLimitDescriptor()
    descriptor.hits_addend.value = 0
    assert _decode(descriptor.SerializeToString()) == [(3, b"")]
    assert ratelimit_pb2.RateLimitDescriptor.FromString(_field(3, b"")).HasField("hits_addend")


def test_a_response_decodes_with_envoys_field_numbers():
    response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT)
    status = response.statuses.add(code=rls_pb2.RateLimitResponse.OVER_LIMIT, limit_remaining=3)
    status.current_limit.name = "per_ip"
    status.current_limit.requests_per_unit = 10
    status.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.HOUR
    status.duration_until_reset.seconds = 42

    top = _decode(response.SerializeToString())
    assert top[0] == (1, 2)
    assert top[1][0] == 2
    fields = dict(_decode(top[1][1]))  # type: ignore[arg-type]
    assert fields[1] == 2 and fields[3] == 3
    assert dict(_decode(fields[2])) == {3: b"per_ip", 1: 10, 2: 3}  # type: ignore[arg-type]
    assert dict(_decode(fields[4])) == {1: 42}  # type: ignore[arg-type]
