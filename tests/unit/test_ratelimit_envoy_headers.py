"""Unit tests for ShouldRateLimit's response headers (api/envoy_ratelimit._headers)."""

from __future__ import annotations

from bulwark_server.api.envoy_ratelimit import ResponseHeaders, _headers
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2

Status = rls_pb2.RateLimitResponse.DescriptorStatus
Unit = rls_pb2.RateLimitResponse.RateLimit
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
NAMES = ResponseHeaders()


def status(per_unit: int, remaining: int, unit: int = Unit.MINUTE, code: int = OK) -> Status:
    out = Status(code=code, limit_remaining=remaining)
    out.current_limit.requests_per_unit = per_unit
    out.current_limit.unit = unit
    return out


def values(statuses: list[Status], now: int = 60_000) -> list[tuple[str, str]]:
    return [(h.key, h.value) for h in _headers(NAMES, statuses, now)]


def test_the_first_descriptor_with_the_least_remaining_is_reported() -> None:
    statuses = [status(100, 7), status(50, 3, Unit.HOUR), status(10, 3)]
    assert values(statuses, now=3600 * 10 + 600) == [
        ("RateLimit-Limit", "50"),
        ("RateLimit-Remaining", "3"),
        ("RateLimit-Reset", "3000"),
    ]


def test_the_last_descriptor_over_the_limit_wins_whatever_the_others_remaining() -> None:
    statuses = [status(5, 0), status(9, 0, code=OVER), status(8, 0, Unit.SECOND, code=OVER)]
    assert values(statuses) == [
        ("RateLimit-Limit", "8"),
        ("RateLimit-Remaining", "0"),
        ("RateLimit-Reset", "1"),
    ]


def test_no_headers_without_a_current_limit() -> None:
    assert values([Status(code=OK), Status(code=OK, limit_remaining=2**32 - 1)]) == []


def test_reset_counts_to_the_end_of_the_epoch_aligned_unit() -> None:
    assert values([status(1, 1, Unit.DAY)], now=86400 * 3 + 1)[2] == ("RateLimit-Reset", "86399")
    assert values([status(1, 1)], now=120)[2] == ("RateLimit-Reset", "60")
