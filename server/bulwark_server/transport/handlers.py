"""Helpers for server interceptors: wrap a method handler's behaviour, read a call's status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

Behavior = Callable[..., Any]


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped: ``unary`` for calls answered with
    one message, ``streaming`` for calls answered with a stream."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **common)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **common)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **common)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **common)


def status_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status code set on a call so far (OK when none was set)."""
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.UNKNOWN
