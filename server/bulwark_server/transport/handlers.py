"""Helpers for server interceptors: wrap a method handler's behaviour, read a call's status,
and wrap every handler of a server once, when it is registered (``Wrapping``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

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


def ended_by(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The final status of a call whose handler raised ``exc``: the code set on it (an
    abort sets one), else the caller's deadline or cancellation (grpc cancels the
    handler; a stream's generator is closed), else UNKNOWN, as grpc answers."""
    code = status_of(context)
    if code is not grpc.StatusCode.OK:
        return code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        left = context.time_remaining()
        if left is not None and left <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


@runtime_checkable
class Layer(Protocol):
    """An interceptor that wraps a method's handler the same way for every call, and
    can therefore do it once, when the handler is registered."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """``handler`` (of the full method name ``method``) wrapped; None stays None."""
        ...


def layered(layers: Sequence[Layer], method: str, handler: Any) -> Any:
    """``handler`` wrapped by every layer, the first outermost."""
    for layer in reversed(layers):
        handler = layer.wrap(method, handler)
    return handler


class Wrapping:
    """Registers handlers on ``server`` wrapped by ``layers`` (the first outermost): what
    the generated ``add_*_to_server`` functions are given in place of the server.

    * gRPC asks its interceptors for every call: each is a coroutine awaiting the
      next, and each made its handler anew around its own closures. Layers wrap each
      handler once, here, so a call runs the wrapped handler straight away.
    * Every method is served through one generic handler, a dictionary of the
      wrapped handlers by full method name, none as a registered method: grpc.aio
      keeps a pending request per registered method and waits on all of them
      (``asyncio.wait``) for every call it accepts, which with this server's ~100
      methods cost more than an echo call's whole handling. The generic handlers the
      generated code also adds (for the same methods) come after it, wrapped on their
      first answer for a method, which is kept while it gives the same handler.
    """

    def __init__(self, server: grpc.aio.Server, layers: Sequence[Layer]) -> None:
        self._server = server
        self._layers = tuple(layers)
        self._methods: dict[str, Any] = {}
        server.add_generic_rpc_handlers((_Methods(self._methods),))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in method_handlers.items():
            method = f"/{service_name}/{name}"
            self._methods[method] = layered(self._layers, method, handler)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGeneric(handler, self._layers) for handler in handlers)
        )


class _Methods(grpc.GenericRpcHandler):
    def __init__(self, methods: Mapping[str, Any]) -> None:
        self._methods = methods

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._methods.get(handler_call_details.method)


class _WrappedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, layers: tuple[Layer, ...]) -> None:
        self._inner = inner
        self._layers = layers
        # Only methods the inner handler knows are kept: callers cannot grow it.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kept = self._wrapped.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = layered(self._layers, method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
