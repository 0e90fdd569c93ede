"""Unit tests for bulwark_server.ratelimits.descriptors: validation, matching, precedence."""

from __future__ import annotations

import itertools

import pytest

from bulwark.v1 import ratelimit_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits.descriptors import (
    best_match,
    counter_key,
    matches,
    specificity,
    validate_descriptor,
    validate_descriptors,
)

Entry = ratelimit_pb2.DescriptorEntry
Descriptor = ratelimit_pb2.RateLimitDescriptor


def entries(*pairs: tuple[str, str]) -> list[ratelimit_pb2.DescriptorEntry]:
    return [Entry(key=k, value=v) for k, v in pairs]


def limit(name: str, *pairs: tuple[str, str], domain: str = "edge") -> ratelimit_pb2.Limit:
    return ratelimit_pb2.Limit(domain=domain, name=name, descriptor=entries(*pairs))


def desc(*pairs: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return Descriptor(entries=entries(*pairs))


# --- validation -----------------------------------------------------------------------


def test_valid_descriptors_pass() -> None:
    validate_descriptors([desc(("remote_address", "10.0.0.1")), desc(("path", ""))])
    validate_descriptors([desc(*[(f"k{i}", "v" * 256) for i in range(16)])])
    validate_descriptors([desc(("k" * 128, ""))] * 100)


@pytest.mark.parametrize(
    ("descriptors", "field"),
    [
        ([], "descriptors"),
        ([desc(("a", "1"))] * 101, "descriptors"),
        ([Descriptor()], "descriptors[0].entries"),
        ([desc(("a", "1")), Descriptor()], "descriptors[1].entries"),
        ([desc(*[(f"k{i}", "") for i in range(17)])], "descriptors[0].entries"),
        ([desc(("a", "1"), ("", "2"))], "descriptors[0].entries[1].key"),
        ([desc(("k" * 129, ""))], "descriptors[0].entries[0].key"),
        ([desc(("a", "1")), desc(("b", "v" * 257))], "descriptors[1].entries[0].value"),
    ],
)
def test_invalid_descriptors_name_their_field(
    descriptors: list[ratelimit_pb2.RateLimitDescriptor], field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_descriptors(descriptors)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_empty_list_has_a_clear_message() -> None:
    with pytest.raises(InvalidArgument, match="at least one descriptor is required"):
        validate_descriptors([])


def test_field_prefix_and_max_count_are_the_callers() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_descriptors([desc(("a", "1"))] * 3, field="request.descriptors", max_count=2)
    assert err.value.field == "request.descriptors"
    with pytest.raises(InvalidArgument) as err:
        validate_descriptor(Descriptor(), "descriptor")
    assert err.value.field == "descriptor.entries"


# --- matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "request_entries", "expected"),
    [
        # Any value (empty pattern value), including an empty request value.
        ([("remote_address", "")], [("remote_address", "10.0.0.1")], True),
        ([("remote_address", "")], [("remote_address", "")], True),
        ([("remote_address", "*")], [("remote_address", "10.0.0.1")], True),
        # Exact.
        ([("path", "/login")], [("path", "/login")], True),
        ([("path", "/login")], [("path", "/login/")], False),
        ([("path", "/login")], [("path", "/LOGIN")], False),
        # Prefix.
        ([("path", "/api/*")], [("path", "/api/users")], True),
        ([("path", "/api/*")], [("path", "/api/")], True),
        ([("path", "/api/*")], [("path", "/api")], False),
        ([("path", "/api/*")], [("path", "/web/api/x")], False),
        # A "*" in a request value is an ordinary character.
        ([("path", "/a")], [("path", "/*")], False),
        # Length and key order.
        ([("a", "")], [("a", "1"), ("b", "2")], False),
        ([("a", ""), ("b", "")], [("a", "1")], False),
        ([("a", ""), ("b", "")], [("b", "2"), ("a", "1")], False),
        ([("a", ""), ("b", "")], [("a", "1"), ("c", "2")], False),
        ([("a", "1"), ("b", "")], [("a", "1"), ("b", "2")], True),
        ([("a", "1"), ("b", "")], [("a", "2"), ("b", "2")], False),
    ],
)
def test_matching_rules(
    pattern: list[tuple[str, str]], request_entries: list[tuple[str, str]], expected: bool
) -> None:
    assert matches(entries(*pattern), entries(*request_entries)) is expected


def test_specificity_orders_exact_over_prefix_over_any() -> None:
    exact = specificity(entries(("path", "/api/users")))
    long_prefix = specificity(entries(("path", "/api/u*")))
    prefix = specificity(entries(("path", "/api/*")))
    star = specificity(entries(("path", "*")))
    any_value = specificity(entries(("path", "")))
    assert exact > long_prefix > prefix > star
    assert star == any_value


def test_specificity_compares_entry_by_entry_from_the_first() -> None:
    first_exact = specificity(entries(("a", "1"), ("b", "")))
    second_exact = specificity(entries(("a", ""), ("b", "2")))
    assert first_exact > second_exact


def test_best_match_prefers_the_most_specific() -> None:
    limits = [
        limit("any", ("path", "")),
        limit("prefix", ("path", "/api/*")),
        limit("exact", ("path", "/api/users")),
        limit("other", ("path", "/web")),
        limit("two_keys", ("path", ""), ("method", "")),
    ]
    assert best_match(limits, entries(("path", "/api/users"))).name == "exact"
    assert best_match(limits, entries(("path", "/api/orders"))).name == "prefix"
    assert best_match(limits, entries(("path", "/static/x"))).name == "any"
    assert best_match(limits, entries(("path", "/x"), ("method", "GET"))).name == "two_keys"
    assert best_match(limits, entries(("method", "GET"))) is None
    assert best_match([], entries(("path", "/"))) is None


def test_best_match_first_entry_decides_before_the_second() -> None:
    limits = [
        limit("by_method", ("tenant", ""), ("method", "GET")),
        limit("by_tenant", ("tenant", "acme"), ("method", "")),
    ]
    assert best_match(limits, entries(("tenant", "acme"), ("method", "GET"))).name == "by_tenant"


def test_best_match_ties_break_by_name_whatever_the_order() -> None:
    limits = [
        limit("b", ("ip", "")),
        limit("a", ("ip", "*")),
        limit("c", ("ip", "")),
        limit("a", ("ip", ""), domain="other"),
    ]
    winners = {
        (found.domain, found.name)
        for order in itertools.permutations(limits)
        if (found := best_match(order, entries(("ip", "10.0.0.1")))) is not None
    }
    assert winners == {("edge", "a")}


def test_best_match_accepts_any_iterable() -> None:
    limits = iter([limit("x", ("ip", "")), limit("y", ("ip", "10.0.0.1"))])
    assert best_match(limits, entries(("ip", "10.0.0.1"))).name == "y"


# --- counter identity -----------------------------------------------------------------


def test_counter_key_counts_each_actual_value_separately() -> None:
    per_ip = limit("per_ip", ("remote_address", ""))
    one = counter_key(per_ip, entries(("remote_address", "10.0.0.1")))
    two = counter_key(per_ip, entries(("remote_address", "10.0.0.2")))
    assert one == ("edge", "per_ip", "10.0.0.1")
    assert one != two
    assert one == counter_key(per_ip, entries(("remote_address", "10.0.0.1")))


def test_counter_key_for_prefix_uses_the_actual_value() -> None:
    api = limit("api", ("path", "/api/*"), ("method", "GET"))
    users = counter_key(api, entries(("path", "/api/users"), ("method", "GET")))
    orders = counter_key(api, entries(("path", "/api/orders"), ("method", "GET")))
    assert users == ("edge", "api", "/api/users", "GET")
    assert users != orders


def test_counter_key_separates_limits_and_domains() -> None:
    request = entries(("ip", "1"))
    assert counter_key(limit("a", ("ip", "")), request) != counter_key(
        limit("b", ("ip", "")), request
    )
    assert counter_key(limit("a", ("ip", "")), request) != counter_key(
        limit("a", ("ip", ""), domain="other"), request
    )


def test_counter_key_refuses_a_limit_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="does not match"):
        counter_key(limit("exact", ("path", "/a")), entries(("path", "/b")))


def test_an_own_limit_is_an_unnamed_fixed_window_counted_by_entries_and_unit() -> None:
    from bulwark_server.ratelimits.descriptors import own_counter_key, own_limit

    rate = ratelimit_pb2.Rate(requests_per_unit=5, unit=ratelimit_pb2.RATE_UNIT_MINUTE)
    limit = own_limit("edge", rate)
    assert (limit.name, limit.rate, limit.burst) == ("", rate, 5)
    assert limit.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
    entries = [ratelimit_pb2.DescriptorEntry(key="a", value="1")]
    key = own_counter_key("edge", rate, entries)
    assert key == ("edge", "", str(ratelimit_pb2.RATE_UNIT_MINUTE), "a", "1")
    other = ratelimit_pb2.Rate(requests_per_unit=9, unit=ratelimit_pb2.RATE_UNIT_MINUTE)
    assert own_counter_key("edge", other, entries) == key
    hour = ratelimit_pb2.Rate(requests_per_unit=5, unit=ratelimit_pb2.RATE_UNIT_HOUR)
    assert own_counter_key("edge", hour, entries) != key
