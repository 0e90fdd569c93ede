"""Unit tests for bulwark_server.registry.rules: registration TTLs and defaults, loads, drains."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from bulwark.v1 import registry_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.registry import rules


def _instance(**fields: object) -> registry_pb2.Instance:
    return registry_pb2.Instance(service="db", id="db-1", address="10.0.0.1:5432", **fields)


def test_registration_fills_defaults_on_a_copy() -> None:
    given = _instance()
    out = rules.registration(given)
    assert out.ttl == Duration(seconds=10)
    assert out.health == registry_pb2.INSTANCE_HEALTH_SERVING
    # The request is left as it was.
    assert not given.HasField("ttl")
    assert given.health == registry_pb2.INSTANCE_HEALTH_UNSPECIFIED


def test_registration_keeps_a_given_health() -> None:
    out = rules.registration(_instance(health=registry_pb2.INSTANCE_HEALTH_NOT_SERVING))
    assert out.health == registry_pb2.INSTANCE_HEALTH_NOT_SERVING


@pytest.mark.parametrize(
    ("ttl", "stored"),
    [
        (Duration(seconds=2), 2),
        (Duration(seconds=2, nanos=1), 3),
        (Duration(seconds=7, nanos=500_000_000), 8),
        (Duration(seconds=300), 300),
    ],
)
def test_registration_rounds_the_ttl_up_to_whole_seconds(ttl: Duration, stored: int) -> None:
    out = rules.registration(_instance(ttl=ttl))
    assert out.ttl == Duration(seconds=stored)


@pytest.mark.parametrize(
    "ttl", [Duration(seconds=1, nanos=999_999_999), Duration(seconds=301), Duration(seconds=0)]
)
def test_registration_refuses_a_ttl_out_of_bounds(ttl: Duration) -> None:
    with pytest.raises(InvalidArgument) as err:
        rules.registration(_instance(ttl=ttl))
    assert err.value.field == "instance.ttl"


@pytest.mark.parametrize("priority", [1001, -1001])
def test_registration_bounds_the_priority(priority: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        rules.registration(_instance(priority=priority))
    assert err.value.field == "instance.priority"
    assert rules.registration(_instance(priority=priority // abs(priority) * 1000)).priority


@pytest.mark.parametrize(
    ("load", "field"),
    [
        (registry_pb2.Load(in_flight=-1), "load.in_flight"),
        (registry_pb2.Load(in_flight=10**9 + 1), "load.in_flight"),
        (registry_pb2.Load(cpu=float("nan")), "load.cpu"),
        (registry_pb2.Load(memory=1000.5), "load.memory"),
        (registry_pb2.Load(replication_lag=Duration(seconds=-1)), "load.replication_lag"),
    ],
)
def test_load_bounds(load: registry_pb2.Load, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        rules.validate_load(load, "load")
    assert err.value.field == field


def test_registration_checks_the_load_under_its_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        rules.registration(_instance(load=registry_pb2.Load(cpu=-1)))
    assert err.value.field == "instance.load.cpu"


def test_drain_default_and_bounds() -> None:
    assert rules.drain_seconds(None) == rules.DEFAULT_DRAIN_S == 10.0
    assert rules.drain_seconds(Duration(seconds=0)) == 0.0
    assert rules.drain_seconds(Duration(seconds=300)) == 300.0
    with pytest.raises(InvalidArgument) as err:
        rules.drain_seconds(Duration(seconds=301))
    assert err.value.field == "drain_timeout"
