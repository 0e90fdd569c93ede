"""Unit tests for how the store reads etcd's refusals (bulwark_server.store.connection)."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from bulwark_server.store.connection import too_large


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_error(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"), True),
        (
            _error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "grpc: received message larger than max (2396321 vs. 2097152)",
            ),
            True,
        ),
        # A full space quota is RESOURCE_EXHAUSTED too, but no smaller write cures it.
        (
            _error(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
            False,
        ),
        (_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_refusal_for_size_reads_as_too_large(error: BaseException, expected: bool) -> None:
    assert too_large(error) is expected
