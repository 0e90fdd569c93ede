"""Protobuf Timestamps from and to Unix seconds (the wall clock shared by replicas)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def at(now: float) -> timestamp_pb2.Timestamp:
    """A Timestamp for ``now`` Unix seconds."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(now * 1e9))
    return ts


def unix(ts: timestamp_pb2.Timestamp) -> float:
    """Unix seconds of a Timestamp."""
    return ts.ToNanoseconds() / 1e9
