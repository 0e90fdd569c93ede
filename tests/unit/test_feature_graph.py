"""Unit tests for bulwark_server.features.graph: effective status, cycles, affected features."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise

import pytest
from google.protobuf import timestamp_pb2

from bulwark.v1 import breaker_pb2, feature_pb2
from bulwark_server.features.graph import (
    Effective,
    affected,
    breaker_status,
    evaluate,
    find_cycle,
    own_status,
)

UNSPECIFIED = feature_pb2.FEATURE_STATUS_UNSPECIFIED
AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED
FEATURE = feature_pb2.DEPENDENCY_KIND_FEATURE
BREAKER = feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER
NOW = 1_700_000_000.0


def fdep(name: str, soft: bool = False) -> feature_pb2.Dependency:
    return feature_pb2.Dependency(kind=FEATURE, name=name, soft=soft)


def bdep(name: str, soft: bool = False) -> feature_pb2.Dependency:
    return feature_pb2.Dependency(kind=BREAKER, name=name, soft=soft)


def feat(
    name: str,
    status: int = AVAILABLE,
    *deps: feature_pb2.Dependency,
    reason: str = "",
    expires_at: float | None = None,
) -> feature_pb2.Feature:
    out = feature_pb2.Feature(name=name, status=status, reason=reason, depends_on=deps)
    if expires_at is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(round(expires_at * 1e9))
        out.expires_at.CopyFrom(ts)
    return out


def graph(*features: feature_pb2.Feature) -> dict[str, feature_pb2.Feature]:
    return {f.name: f for f in features}


def breakers(states: Mapping[str, int]) -> Callable[[str], int | None]:
    return states.get


NO_BREAKERS = breakers({})


def path(effective: Effective) -> list[tuple[int, str, bool]]:
    return [(dep.kind, dep.name, dep.soft) for dep in effective.blocked_by]


# -- own and breaker status -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(UNSPECIFIED, AVAILABLE), (AVAILABLE, AVAILABLE), (DEGRADED, DEGRADED), (DISABLED, DISABLED)],
)
def test_own_status_without_expiry(status: int, expected: int) -> None:
    assert own_status(feat("a", status), NOW) == expected


def test_own_status_expires_at_the_given_time() -> None:
    feature = feat("a", DISABLED, expires_at=NOW + 10)
    assert own_status(feature, NOW) == DISABLED
    assert own_status(feature, NOW + 9.999) == DISABLED
    assert own_status(feature, NOW + 10) == AVAILABLE
    assert own_status(feature, NOW + 10.001) == AVAILABLE


def test_own_status_expiry_counts_nanos() -> None:
    feature = feat("a", DEGRADED, expires_at=NOW + 0.5)
    assert own_status(feature, NOW + 0.4) == DEGRADED
    assert own_status(feature, NOW + 0.6) == AVAILABLE


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, AVAILABLE),
        (breaker_pb2.BREAKER_STATE_UNSPECIFIED, AVAILABLE),
        (breaker_pb2.BREAKER_STATE_CLOSED, AVAILABLE),
        (breaker_pb2.BREAKER_STATE_OPEN, DISABLED),
        (breaker_pb2.BREAKER_STATE_HALF_OPEN, DEGRADED),
        (breaker_pb2.BREAKER_STATE_FORCED_OPEN, DISABLED),
        (breaker_pb2.BREAKER_STATE_DISABLED, AVAILABLE),
        (breaker_pb2.BREAKER_STATE_METRICS_ONLY, AVAILABLE),
        (99, AVAILABLE),
    ],
)
def test_breaker_status(state: int | None, expected: int) -> None:
    assert breaker_status(state) == expected


def test_every_breaker_state_is_covered() -> None:
    # A new BreakerState must be added to the table above on purpose.
    covered = {0, 1, 2, 3, 4, 5, 6}
    assert set(breaker_pb2.BreakerState.values()) == covered


# -- evaluate ---------------------------------------------------------------------


def test_all_available_has_no_cause_and_no_reason() -> None:
    features = graph(feat("a", AVAILABLE, fdep("b"), bdep("db")), feat("b", reason="old"))
    states = breakers({"db": breaker_pb2.BREAKER_STATE_CLOSED})
    assert evaluate("a", features, states, NOW) == Effective(AVAILABLE, (), "")


def test_missing_feature_evaluates_available() -> None:
    assert evaluate("ghost", {}, NO_BREAKERS, NOW) == Effective(AVAILABLE, (), "")


def test_transitive_status_across_three_levels_with_path_and_reason() -> None:
    features = graph(
        feat("checkout", AVAILABLE, fdep("payments")),
        feat("payments", AVAILABLE, fdep("ledger")),
        feat("ledger", DISABLED, reason="ledger migration"),
    )
    top = evaluate("checkout", features, NO_BREAKERS, NOW)
    assert top.status == DISABLED
    assert path(top) == [(FEATURE, "payments", False), (FEATURE, "ledger", False)]
    assert top.reason == "ledger migration"
    middle = evaluate("payments", features, NO_BREAKERS, NOW)
    assert path(middle) == [(FEATURE, "ledger", False)]
    bottom = evaluate("ledger", features, NO_BREAKERS, NOW)
    assert bottom == Effective(DISABLED, (), "ledger migration")


def test_path_ends_in_a_breaker_with_its_reason() -> None:
    features = graph(
        feat("checkout", AVAILABLE, fdep("pay", soft=True)),
        feat("pay", AVAILABLE, fdep("other"), bdep("payments")),
        feat("other"),
    )
    states = breakers({"payments": breaker_pb2.BREAKER_STATE_OPEN})
    top = evaluate("checkout", features, states, NOW)
    assert top.status == DEGRADED
    assert path(top) == [(FEATURE, "pay", True), (BREAKER, "payments", False)]
    assert top.reason == "circuit breaker 'payments' is OPEN"
    assert evaluate("pay", features, states, NOW).status == DISABLED


@pytest.mark.parametrize(
    ("state", "label", "expected"),
    [
        (breaker_pb2.BREAKER_STATE_OPEN, "OPEN", DISABLED),
        (breaker_pb2.BREAKER_STATE_FORCED_OPEN, "FORCED_OPEN", DISABLED),
        (breaker_pb2.BREAKER_STATE_HALF_OPEN, "HALF_OPEN", DEGRADED),
    ],
)
def test_breaker_reason_names_the_state(state: int, label: str, expected: int) -> None:
    features = graph(feat("a", AVAILABLE, bdep("db")))
    result = evaluate("a", features, breakers({"db": state}), NOW)
    assert result.status == expected
    assert result.reason == f"circuit breaker 'db' is {label}"
    assert path(result) == [(BREAKER, "db", False)]


def test_missing_breaker_and_missing_feature_count_as_available() -> None:
    features = graph(feat("a", DEGRADED, bdep("gone"), fdep("ghost"), reason="mine"))
    assert evaluate("a", features, NO_BREAKERS, NOW) == Effective(DEGRADED, (), "mine")


def test_soft_dependency_caps_at_degraded() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b", soft=True)),
        feat("b", DISABLED, reason="b off"),
    )
    result = evaluate("a", features, NO_BREAKERS, NOW)
    assert result.status == DEGRADED
    assert path(result) == [(FEATURE, "b", True)]
    assert result.reason == "b off"


def test_soft_dependency_passes_degraded_through() -> None:
    features = graph(feat("a", AVAILABLE, bdep("db", soft=True)))
    states = breakers({"db": breaker_pb2.BREAKER_STATE_HALF_OPEN})
    assert evaluate("a", features, states, NOW).status == DEGRADED
    # A soft OPEN breaker is capped too.
    states = breakers({"db": breaker_pb2.BREAKER_STATE_OPEN})
    assert evaluate("a", features, states, NOW).status == DEGRADED


def test_worst_dependency_wins_and_first_in_order_breaks_ties() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("soft-off", soft=True), fdep("deg"), fdep("off"), fdep("off2")),
        feat("soft-off", DISABLED, reason="soft"),
        feat("deg", DEGRADED, reason="deg"),
        feat("off", DISABLED, reason="off"),
        feat("off2", DISABLED, reason="off2"),
    )
    result = evaluate("a", features, NO_BREAKERS, NOW)
    assert result.status == DISABLED
    assert path(result) == [(FEATURE, "off", False)]
    assert result.reason == "off"
    # Without the hard DISABLED ones, the soft one (DEGRADED) comes first among equals.
    features["a"] = feat("a", AVAILABLE, fdep("soft-off", soft=True), fdep("deg"))
    result = evaluate("a", features, NO_BREAKERS, NOW)
    assert path(result) == [(FEATURE, "soft-off", True)]
    assert result.reason == "soft"


def test_own_status_wins_ties() -> None:
    features = graph(
        feat("a", DEGRADED, fdep("b"), reason="mine"),
        feat("b", DEGRADED, reason="theirs"),
    )
    assert evaluate("a", features, NO_BREAKERS, NOW) == Effective(DEGRADED, (), "mine")


def test_own_reason_kept_as_is_when_own_decides() -> None:
    features = graph(feat("a", DISABLED, bdep("db")))
    states = breakers({"db": breaker_pb2.BREAKER_STATE_HALF_OPEN})
    assert evaluate("a", features, states, NOW) == Effective(DISABLED, (), "")


def test_worse_dependency_beats_own_status() -> None:
    features = graph(
        feat("a", DEGRADED, fdep("b"), reason="mine"),
        feat("b", DISABLED, reason="theirs"),
    )
    result = evaluate("a", features, NO_BREAKERS, NOW)
    assert result.status == DISABLED
    assert path(result) == [(FEATURE, "b", False)]
    assert result.reason == "theirs"


def test_expiry_applies_to_dependencies_too() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", DISABLED, reason="maintenance", expires_at=NOW + 60),
    )
    before = evaluate("a", features, NO_BREAKERS, NOW + 59.9)
    assert before.status == DISABLED and before.reason == "maintenance"
    after = evaluate("a", features, NO_BREAKERS, NOW + 60)
    assert after == Effective(AVAILABLE, (), "")
    # An expired own status leaves its reason out.
    assert evaluate("b", features, NO_BREAKERS, NOW + 61) == Effective(AVAILABLE, (), "")


def test_blocked_by_holds_copies() -> None:
    features = graph(feat("a", AVAILABLE, fdep("b")), feat("b", DISABLED))
    result = evaluate("a", features, NO_BREAKERS, NOW)
    result.blocked_by[0].name = "changed"
    assert features["a"].depends_on[0].name == "b"


def test_memo_is_filled_and_used() -> None:
    features = graph(
        feat("top", AVAILABLE, fdep("left"), fdep("right")),
        feat("left", AVAILABLE, fdep("base")),
        feat("right", AVAILABLE, fdep("base")),
        feat("base", DEGRADED, reason="slow"),
    )
    memo: dict[str, Effective] = {}
    top = evaluate("top", features, NO_BREAKERS, NOW, memo)
    assert set(memo) == {"top", "left", "right", "base"}
    assert memo["top"] is top
    assert path(memo["right"]) == [(FEATURE, "base", False)]
    # Entries in memo are trusted: a planted one is returned as is.
    planted = Effective(DISABLED, (), "planted")
    memo2: dict[str, Effective] = {"base": planted}
    assert evaluate("left", features, NO_BREAKERS, NOW, memo2).reason == "planted"
    assert evaluate("base", features, NO_BREAKERS, NOW, memo2) is planted


def test_memo_results_match_fresh_evaluation() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b"), bdep("x")),
        feat("b", AVAILABLE, fdep("c", soft=True)),
        feat("c", DISABLED, fdep("d"), reason="c"),
        feat("d", AVAILABLE, bdep("y")),
        feat("e", AVAILABLE, fdep("d")),
    )
    states = breakers({"y": breaker_pb2.BREAKER_STATE_FORCED_OPEN})
    memo: dict[str, Effective] = {}
    for name in ["a", "e", "d", "c", "b"]:
        assert evaluate(name, features, states, NOW, memo) == evaluate(name, features, states, NOW)


@pytest.mark.timeout(10)
def test_evaluate_terminates_on_a_cyclic_stored_graph() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("c")),
        feat("c", DISABLED, fdep("a"), reason="c off"),
        feat("self", DEGRADED, fdep("self"), reason="me"),
    )
    for name in "abc":
        assert evaluate(name, features, NO_BREAKERS, NOW).status == DISABLED
    assert evaluate("self", features, NO_BREAKERS, NOW) == Effective(DEGRADED, (), "me")


def test_cycle_results_do_not_poison_the_memo() -> None:
    # Evaluating b first sees a only through the cycle; a result leaning on
    # the stack must not be reused for a, which is DISABLED on its own.
    features = graph(
        feat("a", DISABLED, fdep("b"), reason="a off"),
        feat("b", AVAILABLE, fdep("a")),
    )
    memo: dict[str, Effective] = {}
    assert evaluate("a", features, NO_BREAKERS, NOW, memo).status == DISABLED
    b = evaluate("b", features, NO_BREAKERS, NOW, memo)
    assert b.status == DISABLED
    assert path(b) == [(FEATURE, "a", False)]


def test_cycle_results_reused_in_one_pass_stay_out_of_the_memo() -> None:
    # From "top", b is first met under a (through the cycle b -> a), so its
    # result ignores a; c reaches b later in the same pass and must not be
    # memoised from that: on its own, c sees a DISABLED through b.
    features = graph(
        feat("top", AVAILABLE, fdep("a"), fdep("c")),
        feat("a", DISABLED, fdep("b"), reason="a off"),
        feat("b", AVAILABLE, fdep("a")),
        feat("c", AVAILABLE, fdep("b")),
    )
    memo: dict[str, Effective] = {}
    assert evaluate("top", features, NO_BREAKERS, NOW, memo).status == DISABLED
    c = evaluate("c", features, NO_BREAKERS, NOW, memo)
    assert c == evaluate("c", features, NO_BREAKERS, NOW)
    assert c.status == DISABLED
    assert path(c) == [(FEATURE, "b", False), (FEATURE, "a", False)]


def test_deep_chain_evaluates_without_recursion_error() -> None:
    depth = 5_000
    features = graph(
        *(feat(f"f{n}", AVAILABLE, fdep(f"f{n + 1}")) for n in range(depth - 1)),
        feat(f"f{depth - 1}", DISABLED, reason="bottom"),
    )
    result = evaluate("f0", features, NO_BREAKERS, NOW)
    assert result.status == DISABLED
    assert result.reason == "bottom"
    assert [dep.name for dep in result.blocked_by] == [f"f{n}" for n in range(1, depth)]


def test_deep_chain_with_memo() -> None:
    depth = 1_000
    features = graph(
        *(feat(f"f{n}", AVAILABLE, fdep(f"f{n + 1}")) for n in range(depth - 1)),
        feat(f"f{depth - 1}", DEGRADED, reason="bottom"),
    )
    memo: dict[str, Effective] = {}
    assert len(evaluate("f0", features, NO_BREAKERS, NOW, memo).blocked_by) == depth - 1
    assert len(memo) == depth
    assert len(memo["f500"].blocked_by) == depth - 501


# -- find_cycle -------------------------------------------------------------------


def is_cycle(cycle: list[str], features: Mapping[str, feature_pb2.Feature]) -> bool:
    edges = {
        (name, dep.name)
        for name, feature in features.items()
        for dep in feature.depends_on
        if dep.kind == FEATURE
    }
    return cycle[0] == cycle[-1] and all(pair in edges for pair in pairwise(cycle))


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle({}, feat("a", AVAILABLE, fdep("a"))) == ["a", "a"]


def test_two_cycle() -> None:
    features = graph(feat("a", AVAILABLE, fdep("b")), feat("b"))
    assert find_cycle(features, feat("b", AVAILABLE, fdep("a"))) == ["b", "a", "b"]


def test_three_cycle_through_the_changed_feature() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("c")),
        feat("c"),
    )
    assert find_cycle(features, feat("c", AVAILABLE, fdep("a"))) == ["c", "a", "b", "c"]


def test_new_feature_closing_a_cycle() -> None:
    features = graph(feat("a", AVAILABLE, fdep("new")))
    assert find_cycle(features, feat("new", AVAILABLE, fdep("a"))) == ["new", "a", "new"]


def test_shortest_cycle_through_changed_is_reported() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("c")),
        feat("c", AVAILABLE, fdep("x")),
        feat("d", AVAILABLE, fdep("x")),
        feat("x"),
    )
    changed = feat("x", AVAILABLE, fdep("a"), fdep("d"))
    assert find_cycle(features, changed) == ["x", "d", "x"]


def test_replacing_an_edge_removes_the_cycle() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("c")),
        feat("c", AVAILABLE, fdep("a")),
        feat("d"),
    )
    assert find_cycle(features, feat("c", AVAILABLE, fdep("a"))) == ["c", "a", "b", "c"]
    assert find_cycle(features, feat("c", AVAILABLE, fdep("d"))) is None


def test_diamond_is_not_a_cycle() -> None:
    features = graph(
        feat("top", AVAILABLE, fdep("left"), fdep("right")),
        feat("left", AVAILABLE, fdep("base")),
        feat("right", AVAILABLE, fdep("base")),
        feat("base"),
    )
    assert find_cycle(features, features["top"]) is None
    assert find_cycle(features, feat("base", AVAILABLE, bdep("top"))) is None
    assert find_cycle(features, feat("left", AVAILABLE, fdep("base"), fdep("base"))) is None


def test_breaker_and_missing_dependencies_do_not_close_cycles() -> None:
    features = graph(feat("a", AVAILABLE, bdep("b")), feat("b", AVAILABLE, fdep("ghost")))
    assert find_cycle(features, feat("b", AVAILABLE, bdep("a"), fdep("ghost"))) is None


def test_existing_cycle_elsewhere_is_still_reported() -> None:
    features = graph(
        feat("x", AVAILABLE, fdep("y")),
        feat("y", AVAILABLE, fdep("x")),
        feat("a"),
    )
    cycle = find_cycle(features, feat("a", AVAILABLE, fdep("x")))
    assert cycle is not None and "a" not in cycle
    assert is_cycle(cycle, features)


def test_deep_chain_cycle_found_without_recursion() -> None:
    depth = 5_000
    features = graph(*(feat(f"f{n}", AVAILABLE, fdep(f"f{n + 1}")) for n in range(depth)))
    closing = feat(f"f{depth}", AVAILABLE, fdep("f0"))
    cycle = find_cycle(features, closing)
    assert cycle is not None and len(cycle) == depth + 2
    assert is_cycle(cycle, {**features, closing.name: closing})
    assert find_cycle(features, feat(f"f{depth}")) is None


# -- affected ---------------------------------------------------------------------


def test_affected_diamond() -> None:
    features = graph(
        feat("top", AVAILABLE, fdep("left"), fdep("right")),
        feat("left", AVAILABLE, fdep("base")),
        feat("right", AVAILABLE, fdep("base")),
        feat("base"),
        feat("unrelated"),
    )
    assert affected(features, ["base"], []) == {"base", "left", "right", "top"}
    assert affected(features, ["left"], []) == {"left", "top"}
    assert affected(features, ["top"], []) == {"top"}
    assert affected(features, [], []) == set()


def test_affected_chain_and_breaker() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("c")),
        feat("c", AVAILABLE, bdep("db")),
        feat("d", AVAILABLE, bdep("cache", soft=True)),
        feat("e"),
    )
    assert affected(features, [], ["db"]) == {"a", "b", "c"}
    assert affected(features, [], ["cache"]) == {"d"}
    assert affected(features, [], ["nothing"]) == set()
    assert affected(features, ["e"], ["cache"]) == {"d", "e"}
    # A breaker name that is also a feature name is a different thing.
    assert affected(features, ["db"], []) == set()


def test_affected_deleted_feature_reaches_its_dependents() -> None:
    features = graph(feat("a", AVAILABLE, fdep("b")), feat("z", AVAILABLE, fdep("a")))
    assert affected(features, ["b"], []) == {"a", "z"}


@pytest.mark.timeout(10)
def test_affected_terminates_on_a_cycle() -> None:
    features = graph(
        feat("a", AVAILABLE, fdep("b")),
        feat("b", AVAILABLE, fdep("a")),
        feat("c", AVAILABLE, fdep("a")),
    )
    assert affected(features, ["a"], []) == {"a", "b", "c"}


def test_affected_deep_chain() -> None:
    depth = 10_000
    features = graph(
        *(feat(f"f{n}", AVAILABLE, fdep(f"f{n + 1}")) for n in range(depth - 1)),
        feat(f"f{depth - 1}", AVAILABLE, bdep("db")),
    )
    assert affected(features, [], ["db"]) == set(features)
    assert affected(features, ["f5000"], []) == {f"f{n}" for n in range(5_001)}
