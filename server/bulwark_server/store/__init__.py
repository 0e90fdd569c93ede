"""State in etcd: the only package that talks to etcd.

This module is the store's front: code outside ``bulwark_server.store``
imports from here, or from ``bulwark_server.store.keys`` for the key layout,
and never from the modules below, which may change shape.

``EtcdStore`` (store/etcd.py) is a facade over one part per concern:

* ``connection``: endpoints, TLS (``EtcdTls``), the client, reachability.
* ``kv``: linearizable reads and compare-and-swap transactions, with
  ``Fence`` (leader fencing) and ``Unchanged`` (further write conditions).
* ``leases`` and ``members`` (``MemberInfo``).
* ``watch``: the watch, resyncs and probe that keep the ``Cache``
  (store/cache.py) of the whole ``/bulwark/v1/`` prefix current, and
  ``StoreStatus``, how current it is. Reads are answered from the cache.
* ``writelog``: ``track_writes`` / ``WriteLog``, the revision a task's writes
  reached.
* ``streams``: ``follow``, the snapshot-then-changes shape of every Watch* RPC.
* ``paging``: ``scan_page`` / ``take_page`` page every listing the same way.
* ``messages``: ``put_message`` / ``with_revision`` store and read a message whose
  ``revision`` is its key's.

``MAX_TXN_OPS`` is the most keys ``EtcdStore.put_many``, ``delete_many``,
``put_raw`` and ``delete_raw`` take in one call (more raise ValueError). Each
such call is one etcd transaction, all or nothing, safely under etcd's own
default limit of 128 operations. A caller with more keys splits them into
batches of at most ``MAX_TXN_OPS`` (``batches`` also keeps each under
``MAX_REQUEST_BYTES``, or a caller's own byte limit); the batches are then
separate transactions, so a reader or a failure can fall between them.
"""

from bulwark_server.store.cache import Cache, Entry, Event, EventType
from bulwark_server.store.connection import EtcdTls
from bulwark_server.store.etcd import EtcdStore
from bulwark_server.store.keys import PREFIX, key_for, split_key
from bulwark_server.store.kv import MAX_REQUEST_BYTES, MAX_TXN_OPS, Fence, Unchanged, batches
from bulwark_server.store.members import MemberInfo
from bulwark_server.store.messages import put_message, with_revision
from bulwark_server.store.paging import (
    Page,
    Scanner,
    decode_token,
    encode_token,
    every_item,
    scan_page,
    take_page,
)
from bulwark_server.store.streams import follow
from bulwark_server.store.watch import StoreStatus
from bulwark_server.store.writelog import WriteLog, track_writes

__all__ = [
    "MAX_REQUEST_BYTES",
    "MAX_TXN_OPS",
    "PREFIX",
    "Cache",
    "Entry",
    "EtcdStore",
    "EtcdTls",
    "Event",
    "EventType",
    "Fence",
    "MemberInfo",
    "Page",
    "Scanner",
    "StoreStatus",
    "Unchanged",
    "WriteLog",
    "batches",
    "decode_token",
    "encode_token",
    "every_item",
    "follow",
    "key_for",
    "put_message",
    "scan_page",
    "split_key",
    "take_page",
    "track_writes",
    "with_revision",
]
