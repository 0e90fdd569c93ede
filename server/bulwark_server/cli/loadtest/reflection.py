"""Find a unary method through the server's reflection, and build its requests.

The server reflection protocol (``grpc.reflection.v1``, else ``v1alpha``: the same
messages under two names) hands over the file that declares the service and, file
by file, the ones it imports; they go into a private descriptor pool whose message
classes encode the requests and decode the answers. Nothing needs the method's
.proto on this side.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2

from bulwark_server.cli.loadtest.template import Call, MethodNames, Template, TemplateError

# Both versions carry the same messages; v1 first, as grpcurl asks.
REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)
MAX_FILES = 500  # a bound on what one method's imports may bring in


class ResolveError(Exception):
    """The server cannot give the method: not served, not unary, no reflection."""


class DataError(ValueError):
    """Request data that does not fit the method's input message; names the flag."""


def split_method(text: str) -> tuple[str, str]:
    """``package.Service/Method`` or ``package.Service.Method`` -> (service, method)."""
    name = text.strip().lstrip("/")
    service, slash, method = name.rpartition("/")
    if not slash:
        service, _, method = name.rpartition(".")
    if not service or not method or "/" in service:
        raise ValueError(
            f"--call {text!r}: expected package.Service/Method (or package.Service.Method)"
        )
    return service, method


@dataclass(frozen=True)
class ResolvedMethod:
    """A unary method found through reflection, with its message classes."""

    path: str  # /package.Service/Method
    descriptor: MethodDescriptor
    request_class: type[Any]
    response_class: type[Any]
    pool: descriptor_pool.DescriptorPool

    @property
    def names(self) -> MethodNames:
        method = self.descriptor
        return MethodNames(
            full_name=method.full_name,
            method=method.name,
            service=method.containing_service.name,
            input=method.input_type.name,
            output=method.output_type.name,
        )


class _Reflection:
    """One reflection stream: ask, answer, in order."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call

    async def ask(self, **request: Any) -> reflection_pb2.ServerReflectionResponse:
        await self.call.write(reflection_pb2.ServerReflectionRequest(**request))
        answer = await self.call.read()
        if answer is grpc.aio.EOF:
            raise ResolveError("the reflection stream ended early")
        return answer


async def _open_reflection(
    channel: grpc.aio.Channel, wait: float, metadata: Sequence[tuple[str, str]]
) -> tuple[_Reflection, list[str]]:
    """A stream on the first reflection version the server speaks, and its services."""
    last: grpc.aio.AioRpcError | None = None
    for attempt, path in enumerate(REFLECTION_METHODS):
        call = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(timeout=wait, metadata=tuple(metadata))
        stream = _Reflection(call)
        try:
            listed = await stream.ask(list_services="")
        except grpc.aio.AioRpcError as exc:
            call.cancel()
            # A server without this version ends the call at once, UNIMPLEMENTED; our
            # write may lose that race and fail INTERNAL instead. Either way, ask the
            # next version; only the last one's failure stands.
            last = exc
            if attempt + 1 < len(REFLECTION_METHODS):
                continue
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            break
        services = [s.name for s in listed.list_services_response.service]
        return stream, services
    raise ResolveError(
        "the server does not serve gRPC reflection (grpc.reflection.v1 or v1alpha): "
        f"{last.details() if last else ''}"
    )


async def resolve(
    channel: grpc.aio.Channel, call: str, wait: float, metadata: Sequence[tuple[str, str]]
) -> ResolvedMethod:
    """The method ``call`` names, from the server's reflection (ResolveError if not, or
    if reflection takes more than ``wait`` seconds)."""
    service_name, method_name = split_method(call)
    try:
        async with asyncio.timeout(wait):
            stream, services = await _open_reflection(channel, wait, metadata)
            try:
                files = await _fetch_files(stream, service_name, services)
            finally:
                stream.call.cancel()
    except TimeoutError:
        raise ResolveError(f"reflection did not answer within {wait:g}s") from None
    except grpc.aio.AioRpcError as exc:
        raise ResolveError(f"reflection failed: {exc.code().name}: {exc.details()}") from None
    pool = descriptor_pool.DescriptorPool()
    _add_in_order(pool, files)
    service = pool.FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    if method is None:
        names = ", ".join(sorted(service.methods_by_name))
        raise ResolveError(f"{service_name} has no method {method_name!r}; it has {names}")
    if method.client_streaming or method.server_streaming:
        raise ResolveError(
            f"{service_name}/{method_name} is a streaming method; loadtest makes unary calls"
        )
    return ResolvedMethod(
        path=f"/{service_name}/{method_name}",
        descriptor=method,
        request_class=message_factory.GetMessageClass(method.input_type),
        response_class=message_factory.GetMessageClass(method.output_type),
        pool=pool,
    )


async def _fetch_files(
    stream: _Reflection, service_name: str, services: list[str]
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The file declaring ``service_name`` and every file it imports, by name."""
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def take(answer: reflection_pb2.ServerReflectionResponse, asked: str) -> None:
        if answer.HasField("error_response"):
            if service_name == asked:
                listed = ", ".join(sorted(s for s in services if not s.startswith("grpc.")))
                raise ResolveError(
                    f"the server has no service {service_name!r} "
                    f"(its reflection lists: {listed or 'none'})"
                )
            raise ResolveError(f"reflection could not give {asked!r}: {answer.error_response}")
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files.setdefault(proto.name, proto)

    take(await stream.ask(file_containing_symbol=service_name), service_name)
    while missing := sorted({d for f in files.values() for d in f.dependency} - files.keys()):
        if len(files) > MAX_FILES:
            raise ResolveError(f"{service_name} imports more than {MAX_FILES} files")
        for name in missing:
            take(await stream.ask(file_by_filename=name), name)
    return files


def _add_in_order(
    pool: descriptor_pool.DescriptorPool, files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    """Add each file after the files it imports."""
    added: set[str] = set()

    def add(name: str, path: tuple[str, ...]) -> None:
        if name in added or name in path:
            return
        for dependency in files[name].dependency:
            add(dependency, (*path, name))
        pool.Add(files[name])
        added.add(name)

    for name in sorted(files):
        add(name, ())


class RequestFactory:
    """Serialized requests from a JSON template: rendered, parsed and encoded per call,
    or once for the whole run when the template has no actions."""

    def __init__(self, method: ResolvedMethod, data: str, flag: str = "-d/--data") -> None:
        self.flag = flag
        self.method = method
        try:
            self.template = Template(data, method.names)
        except TemplateError as exc:
            raise DataError(f"{flag}: {exc}") from None
        sample = self._encode(self.template.render(Call(0, "w0")))  # fails early on bad data
        self._static = sample if self.template.static else None

    def _encode(self, text: str) -> bytes:
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{self.flag}: not valid JSON once rendered: {exc}") from None
        try:
            # Any JSON value: well-known types (wrappers, Struct, Duration) are not objects.
            message = json_format.ParseDict(
                loaded, self.method.request_class(), descriptor_pool=self.method.pool
            )
        except Exception as exc:  # ParseError, and TypeError or the like for odd shapes
            raise DataError(f"{self.flag}: does not fit {self._type_name}: {exc}") from None
        return bytes(message.SerializeToString())

    @property
    def _type_name(self) -> str:
        return str(self.method.descriptor.input_type.full_name)

    def build(self, number: int, worker: str) -> bytes:
        """The serialized request of call ``number`` made by ``worker``."""
        if self._static is not None:
            return self._static
        return self._encode(self.template.render(Call(number, worker)))
