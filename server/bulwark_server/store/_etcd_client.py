"""Import etcd3aio once, and undo its side effect on ``sys.path``.

etcd3aio puts its generated-proto folder at the front of ``sys.path`` so its
modules can import each other; left there, its top-level ``etcd`` package
would shadow anything else of that name. Its modules are all imported by the
time ``etcd3aio._protobuf`` returns, so the entry can go.
"""

from __future__ import annotations

import sys
from pathlib import Path

import etcd3aio
from etcd3aio import _protobuf as pb
from etcd3aio.errors import EtcdConnectionError, EtcdError, EtcdTransientError

_proto_dir = str(Path(pb.__file__).parent / "proto")
while _proto_dir in sys.path:
    sys.path.remove(_proto_dir)

rpc_pb2 = pb.rpc_pb2
kv_pb2 = pb.kv_pb2
rpc_grpc = pb.rpc_pb2_grpc
Etcd3Client = etcd3aio.Etcd3Client
prefix_range_end = etcd3aio.prefix_range_end

__all__ = [
    "Etcd3Client",
    "EtcdConnectionError",
    "EtcdError",
    "EtcdTransientError",
    "kv_pb2",
    "prefix_range_end",
    "rpc_grpc",
    "rpc_pb2",
]
