"""Unit tests for bulwark_server.store.paging: one page and the next page's token."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from bulwark_server.errors import InvalidArgument
from bulwark_server.store import (
    Cache,
    Entry,
    Page,
    decode_token,
    encode_token,
    scan_page,
    take_page,
)
from bulwark_server.store.keys import key_for, kind_prefix
from bulwark_server.validation import page_params


def _cache(kind: str, names: list[str]) -> Cache:
    cache = Cache()
    entries = [Entry(key_for(kind, n), n.encode(), i + 1, i + 1, 1, 0) for i, n in enumerate(names)]
    cache.load(entries, len(names))
    return cache


def test_token_format_is_urlsafe_base64_of_the_last_name() -> None:
    # The format is part of the API: tokens handed out earlier must keep working.
    assert encode_token("payments") == base64.urlsafe_b64encode(b"payments").decode()
    assert encode_token("edge/login") == "ZWRnZS9sb2dpbg=="
    assert decode_token("ZWRnZS9sb2dpbg==") == "edge/login"


@pytest.mark.parametrize("bad", ["a", base64.urlsafe_b64encode(b"\xff\xfe").decode()])
def test_decode_rejects_what_is_not_a_token(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_token(bad)


def test_page_params_reads_tokens_back() -> None:
    assert page_params(5, encode_token("a.b")) == (5, "a.b")
    assert page_params(0, encode_token("edge/login")) == (100, "edge/login")
    with pytest.raises(InvalidArgument):
        page_params(5, "%%%")


def test_take_page_with_more_to_come() -> None:
    page = take_page(iter(["a", "b", "c"]), 2, str.upper)
    assert page == Page(["a", "b"], encode_token("B"))
    items, token = page
    assert (items, token) == (["a", "b"], encode_token("B"))


def test_take_page_last_page_has_no_token() -> None:
    assert take_page(["a", "b"], 2, str) == Page(["a", "b"], "")
    assert take_page([], 3, str) == Page([], "")


def test_take_page_reads_at_most_one_item_past_the_page() -> None:
    pulled: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(100):
            pulled.append(n)
            yield n

    page = take_page(numbers(), 3, str)
    assert page.items == [0, 1, 2]
    assert page.next_token == encode_token("2")
    assert pulled == [0, 1, 2, 3]


def test_page_map_keeps_the_token() -> None:
    assert Page([1, 2], "t").map(str) == Page(["1", "2"], "t")


def test_scan_page_walks_a_kind_in_name_order() -> None:
    cache = _cache("things", ["c", "a", "b", "d", "e"])
    prefix = kind_prefix("things")
    seen: list[str] = []
    after = ""
    for _ in range(5):
        entries, token = scan_page(cache, prefix, 2, after)
        seen += [e.value.decode() for e in entries]
        if not token:
            break
        _, after = page_params(2, token)
    assert seen == ["a", "b", "c", "d", "e"]


def test_scan_page_names_under_a_shorter_prefix() -> None:
    # A narrowed scan (one domain) still names items within the whole kind.
    cache = _cache("limits", ["x/1", "y/1", "y/2", "y/3", "z/1"])
    limits = kind_prefix("limits")
    prefix = limits + b"y/"
    entries, token = scan_page(cache, prefix, 2, "", names_under=limits)
    assert [e.value for e in entries] == [b"y/1", b"y/2"]
    assert decode_token(token) == "y/2"
    entries, token = scan_page(cache, prefix, 2, "y/2", names_under=limits)
    assert [e.value for e in entries] == [b"y/3"]
    assert token == ""


def test_scan_page_exact_fit_has_no_token() -> None:
    cache = _cache("things", ["a", "b"])
    entries, token = scan_page(cache, kind_prefix("things"), 2, "")
    assert len(entries) == 2
    assert token == ""
