"""Unit tests for ratelimits.envoy_extensions: the ``x-bulwark-*`` keys of an Envoy YAML file."""

from __future__ import annotations

import textwrap

import pytest

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.config import stored_limit
from bulwark_server.ratelimits.envoy_config import (
    EnvoyConfigError,
    describe,
    parse_config,
    parse_limits,
    same_limit,
)
from bulwark_server.ratelimits.envoy_extensions import (
    ExtensionError,
    Extensions,
    read_extensions,
)

TOKEN_BUCKET = ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET
FIXED_WINDOW = ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW

PLAIN = """\
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: tenant
    descriptors:
      - key: path
        value: /login
        rate_limit: {unit: minute, requests_per_unit: 5, name: login}
  - key: internal
    rate_limit: {unlimited: true}
"""


def parse(yaml_text: str) -> list[ratelimit_pb2.Limit]:
    return parse_limits(textwrap.dedent(yaml_text), "test.yaml")


def one(rate_limit: str) -> str:
    """A document with one descriptor ``a`` whose rate_limit is ``{<rate_limit>}``."""
    return f"domain: d\ndescriptors: [{{key: a, rate_limit: {{{rate_limit}}}}}]\n"


def test_token_bucket_with_a_burst_and_with_the_default_burst():
    smooth, default = parse(
        """
        domain: edge
        descriptors:
          - key: remote_address
            rate_limit:
              unit: second
              requests_per_unit: 10
              x-bulwark-algorithm: token_bucket
              x-bulwark-burst: 20
          - key: tenant
            rate_limit:
              unit: minute
              requests_per_unit: 60
              x-bulwark-algorithm: Token_Bucket   # any case, as unit
        """
    )
    assert smooth.algorithm == TOKEN_BUCKET and smooth.burst == 20
    assert smooth.rate == ratelimit_pb2.Rate(
        requests_per_unit=10, unit=ratelimit_pb2.RATE_UNIT_SECOND
    )
    assert default.algorithm == TOKEN_BUCKET and default.burst == 60
    assert describe(smooth) == (
        "edge/remote_address [remote_address=*] 10/second token_bucket(burst 20)"
    )
    assert describe(default).endswith("60/minute token_bucket(burst 60)")


def test_a_file_without_the_keys_loads_as_before_and_fixed_window_is_the_default():
    plain = parse_limits(PLAIN, "test.yaml")
    assert [x.algorithm for x in plain] == [FIXED_WINDOW] * 3
    assert [x.burst for x in plain] == [10, 5, 0]
    explicit = PLAIN.replace(
        "requests_per_unit: 10}", "requests_per_unit: 10, x-bulwark-algorithm: fixed_window}"
    )
    assert explicit != PLAIN
    assert parse_limits(explicit, "test.yaml") == plain
    assert [describe(x) for x in plain] == [
        "edge/remote_address [remote_address=*] 10/second",
        "edge/login [tenant=*, path=/login] 5/minute",
        "edge/internal [internal=*] unlimited",
    ]


def test_requests_per_unit_zero_blocks_whatever_the_algorithm():
    """A blocking limit counts nothing: the algorithm is kept, a burst is refused."""
    (blocked,) = parse(one("unit: second, requests_per_unit: 0, x-bulwark-algorithm: token_bucket"))
    assert blocked.blocks_all and blocked.algorithm == TOKEN_BUCKET
    assert blocked.rate.requests_per_unit == 0 and blocked.burst == 0
    assert describe(blocked) == "d/a [a=*] 0/second"
    # Stored as 1 per unit (burst 1), as every blocking limit, whatever the algorithm.
    assert stored_limit(blocked).burst == 1


def test_an_import_sees_a_change_of_algorithm_or_burst():
    (window,) = parse(one("unit: second, requests_per_unit: 10"))
    (bucket,) = parse(one("unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket"))
    (bigger,) = parse(
        one(
            "unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket,"
            " x-bulwark-burst: 30"
        )
    )
    stored = ratelimit_pb2.Limit()
    stored.CopyFrom(bucket)
    stored.revision = 7
    assert same_limit(stored, bucket)
    assert not same_limit(stored, window)
    assert not same_limit(stored, bigger)


def test_entries_keep_the_path_of_a_token_bucket_limit():
    (entry,) = parse_config(
        "domain: d\ndescriptors:\n - key: a\n   descriptors:\n"
        "    - {key: b, rate_limit: {unit: hour, requests_per_unit: 100,"
        " x-bulwark-algorithm: token_bucket, x-bulwark-burst: 250}}\n"
    )
    assert entry.path == "descriptors[0].descriptors[0].rate_limit"
    assert (entry.limit.algorithm, entry.limit.burst) == (TOKEN_BUCKET, 250)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            one("unit: second, requests_per_unit: 1, x-bulwark-algorithm: sliding_window"),
            "descriptors[0].rate_limit.x-bulwark-algorithm: must be fixed_window or "
            "token_bucket, got 'sliding_window'",
        ),
        (
            one("unit: second, requests_per_unit: 1, x-bulwark-algorithm: "),
            "descriptors[0].rate_limit.x-bulwark-algorithm: must be fixed_window or "
            "token_bucket, got ''",
        ),
        (
            one("unit: second, requests_per_unit: 1, x-bulwark-algorithm: {a: b}"),
            "descriptors[0].rate_limit.x-bulwark-algorithm: must be a single value",
        ),
        (
            one("unit: second, requests_per_unit: 10, x-bulwark-burst: 20"),
            "descriptors[0].rate_limit.x-bulwark-burst: needs x-bulwark-algorithm: token_bucket",
        ),
        (
            one(
                "unit: second, requests_per_unit: 10, x-bulwark-algorithm: fixed_window,"
                " x-bulwark-burst: 20"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: needs x-bulwark-algorithm: token_bucket",
        ),
        (
            one(
                "unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket,"
                " x-bulwark-burst: 5"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: must be at least requests_per_unit (10)"
            " and at most 1000000000, got 5",
        ),
        (
            one(
                "unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket,"
                " x-bulwark-burst: 2000000000"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: must be at least requests_per_unit",
        ),
        (
            one(
                "unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket,"
                " x-bulwark-burst: 1.5"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: must be a whole number, got '1.5'",
        ),
        (
            one(
                "unit: second, requests_per_unit: 10, x-bulwark-algorithm: token_bucket,"
                " x-bulwark-burst: -20"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: must be a whole number, got '-20'",
        ),
        (
            one(
                "unit: second, requests_per_unit: 0, x-bulwark-algorithm: token_bucket,"
                " x-bulwark-burst: 1"
            ),
            "descriptors[0].rate_limit.x-bulwark-burst: must not be set when requests_per_unit "
            "is 0 (the limit blocks every request)",
        ),
        (
            one("unlimited: true, x-bulwark-algorithm: token_bucket"),
            "descriptors[0].rate_limit.x-bulwark-algorithm: must not be set when unlimited is true",
        ),
        (
            one("unlimited: true, x-bulwark-burst: 5"),
            "descriptors[0].rate_limit.x-bulwark-burst: must not be set when unlimited is true",
        ),
        (
            one("unit: second, requests_per_unit: 1, x-bulwark-algoritm: token_bucket"),
            "descriptors[0].rate_limit.x-bulwark-algoritm: unknown key 'x-bulwark-algoritm' "
            "here; Bulwark's keys are x-bulwark-algorithm and x-bulwark-burst, in rate_limit",
        ),
        (
            one("unit: second, requests_per_unit: 1, X-Bulwark-Algorithm: token_bucket"),
            "descriptors[0].rate_limit.X-Bulwark-Algorithm: unknown key 'X-Bulwark-Algorithm' "
            "here; Bulwark's keys are",
        ),
        (
            "domain: d\ndescriptors: [{key: a, x-bulwark-algorithm: token_bucket,"
            " rate_limit: {unit: second, requests_per_unit: 1}}]\n",
            "descriptors[0].x-bulwark-algorithm: unknown key 'x-bulwark-algorithm' here; "
            "it belongs in rate_limit",
        ),
        (
            "domain: d\nx-bulwark-burst: 3\n",
            "test.yaml: x-bulwark-burst: unknown key 'x-bulwark-burst' here; "
            "it belongs in rate_limit",
        ),
        (
            "domain: d\ndescriptors:\n - key: a\n   descriptors:\n    - {key: b}\n"
            "    - {key: c, rate_limit: {unit: day, requests_per_unit: 5,"
            " x-bulwark-algorithm: token_bucket, x-bulwark-burst: many}}\n",
            "descriptors[0].descriptors[1].rate_limit.x-bulwark-burst: must be a whole number",
        ),
        (
            "domain: a\n---\ndomain: b\ndescriptors: [{key: k, rate_limit: {unit: second,"
            " requests_per_unit: 1, x-bulwark-algorithm: leaky_bucket}}]\n",
            "test.yaml: document 2: descriptors[0].rate_limit.x-bulwark-algorithm: must be",
        ),
    ],
)
def test_errors_name_the_yaml_path_of_the_key(yaml_text: str, expected: str):
    with pytest.raises(EnvoyConfigError) as exc:
        parse_limits(yaml_text, "test.yaml")
    assert expected in str(exc.value)


def test_read_extensions_alone():
    assert read_extensions({}, unlimited=False, requests_per_unit=5) == Extensions(FIXED_WINDOW, 0)
    assert read_extensions(
        {"x-bulwark-algorithm": "token_bucket", "x-bulwark-burst": "+8"},
        unlimited=False,
        requests_per_unit=5,
    ) == Extensions(TOKEN_BUCKET, 8)
    # Keys of the format itself are the parser's business, not this function's.
    assert read_extensions({"unit": "week"}, unlimited=True, requests_per_unit=0) == Extensions()
    with pytest.raises(ExtensionError) as exc:
        read_extensions({"x-bulwark-shards": "4"}, unlimited=False, requests_per_unit=5)
    assert exc.value.key == "x-bulwark-shards"
    assert exc.value.problem.startswith("unknown key here; Bulwark's keys are")
