"""A Check's response written as bytes is the message its fields would have made."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.answers import OK_HEAD, Answers, varint
from bulwark_server.ratelimits.counters import Outcome

OK = ratelimit_pb2.CHECK_CODE_OK
OVER = ratelimit_pb2.CHECK_CODE_OVER_LIMIT
_NANOS = 1_000_000_000


def _head(name: str, shadow: bool) -> ratelimit_pb2.DescriptorResult:
    result = ratelimit_pb2.DescriptorResult(code=OK, limit_name=name, shadow=shadow)
    result.current_limit.requests_per_unit = 10
    result.current_limit.unit = ratelimit_pb2.RATE_UNIT_MINUTE
    return result


def _expected(
    heads: list[tuple[ratelimit_pb2.DescriptorResult, bool, Outcome | None]], local: bool
) -> ratelimit_pb2.CheckResponse:
    """The response made field by field, as decisions made it before."""
    response = ratelimit_pb2.CheckResponse(overall_code=OK, local_fallback=local)
    for head, shadow, outcome in heads:
        result = response.results.add()
        result.CopyFrom(head)
        if outcome is None:
            continue
        result.remaining = outcome.remaining
        reset = result.reset_after
        reset.seconds, reset.nanos = divmod(int(max(0.0, outcome.reset_after) * 1e9), _NANOS)
        if not outcome.allowed:
            if math.isfinite(outcome.retry_after):
                retry = result.retry_after
                retry.seconds, retry.nanos = divmod(
                    int(max(0.0, outcome.retry_after) * 1e9), _NANOS
                )
            result.code = OVER
            if not shadow:
                response.overall_code = OVER
    return response


OUTCOMES = st.builds(
    Outcome,
    st.booleans(),
    st.integers(min_value=0, max_value=10**12),
    st.floats(min_value=0, max_value=1e6),
    st.one_of(st.floats(min_value=0, max_value=1e6), st.just(math.inf)),
)
RESULTS = st.lists(
    st.tuples(st.sampled_from(["", "per-user", "x" * 200]), st.booleans(), st.none() | OUTCOMES),
    max_size=30,
)


@given(RESULTS, st.booleans())
def test_the_bytes_parse_to_the_response_set_field_by_field(results, local):
    answers = Answers(local_fallback=local)
    made = []
    for name, shadow, outcome in results:
        head = _head(name, shadow) if name else ratelimit_pb2.DescriptorResult(code=OK)
        index = answers.add(head.SerializeToString() if name else OK_HEAD, shadow)
        if outcome is not None:
            answers.settle(index, outcome)
        made.append((head, shadow, outcome))
    response = answers.response()
    assert response == _expected(made, local)
    assert response.SerializeToString() == _expected(made, local).SerializeToString()


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_varints_read_back(n):
    message = ratelimit_pb2.DescriptorResult.FromString(b"\x20" + varint(n))
    assert message.remaining == (n if n < 2**63 else n - 2**64)
