"""Who is calling, may they, and what did they change: one interceptor for every RPC.

For each call, in order:

1. Health checking and reflection pass untouched.
2. The caller is identified: by a bearer token (``authorization: Bearer ...``)
   when one is sent, else by its client certificate (common name, and the role
   in the certificate's organizational unit). With authentication off, every
   caller is the anonymous admin.
3. The method's rule (``security.roles``) must grant the caller's role:
   no identity → ``UNAUTHENTICATED``; too small a role, or a method without a
   rule → ``PERMISSION_DENIED``.
4. The call runs with its identity in ``CALLER`` (capabilities record it, for
   instance as the actor of a forced state) and its etcd writes tracked, and is
   then audited by its rule.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from bulwark.v1 import audit_pb2
from bulwark_server.api.handlers import rewrap, status_of
from bulwark_server.errors import NotLeader, StoreUnavailable
from bulwark_server.security import certs
from bulwark_server.security.audit import AuditLog, describe_target
from bulwark_server.security.roles import Audit, Role, is_open, rule_for
from bulwark_server.security.tokens import TokenStore, bearer
from bulwark_server.store import track_writes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """A caller as Bulwark knows it."""

    name: str
    role: Role | None
    method: str  # "certificate", "token" or "none"
    token_id: str = ""


ANONYMOUS = Identity("anonymous", Role.ADMIN, "none")
CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "bulwark_caller", default=None
)


def current_caller() -> Identity | None:
    """The identity of the call being served, if any."""
    return CALLER.get()


def caller_name(claimed: str = "") -> str:
    """Who is calling, for the record: the authenticated identity; with authentication
    off, the name the request claims (or "anonymous")."""
    caller = CALLER.get()
    if caller is None or caller.method == "none":
        return claimed or "anonymous"
    return caller.name


class Denied(Exception):
    def __init__(
        self, code: grpc.StatusCode, message: str, identity: Identity | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.identity = identity


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, authorization and the audit trail; see the module docstring."""

    def __init__(self, tokens: TokenStore, audit: AuditLog, *, enabled: bool) -> None:
        self._tokens = tokens
        self._audit = audit
        self._enabled = enabled

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or is_open(method):
            return handler
        token = bearer(details.invocation_metadata)
        return rewrap(
            handler,
            lambda behavior: self._unary(method, token, behavior),
            lambda behavior: self._streaming(method, token, behavior),
        )

    def identify(self, token: str | None, context: grpc.aio.ServicerContext) -> Identity | None:
        if not self._enabled:
            return ANONYMOUS
        if token is not None:
            record = self._tokens.verify(token)
            if record is None:
                raise Denied(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the bearer token is not valid (unknown, revoked or expired)",
                )
            return Identity(record.name, Role(record.role), "token", record.id)
        pem = (context.auth_context() or {}).get("x509_pem_cert")
        if pem:
            name, role = certs.identity_of(pem[0])
            return Identity(name, Role.parse(role), "certificate")
        return None

    def _authorize(
        self, method: str, token: str | None, context: grpc.aio.ServicerContext
    ) -> Identity:
        identity = self.identify(token, context)
        if identity is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "send a client certificate or an 'authorization: Bearer <token>' header",
            )
        rule = rule_for(method)
        if rule is None:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to callers", identity
            )
        if identity.role is None or identity.role < rule.role:
            has = identity.role.label if identity.role is not None else "no role"
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs the {rule.role.label} role; {identity.name} has {has}",
                identity,
            )
        return identity

    def _unary(
        self, method: str, token: str | None, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        rule = rule_for(method)
        audit = rule.audit if rule is not None else Audit.ALWAYS

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                identity = self._authorize(method, token, context)
            except Denied as denied:
                if audit is not Audit.NEVER:
                    await self._record_safely(
                        method,
                        request,
                        context,
                        denied.identity,
                        denied.code,
                        denied.message,
                        0,
                        audit,
                    )
                await context.abort(denied.code, denied.message)
            CALLER.set(identity)
            writes = track_writes()
            code = grpc.StatusCode.OK
            message = ""
            try:
                return await behavior(request, context)
            except BaseException:
                code = status_of(context)
                if code is grpc.StatusCode.OK:
                    code = grpc.StatusCode.UNKNOWN
                message = context.details() or ""
                raise
            finally:
                if audit is Audit.ALWAYS or (audit is Audit.ON_WRITE and writes.revision):
                    await self._record_safely(
                        method, request, context, identity, code, message, writes.revision, audit
                    )

        return wrapper

    def _streaming(
        self, method: str, token: str | None, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        rule = rule_for(method)
        audit = rule.audit if rule is not None else Audit.ALWAYS

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                identity = self._authorize(method, token, context)
            except Denied as denied:
                if audit is not Audit.NEVER:
                    await self._record_safely(
                        method,
                        request,
                        context,
                        denied.identity,
                        denied.code,
                        denied.message,
                        0,
                        audit,
                    )
                await context.abort(denied.code, denied.message)
            CALLER.set(identity)
            writes = track_writes()
            code = grpc.StatusCode.OK
            message = ""
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                code = status_of(context)
                if code is grpc.StatusCode.OK:
                    # A stream the caller closed ends with GeneratorExit or cancellation.
                    code = (
                        grpc.StatusCode.CANCELLED
                        if isinstance(exc, GeneratorExit | asyncio.CancelledError)
                        else grpc.StatusCode.UNKNOWN
                    )
                message = context.details() or ""
                raise
            finally:
                if audit is Audit.ALWAYS or (audit is Audit.ON_WRITE and writes.revision):
                    await self._record_safely(
                        method, request, context, identity, code, message, writes.revision, audit
                    )

        return wrapper

    async def _record(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        identity: Identity | None,
        code: grpc.StatusCode,
        message: str,
        revision: int,
        audit: Audit,
    ) -> None:
        event: audit_pb2.AuditEvent = self._audit.event(
            actor=identity.name if identity else "unknown",
            role=identity.role.value if identity and identity.role else 0,
            auth_method=identity.method if identity else "",
            peer=context.peer() or "",
            method=method,
            target=describe_target(request),
            code=code.name,
            message=message[:1024],
            revision=revision,
        )
        if audit is Audit.ALWAYS:
            try:
                await self._audit.write(event)
                return
            except (StoreUnavailable, NotLeader) as exc:
                # The event still goes with the next batch, once etcd answers again.
                log.warning("audit event %s queued: %s", event.id, exc)
        self._audit.enqueue(event)

    async def _record_safely(self, *args: Any) -> None:
        """Record an event; a failure to do so is logged, never the caller's problem."""
        try:
            await self._record(*args)
        except Exception:
            log.exception("could not record an audit event for %s", args[0])
