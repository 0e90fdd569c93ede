"""Unit tests for bulwark_server.ratelimits.index: the index picks what best_match picks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.descriptors import best_match, matches
from bulwark_server.ratelimits.index import LimitIndex

Entry = ratelimit_pb2.DescriptorEntry

# Small alphabets, so exact values, prefixes and any-value patterns collide often.
KEYS = st.sampled_from(["user", "path", "ip"])
VALUES = st.text(alphabet="ab", max_size=3)
PATTERN_VALUES = st.one_of(
    VALUES,  # exact (or "" = any value)
    VALUES.map(lambda v: v + "*"),  # prefix (or "*" = any value)
)
NAMES = st.sampled_from(["a", "b", "c", "d", "e", "f"])
DOMAINS = st.sampled_from(["edge", "core"])


def limit(domain: str, name: str, pairs: list[tuple[str, str]]) -> ratelimit_pb2.Limit:
    return ratelimit_pb2.Limit(
        domain=domain, name=name, descriptor=[Entry(key=k, value=v) for k, v in pairs]
    )


@st.composite
def patterns(draw: st.DrawFn, values: st.SearchStrategy[str]) -> list[tuple[str, str]]:
    keys = draw(st.lists(KEYS, min_size=1, max_size=3, unique=True))
    return [(k, draw(values)) for k in keys]


LIMITS = st.builds(limit, DOMAINS, NAMES, patterns(PATTERN_VALUES))
# Operations: put a limit (replacing one of the same name) or remove one by name.
OPS = st.lists(
    st.one_of(
        LIMITS.map(lambda lim: ("put", lim)),
        st.tuples(DOMAINS, NAMES).map(lambda dn: ("remove", dn)),
    ),
    max_size=40,
)


def apply(ops: list[tuple[str, object]]) -> tuple[LimitIndex, dict[tuple[str, str], object]]:
    index = LimitIndex()
    held: dict[tuple[str, str], object] = {}
    for created, (op, arg) in enumerate(ops, start=1):
        if op == "put":
            assert isinstance(arg, ratelimit_pb2.Limit)
            index.put(arg, created)
            held[(arg.domain, arg.name)] = arg
        else:
            assert isinstance(arg, tuple)
            removed = index.remove(*arg)
            assert (removed is not None) == (held.pop(arg, None) is not None)
    return index, held


@settings(max_examples=400, deadline=None)
@given(OPS, st.lists(st.tuples(DOMAINS, patterns(VALUES)), min_size=1, max_size=10))
def test_lookup_and_matching_agree_with_the_linear_reference(ops, requests) -> None:  # type: ignore[no-untyped-def]
    index, held = apply(ops)
    assert len(index) == len(held)
    for domain, pairs in requests:
        entries = [Entry(key=k, value=v) for k, v in pairs]
        of_domain = [lim for (d, _), lim in held.items() if d == domain]
        want = best_match(of_domain, entries)  # type: ignore[arg-type]
        got = index.lookup(domain, entries)
        assert (got.limit if got else None) == want
        all_matching = sorted(
            lim.name
            for lim in of_domain
            if matches(lim.descriptor, entries)  # type: ignore[attr-defined]
        )
        assert sorted(i.limit.name for i in index.matching(domain, entries)) == all_matching


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_removing_everything_leaves_an_empty_index(ops) -> None:  # type: ignore[no-untyped-def]
    index, held = apply(ops)
    for domain, name in list(held):
        assert index.remove(domain, name) is not None
    assert len(index) == 0
    assert not index._roots and not index._held


def test_precedence_and_create_revision() -> None:
    index = LimitIndex()
    index.put(limit("edge", "any", [("user", "")]), 1)
    index.put(limit("edge", "star", [("user", "*")]), 2)
    index.put(limit("edge", "pre", [("user", "u1*")]), 3)
    index.put(limit("edge", "longer", [("user", "u12*")]), 4)
    index.put(limit("edge", "exact", [("user", "u123")]), 5)

    def pick(value: str) -> tuple[str, int] | None:
        got = index.lookup("edge", [Entry(key="user", value=value)])
        return (got.limit.name, got.created) if got else None

    assert pick("u123") == ("exact", 5)
    assert pick("u124") == ("longer", 4)
    assert pick("u13") == ("pre", 3)
    assert pick("x") == ("any", 1)  # "" and "*" tie: the smaller name
    index.remove("edge", "any")
    assert pick("x") == ("star", 2)
    assert index.lookup("edge", [Entry(key="path", value="x")]) is None
    assert index.lookup("core", [Entry(key="user", value="x")]) is None
