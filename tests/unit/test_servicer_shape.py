"""Every servicer method is four beats: validate shape, call the capability, map the result,
errors through the one table.

The syntax tree of every servicer class in ``api/`` is walked: a method serving an RPC
is wrapped by ``rpc`` or ``rpc_stream`` (so every error goes through the table, streams
too), never aborts by hand, and no servicer touches the store, the election or
leadership: leader routing lives in ``api/routing.py`` alone.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "server" / "bulwark_server" / "api"
# What only the capability, or the one routing helper, may touch.
FORBIDDEN_ATTRIBUTES = {"_store", "store", "_election", "election", "is_leader", "_forwarder"}
FORBIDDEN_NAMES = {
    "EtcdStore",
    "Election",
    "LeaderForwarder",
    "read_leader",
    "was_forwarded",
    "track_writes",
}
FORBIDDEN_MODULES = (
    "bulwark_server.store",
    "bulwark_server.cluster.election",
    "bulwark_server.api.forwarding",
)
WRAPPERS = {"rpc", "rpc_stream"}


def servicer_classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(
            (isinstance(b, ast.Attribute) and b.attr.endswith("Servicer"))
            or (isinstance(b, ast.Name) and b.id.endswith("Servicer"))
            for b in node.bases
        )
    ]


def problems(source: str) -> list[str]:
    """What breaks the four beats in one servicer module's source."""
    tree = ast.parse(source)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if any(node.module.startswith(m) for m in FORBIDDEN_MODULES):
                found.append(f"imports {node.module}")
    for cls in servicer_classes(tree):
        for item in cls.body:
            if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            serves_rpc = item.name[:1].isupper()
            decorators = {d.id for d in item.decorator_list if isinstance(d, ast.Name)}
            if serves_rpc and not decorators & WRAPPERS:
                found.append(f"{cls.name}.{item.name} is not wrapped by rpc or rpc_stream")
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
                found.append(f"{cls.name} touches .{node.attr} (line {node.lineno})")
            if isinstance(node, ast.Attribute) and node.attr == "abort":
                found.append(f"{cls.name} aborts by hand (line {node.lineno})")
            if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
                found.append(f"{cls.name} uses {node.id} (line {node.lineno})")
            if isinstance(node, ast.arg) and node.arg in {"store", "election", "forwarder"}:
                found.append(f"{cls.name} takes {node.arg} (line {node.lineno})")
    return found


MODULES = sorted(p for p in API.glob("*.py") if servicer_classes(ast.parse(p.read_text())))


def test_every_service_module_is_checked() -> None:
    names = {p.stem for p in MODULES}
    assert {"breaker", "bulkhead", "ratelimit", "registry", "feature", "cluster"} <= names
    assert {"envoy_ratelimit", "backups", "auth"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_servicers_are_four_beats(path: Path) -> None:
    assert problems(path.read_text()) == []


def test_the_checker_catches_each_breach() -> None:
    # A servicer doing everything the rules forbid: each breach must be reported.
    bad = textwrap.dedent(
        """
        from bulwark_server.store import EtcdStore
        class FooServicer(foo_pb2_grpc.FooServiceServicer):
            def __init__(self, store, election):
                self._store = store
            async def GetFoo(self, request, context):
                if self._election.is_leader:
                    await context.abort(1, "x")
                return read_leader(self._store)
        """
    )
    found = "\n".join(problems(bad))
    for expected in (
        "imports bulwark_server.store",
        "GetFoo is not wrapped",
        "touches ._store",
        "touches .is_leader",
        "aborts by hand",
        "uses read_leader",
        "takes store",
    ):
        assert expected in found
