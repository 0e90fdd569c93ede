"""The feature dependency graph without I/O: effective status, cycles, what a change affects.

* Statuses order AVAILABLE < DEGRADED < DISABLED; UNSPECIFIED (and any value
  this version does not know) counts as AVAILABLE, and so does an own status
  whose ``expires_at`` has passed.
* A feature's effective status is the worst of its own status and what each
  dependency contributes: a feature dependency its effective status, a breaker
  OPEN/FORCED_OPEN as DISABLED and HALF_OPEN as DEGRADED, anything else
  (including a missing feature or breaker) AVAILABLE. A soft dependency never
  contributes worse than DEGRADED.
* ``blocked_by`` names the path to the cause, direct dependency first; it is
  empty when the feature's own status decides (own status wins ties, then the
  first dependency in ``depends_on`` order).
* Nothing recurses: deep chains (thousands of features) cannot hit Python's
  recursion limit, and a cyclic stored graph (which writes refuse, see
  ``find_cycle``, but which two racing writes could still produce) cannot loop
  forever: a feature met again on its own path contributes AVAILABLE there.
  On such a graph the answer is best-effort and is kept out of ``memo``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from bulwark.v1 import breaker_pb2, feature_pb2

AVAILABLE = feature_pb2.FEATURE_STATUS_AVAILABLE
DEGRADED = feature_pb2.FEATURE_STATUS_DEGRADED
DISABLED = feature_pb2.FEATURE_STATUS_DISABLED

FEATURE = feature_pb2.DEPENDENCY_KIND_FEATURE
CIRCUIT_BREAKER = feature_pb2.DEPENDENCY_KIND_CIRCUIT_BREAKER

_BREAKER_STATUS = {
    breaker_pb2.BREAKER_STATE_OPEN: DISABLED,
    breaker_pb2.BREAKER_STATE_FORCED_OPEN: DISABLED,
    breaker_pb2.BREAKER_STATE_HALF_OPEN: DEGRADED,
}


@dataclass(frozen=True)
class Effective:
    """A feature's effective status, the path to its cause, and the cause's reason.

    ``blocked_by`` holds copies of the stored Dependency messages, which may be
    shared with other ``Effective`` values of the same pass: treat them as read-only.
    """

    status: int
    blocked_by: tuple[feature_pb2.Dependency, ...]
    reason: str


_NOTHING = Effective(AVAILABLE, (), "")


def own_status(feature: feature_pb2.Feature, now: float) -> int:
    """The feature's own status at ``now`` (Unix seconds): AVAILABLE once ``expires_at`` passed."""
    status = feature.status
    if status not in (DEGRADED, DISABLED):
        return AVAILABLE
    if feature.HasField("expires_at"):
        expires = feature.expires_at.seconds + feature.expires_at.nanos / 1e9
        if expires <= now:
            return AVAILABLE
    return status


def breaker_status(state: int | None) -> int:
    """What a breaker in ``state`` contributes; None (no such breaker) is AVAILABLE."""
    if state is None:
        return AVAILABLE
    return _BREAKER_STATUS.get(state, AVAILABLE)


# -- effective status ---------------------------------------------------------------


@dataclass
class _Result:
    """One feature's result inside ``evaluate``, with its path kept as links.

    Paths are shared suffixes, so linking instead of copying keeps one pass over a
    chain linear; a path is materialised only for what ``evaluate`` hands out.
    """

    status: int
    reason: str
    via: feature_pb2.Dependency | None  # first element of blocked_by; None: own decides
    rest: _Result | Effective | None  # the cause feature's result when ``via`` is a feature
    effective: Effective | None = None


@dataclass
class _Frame:
    name: str
    feature: feature_pb2.Feature
    depth: int
    # Lowest stack depth this result depends on: below ``depth`` means it leaned
    # on an ancestor through a cycle, so it is only valid from this root.
    low: int
    worst: int
    reason: str
    via: feature_pb2.Dependency | None = None
    rest: _Result | Effective | None = None
    next_dep: int = 0


def evaluate(
    name: str,
    features: Mapping[str, feature_pb2.Feature],
    breaker_state: Callable[[str], int | None],
    now: float,
    memo: dict[str, Effective] | None = None,
) -> Effective:
    """The effective status of feature ``name``; AVAILABLE with no cause if it does not exist.

    ``breaker_state(name)`` gives a breaker's state, or None when there is no such
    breaker. ``memo`` (shared by the calls of one pass over one revision of
    ``features`` and breakers) receives every feature result computed on the way,
    and supplies results already computed. Each memo entry holds its whole path,
    so filling it for a chain of n features stores about n²/2 path elements;
    without ``memo`` only the answer's path is built.
    """
    if memo is not None and name in memo:
        return memo[name]
    root = features.get(name)
    if root is None:
        return _NOTHING
    done: dict[str, tuple[_Result, bool]] = {}  # name -> (result, valid from any root)
    on_stack: dict[str, int] = {name: 0}
    stack = [_new_frame(name, root, 0, now)]
    returned: tuple[_Result, int] | None = None  # the frame just popped and its ``low``
    while True:
        frame = stack[-1]
        deps = frame.feature.depends_on
        pushed = False
        while frame.next_dep < len(deps):
            dep = deps[frame.next_dep]
            contribution = AVAILABLE
            reason = ""
            rest: _Result | Effective | None = None
            if dep.kind == CIRCUIT_BREAKER:
                state = breaker_state(dep.name)
                contribution = breaker_status(state)
                if contribution != AVAILABLE:
                    label = breaker_pb2.BreakerState.Name(state).removeprefix("BREAKER_STATE_")
                    reason = f"circuit breaker '{dep.name}' is {label}"
            elif dep.kind == FEATURE:
                found: _Result | Effective | None = None
                if returned is not None:
                    found, low = returned
                    returned = None
                    frame.low = min(frame.low, low)
                elif dep.name in on_stack:
                    # A cycle: this path already counts that feature's own status.
                    frame.low = min(frame.low, on_stack[dep.name])
                elif dep.name in done:
                    found, clean = done[dep.name]
                    if not clean:
                        # Computed against another stack: never valid for memo.
                        frame.low = -1
                elif memo is not None and dep.name in memo:
                    found = memo[dep.name]
                elif dep.name in features:
                    depth = len(stack)
                    on_stack[dep.name] = depth
                    stack.append(_new_frame(dep.name, features[dep.name], depth, now))
                    pushed = True
                    break
                if found is not None:
                    contribution, reason, rest = found.status, found.reason, found
            if dep.soft and contribution == DISABLED:
                contribution = DEGRADED
            # Strictly worse only: own status wins ties, then the earliest dependency.
            if contribution > frame.worst:
                frame.worst, frame.reason = contribution, reason
                frame.via = feature_pb2.Dependency(kind=dep.kind, name=dep.name, soft=dep.soft)
                frame.rest = rest
            frame.next_dep += 1
        if pushed:
            continue
        stack.pop()
        del on_stack[frame.name]
        reason = frame.reason if frame.worst != AVAILABLE else ""
        result = _Result(frame.worst, reason, frame.via, frame.rest)
        clean = frame.low >= frame.depth
        done[frame.name] = (result, clean)
        if memo is not None and clean:
            memo[frame.name] = _materialise(result)
        if not stack:
            return _materialise(result)
        returned = (result, frame.low)


def _new_frame(name: str, feature: feature_pb2.Feature, depth: int, now: float) -> _Frame:
    return _Frame(name, feature, depth, depth, own_status(feature, now), feature.reason)


def _materialise(result: _Result) -> Effective:
    """The Effective of ``result``, its path spelled out (and kept on the result)."""
    if result.effective is None:
        path: list[feature_pb2.Dependency] = []
        node: _Result | Effective | None = result
        while node is not None:
            done = node if isinstance(node, Effective) else node.effective
            if done is not None:
                path.extend(done.blocked_by)
                break
            assert isinstance(node, _Result)
            if node.via is None:
                break
            path.append(node.via)
            node = node.rest
        result.effective = Effective(result.status, tuple(path), result.reason)
    return result.effective


# -- graph shape ---------------------------------------------------------------------


def find_cycle(
    features: Mapping[str, feature_pb2.Feature], changed: feature_pb2.Feature
) -> list[str] | None:
    """A cycle of feature dependencies once ``changed`` is stored, or None if there is none.

    The cycle starts and ends at the same name (``["a", "b", "a"]``; a
    self-dependency is ``["a", "a"]``). The shortest cycle through ``changed`` is
    preferred; otherwise any cycle already in ``features`` is reported. Breaker
    dependencies and features that do not exist cannot close a cycle.
    """
    graph = dict(features)
    graph[changed.name] = changed

    def successors(node: str) -> list[str]:
        # dict.fromkeys: de-duplicate repeated edges, keep depends_on order.
        return list(
            dict.fromkeys(
                dep.name
                for dep in graph[node].depends_on
                if dep.kind == FEATURE and dep.name in graph
            )
        )

    # Breadth-first from the changed feature: the first path back to it is the shortest.
    start = changed.name
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in successors(node):
            if succ == start:
                path = [node]
                while (previous := parent[path[-1]]) is not None:
                    path.append(previous)
                return [*reversed(path), start]
            if succ not in parent:
                parent[succ] = node
                queue.append(succ)

    # None through it: report a cycle the stored graph already had, if any.
    finished: set[str] = set()
    for origin in sorted(graph):
        if origin in finished:
            continue
        path: list[str] = [origin]
        position = {origin: 0}
        iterators = [iter(successors(origin))]
        while iterators:
            succ = next(iterators[-1], None)
            if succ is None:
                iterators.pop()
                left = path.pop()
                del position[left]
                finished.add(left)
                continue
            if succ in position:
                return [*path[position[succ] :], succ]
            if succ not in finished:
                position[succ] = len(path)
                path.append(succ)
                iterators.append(iter(successors(succ)))
    return None


def affected(
    features: Mapping[str, feature_pb2.Feature],
    changed_features: Collection[str],
    changed_breakers: Collection[str],
) -> set[str]:
    """Every existing feature whose effective view may change after the given changes.

    That is each changed feature still present, and every feature depending on a
    changed feature (present or deleted) or breaker, directly or through others.
    """
    feature_dependents: dict[str, list[str]] = {}
    breaker_dependents: dict[str, list[str]] = {}
    for name, feature in features.items():
        for dep in feature.depends_on:
            if dep.kind == FEATURE:
                feature_dependents.setdefault(dep.name, []).append(name)
            elif dep.kind == CIRCUIT_BREAKER:
                breaker_dependents.setdefault(dep.name, []).append(name)
    out: set[str] = set()
    queue: deque[str] = deque()

    def reach(name: str) -> None:
        if name in features and name not in out:
            out.add(name)
            queue.append(name)

    for name in changed_features:
        reach(name)
        # A deleted feature is not reached itself, but its dependents see the change.
        for dependent in feature_dependents.get(name, ()):
            reach(dependent)
    for name in changed_breakers:
        for dependent in breaker_dependents.get(name, ()):
            reach(dependent)
    while queue:
        for dependent in feature_dependents.get(queue.popleft(), ()):
            reach(dependent)
    return out
