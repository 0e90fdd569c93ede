"""Unit tests for bulwark_server.ratelimits.config: validation, defaults, effective rate."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bulwark.v1 import ratelimit_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits.config import (
    UNIT_SECONDS,
    blocks_all,
    effective_per_unit,
    effective_rate,
    normalize_limit,
    presented_limit,
    stored_limit,
)

SECOND = ratelimit_pb2.RATE_UNIT_SECOND
MINUTE = ratelimit_pb2.RATE_UNIT_MINUTE
TOKEN_BUCKET = ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET
FIXED_WINDOW = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
Entry = ratelimit_pb2.DescriptorEntry
Rate = ratelimit_pb2.Rate


def make(**fields: Any) -> ratelimit_pb2.Limit:
    """A valid limit (edge/per_ip, 10 per second per remote_address) with overrides."""
    base: dict[str, Any] = {
        "domain": "edge",
        "name": "per_ip",
        "descriptor": [Entry(key="remote_address")],
        "rate": ratelimit_pb2.Rate(requests_per_unit=10, unit=SECOND),
    }
    base.update(fields)
    return ratelimit_pb2.Limit(**{k: v for k, v in base.items() if v is not None})


def test_unit_seconds() -> None:
    assert UNIT_SECONDS == {
        ratelimit_pb2.RATE_UNIT_SECOND: 1,
        ratelimit_pb2.RATE_UNIT_MINUTE: 60,
        ratelimit_pb2.RATE_UNIT_HOUR: 3600,
        ratelimit_pb2.RATE_UNIT_DAY: 86400,
    }


def test_defaults_are_filled() -> None:
    out = normalize_limit(make(adaptive=ratelimit_pb2.AdaptiveScaling(enabled=True)))
    assert out.algorithm == TOKEN_BUCKET
    assert out.burst == 10
    assert out.adaptive.floor == pytest.approx(0.1)
    assert out.rate == ratelimit_pb2.Rate(requests_per_unit=10, unit=SECOND)


def test_given_values_are_kept() -> None:
    given = make(
        burst=25,
        algorithm=TOKEN_BUCKET,
        shadow_mode=True,
        adaptive=ratelimit_pb2.AdaptiveScaling(enabled=True, floor=0.25, load=0.5),
        descriptor=[Entry(key="path", value="/api/*"), Entry(key="method", value="GET")],
    )
    assert normalize_limit(given) == given


def test_floor_default_applies_only_when_adaptive_is_enabled() -> None:
    out = normalize_limit(make(adaptive=ratelimit_pb2.AdaptiveScaling(enabled=False, load=0.5)))
    assert out.adaptive.floor == 0.0
    assert out.adaptive.load == 0.5


def test_output_only_fields_are_cleared() -> None:
    given = make(revision=42, effective_rate=ratelimit_pb2.Rate(requests_per_unit=3, unit=SECOND))
    out = normalize_limit(given)
    assert out.revision == 0
    assert not out.HasField("effective_rate")


def test_input_is_never_mutated_nor_shared() -> None:
    given = make(adaptive=ratelimit_pb2.AdaptiveScaling(enabled=True), revision=7)
    before = given.SerializeToString()
    out = normalize_limit(given)
    assert out is not given
    assert given.SerializeToString() == before
    assert given.burst == 0
    assert given.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_UNSPECIFIED
    assert given.adaptive.floor == 0.0
    out.rate.requests_per_unit = 99
    out.descriptor[0].value = "changed"
    out.adaptive.load = 0.9
    assert given.rate.requests_per_unit == 10
    assert given.descriptor[0].value == ""
    assert given.adaptive.load == 0.0


def test_fixed_window_burst_becomes_the_rate() -> None:
    out = normalize_limit(make(algorithm=FIXED_WINDOW))
    assert out.algorithm == FIXED_WINDOW
    assert out.burst == 10
    assert normalize_limit(make(algorithm=FIXED_WINDOW, burst=10)).burst == 10


def test_unlimited_needs_no_rate() -> None:
    out = normalize_limit(make(unlimited=True, rate=None))
    assert out.unlimited
    assert not out.HasField("rate")
    assert out.burst == 0
    assert effective_rate(out) == ratelimit_pb2.Rate()


def test_unlimited_with_a_rate_validates_and_keeps_it() -> None:
    out = normalize_limit(make(unlimited=True))
    assert out.rate.requests_per_unit == 10
    assert out.burst == 10
    with pytest.raises(InvalidArgument) as err:
        normalize_limit(make(unlimited=True, rate=ratelimit_pb2.Rate(requests_per_unit=-1)))
    assert err.value.field == "limit.rate.requests_per_unit"


@pytest.mark.parametrize(
    "fields",
    [
        {"rate": ratelimit_pb2.Rate(requests_per_unit=1, unit=ratelimit_pb2.RATE_UNIT_DAY)},
        {"rate": ratelimit_pb2.Rate(requests_per_unit=1_000_000_000, unit=SECOND)},
        {"burst": 1_000_000_000},
        {"descriptor": [Entry(key="k" * 128, value="v" * 256)]},
        {"descriptor": [Entry(key=f"k{i}") for i in range(16)]},
        {"descriptor": [Entry(key="path", value="*")]},
        {"adaptive": ratelimit_pb2.AdaptiveScaling(enabled=True, floor=1.0, load=1.0)},
    ],
)
def test_boundary_values_are_accepted(fields: dict[str, Any]) -> None:
    out = normalize_limit(make(**fields))
    for name, value in fields.items():
        assert getattr(out, name) == value


INVALID = [
    ({"domain": ""}, "limit.domain"),
    ({"domain": "bad domain"}, "limit.domain"),
    ({"name": "-x"}, "limit.name"),
    ({"descriptor": []}, "limit.descriptor"),
    ({"descriptor": [Entry(key=f"k{i}") for i in range(17)]}, "limit.descriptor"),
    ({"descriptor": [Entry(key="")]}, "limit.descriptor[0].key"),
    ({"descriptor": [Entry(key="a"), Entry(key="k" * 129)]}, "limit.descriptor[1].key"),
    ({"descriptor": [Entry(key="tab\there")]}, "limit.descriptor[0].key"),
    ({"descriptor": [Entry(key="a"), Entry(key="a")]}, "limit.descriptor[1].key"),
    ({"descriptor": [Entry(key="a", value="v" * 257)]}, "limit.descriptor[0].value"),
    ({"descriptor": [Entry(key="a", value="new\nline")]}, "limit.descriptor[0].value"),
    ({"descriptor": [Entry(key="path", value="/a*/b")]}, "limit.descriptor[0].value"),
    ({"descriptor": [Entry(key="path", value="**")]}, "limit.descriptor[0].value"),
    ({"rate": None}, "limit.rate.requests_per_unit"),
    ({"rate": Rate(requests_per_unit=-5, unit=SECOND)}, "limit.rate.requests_per_unit"),
    ({"rate": Rate(requests_per_unit=0)}, "limit.rate.unit"),
    ({"rate": Rate(requests_per_unit=0, unit=SECOND), "burst": 1}, "limit.burst"),
    (
        {"rate": ratelimit_pb2.Rate(requests_per_unit=1_000_000_001, unit=SECOND)},
        "limit.rate.requests_per_unit",
    ),
    ({"rate": ratelimit_pb2.Rate(requests_per_unit=5)}, "limit.rate.unit"),
    ({"rate": ratelimit_pb2.Rate(requests_per_unit=5, unit=9)}, "limit.rate.unit"),
    ({"algorithm": 7}, "limit.algorithm"),
    ({"burst": 9}, "limit.burst"),
    ({"burst": -1}, "limit.burst"),
    ({"burst": 1_000_000_001}, "limit.burst"),
    ({"algorithm": FIXED_WINDOW, "burst": 20}, "limit.burst"),
    ({"algorithm": FIXED_WINDOW, "burst": 5}, "limit.burst"),
    ({"unlimited": True, "rate": None, "burst": 5}, "limit.burst"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(floor=1.5)}, "limit.adaptive.floor"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(floor=-0.1)}, "limit.adaptive.floor"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(floor=math.nan)}, "limit.adaptive.floor"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(enabled=True, load=2.0)}, "limit.adaptive.load"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(load=math.inf)}, "limit.adaptive.load"),
    ({"adaptive": ratelimit_pb2.AdaptiveScaling(load=math.nan)}, "limit.adaptive.load"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID)
def test_invalid_values_name_their_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        normalize_limit(make(**fields))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_messages_say_what_is_wrong() -> None:
    with pytest.raises(InvalidArgument, match="burst below the sustained rate"):
        normalize_limit(make(burst=9))
    with pytest.raises(InvalidArgument, match="a fixed window has no burst"):
        normalize_limit(make(algorithm=FIXED_WINDOW, burst=20))
    with pytest.raises(InvalidArgument, match=r"'\*' is only allowed as the last character"):
        normalize_limit(make(descriptor=[Entry(key="path", value="/a*/b")]))


def adaptive(base: int, *, floor: float = 0.0, load: float = 0.0, enabled: bool = True) -> Any:
    return normalize_limit(
        make(
            rate=ratelimit_pb2.Rate(requests_per_unit=base, unit=MINUTE),
            adaptive=ratelimit_pb2.AdaptiveScaling(enabled=enabled, floor=floor, load=load),
        )
    )


def test_effective_rate_without_adaptive_is_the_base() -> None:
    limit = adaptive(100, load=0.9, enabled=False)
    assert effective_per_unit(limit) == 100.0
    assert effective_rate(limit) == ratelimit_pb2.Rate(requests_per_unit=100, unit=MINUTE)


@pytest.mark.parametrize(
    ("base", "floor", "load", "per_unit", "rate"),
    [
        (100, 0.0, 0.0, 100.0, 100),
        # float32 stores 0.3 as 0.30000001...; the effective rate must still be 70.
        (100, 0.0, 0.3, 70.0, 70),
        (100, 0.0, 0.95, 10.0, 10),  # default floor 0.1 wins over 1 - 0.95
        (100, 0.5, 0.25, 75.0, 75),
        (100, 0.5, 0.8, 50.0, 50),
        (100, 1.0, 1.0, 100.0, 100),
        (7, 0.0, 0.5, 3.5, 3),  # rounded down
        (3, 0.1, 1.0, 1.0, 1),  # 0.3 lifted to 1: never below 1
        (1, 0.1, 0.9, 1.0, 1),
    ],
)
def test_effective_rate_scales_with_load_and_floor(
    base: int, floor: float, load: float, per_unit: float, rate: int
) -> None:
    limit = adaptive(base, floor=floor, load=load)
    assert effective_per_unit(limit) == pytest.approx(per_unit, abs=1e-9)
    assert effective_rate(limit) == ratelimit_pb2.Rate(requests_per_unit=rate, unit=MINUTE)


def test_effective_rate_applies_the_default_floor_to_an_unnormalized_limit() -> None:
    raw = make(adaptive=ratelimit_pb2.AdaptiveScaling(enabled=True, load=1.0))
    assert effective_per_unit(raw) == pytest.approx(1.0)  # 10 * 0.1
    assert effective_rate(raw).requests_per_unit == 1


def test_replaces_are_validated_and_deduplicated() -> None:
    out = normalize_limit(make(replaces=["other", "other", "third"]))
    assert list(out.replaces) == ["other", "third"]
    for replaces, field in (
        (["bad name"], "limit.replaces[0]"),
        ([make().name], "limit.replaces[0]"),
        ([f"n{i}" for i in range(17)], "limit.replaces"),
    ):
        with pytest.raises(InvalidArgument) as err:
            normalize_limit(make(replaces=replaces))
        assert err.value.field == field


@pytest.mark.parametrize("algorithm", [TOKEN_BUCKET, FIXED_WINDOW])
def test_a_rate_of_zero_with_a_unit_is_a_limit_that_blocks_every_request(algorithm: int) -> None:
    out = normalize_limit(make(rate=Rate(requests_per_unit=0, unit=SECOND), algorithm=algorithm))
    assert out.HasField("rate") and out.rate.unit == SECOND and out.rate.requests_per_unit == 0
    assert out.burst == 0
    assert blocks_all(out)
    assert effective_rate(out) == Rate(requests_per_unit=0, unit=SECOND)
    # Load scaling cannot raise it above 0, and the stored bytes read back the same.
    adaptive = ratelimit_pb2.AdaptiveScaling(enabled=True, load=0.5)
    scaled = normalize_limit(make(rate=Rate(requests_per_unit=0, unit=SECOND), adaptive=adaptive))
    assert effective_rate(scaled) == Rate(requests_per_unit=0, unit=SECOND)
    assert ratelimit_pb2.Limit.FromString(out.SerializeToString()) == out
    assert not blocks_all(normalize_limit(make()))
    assert not blocks_all(normalize_limit(make(unlimited=True, rate=Rate(unit=SECOND))))


@pytest.mark.parametrize("algorithm", [TOKEN_BUCKET, FIXED_WINDOW])
@pytest.mark.parametrize("unit", list(UNIT_SECONDS))
def test_a_blocking_limit_is_stored_as_1_per_unit_with_the_flag(algorithm: int, unit: int) -> None:
    written = make(rate=Rate(requests_per_unit=0, unit=unit), algorithm=algorithm)
    shown = normalize_limit(written)
    assert shown.blocks_all and shown.rate == Rate(requests_per_unit=0, unit=unit)
    assert shown.burst == 0
    stored = stored_limit(shown)
    # What a replica of the previous version reads: it ignores blocks_all (an unknown
    # field to it) and its rule is requests_per_unit 1 or more with a unit and a
    # burst at least that: the bytes must keep that rule.
    assert stored.blocks_all
    assert stored.rate == Rate(requests_per_unit=1, unit=unit)
    assert stored.burst == 1
    legacy = ratelimit_pb2.Limit()
    legacy.CopyFrom(stored)
    legacy.ClearField("blocks_all")
    assert normalize_limit(legacy) == legacy  # valid as is under the previous rules
    assert effective_rate(legacy) == Rate(requests_per_unit=1, unit=unit)
    # New code reads the stored bytes as blocking, whichever form it holds.
    assert blocks_all(stored) and blocks_all(shown)
    assert effective_rate(stored) == Rate(requests_per_unit=0, unit=unit)
    assert effective_per_unit(stored) == 0.0
    # Presented as written; every form normalizes to the same limit (an old
    # client writing back the stored form it read from an old replica, flag kept
    # as an unknown field, included).
    assert presented_limit(stored) == shown
    assert normalize_limit(stored) == shown
    assert normalize_limit(presented_limit(stored)) == shown
    assert stored_limit(normalize_limit(stored)) == stored


def test_the_stored_form_of_other_limits_is_the_limit_itself() -> None:
    for limit in (
        normalize_limit(make()),
        normalize_limit(make(unlimited=True, rate=None)),
        normalize_limit(make(algorithm=FIXED_WINDOW, rate=Rate(requests_per_unit=1, unit=SECOND))),
    ):
        assert not limit.blocks_all
        assert stored_limit(limit) == limit == presented_limit(limit)
    # An unlimited limit keeping a rate of 0 for later is stored the same safe way.
    kept = normalize_limit(make(unlimited=True, rate=Rate(requests_per_unit=0, unit=MINUTE)))
    assert kept.blocks_all and not blocks_all(kept)
    assert stored_limit(kept).rate == Rate(requests_per_unit=1, unit=MINUTE)
    assert presented_limit(stored_limit(kept)) == kept


def test_blocks_all_on_input() -> None:
    # The flag alone, with a rate of 0, or with the stored form's rate of 1 blocks.
    for rate, burst in ((0, 0), (1, 0), (1, 1)):
        out = normalize_limit(
            make(rate=Rate(requests_per_unit=rate, unit=SECOND), burst=burst, blocks_all=True)
        )
        assert out.blocks_all and out.rate.requests_per_unit == 0 and out.burst == 0
    for fields, field in (
        ({"rate": Rate(requests_per_unit=5, unit=SECOND)}, "limit.rate.requests_per_unit"),
        ({"rate": Rate(requests_per_unit=1, unit=SECOND), "burst": 2}, "limit.burst"),
        ({"rate": Rate(requests_per_unit=0, unit=SECOND), "burst": 1}, "limit.burst"),
        ({"rate": None, "unlimited": True}, "limit.blocks_all"),
    ):
        with pytest.raises(InvalidArgument) as err:
            normalize_limit(make(blocks_all=True, **fields))
        assert err.value.field == field
