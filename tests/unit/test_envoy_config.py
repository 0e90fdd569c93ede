"""Unit tests for bulwark_server.ratelimits.envoy_config: envoyproxy/ratelimit YAML → limits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.envoy_config import (
    EnvoyConfigError,
    describe,
    load_file,
    parse_config,
    parse_limits,
    same_limit,
)
from bulwark_server.validation import NAME_RE

FIXED_WINDOW = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
SECOND = ratelimit_pb2.RATE_UNIT_SECOND
MINUTE = ratelimit_pb2.RATE_UNIT_MINUTE
HOUR = ratelimit_pb2.RATE_UNIT_HOUR
DAY = ratelimit_pb2.RATE_UNIT_DAY


def parse(yaml_text: str) -> list[ratelimit_pb2.Limit]:
    return parse_limits(textwrap.dedent(yaml_text), "test.yaml")


def pattern(limit: ratelimit_pb2.Limit) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in limit.descriptor]


def one(rate_limit: str) -> str:
    """A document with one descriptor ``a`` whose rate_limit is ``{<rate_limit>}``."""
    return f"domain: d\ndescriptors: [{{key: a, rate_limit: {{{rate_limit}}}}}]\n"


def error(yaml_text: str) -> str:
    with pytest.raises(EnvoyConfigError) as exc:
        parse(yaml_text)
    return str(exc.value)


# -- what becomes a limit ---------------------------------------------------------------


def test_readme_example_1_top_level_key_values():
    limits = parse(
        """
        domain: mongo_cps
        descriptors:
          - key: database
            value: users
            rate_limit:
              unit: second
              requests_per_unit: 500
          - key: database
            value: default
            rate_limit:
              unit: second
              requests_per_unit: 500
        """
    )
    assert [(x.domain, x.name, pattern(x)) for x in limits] == [
        ("mongo_cps", "database_users", [("database", "users")]),
        ("mongo_cps", "database_default", [("database", "default")]),
    ]
    for limit in limits:
        assert limit.algorithm == FIXED_WINDOW
        assert limit.rate == ratelimit_pb2.Rate(requests_per_unit=500, unit=SECOND)
        assert limit.burst == 500  # normalized: a fixed window's burst is its rate
        assert not limit.shadow_mode and not limit.unlimited


def test_nested_descriptors_make_one_limit_per_path_with_a_rate_limit():
    limits = parse(
        """
        domain: messaging
        descriptors:
          - key: message_type
            value: marketing
            descriptors:
              - key: to_number
                rate_limit:
                  unit: day
                  requests_per_unit: 5
          - key: to_number
            rate_limit:
              unit: day
              requests_per_unit: 100
        """
    )
    # The placeholder (message_type=marketing) has no rate_limit, so no limit of its own.
    assert [(x.name, pattern(x), x.rate.requests_per_unit) for x in limits] == [
        (
            "message_type_marketing.to_number",
            [("message_type", "marketing"), ("to_number", "")],
            5,
        ),
        ("to_number", [("to_number", "")], 100),
    ]
    assert all(x.rate.unit == DAY for x in limits)


def test_a_node_with_a_rate_limit_and_children_makes_both_limits():
    limits = parse(
        """
        domain: edge
        descriptors:
          - key: tenant
            rate_limit: {unit: minute, requests_per_unit: 100}
            descriptors:
              - key: path
                value: /login
                rate_limit: {unit: minute, requests_per_unit: 5}
                descriptors:
                  - key: remote_address
                    rate_limit: {unit: hour, requests_per_unit: 20}
        """
    )
    assert [pattern(x) for x in limits] == [
        [("tenant", "")],
        [("tenant", ""), ("path", "/login")],
        [("tenant", ""), ("path", "/login"), ("remote_address", "")],
    ]
    assert [x.rate.unit for x in limits] == [MINUTE, MINUTE, HOUR]


def test_units_are_case_insensitive():
    limits = parse(
        """
        domain: d
        descriptors:
          - {key: a, rate_limit: {unit: SECOND, requests_per_unit: 1}}
          - {key: b, rate_limit: {unit: Minute, requests_per_unit: 1}}
          - {key: c, rate_limit: {unit: hour, requests_per_unit: 1}}
          - {key: e, rate_limit: {unit: dAy, requests_per_unit: 1}}
        """
    )
    assert [x.rate.unit for x in limits] == [SECOND, MINUTE, HOUR, DAY]


def test_wildcard_values_pass_through_as_prefix_patterns():
    limits = parse(
        """
        domain: example9
        descriptors:
          - key: key1
            value: value*
            rate_limit: {unit: minute, requests_per_unit: 20}
          - key: key2
            value: "*"
            rate_limit: {unit: minute, requests_per_unit: 20}
        """
    )
    assert [pattern(x) for x in limits] == [[("key1", "value*")], [("key2", "*")]]
    # '*' is not a name character: the derived name is sanitized and hashed.
    assert all(NAME_RE.match(x.name) for x in limits)
    assert limits[0].name.startswith("key1_value_-")


def test_shadow_mode_is_read_beside_rate_limit():
    limits = parse(
        """
        domain: example6
        descriptors:
          - key: service
            descriptors:
              - key: user
                value: user-a
                rate_limit: {requests_per_unit: 10, unit: second}
                shadow_mode: true
              - key: user
                value: user-b
                rate_limit: {requests_per_unit: 20, unit: second}
        """
    )
    assert [(x.name, x.shadow_mode) for x in limits] == [
        ("service.user_user-a", True),
        ("service.user_user-b", False),
    ]


def test_unlimited_needs_no_unit_and_ignores_requests_per_unit():
    limits = parse(
        """
        domain: internal
        descriptors:
          - key: ldap
            rate_limit:
              unlimited: true
          - key: sso
            rate_limit: {unlimited: yes, requests_per_unit: 7}
          - key: azure
            rate_limit: {unit: minute, requests_per_unit: 100, unlimited: false}
        """
    )
    assert [(x.name, x.unlimited, x.HasField("rate")) for x in limits] == [
        ("ldap", True, False),
        ("sso", True, False),
        ("azure", False, True),
    ]


def test_explicit_name_replaces_and_detailed_metric():
    entries = parse_config(
        textwrap.dedent(
            """
            domain: example7
            descriptors:
              - key: key_1
                value: value_1
                descriptors:
                  - key: user
                    value: bkthomps
                    detailed_metric: true
                    rate_limit:
                      name: specific_limit
                      requests_per_unit: 5
                      unit: second
              - key: key_2
                value: value_2
                descriptors:
                  - key: user
                    value: bkthomps
                    rate_limit:
                      replaces:
                        - name: specific_limit
                      requests_per_unit: 10
                      unit: second
            """
        )
    )
    assert [(e.limit.name, e.replaces, e.detailed_metric) for e in entries] == [
        ("specific_limit", (), True),
        ("key_2_value_2.user_bkthomps", ("specific_limit",), False),
    ]
    assert entries[0].path == "descriptors[0].descriptors[0].rate_limit"


def test_scalars_are_text_as_envoys_loader_reads_them():
    limits = parse(
        """
        domain: d
        descriptors:
          - key: code
            value: 010
            rate_limit: {unit: second, requests_per_unit: "3"}
          - key: flag
            value: "null"
            rate_limit: {unit: second, requests_per_unit: +4}
          - key: port
            value: 8080
            rate_limit: {unit: second, requests_per_unit: 5}
        """
    )
    assert [pattern(x) for x in limits] == [
        [("code", "010")],
        [("flag", "null")],
        [("port", "8080")],
    ]
    assert [x.rate.requests_per_unit for x in limits] == [3, 4, 5]


def test_a_node_without_rate_limit_or_children_makes_no_limit():
    assert parse("domain: d\ndescriptors:\n  - key: whitelisted\n") == []
    assert parse("domain: d\n") == []


def test_several_documents_several_domains():
    limits = parse(
        """
        domain: a
        descriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 1}}]
        ---
        domain: b
        descriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 2}}]
        """
    )
    assert [(x.domain, x.name) for x in limits] == [("a", "k"), ("b", "k")]


# -- names --------------------------------------------------------------------------------


def test_derived_names_are_deterministic_and_distinct_when_paths_read_alike():
    text = """
        domain: d
        descriptors:
          - key: a
            value: b
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: a_b
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: path
            value: /api
            rate_limit: {unit: second, requests_per_unit: 1}
          - key: path
            value: .api
            rate_limit: {unit: second, requests_per_unit: 1}
        """
    first = [x.name for x in parse(text)]
    assert first == [x.name for x in parse(text)]
    assert len(set(first)) == 4
    assert all(NAME_RE.match(n) for n in first)
    # "a=b" and "a_b" both read "a_b": both get a hash suffix.
    assert first[0] != "a_b" and first[0].startswith("a_b-")
    assert first[1] != "a_b" and first[1].startswith("a_b-")
    assert first[3] == "path_.api"  # already a valid name, unique: kept as is


def test_a_derived_name_never_takes_an_explicit_one():
    limits = parse(
        """
        domain: d
        descriptors:
          - key: x
            rate_limit: {unit: second, requests_per_unit: 1, name: y}
          - key: y
            rate_limit: {unit: second, requests_per_unit: 1}
        """
    )
    assert limits[0].name == "y"
    assert limits[1].name.startswith("y-")


def test_long_derived_names_are_cut_to_128_with_a_hash():
    deep = "".join(
        f"{'  ' * i}- key: key{i}\n{'  ' * i}  value: {'v' * 20}\n{'  ' * i}  descriptors:\n"
        for i in range(7)
    )
    text = "domain: d\ndescriptors:\n" + textwrap.indent(deep, "  ")
    text += (
        "  " * 8
        + "- key: last\n"
        + "  " * 8
        + "  rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    (limit,) = parse_limits(text)
    assert len(limit.name) == 128 and NAME_RE.match(limit.name)
    assert len(limit.descriptor) == 8


# -- errors name the path -------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("descriptors: []\n", "test.yaml: domain: is required"),
        ("domain: 'a b'\n", "test.yaml: domain: 'a b' is not a valid Bulwark domain"),
        ("domain: d\nfoo: 1\n", "test.yaml: foo: unknown key 'foo'"),
        ("- 1\n", "test.yaml: document: must be a mapping"),
        ("domain: d\ndescriptors: {key: a}\n", "descriptors: must be a list"),
        ("domain: d\ndescriptors: [{value: v}]\n", "descriptors[0].key: is required"),
        (
            "domain: d\ndescriptors:\n - {key: a}\n - {key: a}\n",
            "descriptors[1]: duplicate descriptor a=* (see descriptors[0])",
        ),
        (
            "domain: d\ndescriptors:\n - key: a\n   descriptors:\n"
            "    - {key: b, rate_limit: {unit: fortnight, requests_per_unit: 1}}\n",
            "descriptors[0].descriptors[0].rate_limit.unit: 'fortnight' is not a unit",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: month, requests_per_unit: 1}}]\n",
            "descriptors[0].rate_limit.unit: 'month' is not a unit Bulwark supports",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {requests_per_unit: 1}}]\n",
            "descriptors[0].rate_limit.unit: is required",
        ),
        (
            one("unit: second, requests_per_unit: -5"),
            "descriptors[0].rate_limit.requests_per_unit: must be a whole number, 0 or more",
        ),
        (
            one("unit: second, requests_per_unit: 1.5"),
            "descriptors[0].rate_limit.requests_per_unit: must be a whole number",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second}}]\n",
            "descriptors[0].rate_limit.requests_per_unit: is required",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, "
            "requests_per_unit: 2000000000}}]\n",
            "descriptors[0].rate_limit.requests_per_unit: must be 0-1000000000",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unlimited: true, unit: second}}]\n",
            "descriptors[0].rate_limit.unit: must not be set when unlimited is true",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " shadow_mode: true}}]\n",
            "descriptors[0].rate_limit.shadow_mode: unknown key 'shadow_mode' here; "
            "it belongs in the descriptor, beside rate_limit",
        ),
        (
            "domain: d\ndescriptors: [{key: a, unlimited: true}]\n",
            "descriptors[0].unlimited: unknown key 'unlimited' here; it belongs in rate_limit",
        ),
        (
            "domain: d\ndescriptors: [{key: a, shadow_mode: maybe}]\n",
            "descriptors[0].shadow_mode: must be true or false, got 'maybe'",
        ),
        (
            "domain: d\ndescriptors: [{key: a, value: 'x*y', rate_limit: {unit: second, "
            "requests_per_unit: 1}}]\n",
            "descriptors[0].value: '*' is only allowed as the last character",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " name: 'no spaces'}}]\n",
            "descriptors[0].rate_limit.name: 'no spaces' is not a valid name",
        ),
        (
            "domain: d\ndescriptors:\n - {key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " name: n}}\n - {key: b, rate_limit: {unit: second, requests_per_unit: 1, name: n}}\n",
            "descriptors[1].rate_limit.name: duplicate limit name 'n' in domain 'd' "
            "(see descriptors[0].rate_limit.name)",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " name: n, replaces: [{name: n}]}}]\n",
            "descriptors[0].rate_limit.replaces[0].name: a limit cannot replace itself",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " replaces: [{}]}}]\n",
            "descriptors[0].rate_limit.replaces[0].name: is required",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1,"
            " replaces: [{name: x, why: y}]}}]\n",
            "descriptors[0].rate_limit.replaces[0].why: unknown key 'why'",
        ),
        (
            "domain: d\ndescriptors: [{key: a, rate_limit: [1]}]\n",
            "descriptors[0].rate_limit: must be a mapping",
        ),
        ("domain: d\n---\ndomain: d\n", "document 2: domain: duplicate domain 'd'"),
        ("domain: [\n", "test.yaml: not valid YAML"),
        ("", "test.yaml: no configuration"),
    ],
)
def test_errors_name_the_yaml_path(yaml_text: str, expected: str):
    with pytest.raises(EnvoyConfigError) as exc:
        parse_limits(yaml_text, "test.yaml")
    assert expected in str(exc.value)


def test_a_pattern_deeper_than_16_is_refused_at_its_node():
    deep = "".join(f"{'  ' * i}- key: k{i}\n{'  ' * i}  descriptors:\n" for i in range(16))
    text = "domain: d\ndescriptors:\n" + textwrap.indent(deep, "  ")
    text += (
        "  " * 17
        + "- key: last\n"
        + "  " * 17
        + "  rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    message = error(text)
    assert ".descriptors[0]: has 17 entries, at most 16 allowed" in message


def test_load_file_reads_and_reports_the_file(tmp_path: Path):
    good = tmp_path / "limits.yaml"
    good.write_text(
        "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 2}}]\n"
    )
    (entry,) = load_file(good)
    assert entry.limit.name == "a" and entry.path == "descriptors[0].rate_limit"
    with pytest.raises(EnvoyConfigError, match=r"missing\.yaml: cannot read"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: d\ndescriptors: [{key: ''}]\n")
    with pytest.raises(EnvoyConfigError, match=r"bad\.yaml: descriptors\[0\]\.key: is required"):
        load_file(bad)


def test_describe_and_same_limit():
    (shadow, unlimited) = parse(
        """
        domain: edge
        descriptors:
          - key: remote_address
            rate_limit: {unit: second, requests_per_unit: 10}
            shadow_mode: true
          - key: ldap
            rate_limit: {unlimited: true}
        """
    )
    assert describe(shadow) == "edge/remote_address [remote_address=*] 10/second shadow"
    assert describe(unlimited) == "edge/ldap [ldap=*] unlimited"
    stored = ratelimit_pb2.Limit()
    stored.CopyFrom(shadow)
    stored.revision = 42
    stored.effective_rate.requests_per_unit = 10
    assert same_limit(stored, shadow)
    stored.shadow_mode = False
    assert not same_limit(stored, shadow)


# -- the limits_file setting --------------------------------------------------------------


def test_limits_file_setting_is_checked_when_settings_load(tmp_path: Path):
    from bulwark_server import config

    good = tmp_path / "limits.yaml"
    good.write_text("domain: d\n")
    assert config.load({"limits_file": str(good)}, {}).limits_file == good
    assert config.load({}, {"BULWARK_LIMITS_FILE": str(good)}).limits_file == good
    assert config.load({}, {"BULWARK_LIMITS_FILE": ""}).limits_file is None
    assert config.load({}, {}).limits_file is None

    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: d\ndescriptors: [{key: a, rate_limit: {unit: week}}]\n")
    with pytest.raises(config.SettingsError) as exc:
        config.load({"limits_file": str(bad), "lease_ttl": "0"}, {})
    problems = exc.value.problems
    assert any(p.startswith("lease_ttl") for p in problems), "every problem is reported"
    assert any(
        p.startswith("limits_file (BULWARK_LIMITS_FILE): ")
        and "descriptors[0].rate_limit.unit: 'week'" in p
        for p in problems
    )
    with pytest.raises(config.SettingsError, match="cannot read"):
        config.load({"limits_file": str(tmp_path / "missing.yaml")}, {})


def test_requests_per_unit_zero_is_a_limit_that_blocks_every_request() -> None:
    """envoyproxy/ratelimit's "Black list IP" example: 0 requests per unit."""
    text = """\
domain: edge
descriptors:
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
"""
    (limit,) = parse_limits(text)
    assert limit.rate == ratelimit_pb2.Rate(
        requests_per_unit=0, unit=ratelimit_pb2.RATE_UNIT_SECOND
    )
    assert limit.burst == 0
    assert describe(limit) == "edge/remote_address_50.0.0.5 [remote_address=50.0.0.5] 0/second"
