"""The layers of ARCHITECTURE.md, enforced on every import at every level of every module.

Function-level and ``TYPE_CHECKING`` imports count as much as top-level ones: a rule a
lazy import may break is no rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "bulwark_server"
CLIENT = ROOT / "clients" / "python" / "bulwark"
GENERATED = (SERVER / "envoy_api", SERVER / "keda_api", CLIENT / "v1")

# Packages that hold domain state and rules: they import neither grpc nor the etcd
# client, nor each other (they are handed what they need from one another).
CAPABILITIES = (
    "breakers",
    "bulkheads",
    "ratelimits",
    "registry",
    "features",
    "backups",
    "alerts",
    "signals",
    "remediation",
    "backpressure",
    "chaos",
)
# Foundations every layer may use: no gRPC, no etcd client either.
FOUNDATIONS = ("security", "cluster", "errors", "validation", "timestamps")
# Server code that speaks gRPC: servicers, the transport in front of them, the store
# (the etcd client is a gRPC client) and the command line (a client of Bulwark's API).
GRPC_ALLOWED = ("api", "transport", "store", "cli")
ETCD_CLIENT = ("etcd3aio", "etcd3", "bulwark_server.store._etcd_client")
MAX_LINES = 500


def _modules(root: Path, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        if any(path.is_relative_to(g) for g in GENERATED):
            continue
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join((package, *parts)), path


SERVER_MODULES = dict(_modules(SERVER, "bulwark_server"))
CLIENT_MODULES = dict(_modules(CLIENT, "bulwark"))


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, anywhere in its file, relative imports resolved."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    """The first package level under bulwark_server ("api", "breakers", "runner", ...)."""
    return module.split(".")[1] if "." in module else ""


def test_the_walk_sees_every_layer() -> None:
    # Guards the discovery: a rule over no modules would pass vacuously.
    layers = {_layer(m) for m in SERVER_MODULES}
    assert {*CAPABILITIES, "api", "transport", "store", "cluster", "cli"} <= layers
    assert "bulwark.sync" in CLIENT_MODULES and "bulwark.aio" in CLIENT_MODULES
    assert "grpc" in imports_of(
        "bulwark_server.api.status", SERVER_MODULES["bulwark_server.api.status"]
    )


@pytest.mark.parametrize("module", sorted(SERVER_MODULES), ids=str)
def test_grpc_only_in_the_layers_that_speak_it(module: str) -> None:
    if _layer(module) in GRPC_ALLOWED:
        return
    offending = {i for i in imports_of(module, SERVER_MODULES[module]) if _within(i, "grpc")}
    offending |= {
        i
        for i in imports_of(module, SERVER_MODULES[module])
        if _within(i, "grpc_health", "grpc_reflection", *ETCD_CLIENT)
    }
    assert not offending, f"{module} ({_layer(module) or 'root'}) imports {sorted(offending)}"


@pytest.mark.parametrize("module", sorted(SERVER_MODULES), ids=str)
def test_capabilities_and_foundations_stay_below_the_transport(module: str) -> None:
    layer = _layer(module)
    if layer not in (*CAPABILITIES, *FOUNDATIONS):
        return
    imported = imports_of(module, SERVER_MODULES[module])
    above = {
        i
        for i in imported
        if _within(
            i,
            "bulwark_server.api",
            "bulwark_server.transport",
            "bulwark_server.cli",
            "bulwark_server.runner",
            "bulwark_server.loopback",
            "bulwark.sync",
            "bulwark.aio",
            "bulwark.interceptors",
        )
    }
    assert not above, f"{module} imports a layer above it: {sorted(above)}"
    others = {
        i
        for i in imported
        for other in CAPABILITIES
        if other != layer and _within(i, f"bulwark_server.{other}")
    }
    assert not others, f"{module} imports a capability not its own: {sorted(others)}"


@pytest.mark.parametrize("module", sorted(SERVER_MODULES), ids=str)
def test_the_transport_knows_no_capability(module: str) -> None:
    if _layer(module) != "transport":
        return
    imported = imports_of(module, SERVER_MODULES[module])
    inner = {i for i in imported for c in CAPABILITIES if _within(i, f"bulwark_server.{c}")}
    assert not inner, f"{module} imports {sorted(inner)}"


@pytest.mark.parametrize("module", sorted(SERVER_MODULES), ids=str)
def test_only_the_store_reaches_into_the_store(module: str) -> None:
    if _layer(module) == "store":
        return
    inner = {
        i
        for i in imports_of(module, SERVER_MODULES[module])
        if _within(i, "bulwark_server.store")
        and not _within(i, "bulwark_server.store.keys")
        and i.count(".") >= 2
        and i.split(".")[2][:1].islower()
        and i.split(".")[2] not in _store_front_names()
    }
    assert not inner, f"{module} imports store internals {sorted(inner)}; use bulwark_server.store"


def _store_front_names() -> set[str]:
    tree = ast.parse((SERVER / "store" / "__init__.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", sorted(CLIENT_MODULES), ids=str)
def test_the_client_never_imports_the_server(module: str) -> None:
    server = {i for i in imports_of(module, CLIENT_MODULES[module]) if _within(i, "bulwark_server")}
    assert not server, f"{module} imports {sorted(server)}"


@pytest.mark.parametrize("module", sorted(SERVER_MODULES), ids=str)
def test_the_server_takes_only_the_stubs_from_the_client_distribution(module: str) -> None:
    runtime = {
        i
        for i in imports_of(module, SERVER_MODULES[module])
        if _within(i, "bulwark") and not _within(i, "bulwark.v1")
    }
    assert not runtime, f"{module} imports the client runtime {sorted(runtime)}"


@pytest.mark.parametrize(
    "path",
    sorted([*SERVER_MODULES.values(), *CLIENT_MODULES.values()]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_over_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"
