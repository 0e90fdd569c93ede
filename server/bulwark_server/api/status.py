"""The one table from domain errors to gRPC status codes, and the decorator applying it.

Metadata sent with an error (trailing):

* ``retry-after-ms`` with ``RESOURCE_EXHAUSTED``: how long to back off.
* ``bulwark-leader`` with ``UNAVAILABLE`` from ``NotLeader``: the leader's address.
* ``bulwark-error: PermissionDenied`` with ``PERMISSION_DENIED`` raised by a
  capability (the caller may not act on that object), so a replica forwarding the
  call can tell it from the access layer refusing the replica itself.

``error_from_status`` reads the table backwards: a forwarding replica turns the
leader's answer into the same domain error, so its caller sees the leader's status.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc._cython import cygrpc

from bulwark_server.errors import (
    AlreadyExists,
    BulwarkError,
    Conflict,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLeader,
    PeerUnavailable,
    PermissionDenied,
    RequestTooLarge,
    ResourceExhausted,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[BulwarkError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.ABORTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotLeader: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    PeerUnavailable: grpc.StatusCode.UNAVAILABLE,
    # The store did not apply the write; to a caller it is the store failing it.
    RequestTooLarge: grpc.StatusCode.UNAVAILABLE,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    DataLoss: grpc.StatusCode.DATA_LOSS,
}


def status_for(error: BulwarkError) -> grpc.StatusCode:
    """Status code of a domain error (its nearest mapped class)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


ERROR_CLASS = "bulwark-error"
RETRY_AFTER = "retry-after-ms"
LEADER = "bulwark-leader"

# The table read backwards, for codes one domain error owns. UNAVAILABLE (NotLeader or
# StoreUnavailable) is left out: forwarded, it means the leader did not take the call.
# PERMISSION_DENIED is a domain error only when the capability said so (ERROR_CLASS).
_ERROR_BY_STATUS: dict[grpc.StatusCode, type[BulwarkError]] = {
    code: cls
    for cls, code in STATUS_BY_ERROR.items()
    if list(STATUS_BY_ERROR.values()).count(code) == 1 and cls is not PermissionDenied
}


def trailing_metadata_for(error: BulwarkError) -> tuple[tuple[str, str], ...]:
    """Metadata that goes with an error's status (see the module docstring)."""
    if isinstance(error, PermissionDenied):
        return ((ERROR_CLASS, PermissionDenied.__name__),)
    if isinstance(error, ResourceExhausted):
        retry = error.retry_after if math.isfinite(error.retry_after) else 1.0
        return ((RETRY_AFTER, str(max(1, round(retry * 1000)))),)
    if isinstance(error, NotLeader) and error.leader:
        return ((LEADER, error.leader),)
    return ()


def error_from_status(
    code: grpc.StatusCode, details: str, trailing: dict[str, str]
) -> BulwarkError | None:
    """The domain error another replica answered with, or None when the status is not
    one (UNAVAILABLE, a refusal by the access layer, a transport failure)."""
    if code is grpc.StatusCode.PERMISSION_DENIED:
        if trailing.get(ERROR_CLASS) == PermissionDenied.__name__:
            return PermissionDenied(details)
        return None
    cls = _ERROR_BY_STATUS.get(code)
    if cls is None:
        return None
    if cls is InvalidArgument:
        field, _, problem = details.partition(": ")
        return InvalidArgument(field, problem) if problem else InvalidArgument("request", details)
    if cls is ResourceExhausted:
        try:
            retry = int(trailing.get(RETRY_AFTER, "1000")) / 1000
        except ValueError:
            retry = 1.0
        return ResourceExhausted(details, retry)
    return cls(details)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: Any) -> None:
    """End the call with the status the table gives ``exc``; anything that is no domain
    error is a bug: logged with its traceback (we are inside its ``except``), INTERNAL."""
    if isinstance(exc, BulwarkError):
        context.set_trailing_metadata(trailing_metadata_for(exc))
        await context.abort(status_for(exc), exc.message)
    log.exception("unexpected error in %s", method.__qualname__)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


def rpc(method: Handler) -> Handler:
    """Turn domain errors raised by a unary servicer method into their gRPC status.

    Anything unexpected is logged with its traceback and reported as INTERNAL
    without internals in the message; reaching that branch is a bug.
    """

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapper  # type: ignore[return-value]


StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])

# What grpc.aio raises from a stream's read once the server has stopped (a private
# class): the call is over and nobody waits for an answer; not an error of ours.
_SERVER_STOPPED: type[Exception] | tuple[()] = getattr(cygrpc, "_ServerStoppedError", ())


def rpc_stream(method: StreamHandler) -> StreamHandler:
    """``rpc`` for servicer methods that answer with a stream (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except _SERVER_STOPPED:
            return
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapper  # type: ignore[return-value]
