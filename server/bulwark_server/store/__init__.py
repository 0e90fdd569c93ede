"""State in etcd: the only package that talks to etcd.

``EtcdStore`` (store/etcd.py) writes with compare-and-swap transactions and
keeps a watch-fed ``Cache`` (store/cache.py) of the whole ``/bulwark/v1/``
prefix that reads are answered from.
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
    "StoreStatus",
    "Unchanged",
    "WriteLog",
    "key_for",
    "split_key",
    "track_writes",
]
