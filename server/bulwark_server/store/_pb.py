"""etcd's protobuf messages to and from the store's values (pure functions, no I/O)."""

from __future__ import annotations

from bulwark_server.store import _etcd_client as ec
from bulwark_server.store.cache import Entry, Event, EventType


def entry(kv: ec.kv_pb2.KeyValue) -> Entry:
    """The ``Entry`` for an etcd KeyValue."""
    return Entry(
        key=bytes(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def event(ev: ec.kv_pb2.Event) -> Event:
    """The ``Event`` for a watch event; a DELETE carries the key and its deletion revision."""
    if ev.type == ec.kv_pb2.Event.DELETE:
        deleted = Entry(bytes(ev.kv.key), b"", 0, int(ev.kv.mod_revision), 0)
        return Event(EventType.DELETE, deleted, int(ev.kv.mod_revision))
    return Event(EventType.PUT, entry(ev.kv), int(ev.kv.mod_revision))


def compare(key: bytes, target: str, value: int, result: int | None = None) -> ec.rpc_pb2.Compare:
    """A transaction compare of ``key``'s CREATE, MOD or VERSION revision (EQUAL by default)."""
    c = ec.rpc_pb2.Compare
    out = c(key=key, target=getattr(c, target), result=c.EQUAL if result is None else result)
    if target == "CREATE":
        out.create_revision = value
    elif target == "MOD":
        out.mod_revision = value
    else:
        out.version = value
    return out


def put_op(key: bytes, value: bytes, lease: int) -> ec.rpc_pb2.RequestOp:
    """A transaction operation writing ``key`` (attached to ``lease`` unless 0)."""
    return ec.rpc_pb2.RequestOp(
        request_put=ec.rpc_pb2.PutRequest(key=key, value=value, lease=lease)
    )


def delete_op(key: bytes) -> ec.rpc_pb2.RequestOp:
    """A transaction operation deleting ``key`` (no error when absent)."""
    return ec.rpc_pb2.RequestOp(request_delete_range=ec.rpc_pb2.DeleteRangeRequest(key=key))


def range_op(key: bytes) -> ec.rpc_pb2.RequestOp:
    """A transaction operation reading ``key`` back (a failed compare's evidence)."""
    return ec.rpc_pb2.RequestOp(request_range=ec.rpc_pb2.RangeRequest(key=key))


def read_back(resp: ec.rpc_pb2.TxnResponse, key: bytes) -> Entry | None:
    """``key`` as a transaction's range operations read it, or None when absent."""
    for op in resp.responses:
        if op.HasField("response_range"):
            for kv in op.response_range.kvs:
                if bytes(kv.key) == key:
                    return entry(kv)
    return None
