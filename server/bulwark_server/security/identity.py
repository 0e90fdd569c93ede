"""Who is calling: the identity the transport layer established for the call being served.

Capabilities and servicers read it (``caller_name``, ``current_caller``) to record
who acted; they never see how it was established (certificate or token).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from bulwark_server.security.priority import Priority
from bulwark_server.security.roles import Role


@dataclass(frozen=True)
class Identity:
    """A caller as Bulwark knows it."""

    name: str
    role: Role | None
    method: str  # "certificate", "token" or "none"
    token_id: str = ""
    # A Bulwark replica, by the token it made for itself (replica-to-replica calls).
    replica: bool = False
    # The highest priority its calls may claim (``security.priority``).
    max_priority: Priority = Priority.DEFAULT


ANONYMOUS = Identity("anonymous", Role.ADMIN, "none", max_priority=Priority.CRITICAL)
CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "bulwark_caller", default=None
)


# The creator recorded on the tokens replicas make for themselves.
REPLICA_TOKEN_CREATOR = "bulwark"


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
