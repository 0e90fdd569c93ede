"""LimitIndex: which limit applies to a descriptor, at a cost independent of how many exist.

The limits of each domain sit in a trie over their pattern entries, as
envoyproxy/ratelimit keeps its configuration: one root per shape (the ordered
tuple of keys), then one level per entry. A level holds

* exact values in a dict,
* prefix patterns (``"prefix*"``) in a dict by prefix, with the set of prefix
  lengths in use, so the prefixes a value fits are found by at most one dict
  lookup per distinct length (at most ``MAX_VALUE_LENGTH`` + 1), whatever the
  number of prefixes,
* any value (``""`` or ``"*"``) as one slot.

``lookup`` walks the trie in descending specificity (exact, then longer prefixes
before shorter ones, then any value, entry by entry from the first): the first
leaf reached holds the most specific patterns that match, which is the order
``descriptors.best_match`` ranks them in. Patterns that meet at one leaf score
the same, and the smallest (name, domain) wins, as in ``best_match`` (the
reference this index is tested against). ``put`` and ``remove`` cost the length
of the one limit's pattern. Pure: no I/O.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.config import WILDCARD

Entries = Sequence[ratelimit_pb2.DescriptorEntry]


DECODED = 8192
"""Limits held decoded at once (``Indexed.limit``): about 1.2 KB each."""


@functools.lru_cache(maxsize=DECODED)
def _decoded(stored: bytes) -> ratelimit_pb2.Limit:
    return ratelimit_pb2.Limit.FromString(stored)


@dataclass(frozen=True, slots=True)
class Indexed:
    """A limit as the index holds it, with the store's create revision of its key.

    Held as its stored bytes, not as a message: each decoded message keeps an arena
    of its own (about 1.2 KB for a one-entry limit, 20 times its bytes), so 100,000
    decoded limits took 120 MB. ``limit`` decodes on demand and keeps the
    ``DECODED`` most recently used; the message is shared, not to be changed.
    """

    domain: str
    name: str
    stored: bytes
    created: int
    # (key, value) of each descriptor entry: the limit's path in the trie.
    pattern: tuple[tuple[str, str], ...]

    @property
    def limit(self) -> ratelimit_pb2.Limit:
        return _decoded(self.stored)


@dataclass(slots=True)
class _Node:
    # Each dict is made when its first item comes (None until then): most nodes are
    # the leaf of one exact value, and three empty dicts cost more than the limit.
    exact: dict[str, _Node] | None = None
    prefix: dict[str, _Node] | None = None
    # Distinct prefix lengths in ``prefix``, longest first, with their counts.
    lengths: dict[int, int] | None = None
    # A tuple, not a list: a tuple of ints is no work for the garbage collector.
    ordered: tuple[int, ...] = ()
    any: _Node | None = None
    # At the last level: ``best`` is the limit a match picks among those whose
    # patterns end here; ``leaf`` holds them all by name, once there are two.
    best: Indexed | None = None
    leaf: dict[str, Indexed] | None = None

    def empty(self) -> bool:
        return not (self.exact or self.prefix or self.any or self.best)

    def items(self) -> Iterable[Indexed]:
        if self.leaf is not None:
            return self.leaf.values()
        return () if self.best is None else (self.best,)

    def add(self, item: Indexed) -> None:
        if self.best is None:
            self.best = item
            return
        if self.leaf is None:
            self.leaf = {self.best.name: self.best}
        self.leaf[item.name] = item
        if _tie(item) < _tie(self.best):
            self.best = item

    def discard(self, name: str) -> None:
        if self.leaf is None:
            if self.best is not None and self.best.name == name:
                self.best = None
            return
        del self.leaf[name]
        if len(self.leaf) == 1:
            (self.best,) = self.leaf.values()
            self.leaf = None
        elif self.best is not None and self.best.name == name:
            self.best = min(self.leaf.values(), key=_tie)


def _slot(value: str) -> tuple[int, str]:
    """(0 any, 1 prefix, 2 exact) and the value's stored form."""
    if not value or value == WILDCARD:
        return 0, ""
    if value.endswith(WILDCARD):
        return 1, value[:-1]
    return 2, value


class LimitIndex:
    """The limits of every domain, by pattern; see the module docstring."""

    def __init__(self) -> None:
        # domain -> shape (tuple of keys) -> root node
        self._roots: dict[str, dict[tuple[str, ...], _Node]] = {}
        # domain -> name -> the indexed limit, to find its path on removal
        self._held: dict[str, dict[str, Indexed]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, domain: str, name: str) -> Indexed | None:
        held = self._held.get(domain)
        return None if held is None else held.get(name)

    def put(self, limit: ratelimit_pb2.Limit, created: int, stored: bytes = b"") -> None:
        """Add a limit, or replace the one of the same (domain, name).

        ``stored``: the limit's bytes as read from the store, when at hand (else
        ``limit`` is serialized).
        """
        # Each read of a message's string field makes a new str: read each once, and
        # share the domain and the keys, which 100,000 limits of a domain repeat.
        domain, name = sys.intern(limit.domain), limit.name
        self.remove(domain, name)
        pattern = tuple((sys.intern(entry.key), entry.value) for entry in limit.descriptor)
        item = Indexed(domain, name, stored or limit.SerializeToString(), created, pattern)
        self._held.setdefault(domain, {})[name] = item
        self._count += 1
        shape = tuple(key for key, _ in pattern)
        node = self._roots.setdefault(domain, {}).get(shape)
        if node is None:
            node = self._roots[domain][shape] = _Node()
        for _, raw in pattern:
            kind, value = _slot(raw)
            if kind == 2:
                if node.exact is None:
                    node.exact = {}
                child = node.exact.get(value)
                if child is None:
                    child = node.exact[value] = _Node()
                node = child
            elif kind == 1:
                if node.prefix is None:
                    node.prefix = {}
                child = node.prefix.get(value)
                if child is None:
                    child = node.prefix[value] = _Node()
                    _count_length(node, len(value), +1)
                node = child
            else:
                if node.any is None:
                    node.any = _Node()
                node = node.any
        node.add(item)

    def remove(self, domain: str, name: str) -> Indexed | None:
        """Take a limit out; returns what was held, or None."""
        held = self._held.get(domain)
        item = None if held is None else held.pop(name, None)
        if item is None:
            return None
        self._count -= 1
        if not held:
            del self._held[domain]
        shapes = self._roots[domain]
        shape = tuple(key for key, _ in item.pattern)
        path: list[tuple[_Node, int, str]] = []
        node = shapes[shape]
        for _, raw in item.pattern:
            kind, value = _slot(raw)
            path.append((node, kind, value))
            if kind == 2:
                assert node.exact is not None
                node = node.exact[value]
            elif kind == 1:
                assert node.prefix is not None
                node = node.prefix[value]
            else:
                assert node.any is not None
                node = node.any
        node.discard(name)
        # Prune the nodes left empty, from the leaf up.
        for parent, kind, value in reversed(path):
            if not node.empty():
                break
            if kind == 2:
                assert parent.exact is not None
                del parent.exact[value]
            elif kind == 1:
                assert parent.prefix is not None
                del parent.prefix[value]
                _count_length(parent, len(value), -1)
            else:
                parent.any = None
            node = parent
        if shapes[shape].empty():
            del shapes[shape]
            if not shapes:
                del self._roots[domain]
        return item

    def lookup(self, domain: str, entries: Entries) -> Indexed | None:
        """The limit ``descriptors.best_match`` picks among the domain's limits, or None."""
        shapes = self._roots.get(domain)
        if not shapes:
            return None
        if len(entries) == 1:  # the common case, without the generators
            entry = entries[0]
            root = shapes.get((entry.key,))
            if root is None:
                return None
            if root.prefix:
                return _first(root, [entry.value], 0)
            # ``_first`` of one level without prefixes, written out: the exact value's
            # leaf, else the any-value leaf.
            if root.exact:
                child = root.exact.get(entry.value)
                if child is not None and child.best is not None:
                    return child.best
            return None if root.any is None else root.any.best
        root = shapes.get(tuple([entry.key for entry in entries]))
        if root is None:
            return None
        return _first(root, [entry.value for entry in entries], 0)

    def matching(self, domain: str, entries: Entries) -> Iterator[Indexed]:
        """Every limit of the domain whose pattern matches ``entries`` (in no set order)."""
        root = self._root(domain, entries)
        if root is None:
            return
        values = [entry.value for entry in entries]
        stack = [(root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(values):
                yield from node.items()
                continue
            stack.extend((child, depth + 1) for child in _children(node, values[depth]))

    def _root(self, domain: str, entries: Entries) -> _Node | None:
        shapes = self._roots.get(domain)
        if not shapes:
            return None
        return shapes.get(tuple(entry.key for entry in entries))


def _tie(item: Indexed) -> tuple[str, str]:
    return (item.name, item.domain)


def _count_length(node: _Node, length: int, delta: int) -> None:
    if node.lengths is None:
        node.lengths = {}
    count = node.lengths.get(length, 0) + delta
    if count:
        node.lengths[length] = count
    else:
        del node.lengths[length]
    if count in (0, 1):
        node.ordered = tuple(sorted(node.lengths, reverse=True))


def _children(node: _Node, value: str) -> Iterator[_Node]:
    """The children ``value`` fits, most specific first."""
    if node.exact:
        child = node.exact.get(value)
        if child is not None:
            yield child
    if node.prefix:
        size = len(value)
        for length in node.ordered:
            if length <= size:
                child = node.prefix.get(value[:length])
                if child is not None:
                    yield child
    if node.any is not None:
        yield node.any


def _first(node: _Node, values: list[str], depth: int) -> Indexed | None:
    if depth == len(values):
        return node.best
    if not node.prefix:
        # No prefixes at this level: the exact value, then any value (``_children``
        # without its generator).
        if node.exact:
            child = node.exact.get(values[depth])
            if child is not None:
                found = _first(child, values, depth + 1)
                if found is not None:
                    return found
        return None if node.any is None else _first(node.any, values, depth + 1)
    for child in _children(node, values[depth]):
        found = _first(child, values, depth + 1)
        if found is not None:
            return found
    return None
