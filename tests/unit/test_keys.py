"""Unit tests for bulwark_server.store.keys: the /bulwark/v1/<kind>/<name> layout."""

from __future__ import annotations

import pytest

from bulwark_server.store.keys import MAX_NAME_BYTES, PREFIX, key_for, kind_prefix, split_key


def test_key_for_layout() -> None:
    assert key_for("breaker", "payments") == b"/bulwark/v1/breaker/payments"
    assert isinstance(key_for("breaker", "payments"), bytes)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("breaker", "payments"),
        ("bulkhead", "db.pool-1"),
        ("limit", "a/b/c"),
        ("primary", "caf\u00e9"),
        ("limit", "x" * MAX_NAME_BYTES),
    ],
)
def test_round_trip(kind: str, name: str) -> None:
    key = key_for(kind, name)
    assert key.startswith(PREFIX.encode())
    assert key.startswith(kind_prefix(kind))
    assert split_key(key) == (kind, name)


def test_kind_prefix() -> None:
    assert kind_prefix("breaker") == b"/bulwark/v1/breaker/"


def test_kinds_do_not_share_a_key_range() -> None:
    # "break" must not see keys of "breaker": the prefix ends with '/'.
    assert not key_for("breaker", "x").startswith(kind_prefix("break"))


@pytest.mark.parametrize("kind", ["a/b", "/breaker", "breaker/", "", "/"])
def test_key_for_rejects_bad_kind(kind: str) -> None:
    with pytest.raises(ValueError, match="kind"):
        key_for(kind, "name")
    with pytest.raises(ValueError, match="kind"):
        kind_prefix(kind)


def test_key_for_rejects_empty_name() -> None:
    with pytest.raises(ValueError, match="name must be non-empty"):
        key_for("breaker", "")


def test_key_for_rejects_over_long_name() -> None:
    with pytest.raises(ValueError, match=str(MAX_NAME_BYTES)):
        key_for("breaker", "x" * (MAX_NAME_BYTES + 1))


def test_name_length_is_counted_in_utf8_bytes() -> None:
    # 129 two-byte characters: 129 characters, 258 bytes.
    with pytest.raises(ValueError, match="longer than"):
        key_for("breaker", "\u00e9" * 129)
    assert split_key(key_for("breaker", "\u00e9" * 128)) == ("breaker", "\u00e9" * 128)


@pytest.mark.parametrize(
    "key",
    [
        b"/other/v1/breaker/x",
        b"/bulwark/v2/breaker/x",
        b"bulwark/v1/breaker/x",
        b"/bulwark/v1/",
        b"/bulwark/v1/breaker",
        b"/bulwark/v1/breaker/",
        b"/bulwark/v1//name",
        b"",
    ],
)
def test_split_key_rejects_keys_outside_the_layout(key: bytes) -> None:
    with pytest.raises(ValueError, match="not a Bulwark key"):
        split_key(key)


def test_split_key_rejects_undecodable_bytes() -> None:
    with pytest.raises(ValueError):
        split_key(b"/bulwark/v1/breaker/\xff")
