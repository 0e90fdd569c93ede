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
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from bulwark.v1 import audit_pb2
from bulwark_server.errors import NotLeader, StoreUnavailable
from bulwark_server.security import certs
from bulwark_server.security.audit import AuditLog, describe_target
from bulwark_server.security.identity import ANONYMOUS, CALLER, REPLICA_TOKEN_CREATOR, Identity
from bulwark_server.security.priority import Priority
from bulwark_server.security.roles import Audit, Role, is_open, rule_for
from bulwark_server.security.tokens import TokenStore, bearer
from bulwark_server.store import track_writes
from bulwark_server.transport.handlers import rewrap, status_of

log = logging.getLogger(__name__)


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return ""


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
        return self.wrap(details.method, await continuation(details))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """``handler`` guarded (None, health and reflection stay as they are): what
        ``intercept_service`` returns. The same for every call of ``method``: the
        caller's token is read from each call's metadata."""
        if handler is None or is_open(method):
            return handler
        return rewrap(
            handler,
            lambda behavior: self._unary(method, behavior),
            lambda behavior: self._streaming(method, behavior),
        )

    def identify(
        self, token: str | None, context: grpc.aio.ServicerContext | None
    ) -> Identity | None:
        """The caller; ``context`` may be None only with authentication off."""
        if not self._enabled:
            return ANONYMOUS
        assert context is not None, "identifying a caller needs its call"
        invalid = Denied(
            grpc.StatusCode.UNAUTHENTICATED,
            "the bearer token is not valid (unknown, revoked or expired)",
        )
        if token is not None:
            try:
                record = self._tokens.verify(token)
                role = Role(record.role) if record is not None else None
            except (ValueError, DecodeError):
                log.warning("unreadable token record; refusing the token")
                raise invalid from None
            if record is None or role is None:
                raise invalid
            name = record.name
            replica = record.created_by == REPLICA_TOKEN_CREATOR and name.startswith("replica-")
            if replica:
                # A replica forwarding a caller's call: the record names the caller, while
                # the replica's own role is what the call may do.
                behalf = _metadata_value(context, "bulwark-on-behalf-of")
                if behalf:
                    name = f"{behalf[:256]} via {name}"
            most = Priority.CRITICAL if replica else Priority.of(record.max_priority)
            return Identity(name, role, "token", record.id, replica=replica, max_priority=most)
        pem = (context.auth_context() or {}).get("x509_pem_cert")
        if pem:
            try:
                name, role_text = certs.identity_of(pem[0])
            except ValueError:
                raise Denied(
                    grpc.StatusCode.UNAUTHENTICATED, "the client certificate cannot be read"
                ) from None
            return Identity(name, Role.parse(role_text), "certificate")
        return None

    def _authorize(
        self, method: str, token: str | None, context: grpc.aio.ServicerContext | None
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
        if rule.replicas_only and identity.method != "none" and not identity.replica:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} is spoken between Bulwark replicas only; {identity.name} is none",
                identity,
            )
        if identity.role is None or identity.role < rule.role:
            has = identity.role.label if identity.role is not None else "no role"
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs the {rule.role.label} role; {identity.name} has {has}",
                identity,
            )
        return identity

    async def _admit(
        self, method: str, token: str | None, request: Any, context: grpc.aio.ServicerContext
    ) -> Identity:
        """The caller's identity, or abort the call (a refusal is tallied, never written
        one by one: refused callers must not be able to flood etcd or the trail)."""
        try:
            identity = self._authorize(method, token, context)
        except Denied as denied:
            self._note(method, request, context, denied.identity, denied.code, denied.message, 0)
            await context.abort(denied.code, denied.message)
        CALLER.set(identity)
        return identity

    def _unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        rule = rule_for(method)
        audit = rule.audit if rule is not None else Audit.ALWAYS
        enabled = self._enabled
        # With authentication off every caller is the anonymous admin: whether it may
        # call ``method`` is the same for every call, and settled here.
        admitted = None
        if not enabled:
            with contextlib.suppress(Denied):
                admitted = self._authorize(method, None, None)

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # What ``_admit`` does, without a coroutine of its own: it awaits only to
            # refuse. With authentication off the token is never looked at.
            identity = admitted
            if identity is None:
                token = bearer(context.invocation_metadata()) if enabled else None
                try:
                    identity = self._authorize(method, token, context)
                except Denied as denied:
                    self._note(
                        method, request, context, denied.identity, denied.code, denied.message, 0
                    )
                    await context.abort(denied.code, denied.message)
            CALLER.set(identity)
            writes = track_writes()
            code = grpc.StatusCode.OK
            message = ""
            try:
                return await behavior(request, context)
            except BaseException as exc:
                code, message = _outcome(context, exc)
                raise
            finally:
                # ``_after``, awaited only when it writes (an event of every call).
                if audit is Audit.ALWAYS:
                    await self._write(
                        self._event(
                            method, request, context, identity, code.name, message, writes.revision
                        )
                    )
                elif audit is Audit.ON_WRITE and writes.revision:
                    self._note(method, request, context, identity, code, message, writes.revision)

        return wrapper

    def _streaming(
        self, method: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        rule = rule_for(method)
        audit = rule.audit if rule is not None else Audit.ALWAYS

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = bearer(context.invocation_metadata())
            identity = await self._admit(method, token, request, context)
            if audit is Audit.ALWAYS:
                # Long operations (restores, rotations) are on record before they begin,
                # even if the replica dies before they end.
                await self._write(self._event(method, request, context, identity, "STARTED", "", 0))
            writes = track_writes()
            try:
                async for response in behavior(request, context):
                    if token is not None and self._tokens.verify(token) is None:
                        # Revoked or expired while the stream was open.
                        await context.abort(
                            grpc.StatusCode.UNAUTHENTICATED, "the bearer token was revoked"
                        )
                    yield response
            except BaseException as exc:
                code, message = _outcome(context, exc)
                # No await here: a stream the caller dropped is closed by gRPC (or by the
                # garbage collector) outside its task, where awaiting is unsafe. The
                # event goes with the next batch instead.
                if audit is Audit.ALWAYS or (audit is Audit.ON_WRITE and writes.revision):
                    self._note_now(
                        method, request, context, identity, code, message, writes.revision
                    )
                raise
            await self._after(
                audit,
                method,
                request,
                context,
                identity,
                grpc.StatusCode.OK,
                "",
                writes.revision,
            )

        return wrapper

    def _note_now(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        identity: Identity,
        code: grpc.StatusCode,
        message: str,
        revision: int,
    ) -> None:
        """Queue an event for the next batch, as it is (not tallied)."""
        try:
            event = self._event(method, request, context, identity, code.name, message, revision)
            self._audit.enqueue(event)
        except Exception:
            log.exception("could not queue an audit event for %s", method)

    async def _after(
        self,
        audit: Audit,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        identity: Identity,
        code: grpc.StatusCode,
        message: str,
        revision: int,
    ) -> None:
        """Record a call that was let in, by its audit rule."""
        if audit is Audit.ALWAYS:
            await self._write(
                self._event(method, request, context, identity, code.name, message, revision)
            )
        elif audit is Audit.ON_WRITE and revision:
            self._note(method, request, context, identity, code, message, revision)

    def _event(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        identity: Identity | None,
        code: str,
        message: str,
        revision: int,
    ) -> audit_pb2.AuditEvent:
        return self._audit.event(
            actor=identity.name if identity else "unknown",
            role=identity.role.value if identity and identity.role else 0,
            auth_method=identity.method if identity else "",
            token_id=identity.token_id if identity else "",
            peer=context.peer() or "",
            method=method,
            target=describe_target(request),
            code=code,
            message=message[:1024],
            revision=revision,
        )

    def _note(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        identity: Identity | None,
        code: grpc.StatusCode,
        message: str,
        revision: int,
    ) -> None:
        """Tally an event (data-plane changes, refusals); never fails the call."""
        try:
            self._audit.tally(
                self._event(method, request, context, identity, code.name, message, revision)
            )
        except Exception:
            log.exception("could not tally an audit event for %s", method)

    async def _write(self, event: audit_pb2.AuditEvent) -> None:
        """Write an event now; if etcd cannot take it, with the next batch. Never raises."""
        try:
            await self._audit.write(event)
        except (StoreUnavailable, NotLeader) as exc:
            log.warning("audit event %s queued: %s", event.id, exc)
            self._audit.enqueue(event)
        except Exception:
            log.exception("could not record audit event %s", event.id)


def _outcome(context: grpc.aio.ServicerContext, exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a call ended with, when it ended by an exception."""
    code = status_of(context)
    if code is grpc.StatusCode.OK:
        cancelled = isinstance(exc, GeneratorExit | asyncio.CancelledError)
        code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
    return code, context.details() or ""
