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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.config import WILDCARD

Entries = Sequence[ratelimit_pb2.DescriptorEntry]


@dataclass(frozen=True, slots=True)
class Indexed:
    """A limit as the index holds it, with the store's create revision of its key."""

    limit: ratelimit_pb2.Limit
    created: int


@dataclass(slots=True)
class _Node:
    exact: dict[str, _Node] = field(default_factory=dict)
    prefix: dict[str, _Node] = field(default_factory=dict)
    # Distinct prefix lengths in ``prefix``, longest first, with their counts.
    lengths: dict[int, int] = field(default_factory=dict)
    # A tuple, not a list: a node holds one, and a tuple of ints is no work for the
    # garbage collector (with 100,000 limits, 100,000 lists were).
    ordered: tuple[int, ...] = ()
    any: _Node | None = None
    # At the last level: the limits whose patterns end here, by name.
    leaf: dict[str, Indexed] = field(default_factory=dict)
    best: Indexed | None = None

    def empty(self) -> bool:
        return not (self.exact or self.prefix or self.any or self.leaf)


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
        # (domain, name) -> the indexed limit, to find its path on removal
        self._held: dict[tuple[str, str], Indexed] = {}

    def __len__(self) -> int:
        return len(self._held)

    def get(self, domain: str, name: str) -> Indexed | None:
        return self._held.get((domain, name))

    def put(self, limit: ratelimit_pb2.Limit, created: int) -> None:
        """Add a limit, or replace the one of the same (domain, name)."""
        self.remove(limit.domain, limit.name)
        item = Indexed(limit, created)
        self._held[(limit.domain, limit.name)] = item
        shape = tuple(entry.key for entry in limit.descriptor)
        node = self._roots.setdefault(limit.domain, {}).setdefault(shape, _Node())
        for entry in limit.descriptor:
            kind, value = _slot(entry.value)
            if kind == 2:
                child = node.exact.get(value)
                if child is None:
                    child = node.exact[value] = _Node()
                node = child
            elif kind == 1:
                child = node.prefix.get(value)
                if child is None:
                    child = node.prefix[value] = _Node()
                    _count_length(node, len(value), +1)
                node = child
            else:
                if node.any is None:
                    node.any = _Node()
                node = node.any
        node.leaf[limit.name] = item
        if node.best is None or (limit.name, limit.domain) < (
            node.best.limit.name,
            node.best.limit.domain,
        ):
            node.best = item

    def remove(self, domain: str, name: str) -> Indexed | None:
        """Take a limit out; returns what was held, or None."""
        item = self._held.pop((domain, name), None)
        if item is None:
            return None
        limit = item.limit
        shapes = self._roots[domain]
        shape = tuple(entry.key for entry in limit.descriptor)
        path: list[tuple[_Node, int, str]] = []
        node = shapes[shape]
        for entry in limit.descriptor:
            kind, value = _slot(entry.value)
            path.append((node, kind, value))
            if kind == 2:
                node = node.exact[value]
            elif kind == 1:
                node = node.prefix[value]
            else:
                assert node.any is not None
                node = node.any
        del node.leaf[name]
        if node.best is item:
            node.best = min(node.leaf.values(), key=_tie, default=None)
        # Prune the nodes left empty, from the leaf up.
        for parent, kind, value in reversed(path):
            if not node.empty():
                break
            if kind == 2:
                del parent.exact[value]
            elif kind == 1:
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
        root = self._root(domain, entries)
        if root is None:
            return None
        values = [entry.value for entry in entries]
        return _first(root, values, 0)

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
                yield from node.leaf.values()
                continue
            stack.extend((child, depth + 1) for child in _children(node, values[depth]))

    def _root(self, domain: str, entries: Entries) -> _Node | None:
        shapes = self._roots.get(domain)
        if not shapes:
            return None
        return shapes.get(tuple(entry.key for entry in entries))


def _tie(item: Indexed) -> tuple[str, str]:
    return (item.limit.name, item.limit.domain)


def _count_length(node: _Node, length: int, delta: int) -> None:
    count = node.lengths.get(length, 0) + delta
    if count:
        node.lengths[length] = count
    else:
        del node.lengths[length]
    if count in (0, 1):
        node.ordered = tuple(sorted(node.lengths, reverse=True))


def _children(node: _Node, value: str) -> Iterator[_Node]:
    """The children ``value`` fits, most specific first."""
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
    for child in _children(node, values[depth]):
        found = _first(child, values, depth + 1)
        if found is not None:
            return found
    return None
