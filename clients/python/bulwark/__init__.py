"""Bulwark client library: ``from bulwark import Client, AsyncClient``.

Decisions ("may I call X?", "is feature F available?", "who is primary?") are
answered in-process from caches fed by Bulwark's watch streams; outcomes are
reported in the background; when Bulwark is unreachable the last known state
and local limits keep the service safe. The generated gRPC stubs live in
:mod:`bulwark.v1` and are shared by the client and the server.
"""

from bulwark._core import Decision
from bulwark._settings import ClientOptions
from bulwark.aio import AsyncClient, Feature
from bulwark.errors import (
    AccessDeniedError,
    BreakerOpenError,
    BulwarkError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ResourceExhaustedError,
    UnavailableError,
)
from bulwark.interceptors import AsyncBulwarkInterceptor, BulwarkInterceptor, Guard
from bulwark.sync import Client

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AsyncBulwarkInterceptor",
    "AsyncClient",
    "BreakerOpenError",
    "BulwarkError",
    "BulwarkInterceptor",
    "Client",
    "ClientOptions",
    "Decision",
    "Feature",
    "Guard",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "ResourceExhaustedError",
    "UnavailableError",
    "__version__",
]
