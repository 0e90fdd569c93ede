"""The write log: which etcd revision the writes of the current task reached.

The audit trail uses it to learn the revision a call's change got without
every capability having to report it. It lives in a context variable, so it
follows a task into the tasks it starts and never leaks between calls.
"""

from __future__ import annotations

import contextvars


class WriteLog:
    """The etcd revision of the last write made while this log is current."""

    __slots__ = ("revision",)

    def __init__(self) -> None:
        self.revision = 0


_WRITES: contextvars.ContextVar[WriteLog | None] = contextvars.ContextVar(
    "bulwark_writes", default=None
)


def track_writes() -> WriteLog:
    """Start recording the writes of the current task (and the tasks it starts).

    The audit trail uses it to learn the revision a call's change got without
    every capability having to report it.
    """
    writes = WriteLog()
    _WRITES.set(writes)
    return writes


def note_write(revision: int) -> None:
    """Record a successful write at ``revision`` in the current log, if one is being kept."""
    writes = _WRITES.get()
    if writes is not None:
        writes.revision = max(writes.revision, revision)
