"""AuthService and AuditService: validate, call the token store or audit log, map errors."""

from __future__ import annotations

import grpc
import grpc.aio

from bulwark.v1 import audit_pb2, audit_pb2_grpc, auth_pb2, auth_pb2_grpc
from bulwark_server.api.status import rpc
from bulwark_server.errors import InvalidArgument
from bulwark_server.security.audit import AuditLog
from bulwark_server.security.identity import caller_name, current_caller
from bulwark_server.security.roles import Role
from bulwark_server.security.tokens import TokenStore
from bulwark_server.validation import (
    duration_seconds,
    page_params,
    timestamp_seconds,
    validate_id,
    validate_name,
)

MAX_TOKEN_TTL_S = 10 * 365 * 86400.0


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Token management and WhoAmI."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    @rpc
    async def CreateToken(
        self, request: auth_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateTokenResponse:
        validate_name(request.name)
        if request.role not in {r.value for r in Role}:
            raise InvalidArgument("role", "must be DATAPLANE, OPERATOR or ADMIN")
        ttl = None
        if request.HasField("ttl"):
            ttl = duration_seconds(request.ttl, "ttl", minimum=1.0, maximum=MAX_TOKEN_TTL_S)
        if request.max_priority not in auth_pb2.CallPriority.values():
            raise InvalidArgument("max_priority", f"unknown priority {request.max_priority}")
        token, record = await self._tokens.create(
            request.name, Role(request.role), caller_name(), ttl, max_priority=request.max_priority
        )
        return auth_pb2.CreateTokenResponse(token=token, record=record)

    @rpc
    async def ListTokens(
        self, request: auth_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListTokensResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        tokens, token = self._tokens.list(size, start_after)
        return auth_pb2.ListTokensResponse(tokens=tokens, next_page_token=token)

    @rpc
    async def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        validate_name(request.id, "id")
        revision = await self._tokens.revoke(request.id, caller_name())
        return auth_pb2.RevokeTokenResponse(revision=revision)

    @rpc
    async def WhoAmI(
        self, request: auth_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.WhoAmIResponse:
        caller = current_caller()
        if caller is None:
            return auth_pb2.WhoAmIResponse(name="anonymous", method="none")
        return auth_pb2.WhoAmIResponse(
            name=caller.name,
            role=caller.role.value if caller.role is not None else 0,
            method=caller.method,
            token_id=caller.token_id,
        )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """Pages through the audit trail."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    @rpc
    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        size, start_after = page_params(request.page_size, request.page_token)
        since = timestamp_seconds(request.since, "since") if request.HasField("since") else None
        until = timestamp_seconds(request.until, "until") if request.HasField("until") else None
        validate_id(request.actor, "actor", required=False)
        validate_id(request.method, "method", required=False)
        events, token = self._audit.list(
            size,
            start_after,
            since=since,
            until=until,
            actor=request.actor,
            method=request.method,
            newest_first=request.newest_first,
        )
        return audit_pb2.ListAuditEventsResponse(events=events, next_page_token=token)
