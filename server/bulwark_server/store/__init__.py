"""State in etcd: the only package that talks to etcd.

``EtcdStore`` (store/etcd.py) writes with compare-and-swap transactions and
keeps a watch-fed ``Cache`` (store/cache.py) of the whole ``/bulwark/v1/``
prefix that reads are answered from. ``scan_page``/``take_page``
(store/paging.py) page every listing the same way.
"""

from bulwark_server.store.cache import Cache, Entry, Event, EventType
from bulwark_server.store.etcd import (
    EtcdStore,
    EtcdTls,
    Fence,
    MemberInfo,
    StoreStatus,
    Unchanged,
    WriteLog,
    track_writes,
)
from bulwark_server.store.keys import PREFIX, key_for, split_key
from bulwark_server.store.paging import (
    Page,
    Scanner,
    decode_token,
    encode_token,
    scan_page,
    take_page,
)

__all__ = [
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
    "decode_token",
    "encode_token",
    "key_for",
    "scan_page",
    "split_key",
    "take_page",
    "track_writes",
]
