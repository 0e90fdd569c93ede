"""The one table from domain errors to gRPC status codes, and the decorator applying it.

Metadata sent with an error (trailing):

* ``retry-after-ms`` with ``RESOURCE_EXHAUSTED``: how long to back off.
* ``bulwark-leader`` with ``UNAVAILABLE`` from ``NotLeader``: the leader's address.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

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
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    DataLoss: grpc.StatusCode.DATA_LOSS,
}


def status_for(error: BulwarkError) -> grpc.StatusCode:
    """Status code of a domain error (its nearest mapped class)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def trailing_metadata_for(error: BulwarkError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, ResourceExhausted):
        retry = error.retry_after if math.isfinite(error.retry_after) else 1.0
        return (("retry-after-ms", str(max(1, round(retry * 1000)))),)
    if isinstance(error, NotLeader) and error.leader:
        return (("bulwark-leader", error.leader),)
    return ()


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def rpc(method: Handler) -> Handler:
    """Turn domain errors raised by a unary servicer method into their gRPC status.

    Anything unexpected is logged with its traceback and reported as INTERNAL
    without internals in the message; reaching that branch is a bug.
    """

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except BulwarkError as error:
            context.set_trailing_metadata(trailing_metadata_for(error))
            await context.abort(status_for(error), error.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper  # type: ignore[return-value]


StreamHandler = TypeVar("StreamHandler", bound=Callable[..., AsyncIterator[Any]])


def rpc_stream(method: StreamHandler) -> StreamHandler:
    """``rpc`` for servicer methods that answer with a stream (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for response in method(self, request, context):
                yield response
        except BulwarkError as error:
            context.set_trailing_metadata(trailing_metadata_for(error))
            await context.abort(status_for(error), error.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper  # type: ignore[return-value]
