"""Decision tallies, the per-RPC layer's status codes, and the scrape endpoint's HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from bulwark.v1 import ratelimit_pb2
from bulwark_server.config import Settings, SettingsError
from bulwark_server.metrics.endpoint import MetricsEndpoint
from bulwark_server.metrics.replica import ReplicaMetrics, ratelimit_decisions
from bulwark_server.ratelimits.answers import OK_HEAD, Answers
from bulwark_server.ratelimits.counters import Outcome
from bulwark_server.ratelimits.envoy_config import parse_limits
from bulwark_server.ratelimits.tallies import OUTCOMES, Tallies, near_below
from bulwark_server.transport.rpc_metrics import GO_CODES, RpcMetrics


def counted(tallies: Tallies) -> dict[tuple[str, str, str], int]:
    return {(d, n, o): c for d, n, o, c in tallies.counts() if c}


def test_near_limit_is_past_eighty_percent_as_envoy_counts_it() -> None:
    # envoyproxy/ratelimit: near when the count passes floor(limit * 0.8).
    assert near_below(10) == 2  # 9 and 10 used: 1 and 0 left
    assert near_below(5) == 1  # 5 used: 0 left
    assert near_below(1) == 1
    assert near_below(0) == 0


def test_each_decision_counts_once_under_its_limit_and_outcome() -> None:
    tallies = Tallies()
    answers = Answers()
    plain = tallies.of("shop", "per-user", 10)
    shadow = tallies.of("shop", "trial", 10)
    outcomes = [
        (plain, False, Outcome(True, 5, 1.0, 0.0)),  # within
        (plain, False, Outcome(True, 1, 1.0, 0.0)),  # near
        (plain, False, Outcome(False, 0, 1.0, 1.0)),  # over
        (shadow, True, Outcome(False, 0, 1.0, 1.0)),  # shadow mode
    ]
    for tally, is_shadow, outcome in outcomes:
        answers.settle(answers.add(OK_HEAD, is_shadow, tally), outcome)
    answers.add(OK_HEAD, tally=plain)  # answered by its head alone (unlimited): within
    answers.add(OK_HEAD)  # no limit applied: not counted
    response = answers.response()
    assert response.overall_code == ratelimit_pb2.CHECK_CODE_OVER_LIMIT
    assert counted(tallies) == {
        ("shop", "per-user", "within_limit"): 2,
        ("shop", "per-user", "near_limit"): 1,
        ("shop", "per-user", "over_limit"): 1,
        ("shop", "trial", "shadow_mode"): 1,
    }


def test_limits_past_the_cap_are_not_given_series_and_say_so() -> None:
    tallies = Tallies(max_limits=2)
    for name in ("a", "b", "c", "d"):
        answers = Answers()
        answers.settle(
            answers.add(OK_HEAD, tally=tallies.of("x", name, 10)), Outcome(True, 9, 1, 0)
        )
        answers.response()
    assert {n for _, n, _, _ in tallies.counts()} == {"a", "b"}
    assert tallies.dropped == 2
    metrics = ReplicaMetrics()
    metrics.add(ratelimit_decisions(lambda: tallies))
    sample = metrics.registry.get_sample_value
    assert (
        sample(
            "bulwark_metrics_series_dropped_total", {"metric": "bulwark_ratelimit_decisions_total"}
        )
        == 2
    )
    assert (
        sample(
            "bulwark_ratelimit_decisions_total",
            {"domain": "x", "limit": "a", "outcome": OUTCOMES[0]},
        )
        == 1
    )


class Context:
    """What the layer reads of a call: the status code set on it."""

    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        return None  # no deadline


async def _handled(behavior: Any, context: Context) -> dict[str, float]:
    metrics = ReplicaMetrics()
    layer = RpcMetrics()
    metrics.add(layer.collect)
    registry = metrics.registry
    handler = layer.wrap("/pkg.Svc/Do", grpc.unary_unary_rpc_method_handler(behavior))
    with pytest.raises(BaseException):  # noqa: B017 -- each case raises its own
        await handler.unary_unary(None, context)
    labels = {"grpc_type": "unary", "grpc_service": "pkg.Svc", "grpc_method": "Do"}
    # One call, one duration: in every bucket from the first that holds it.
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 1
    assert (
        registry.get_sample_value("grpc_server_handling_seconds_bucket", {**labels, "le": "+Inf"})
        == 1
    )
    out = {}
    for code in ("Unknown", "Canceled", "PermissionDenied"):
        got = registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code})
        if got:
            out[code] = got
    assert registry.get_sample_value("grpc_server_started_total", labels) == 1
    return out


async def test_a_call_ending_by_an_exception_is_counted_under_its_final_code() -> None:
    async def crash(request: Any, context: Any) -> None:
        raise RuntimeError("bug")

    async def gone(request: Any, context: Any) -> None:
        raise asyncio.CancelledError

    async def refused(request: Any, context: Any) -> None:
        raise RuntimeError("aborted")  # as context.abort raises, the code set first

    assert await _handled(crash, Context()) == {"Unknown": 1}
    assert await _handled(gone, Context()) == {"Canceled": 1}
    assert await _handled(refused, Context(grpc.StatusCode.PERMISSION_DENIED)) == {
        "PermissionDenied": 1
    }


async def _ask(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_the_endpoint_answers_get_only_and_names_the_path() -> None:
    registry = CollectorRegistry()
    endpoint = MetricsEndpoint(registry, "127.0.0.1", 0)
    await endpoint.start()
    try:
        ok = await _ask(endpoint.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: text/plain; version=0.0.4" in ok
        post = await _ask(endpoint.port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405 ")
        other = await _ask(endpoint.port, b"GET /x HTTP/1.1\r\n\r\n")
        assert other.startswith(b"HTTP/1.1 404 ") and b"/metrics" in other
        garbage = await _ask(endpoint.port, b"hello\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
    finally:
        await endpoint.close()


def test_a_bad_metrics_listen_address_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="metrics_listen"):
        Settings(metrics_listen="nowhere").validate()


def test_codes_are_spelled_as_go_grpc_prometheus_spells_them() -> None:
    assert GO_CODES[grpc.StatusCode.RESOURCE_EXHAUSTED] == "ResourceExhausted"
    assert GO_CODES[grpc.StatusCode.CANCELLED] == "Canceled"
    assert GO_CODES[grpc.StatusCode.OK] == "OK"
    assert GO_CODES[grpc.StatusCode.DATA_LOSS] == "DataLoss"
    assert len(set(GO_CODES.values())) == len(grpc.StatusCode)


def entries(**pairs: str) -> list[ratelimit_pb2.DescriptorEntry]:
    return [ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in pairs.items()]


def test_a_detailed_limit_counts_each_value_apart_and_in_its_limit() -> None:
    tallies = Tallies(max_detailed=2)
    limit = tallies.of("edge", "per-ip", 10)
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
        answers = Answers()
        tally = tallies.detail("edge", "per-ip", entries(remote_address=ip), limit)
        answers.settle(answers.add(OK_HEAD, tally=tally), Outcome(True, 9, 1.0, 0.0))
        answers.response()
    detailed = {(d, o): c for _, _, d, o, c in tallies.detailed_counts() if c}
    assert detailed == {
        ("remote_address=10.0.0.1", "within_limit"): 2,
        ("remote_address=10.0.0.2", "within_limit"): 1,
    }
    # The third address found no room: counted under its limit only, and said so.
    assert tallies.detailed_dropped == 1
    assert counted(tallies) == {("edge", "per-ip", "within_limit"): 4}


def test_envoys_detailed_metric_is_kept_on_the_limit() -> None:
    (limit,) = parse_limits(
        "domain: edge\n"
        "descriptors:\n"
        "  - key: remote_address\n"
        "    detailed_metric: true\n"
        "    rate_limit: {unit: second, requests_per_unit: 10}\n"
    )
    assert limit.detailed_metric


def test_a_duration_on_a_bound_falls_in_that_bound_as_le_means() -> None:
    metrics = ReplicaMetrics()
    layer = RpcMetrics()
    metrics.add(layer.collect)
    layer.wrap("/pkg.Svc/Do", grpc.unary_unary_rpc_method_handler(lambda r, c: r))
    (counts,) = layer._methods
    counts.started = 3
    for seconds in (0.005, 0.0051, 11.0):
        counts.end(grpc.StatusCode.OK, seconds)
    labels = {"grpc_type": "unary", "grpc_service": "pkg.Svc", "grpc_method": "Do"}

    def bucket(le: str) -> float | None:
        return metrics.registry.get_sample_value(
            "grpc_server_handling_seconds_bucket", {**labels, "le": le}
        )

    assert [bucket("0.005"), bucket("0.01"), bucket("10.0"), bucket("+Inf")] == [1, 2, 2, 3]
    assert metrics.registry.get_sample_value(
        "grpc_server_handling_seconds_sum", labels
    ) == pytest.approx(11.0101)
    assert (
        metrics.registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": "OK"}
        )
        == 3
    )
