"""Unit tests for bulwark_server.api.status: domain errors to gRPC status codes."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from bulwark_server import errors
from bulwark_server.api.status import (
    STATUS_BY_ERROR,
    rpc,
    rpc_stream,
    status_for,
    trailing_metadata_for,
)
from bulwark_server.errors import (
    AlreadyExists,
    BulwarkError,
    Conflict,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLeader,
    PermissionDenied,
    ResourceExhausted,
    StoreUnavailable,
)

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("name", "must not be empty"), Code.INVALID_ARGUMENT),
        (NotFound("breaker 'x' not found"), Code.NOT_FOUND),
        (AlreadyExists("breaker 'x' exists"), Code.ALREADY_EXISTS),
        (FailedPrecondition("breaker is open"), Code.FAILED_PRECONDITION),
        (Conflict("changed concurrently"), Code.ABORTED),
        (ResourceExhausted("limit reached", retry_after=0.5), Code.RESOURCE_EXHAUSTED),
        (NotLeader("not the leader", leader="10.0.0.1:50051"), Code.UNAVAILABLE),
        (StoreUnavailable("etcd timed out"), Code.UNAVAILABLE),
        (PermissionDenied("key 'k' belongs to another caller"), Code.PERMISSION_DENIED),
        (DataLoss("every copy is corrupt"), Code.DATA_LOSS),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BulwarkError) else v.name,
)
def test_status_of_each_error(error: BulwarkError, code: grpc.StatusCode) -> None:
    assert STATUS_BY_ERROR[type(error)] is code
    assert status_for(error) is code


def domain_error_classes() -> list[type[BulwarkError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BulwarkError)
        and obj is not BulwarkError
        and obj.__module__ == errors.__name__
    ]


def test_discovery_finds_the_known_errors() -> None:
    # Guards the discovery itself: if it found nothing, the next test would be vacuous.
    assert len(domain_error_classes()) >= 8
    assert {NotFound, Conflict, NotLeader, StoreUnavailable} <= set(domain_error_classes())


@pytest.mark.parametrize("cls", domain_error_classes(), ids=lambda c: c.__name__)
def test_every_domain_error_has_a_status(cls: type[BulwarkError]) -> None:
    assert cls in STATUS_BY_ERROR, f"{cls.__name__} has no entry in STATUS_BY_ERROR"
    assert STATUS_BY_ERROR[cls] not in (Code.OK, Code.UNKNOWN, Code.INTERNAL)


def test_status_table_has_only_domain_errors() -> None:
    assert set(STATUS_BY_ERROR) == set(domain_error_classes())


def test_subclass_uses_nearest_mapped_class() -> None:
    class BreakerMissing(NotFound):
        pass

    assert status_for(BreakerMissing("gone")) is Code.NOT_FOUND


def test_unmapped_base_error_is_internal() -> None:
    assert status_for(BulwarkError("bare")) is Code.INTERNAL


def test_invalid_argument_names_the_field() -> None:
    error = InvalidArgument("spec.max_concurrency", "must be positive")
    assert error.field == "spec.max_concurrency"
    assert error.message == "spec.max_concurrency: must be positive"
    assert str(error) == error.message


@pytest.mark.parametrize(
    ("retry_after", "expected_ms"),
    [
        (0.25, "250"),
        (1.0, "1000"),
        (2.0004, "2000"),
        (0.0126, "13"),
        (0.0001, "1"),
        (0.0, "1"),
        (-3.0, "1"),
    ],
)
def test_retry_after_metadata(retry_after: float, expected_ms: str) -> None:
    error = ResourceExhausted("slow down", retry_after=retry_after)
    assert trailing_metadata_for(error) == (("retry-after-ms", expected_ms),)


def test_leader_metadata() -> None:
    error = NotLeader("follower", leader="10.0.0.7:50051")
    assert trailing_metadata_for(error) == (("bulwark-leader", "10.0.0.7:50051"),)


def test_no_leader_metadata_without_a_known_leader() -> None:
    assert trailing_metadata_for(NotLeader("no leader elected")) == ()


@pytest.mark.parametrize(
    "error",
    [
        NotFound("x"),
        Conflict("x"),
        StoreUnavailable("x"),
        InvalidArgument("f", "bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_have_no_metadata(error: BulwarkError) -> None:
    assert trailing_metadata_for(error) == ()


# --- the rpc decorator ----------------------------------------------------------


class FakeContext:
    """Records what a servicer method does to its context; abort raises like grpc.aio."""

    def __init__(self) -> None:
        self.trailing_metadata: tuple[tuple[str, str], ...] | None = None
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing_metadata = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError(details)


class Servicer:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[Any, Any]] = []

    @rpc
    async def Method(self, request: Any, context: Any) -> Any:
        self.calls.append((request, context))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_rpc_returns_value_untouched() -> None:
    context = FakeContext()
    response = object()
    servicer = Servicer(response)
    assert await servicer.Method("req", context) is response
    assert servicer.calls == [("req", context)]
    assert context.aborted is None
    assert context.trailing_metadata is None


async def test_rpc_keeps_method_name() -> None:
    assert Servicer.Method.__name__ == "Method"
    assert Servicer.Method.__qualname__ == "Servicer.Method"


async def test_rpc_maps_not_found() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(NotFound("breaker 'payments' not found")).Method("req", context)
    assert context.aborted == (Code.NOT_FOUND, "breaker 'payments' not found")
    assert context.trailing_metadata == ()


async def test_rpc_maps_invalid_argument_with_field_in_details() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(InvalidArgument("name", "too long")).Method("req", context)
    assert context.aborted == (Code.INVALID_ARGUMENT, "name: too long")


async def test_rpc_sends_retry_after() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(ResourceExhausted("quota", retry_after=1.5)).Method("req", context)
    assert context.aborted == (Code.RESOURCE_EXHAUSTED, "quota")
    assert context.trailing_metadata == (("retry-after-ms", "1500"),)


async def test_rpc_sends_leader() -> None:
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await Servicer(NotLeader("follower", leader="10.0.0.2:50051")).Method("req", context)
    assert context.aborted == (Code.UNAVAILABLE, "follower")
    assert context.trailing_metadata == (("bulwark-leader", "10.0.0.2:50051"),)


async def test_rpc_unexpected_error_is_internal_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = FakeContext()
    secret = "password=hunter2 at /srv/db"
    with caplog.at_level(logging.ERROR, logger="bulwark_server.api.status"):
        with pytest.raises(grpc.aio.AbortError):
            await Servicer(ValueError(secret)).Method("req", context)
    assert context.aborted is not None
    code, details = context.aborted
    assert code is Code.INTERNAL
    assert secret not in details
    assert "hunter2" not in details
    assert details  # still says something
    # The traceback goes to the server log instead.
    (record,) = [r for r in caplog.records if r.name == "bulwark_server.api.status"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert "Servicer.Method" in record.getMessage()


async def test_rpc_lets_abort_from_the_method_pass_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = FakeContext()

    class Aborting:
        @rpc
        async def Method(self, request: Any, context: Any) -> Any:
            await context.abort(Code.PERMISSION_DENIED, "no")

    with caplog.at_level(logging.ERROR):
        with pytest.raises(grpc.aio.AbortError):
            await Aborting().Method("req", context)
    # Aborted once, with the method's own status, and not logged as a bug.
    assert context.aborted == (Code.PERMISSION_DENIED, "no")
    assert not [r for r in caplog.records if r.name == "bulwark_server.api.status"]


async def test_rpc_does_not_swallow_cancellation() -> None:
    context = FakeContext()
    with pytest.raises(asyncio.CancelledError):
        await Servicer(asyncio.CancelledError()).Method("req", context)
    assert context.aborted is None


async def test_a_stream_read_after_the_server_stopped_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from grpc._cython import cygrpc

    class Streaming:
        @rpc_stream
        async def Exchange(self, request: Any, context: Any) -> AsyncIterator[int]:
            yield 1
            raise cygrpc._ServerStoppedError("Server already stopped.")

    context = FakeContext()
    answers = [a async for a in Streaming().Exchange("req", context)]
    assert answers == [1]
    assert context.aborted is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
