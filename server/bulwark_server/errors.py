"""Domain errors raised by capabilities and the store.

They carry no gRPC types; ``bulwark_server.api.status`` maps each class to a
status code in one table.

    BulwarkError
    ├── InvalidArgument        bad input; names the offending field
    ├── NotFound
    ├── AlreadyExists
    ├── FailedPrecondition
    ├── Conflict               a compare-and-swap lost against a concurrent writer
    ├── ResourceExhausted      carries a retry-after hint
    ├── NotLeader              a leader-only action on a follower, or a fenced write refused
    ├── StoreUnavailable       etcd cannot be reached; nothing was written
    ├── PermissionDenied       the caller may not act on this object (beyond its role)
    └── DataLoss               stored data is lost or corrupt everywhere it was kept
"""

from __future__ import annotations

from typing import Any


class BulwarkError(Exception):
    """Base of every error a capability may raise on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BulwarkError):
    """The request is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(BulwarkError):
    """The named object does not exist."""


class AlreadyExists(BulwarkError):
    """An object with that name exists already."""


class FailedPrecondition(BulwarkError):
    """The system is not in a state that allows the operation."""


class Conflict(BulwarkError):
    """A concurrent writer changed the object first; re-read and retry.

    ``current`` is the object as the failed compare-and-swap found it, when known,
    so a retry need not wait for the cache.
    """

    def __init__(self, message: str, current: Any = None) -> None:
        super().__init__(message)
        self.current = current


class ResourceExhausted(BulwarkError):
    """A limit was reached; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotLeader(BulwarkError):
    """This replica does not (or no longer) lead; ``leader`` is the address to use if known."""

    def __init__(self, message: str, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class StoreUnavailable(BulwarkError):
    """etcd is unreachable or timed out; the write was not applied."""


class PeerUnavailable(BulwarkError):
    """Another replica this call needs (the owner of a counter) did not answer."""


class RequestTooLarge(StoreUnavailable):
    """etcd refused a write above its request limit (``--max-request-bytes``); not applied."""


class PermissionDenied(BulwarkError):
    """The caller's role allows the method but not on this object (say, another's key)."""


class DataLoss(BulwarkError):
    """Every copy of the data is missing or corrupt; nothing is returned."""
