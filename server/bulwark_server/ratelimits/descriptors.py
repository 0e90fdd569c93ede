"""Descriptors: request validation, pattern matching, precedence and counter identity.

A limit's pattern matches a request descriptor with the same keys in the same
order (as in envoyproxy/ratelimit, a longer or shorter descriptor never
matches). Each pattern value is one of:

* ``""`` (or ``"*"``): any value, counted per actual value;
* ``"prefix*"``: any value starting with ``prefix``, counted per actual value;
* anything else: exactly that value.

Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from bulwark.v1 import ratelimit_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits.config import (
    MAX_DESCRIPTOR_ENTRIES,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    WILDCARD,
)

MAX_DESCRIPTORS = 100

# Per-entry ranks of specificity: an exact value beats a prefix beats any value.
_ANY, _PREFIX, _EXACT = 0, 1, 2

Entries = Sequence[ratelimit_pb2.DescriptorEntry]


def validate_descriptor(descriptor: ratelimit_pb2.RateLimitDescriptor, field: str) -> None:
    """Check one request descriptor: 1-16 entries, keys 1-128 and values 0-256 characters.

    Raises InvalidArgument naming ``<field>.entries`` or ``<field>.entries[j].key|value``.
    """
    entries = descriptor.entries
    if not entries:
        raise InvalidArgument(f"{field}.entries", "needs at least one entry")
    if len(entries) > MAX_DESCRIPTOR_ENTRIES:
        raise InvalidArgument(
            f"{field}.entries",
            f"has {len(entries)} entries, at most {MAX_DESCRIPTOR_ENTRIES} allowed",
        )
    for j, entry in enumerate(entries):
        if not entry.key:
            raise InvalidArgument(f"{field}.entries[{j}].key", "is required")
        if len(entry.key) > MAX_KEY_LENGTH:
            raise InvalidArgument(
                f"{field}.entries[{j}].key", f"longer than {MAX_KEY_LENGTH} characters"
            )
        if len(entry.value) > MAX_VALUE_LENGTH:
            raise InvalidArgument(
                f"{field}.entries[{j}].value", f"longer than {MAX_VALUE_LENGTH} characters"
            )


def validate_descriptors(
    descriptors: Sequence[ratelimit_pb2.RateLimitDescriptor],
    field: str = "descriptors",
    max_count: int = MAX_DESCRIPTORS,
) -> None:
    """Check a request's descriptors: 1..max_count, each as ``validate_descriptor`` wants.

    Raises InvalidArgument naming ``field`` for the count and ``field[i]...`` for one.
    """
    if not descriptors:
        raise InvalidArgument(field, "at least one descriptor is required")
    if len(descriptors) > max_count:
        raise InvalidArgument(
            field, f"has {len(descriptors)} descriptors, at most {max_count} allowed"
        )
    for i, descriptor in enumerate(descriptors):
        validate_descriptor(descriptor, f"{field}[{i}]")


class Entry(NamedTuple):
    """A request descriptor's entry, read once from its message: each read of a
    message's field makes a new object, and a decision reads an entry several times."""

    key: str
    value: str


# ``Entry(key, value)`` without the Python frame of a named tuple's ``__new__``: one is
# made per entry of every request.
_entry = functools.partial(tuple.__new__, Entry)


def read_descriptors(
    descriptors: Sequence[ratelimit_pb2.RateLimitDescriptor],
    field: str = "descriptors",
    max_count: int = MAX_DESCRIPTORS,
) -> list[tuple[Entry, ...]]:
    """Each descriptor's entries, checked as ``validate_descriptors`` checks them, in
    the same pass: it raises the same InvalidArgument for the same first fault."""
    if not descriptors:
        raise InvalidArgument(field, "at least one descriptor is required")
    if len(descriptors) > max_count:
        raise InvalidArgument(
            field, f"has {len(descriptors)} descriptors, at most {max_count} allowed"
        )
    read = []
    for descriptor in descriptors:
        listed = descriptor.entries
        if len(listed) == 1:  # the common case, without the comprehension
            entry = listed[0]
            entries: tuple[Entry, ...] = (_entry((entry.key, entry.value)),)
        else:
            entries = tuple([_entry((entry.key, entry.value)) for entry in listed])
        if not 0 < len(entries) <= MAX_DESCRIPTOR_ENTRIES:
            validate_descriptor(descriptor, f"{field}[{len(read)}]")
        for key, value in entries:
            if not 0 < len(key) <= MAX_KEY_LENGTH or len(value) > MAX_VALUE_LENGTH:
                # Name the fault as validate_descriptor does.
                validate_descriptor(descriptor, f"{field}[{len(read)}]")
        read.append(entries)
    return read


def matches(pattern: Entries, entries: Entries) -> bool:
    """True when ``entries`` has the pattern's keys in the same order and every value fits."""
    if len(pattern) != len(entries):
        return False
    for want, got in zip(pattern, entries, strict=True):
        if want.key != got.key:
            return False
        value = want.value
        if not value:
            continue
        if value.endswith(WILDCARD):
            if not got.value.startswith(value[:-1]):
                return False
        elif got.value != value:
            return False
    return True


def specificity(pattern: Entries) -> tuple[tuple[int, int], ...]:
    """A sort key, larger for more specific patterns, compared entry by entry from the first.

    Each entry scores (rank, length): exact beats prefix beats any value, and among
    prefixes the longer one is more specific. ``"*"`` scores as any value, which it is.
    """
    return tuple(_entry_specificity(entry.value) for entry in pattern)


def best_match(
    limits: Iterable[ratelimit_pb2.Limit], entries: Entries
) -> ratelimit_pb2.Limit | None:
    """The most specific limit whose pattern matches ``entries``, or None.

    Ties in specificity go to the smaller (name, domain), so every replica picks the
    same limit whatever order the limits come in.
    """
    best: ratelimit_pb2.Limit | None = None
    best_key: tuple[tuple[tuple[int, int], ...], str, str] | None = None
    for limit in limits:
        if not matches(limit.descriptor, entries):
            continue
        score = specificity(limit.descriptor)
        if best_key is None or _beats(score, limit, best_key):
            best, best_key = limit, (score, limit.name, limit.domain)
    return best


def counter_key(limit: ratelimit_pb2.Limit, entries: Entries) -> tuple[str, ...]:
    """The identity of the counter a request described by ``entries`` charges under ``limit``.

    (domain, name, value of each entry): for any-value and prefix entries the
    request's own value is part of the key, so a "per remote_address" limit counts
    each address separately, as envoyproxy/ratelimit does. Raises ValueError when
    the limit does not match ``entries``.
    """
    if not matches(limit.descriptor, entries):
        raise ValueError(f"limit {limit.domain}/{limit.name} does not match the descriptor")
    return (limit.domain, limit.name, *(entry.value for entry in entries))


def own_limit(domain: str, rate: ratelimit_pb2.Rate) -> ratelimit_pb2.Limit:
    """The limit a request descriptor carries itself (Envoy's per-request override).

    Unnamed, a fixed window of ``rate`` (as envoyproxy/ratelimit counts), never in
    shadow mode, replacing nothing. ``rate`` must be valid (a unit, 0 or more);
    0 makes it block every request (``blocks_all``, in its API form).
    """
    return ratelimit_pb2.Limit(
        domain=domain,
        rate=rate,
        burst=rate.requests_per_unit,
        algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
        blocks_all=rate.requests_per_unit == 0,
    )


def own_counter_key(domain: str, rate: ratelimit_pb2.Rate, entries: Entries) -> tuple[str, ...]:
    """The counter of a descriptor's own limit: (domain, "", unit, key, value, ...).

    envoyproxy/ratelimit keys it by the domain, every entry of the descriptor and
    the unit's window, not by ``requests_per_unit``: two overrides of one
    descriptor and unit share a count. ``""`` is no stored limit's name, so it
    never meets a configured limit's counter.
    """
    return (domain, "", str(rate.unit), *(part for e in entries for part in (e.key, e.value)))


def _entry_specificity(value: str) -> tuple[int, int]:
    if not value or value == WILDCARD:
        return (_ANY, 0)
    if value.endswith(WILDCARD):
        return (_PREFIX, len(value) - 1)
    return (_EXACT, len(value))


def _beats(
    score: tuple[tuple[int, int], ...],
    limit: ratelimit_pb2.Limit,
    best_key: tuple[tuple[tuple[int, int], ...], str, str],
) -> bool:
    best_score, best_name, best_domain = best_key
    if score != best_score:
        return score > best_score
    return (limit.name, limit.domain) < (best_name, best_domain)
