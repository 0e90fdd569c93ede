"""envoyproxy/ratelimit's YAML configuration → Bulwark limits. Pure: no I/O but ``load_file``.

The format (one ``domain`` per YAML document; several documents may share a file)::

    domain: edge
    descriptors:
      - key: remote_address            # required
        value: 10.0.0.1                # optional: absent matches any value
        rate_limit:                    # optional: absent makes a placeholder node
          unit: second                 # second | minute | hour | day (any case)
          requests_per_unit: 10        # 0 or more: 0 blocks every matching request
          unlimited: false             # true: matches, never limits (then no unit)
          name: per_ip                 # optional: the Bulwark limit's name
          replaces: [{name: other}]    # optional: names of limits this one replaces
          x-bulwark-algorithm: token_bucket  # Bulwark only (see envoy_extensions)
          x-bulwark-burst: 20          # Bulwark only: the token bucket's capacity
        shadow_mode: false             # decide and count, never reject
        detailed_metric: false         # a metrics series per descriptor value
        descriptors: [...]             # nested nodes: longer descriptors

Guarantees:

* Every path from the root to a node with a ``rate_limit`` becomes exactly one
  normalized ``bulwark.v1.Limit``: the path's (key, value) pairs in order as the
  descriptor pattern, ``LIMIT_ALGORITHM_FIXED_WINDOW`` (envoyproxy/ratelimit
  counts in fixed windows) unless the ``x-bulwark-*`` keys of ``envoy_extensions``
  ask for a token bucket, ``shadow_mode`` and ``unlimited`` as written. An
  absent value matches any value and counts each value separately; a value
  ending in ``*`` is a prefix wildcard: both are the pattern rules of Bulwark's
  own limits, so they pass through unchanged.
* A limit's name is ``rate_limit.name`` if given, else derived from the path as
  envoyproxy/ratelimit names its statistics (``key_value.key2``), made a valid
  Bulwark name ([A-Za-z0-9._-], at most 128 characters). A derived name that had
  to be altered (or that would collide with another) gets a hash suffix of the
  exact path, so distinct paths never share a name and a file always yields the
  same names.
* Anything wrong raises ``EnvoyConfigError`` naming the file and the YAML path
  (``descriptors[0].rate_limit.unit``): unknown or misplaced keys (an unknown
  ``x-bulwark-*`` key too), wrong types, a wrong ``x-bulwark-*`` value,
  an unknown unit, ``requests_per_unit`` not a whole number, an empty key, duplicate sibling
  descriptors, duplicate names or domains, and anything ``normalize_limit``
  rejects. Nothing is returned for a file with any error.

Scalars are read as text, as envoyproxy/ratelimit's Go loader reads them into its
string fields, so ``value: 010`` is the value ``"010"``, not the number 8.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from bulwark.v1 import ratelimit_pb2
from bulwark_server.errors import InvalidArgument
from bulwark_server.ratelimits import envoy_extensions as extensions
from bulwark_server.ratelimits.config import normalize_limit
from bulwark_server.validation import NAME_RE

MAX_NAME_LENGTH = 128
HASH_LENGTH = 8
UNITS: dict[str, int] = {
    "second": ratelimit_pb2.RATE_UNIT_SECOND,
    "minute": ratelimit_pb2.RATE_UNIT_MINUTE,
    "hour": ratelimit_pb2.RATE_UNIT_HOUR,
    "day": ratelimit_pb2.RATE_UNIT_DAY,
}
UNIT_NAMES = {number: name for name, number in UNITS.items()}

_ROOT_KEYS = frozenset({"domain", "descriptors"})
_DESCRIPTOR_KEYS = frozenset(
    {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}
)
_RATE_LIMIT_KEYS = frozenset(
    {"unit", "requests_per_unit", "unlimited", "name", "replaces", *extensions.KEYS}
)
_REPLACES_KEYS = frozenset({"name"})
# Keys that exist in the format but belong elsewhere: a hint beats "unknown key".
_PLACES = {
    "shadow_mode": "the descriptor, beside rate_limit",
    "detailed_metric": "the descriptor, beside rate_limit",
    "unit": "rate_limit",
    "requests_per_unit": "rate_limit",
    "unlimited": "rate_limit",
    "name": "rate_limit",
    "replaces": "rate_limit",
}
_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})
_SANITIZE = re.compile(r"[^A-Za-z0-9._-]")
_DESCRIPTOR_FIELD = re.compile(r"^limit\.descriptor\[(\d+)\]\.(key|value)$")


class EnvoyConfigError(ValueError):
    """A rate-limit configuration is invalid; the message names the source and YAML path."""


@dataclass(frozen=True)
class EnvoyLimit:
    """One limit read from the YAML, with what Bulwark's Limit does not carry.

    ``limit`` is normalized (as ``RateLimitManager.put`` stores it). ``path`` is the
    YAML path of the node that defines it. ``replaces`` are the names listed
    under ``rate_limit.replaces`` (also stored in ``limit.replaces``, where the
    limiter enforces them). ``detailed_metric`` is also ``limit.detailed_metric``.
    """

    limit: ratelimit_pb2.Limit
    path: str
    replaces: tuple[str, ...] = ()
    detailed_metric: bool = False


class _Loader(yaml.BaseLoader):
    """Every scalar as text except null: quoting is kept apart, so ``"null"`` stays text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_constructor("tag:yaml.org,2002:null", lambda loader, node: None)


def parse_config(text: str, source: str = "<config>") -> list[EnvoyLimit]:
    """Every limit of every YAML document in ``text``, in document and file order.

    Raises EnvoyConfigError (``"<source>: <yaml path>: <problem>"``) on the first problem.
    """
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        raise EnvoyConfigError(f"{source}: not valid YAML: {exc}") from None
    if not documents:
        raise EnvoyConfigError(f"{source}: no configuration (expected 'domain' and 'descriptors')")
    out: list[EnvoyLimit] = []
    domains: dict[str, str] = {}
    for index, document in enumerate(documents):
        prefix = f"document {index + 1}: " if len(documents) > 1 else ""
        parser = _DocumentParser(source, prefix)
        limits = parser.parse(document)
        domain = parser.domain
        if domain in domains:
            raise EnvoyConfigError(
                f"{source}: {prefix}domain: duplicate domain {domain!r} (also in {domains[domain]})"
            )
        domains[domain] = prefix.rstrip(": ") or "an earlier document"
        out.extend(limits)
    return out


def parse_limits(text: str, source: str = "<config>") -> list[ratelimit_pb2.Limit]:
    """The normalized Bulwark limits of ``text`` (see ``parse_config``)."""
    return [entry.limit for entry in parse_config(text, source)]


def load_file(path: str | Path) -> list[EnvoyLimit]:
    """``parse_config`` of a file; EnvoyConfigError also when it cannot be read."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EnvoyConfigError(f"{file}: cannot read: {reason}") from None
    return parse_config(text, str(file))


def describe(limit: ratelimit_pb2.Limit) -> str:
    """One line for an operator: ``edge/per_ip [remote_address=*] 10/second``, flags appended.

    Flags: `` token_bucket(burst N)`` for a token bucket, `` shadow`` for shadow mode.
    """
    pattern = ", ".join(f"{e.key}={e.value or '*'}" for e in limit.descriptor)
    if limit.unlimited:
        rate = "unlimited"
    else:
        rate = f"{limit.rate.requests_per_unit}/{UNIT_NAMES.get(limit.rate.unit, '?')}"
    flags = extensions.describe_algorithm(limit) + (" shadow" if limit.shadow_mode else "")
    return f"{limit.domain}/{limit.name} [{pattern}] {rate}{flags}"


def same_limit(stored: ratelimit_pb2.Limit, wanted: ratelimit_pb2.Limit) -> bool:
    """True when ``stored`` (as GetLimit returns it) equals ``wanted`` (normalized).

    The output-only fields (``revision``, ``effective_rate``) are left out of the
    comparison, so an import can skip a write that would change nothing.
    """
    bare = ratelimit_pb2.Limit()
    bare.CopyFrom(stored)
    bare.ClearField("revision")
    bare.ClearField("effective_rate")
    return bare == wanted


@dataclass(frozen=True)
class _Node:
    """A descriptor node on the way down: its (key, value) and YAML path."""

    key: str
    value: str
    path: str


@dataclass
class _Pending:
    """A limit read but not yet named and normalized."""

    limit: ratelimit_pb2.Limit
    path: str
    chain: list[_Node]
    replaces: tuple[str, ...]
    detailed_metric: bool


class _DocumentParser:
    """Parses one YAML document (one domain); raises EnvoyConfigError naming the path."""

    def __init__(self, source: str, prefix: str) -> None:
        self._source = source
        self._prefix = prefix
        self.domain = ""
        # name → path that took it, for duplicate reports.
        self._names: dict[str, str] = {}

    def parse(self, document: Any) -> list[EnvoyLimit]:
        root = self._mapping(document, "", _ROOT_KEYS)
        domain = self._text(root.get("domain"), "domain")
        if not domain:
            self._fail("domain", "is required (a non-empty string)")
        if not NAME_RE.fullmatch(domain):
            self._fail(
                "domain",
                f"{domain[:64]!r} is not a valid Bulwark domain (1-128 letters, digits, '.', "
                "'_', '-', starting with a letter or digit)",
            )
        self.domain = domain
        pending = list(self._walk(root.get("descriptors"), "descriptors", []))
        # Explicit names first, so a derived name can see (and avoid) every one of them.
        for item in pending:
            if item.limit.name:
                self._claim(item.limit.name, f"{item.path}.name")
        raw_names = [
            ".".join(_segment(n.key, n.value) for n in item.chain)
            for item in pending
            if not item.limit.name
        ]
        for item in pending:
            if item.limit.name:
                continue
            raw = ".".join(_segment(n.key, n.value) for n in item.chain)
            pairs = [(n.key, n.value) for n in item.chain]
            clash = raw_names.count(raw) > 1 or raw in self._names
            item.limit.name = _derive_name(raw, pairs, force_hash=clash)
            self._claim(item.limit.name, f"{item.path} (derived name)")
        return [self._normalized(item) for item in pending]

    # -- the tree ------------------------------------------------------------------

    def _walk(self, nodes: Any, path: str, parents: list[_Node]) -> Iterator[_Pending]:
        if nodes is None:
            return
        if not isinstance(nodes, list):
            self._fail(path, "must be a list of descriptors")
        siblings: dict[tuple[str, str], str] = {}
        for i, raw in enumerate(nodes):
            here = f"{path}[{i}]"
            node = self._mapping(raw, here, _DESCRIPTOR_KEYS)
            key = self._text(node.get("key"), f"{here}.key")
            if not key:
                self._fail(f"{here}.key", "is required (a non-empty string)")
            value = self._text(node.get("value"), f"{here}.value")
            if (key, value) in siblings:
                self._fail(
                    here, f"duplicate descriptor {key}={value or '*'} (see {siblings[key, value]})"
                )
            siblings[key, value] = here
            chain = [*parents, _Node(key, value, here)]
            # Read even without a rate_limit (where they have no effect, as in
            # envoyproxy/ratelimit) so a typo is reported wherever it is.
            shadow = self._flag(node.get("shadow_mode"), f"{here}.shadow_mode")
            detailed = self._flag(node.get("detailed_metric"), f"{here}.detailed_metric")
            if node.get("rate_limit") is not None:
                yield self._limit(node["rate_limit"], f"{here}.rate_limit", chain, shadow, detailed)
            yield from self._walk(node.get("descriptors"), f"{here}.descriptors", chain)

    def _limit(
        self, raw: Any, path: str, chain: list[_Node], shadow: bool, detailed: bool
    ) -> _Pending:
        spec = self._mapping(raw, path, _RATE_LIMIT_KEYS)
        unlimited = self._flag(spec.get("unlimited"), f"{path}.unlimited")
        unit_text = self._text(spec.get("unit"), f"{path}.unit")
        limit = ratelimit_pb2.Limit(
            domain=self.domain,
            name=self._text(spec.get("name"), f"{path}.name"),
            descriptor=[ratelimit_pb2.DescriptorEntry(key=n.key, value=n.value) for n in chain],
            unlimited=unlimited,
            shadow_mode=shadow,
            detailed_metric=detailed,
        )
        if unlimited:
            # As envoyproxy/ratelimit: an unlimited limit has no unit, and its
            # requests_per_unit (if any) is ignored.
            if unit_text:
                self._fail(f"{path}.unit", "must not be set when unlimited is true")
        else:
            unit = UNITS.get(unit_text.lower())
            if unit is None:
                self._fail(
                    f"{path}.unit",
                    f"{unit_text!r} is not a unit Bulwark supports (second, minute, hour, day)"
                    if unit_text
                    else "is required (second, minute, hour or day)",
                )
            requests = self._count(spec.get("requests_per_unit"), f"{path}.requests_per_unit")
            limit.rate.CopyFrom(ratelimit_pb2.Rate(requests_per_unit=requests, unit=unit))
        try:
            chosen = extensions.read_extensions(
                spec, unlimited=unlimited, requests_per_unit=limit.rate.requests_per_unit
            )
        except extensions.ExtensionError as exc:
            self._fail(f"{path}.{exc.key}", exc.problem)
        limit.algorithm = chosen.algorithm
        limit.burst = chosen.burst
        replaces = self._replaces(spec.get("replaces"), f"{path}.replaces", limit.name)
        limit.replaces.extend(replaces)
        return _Pending(limit, path, chain, replaces, detailed)

    def _normalized(self, item: _Pending) -> EnvoyLimit:
        try:
            limit = normalize_limit(item.limit)
        except InvalidArgument as exc:
            problem = exc.message.removeprefix(f"{exc.field}: ")
            self._fail(self._path_of(exc.field, item), problem)
        return EnvoyLimit(limit, item.path, item.replaces, item.detailed_metric)

    def _path_of(self, field: str, item: _Pending) -> str:
        """The YAML path of a ``normalize_limit`` field name."""
        match = _DESCRIPTOR_FIELD.match(field)
        if match and int(match.group(1)) < len(item.chain):
            return f"{item.chain[int(match.group(1))].path}.{match.group(2)}"
        if field.startswith("limit.rate."):
            return f"{item.path}.{field.removeprefix('limit.rate.')}"
        if field == "limit.burst":
            return f"{item.path}.{extensions.BURST}"
        if field == "limit.name":
            return f"{item.path}.name"
        if field == "limit.domain":
            return "domain"
        return item.chain[-1].path

    def _claim(self, name: str, path: str) -> None:
        if name in self._names:
            self._fail(
                path,
                f"duplicate limit name {name!r} in domain {self.domain!r} "
                f"(see {self._names[name]})",
            )
        self._names[name] = path

    def _replaces(self, raw: Any, path: str, own_name: str) -> tuple[str, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self._fail(path, "must be a list of {name: ...}")
        names = []
        for i, item in enumerate(raw):
            here = f"{path}[{i}]"
            name = self._text(self._mapping(item, here, _REPLACES_KEYS).get("name"), f"{here}.name")
            if not name:
                self._fail(f"{here}.name", "is required (a non-empty string)")
            if name == own_name:
                self._fail(f"{here}.name", "a limit cannot replace itself")
            names.append(name)
        return tuple(names)

    # -- scalars and shapes ------------------------------------------------------------

    def _mapping(self, raw: Any, path: str, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self._fail(path, "must be a mapping")
        for key in raw:
            if key not in allowed:
                hint = f"; it belongs in {_PLACES[key]}" if key in _PLACES else ""
                # A misspelt or miscased x-bulwark-* key is told the real ones.
                if extensions.is_extension(key):
                    hint = f"; {extensions.unknown_key_hint(key)}"
                self._fail(_join(path, str(key)), f"unknown key {key!r} here{hint}")
        return raw

    def _text(self, raw: Any, path: str) -> str:
        if raw is None:
            return ""
        if not isinstance(raw, str):
            self._fail(path, "must be a string")
        return raw

    def _flag(self, raw: Any, path: str) -> bool:
        text = self._text(raw, path).lower()
        if text not in _TRUE | _FALSE | {""}:
            self._fail(path, f"must be true or false, got {raw!r}")
        return text in _TRUE

    def _count(self, raw: Any, path: str) -> int:
        text = self._text(raw, path).strip()
        if not text:
            self._fail(path, "is required (a whole number, 0 or more)")
        digits = text.removeprefix("+")
        if not (digits.isascii() and digits.isdigit()):
            self._fail(path, f"must be a whole number, 0 or more, got {text!r}")
        return int(digits)

    def _fail(self, path: str, problem: str) -> NoReturn:
        raise EnvoyConfigError(f"{self._source}: {self._prefix}{path or 'document'}: {problem}")


def _segment(key: str, value: str) -> str:
    """One level of envoyproxy/ratelimit's statistics key: ``key`` or ``key_value``."""
    return f"{key}_{value}" if value else key


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _derive_name(raw: str, pairs: Sequence[tuple[str, str]], *, force_hash: bool) -> str:
    """A valid Bulwark name for ``raw``: as is when possible, else sanitized with a hash suffix.

    The hash is of the exact (key, value) pairs, so two paths that sanitize alike
    (``path=/a`` and ``path=.a``) or read alike (``a=b`` and ``a_b``) still differ.
    """
    if not force_hash and len(raw) <= MAX_NAME_LENGTH and NAME_RE.fullmatch(raw):
        return raw
    digest = hashlib.sha256(repr(tuple(pairs)).encode()).hexdigest()[:HASH_LENGTH]
    base = _SANITIZE.sub("_", raw).lstrip("._-") or "limit"
    return f"{base[: MAX_NAME_LENGTH - HASH_LENGTH - 1]}-{digest}"
