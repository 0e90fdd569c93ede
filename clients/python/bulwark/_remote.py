"""``Remote``: the one gRPC call a client's policy asks its driver to make. I/O-free."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from bulwark.errors import BulwarkError

__all__ = ["Remote"]

T = TypeVar("T")


class Remote(Generic[T]):
    """One gRPC call a driver must make, and how its outcome becomes the answer.

    ``done(response, now, now_wall)`` turns the response into the answer;
    ``failed(error, now)`` turns a ``BulwarkError`` into one or raises it.
    ``timeout`` is the call's deadline in seconds.
    """

    __slots__ = ("done", "failed", "idempotent", "method", "request", "stub", "timeout")

    def __init__(
        self,
        stub: Callable[[Any], Any],
        method: str,
        request: Any,
        *,
        idempotent: bool,
        timeout: float,
        done: Callable[[Any, float, float], T],
        failed: Callable[[BulwarkError, float], T] | None = None,
    ) -> None:
        self.stub = stub
        self.method = method
        self.request = request
        self.idempotent = idempotent
        self.timeout = timeout
        self.done = done
        self.failed = failed if failed is not None else _reraise

    def __repr__(self) -> str:
        return f"Remote({self.method}, idempotent={self.idempotent}, timeout={self.timeout})"


def _reraise(error: BulwarkError, now: float) -> Any:
    raise error
