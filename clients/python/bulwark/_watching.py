"""The watches' and the reporter's timing rules, shared by both clients' drivers.

I/O-free: no clock read (times come in as arguments), randomness only through
an injectable ``jitter`` function (``random.random`` by default).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import grpc

from bulwark._endpoints import AWAY
from bulwark.v1 import (
    backpressure_pb2,
    backpressure_pb2_grpc,
    breaker_pb2,
    breaker_pb2_grpc,
    chaos_pb2,
    chaos_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

log = logging.getLogger("bulwark")

__all__ = [
    "REFUSED_BACKOFF_MAX_S",
    "REPORT_PAUSE_MAX_S",
    "REPORT_PAUSE_MIN_S",
    "Watch",
    "WatchRetry",
    "report_pause",
    "serving",
]

#: The longest wait between two tries of a watch a replica refuses (credentials, role).
REFUSED_BACKOFF_MAX_S = 5.0
#: The report loop's longest sleep: a full batch (or the first outcomes) need
#: not wait out a long ``report_interval``.
REPORT_PAUSE_MAX_S = 0.05
#: ... and its shortest, so ``report_interval=0`` is no busy loop.
REPORT_PAUSE_MIN_S = 0.005


def report_pause(interval: float) -> float:
    """The report loop's sleep between two looks at the buffer: half the interval, in bounds."""
    return min(max(interval / 2, REPORT_PAUSE_MIN_S), REPORT_PAUSE_MAX_S)


# The standard health check, spoken without the grpcio-health-checking package so
# that the client depends on grpcio and protobuf alone. Both messages are tiny:
# the request asks about the whole server (an empty HealthCheckRequest), and the
# response's only field is ``status`` (field 1, an enum: 1 is SERVING).
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"


def health_request(_: object = None) -> bytes:
    """An encoded ``HealthCheckRequest`` for the whole server (``service`` empty)."""
    return b""


def health_status(data: bytes) -> int:
    """The ``status`` of an encoded ``HealthCheckResponse`` (0, UNKNOWN, when absent).

    Fields this client does not know are skipped, as protobuf parsers do; a
    malformed message reads as UNKNOWN rather than failing the probe.
    """
    status, i = 0, 0
    try:
        while i < len(data):
            tag, i = _varint(data, i)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                value, i = _varint(data, i)
                if field == 1:
                    status = value
            elif wire == 2:
                length, i = _varint(data, i)
                i += length
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                return 0
    except IndexError:
        return 0
    return status


def health_check(channel: Any) -> Any:
    """The Check method of the health service on a sync or asyncio channel (both offer
    the same ``unary_unary``); call it with ``None`` to ask about the whole server."""
    return channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=health_request,
        response_deserializer=health_status,
    )


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def serving(status: int | None, code: grpc.StatusCode | None) -> bool | None:
    """What a gRPC health check says about a replica whose resumed watch sent nothing yet.

    ``status`` is the response's ``ServingStatus`` (None when the check failed
    with ``code``). True: the replica serves, the stream is live (UNIMPLEMENTED
    counts: a replica without the health service still answered). False: the
    replica is away (UNAVAILABLE, DEADLINE_EXCEEDED): fail over. None: not
    proven either way; the stream's first event will tell.
    """
    if code is None:
        return True if status == 1 else None  # 1: HealthCheckResponse.SERVING
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return True
    return False if code in AWAY else None


class WatchRetry:
    """When one watch tries again after its stream ended, and whether to warn.

    A replica that did not answer (``AWAY``) is retried soon, on the next
    healthy endpoint. A replica that answers but refuses (a bad token, a role
    too small) is retried after a doubling wait, 0.2 s up to
    ``REFUSED_BACKOFF_MAX_S``, with a warning for the first refusal only; a
    stream that was live before it ended starts that count again.
    """

    __slots__ = ("_jitter", "refusals")

    def __init__(self, jitter: Callable[[], float] = random.random) -> None:
        self._jitter = jitter
        self.refusals = 0

    def ended(self, code: grpc.StatusCode, was_live: bool) -> tuple[float, int]:
        """Seconds to wait before the next try, and the log level to report the end at."""
        if code in AWAY:
            self.refusals = 0
            return 0.05 + self._jitter() * 0.1, logging.DEBUG
        self.refusals = 1 if was_live else self.refusals + 1
        base = min(REFUSED_BACKOFF_MAX_S, 0.2 * 2 ** (self.refusals - 1))
        level = logging.WARNING if self.refusals == 1 else logging.DEBUG
        return base * (1 + self._jitter() / 4), level

    def all_backing_off(self, wait: float) -> float:
        """Seconds to sleep when every endpoint is backing off for ``wait`` more seconds."""
        return wait * (1 + self._jitter() / 4)


# name -> (stub, method, request type) of each watch stream.
_STREAMS: dict[str, tuple[Callable[[Any], Any], str, Any]] = {
    "breakers": (
        breaker_pb2_grpc.CircuitBreakerServiceStub,
        "WatchBreakers",
        breaker_pb2.WatchBreakersRequest,
    ),
    "features": (
        feature_pb2_grpc.FeatureServiceStub,
        "WatchFeatures",
        feature_pb2.WatchFeaturesRequest,
    ),
    "primaries": (
        registry_pb2_grpc.RegistryServiceStub,
        "WatchPrimary",
        registry_pb2.WatchPrimaryRequest,
    ),
    "backpressure": (
        backpressure_pb2_grpc.BackpressureServiceStub,
        "WatchBackpressurePolicies",
        backpressure_pb2.WatchBackpressurePoliciesRequest,
    ),
    "faults": (
        chaos_pb2_grpc.ChaosServiceStub,
        "WatchFaultRules",
        chaos_pb2.WatchFaultRulesRequest,
    ),
}


def run_callback(callback: Callable[[str, Any], None], service: str, primary: Any) -> None:
    """Call a primary-change callback; its failure is logged, never the watch's."""
    try:
        callback(service, primary)
    except Exception:
        log.exception("primary change callback for %s failed", service)


class Watch:
    """One watch stream a driver keeps running: its cache, its call, its retry state."""

    __slots__ = ("_request", "cache", "method", "name", "retry", "service", "stub")

    def __init__(
        self, name: str, cache: Any, service: str = "", jitter: Callable[[], float] = random.random
    ) -> None:
        self.name = name
        self.cache = cache
        self.service = service
        if service:
            self.stub, self.method = registry_pb2_grpc.RegistryServiceStub, "WatchInstances"
            self._request: Any = registry_pb2.WatchInstancesRequest
        else:
            self.stub, self.method, self._request = _STREAMS[name]
        self.retry = WatchRetry(jitter)

    def ended(self, address: str, code: grpc.StatusCode, details: str, was_live: bool) -> float:
        """Seconds to wait before trying again, after saying (once, for a refusal) why
        the stream on ``address`` ended."""
        delay, level = self.retry.ended(code, was_live)
        log.log(
            level, "bulwark %s watch on %s ended: %s %s", self.name, address, code.name, details
        )
        return delay

    def request(self) -> Any:
        """The request that resumes from the cache's revision (0: a full snapshot)."""
        if self.service:
            return self._request(service=self.service, start_revision=self.cache.revision)
        return self._request(start_revision=self.cache.revision)
