"""The committed generated code matches protos/, and the protos pass `buf lint`."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import bulwark

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients" / "python" / "bulwark" / "v1"


def _generator():
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate_into(out: Path) -> list[Path]:
    return _generator().generate(out)


def test_committed_generated_code_is_current(tmp_path: Path):
    fresh = _generate_into(tmp_path)
    assert fresh, "no generated files"
    fresh_names = {p.name for p in fresh}
    committed_names = {p.name for p in COMMITTED.glob("*_pb2*")}
    assert fresh_names == committed_names, "run `make proto` and commit the result"
    for path in fresh:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), (
            f"{path.name} is out of date: run `make proto` and commit the result"
        )


def test_buf_lint_passes():
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    exe = str(buf) if buf.exists() else shutil.which("buf")
    assert exe, "buf is missing: `make test` installs it (npm package @bufbuild/buf)"
    result = subprocess.run(
        [exe, "lint", "protos"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_runs_on_the_lowest_versions_the_client_declares():
    """Each stub demands exactly the client's lower bounds, no newer grpcio or protobuf."""
    generator = _generator()
    grpcio, protobuf = generator.lowest_version("grpcio"), generator.lowest_version("protobuf")
    for path in sorted(COMMITTED.glob("*_pb2.py")):
        made_for = re.search(r"^# Protobuf Python Version: (\S+)$", path.read_text(), re.M)
        assert made_for and made_for.group(1) == protobuf, path.name
    for path in sorted(COMMITTED.glob("*_pb2_grpc.py")):
        made_for = re.search(r"^GRPC_GENERATED_VERSION = '(\S+)'$", path.read_text(), re.M)
        assert made_for and made_for.group(1) == grpcio, path.name


def test_client_and_server_distributions_share_one_version():
    client = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())
    version = client["project"]["version"]
    assert server["project"]["version"] == version == bulwark.__version__
    assert f"bulwark-client=={version}" in server["project"]["dependencies"]
