"""Bulwark client library: ``from bulwark import Client, AsyncClient``.

Decisions ("may I call X?", "is feature F available?", "who is primary?") are
answered in-process from caches fed by Bulwark's watch streams; outcomes are
reported in the background; when Bulwark is unreachable the last known state
and local limits keep the service safe. The generated gRPC stubs live in
:mod:`bulwark.v1` and are shared by the client and the server.

The exported names load lazily (PEP 562): ``import bulwark.v1`` (the server's
way in, for the stubs) loads neither client nor the interceptors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulwark._settings import ClientOptions
    from bulwark._states import Decision
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

# Exported name -> the module defining it, imported on first access.
_WHERE = {
    "AccessDeniedError": "bulwark.errors",
    "AsyncBulwarkInterceptor": "bulwark.interceptors",
    "AsyncClient": "bulwark.aio",
    "BreakerOpenError": "bulwark.errors",
    "BulwarkError": "bulwark.errors",
    "BulwarkInterceptor": "bulwark.interceptors",
    "Client": "bulwark.sync",
    "ClientOptions": "bulwark._settings",
    "Decision": "bulwark._states",
    "Feature": "bulwark._caches",
    "Guard": "bulwark.interceptors",
    "InvalidRequestError": "bulwark.errors",
    "NotFoundError": "bulwark.errors",
    "RateLimitedError": "bulwark.errors",
    "ResourceExhaustedError": "bulwark.errors",
    "UnavailableError": "bulwark.errors",
}


def __getattr__(name: str) -> Any:
    """Import an exported name's module on first use, then keep the name here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bulwark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # Later lookups skip this function.
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
