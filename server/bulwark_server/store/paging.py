"""Paging of listings: one page of items and the opaque token of the next page.

Every List RPC pages the same way: read at most one item more than the page
holds; if that extra item exists, the token of the next page names the last
item on this page, and the next page starts after it. A token is the URL-safe
base64 of that name (a key name under a prefix, like ``payments`` or
``<domain>/<name>``); the format is part of the API, so tokens handed out by
any earlier version keep working.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, NamedTuple, Protocol, TypeVar

from bulwark_server.store.cache import Entry

T = TypeVar("T")
U = TypeVar("U")


def encode_token(last_name: str) -> str:
    """The opaque token of the page after ``last_name``."""
    return base64.urlsafe_b64encode(last_name.encode()).decode()


def decode_token(token: str) -> str:
    """The name a token from ``encode_token`` holds; ValueError when it holds none.

    Only the encoding is checked: what names are valid is the caller's to say.
    """
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a page token") from None


class Page(NamedTuple, Generic[T]):
    """One page: its items, and the token of the next page ("" when this is the last).

    A tuple, so ``items, token = page`` reads as the ``(page, token)`` pairs the
    managers return.
    """

    items: list[T]
    next_token: str

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        """The same page with each item converted; the token is unchanged."""
        return Page([convert(item) for item in self.items], self.next_token)


def take_page(items: Iterable[T], size: int, name_of: Callable[[T], str]) -> Page[T]:
    """The first ``size`` of ``items``, with a next token when one more follows.

    Consumes at most ``size + 1`` items, so ``items`` may be a lazy, filtered
    iterator over a long listing. ``name_of`` gives the name the next page
    starts after; the token is built only when another item exists.
    """
    page: list[T] = []
    for item in items:
        if len(page) == size:
            return Page(page, encode_token(name_of(page[-1])) if page else "")
        page.append(item)
    return Page(page, "")


class Scanner(Protocol):
    """What ``scan_page`` reads: a key-ordered view like the store's ``Cache``."""

    def scan(self, prefix: bytes, start_after: bytes = b"", limit: int = 0) -> list[Entry]: ...


def scan_page(
    scanner: Scanner,
    prefix: bytes,
    size: int,
    start_after: str,
    *,
    names_under: bytes | None = None,
) -> Page[Entry]:
    """One page of the entries under ``prefix`` in key order, after ``start_after``.

    Names (``start_after`` and the next token) are key suffixes under
    ``names_under``, which defaults to ``prefix``; pass a shorter one when
    ``prefix`` narrows a kind (the limits of one domain, the backups of one key)
    but names stay whole within the kind. Reads at most ``size + 1`` entries.
    """
    base = prefix if names_under is None else names_under
    after = base + start_after.encode() if start_after else b""
    entries = scanner.scan(prefix, after, size + 1)
    return take_page(entries, size, lambda entry: entry.key[len(base) :].decode())


def every_item(list_page: Callable[[int, str], Page[T]], size: int = 500) -> Iterator[T]:
    """Every item of a paged listing (``list_page(size, start_after)``), page by page."""
    token = ""
    while True:
        items, token = list_page(size, token)
        yield from items
        if not token:
            return
