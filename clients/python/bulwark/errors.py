"""Errors raised by the Bulwark client; each carries the gRPC status it stands for."""

from __future__ import annotations

import grpc


class BulwarkError(Exception):
    """A call to Bulwark failed; ``code`` is its gRPC status, ``details`` the server's words."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> BulwarkError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else "") or ""
        kind = {
            grpc.StatusCode.UNAVAILABLE: UnavailableError,
            grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
            grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
            grpc.StatusCode.NOT_FOUND: NotFoundError,
            grpc.StatusCode.PERMISSION_DENIED: AccessDeniedError,
            grpc.StatusCode.UNAUTHENTICATED: AccessDeniedError,
            grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
        }.get(code, BulwarkError)
        return kind(code, details)


class UnavailableError(BulwarkError):
    """No Bulwark endpoint answered in time."""


class InvalidRequestError(BulwarkError):
    """Bulwark refused the request as malformed; ``details`` names the field."""


class NotFoundError(BulwarkError):
    """The named breaker, bulkhead, limit, feature or service does not exist."""


class AccessDeniedError(BulwarkError):
    """No credentials, bad credentials, or a role too small for the call."""


class ResourceExhaustedError(BulwarkError):
    """Bulwark is overloaded, or a bulkhead is full; retry after ``retry_after`` seconds."""

    retry_after: float | None = None


class BreakerOpenError(BulwarkError):
    """The breaker refuses calls now; ``retry_after`` says when one may go (if known)."""

    def __init__(self, name: str, retry_after: float | None, source: str) -> None:
        when = f"; retry in {retry_after:.3f}s" if retry_after is not None else ""
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, f"circuit breaker {name!r} is open ({source}){when}"
        )
        self.name = name
        self.retry_after = retry_after


class RateLimitedError(BulwarkError):
    """The request is over a rate limit."""

    def __init__(self, domain: str, detail: str) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED, f"over the rate limit of {domain!r}: {detail}"
        )
        self.domain = domain


class FaultInjectedError(BulwarkError):
    """A fault rule (``ChaosService``) failed this call on purpose, before it was sent;
    ``rule`` names the rule. Only in processes that opted in (``ClientOptions.chaos``)."""

    def __init__(self, code: grpc.StatusCode, details: str, rule: str) -> None:
        super().__init__(code, details)
        self.rule = rule
