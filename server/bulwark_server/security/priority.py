"""Call priorities: how much a call matters when a replica must shed load.

A call says its class in the ``bulwark-priority`` metadata (``critical``,
``default`` or ``sheddable``; none: ``default``). The identity's maximum caps it:
a token's ``max_priority`` (default ``default``), ``default`` for client
certificates, ``critical`` for replicas and, with authentication off, for every
caller (all act as admin). A higher claim counts as the maximum, so a caller
cannot promote itself.
"""

from __future__ import annotations

import enum

from bulwark.v1 import auth_pb2

METADATA_KEY = "bulwark-priority"


class Priority(enum.IntEnum):
    """Values are those of ``bulwark.v1.CallPriority``."""

    SHEDDABLE = auth_pb2.CALL_PRIORITY_SHEDDABLE
    DEFAULT = auth_pb2.CALL_PRIORITY_DEFAULT
    CRITICAL = auth_pb2.CALL_PRIORITY_CRITICAL

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, value: int) -> Priority:
        """A stored CallPriority (UNSPECIFIED: DEFAULT)."""
        return cls(value) if value in cls._value2member_map_ else cls.DEFAULT


def claimed(text: str | None, allowed: Priority) -> Priority:
    """The priority a call counts as: what it claims (``None``, empty or unknown:
    ``default``), at most ``allowed``."""
    wanted = Priority.__members__.get((text or "").strip().upper(), Priority.DEFAULT)
    return min(wanted, allowed)
