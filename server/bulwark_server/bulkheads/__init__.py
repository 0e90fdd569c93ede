"""Bulkheads: cluster-wide concurrency limits whose permits live on etcd leases.

* ``rules``: validation, permit ids, slot choice and retry hints (no I/O).
* ``waiters``: this replica's queue of Acquire calls waiting for a slot.
* ``manager``: ``BulkheadManager``, the capability over the store; its
  docstring states the guarantees (the bound holds without a leader).
"""

from bulwark_server.bulkheads.manager import BulkheadManager
from bulwark_server.bulkheads.rules import (
    AcquireSpec,
    BulkheadSpec,
    PermitRef,
    parse_acquire,
    parse_bulkhead,
    parse_expected_revision,
    parse_permit_ref,
)

__all__ = [
    "AcquireSpec",
    "BulkheadManager",
    "BulkheadSpec",
    "PermitRef",
    "parse_acquire",
    "parse_bulkhead",
    "parse_expected_revision",
    "parse_permit_ref",
]
