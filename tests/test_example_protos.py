"""The examples' generated code matches their protos, which pass Bulwark's `buf lint` rules."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "clients" / "python" / "examples"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_example_code_is_current(tmp_path: Path) -> None:
    fresh = _generator().generate_examples(tmp_path)
    fresh_names = {p.relative_to(tmp_path) for p in fresh}
    assert Path("demo/checkout/v1/checkout_pb2_grpc.py") in fresh_names
    committed_names = {
        p.relative_to(EXAMPLES) for p in (EXAMPLES / "demo").rglob("*_pb2*") if p.is_file()
    }
    assert fresh_names == committed_names, "run `make proto` and commit the result"
    for path in fresh:
        relative = path.relative_to(tmp_path)
        assert path.read_bytes() == (EXAMPLES / relative).read_bytes(), (
            f"{relative} is out of date: run `make proto` and commit the result"
        )


def test_buf_lint_passes_on_the_example_protos() -> None:
    """Their buf.yaml holds the rules of protos/buf.yaml (without its vendored trees' ignores)."""
    ours = yaml.safe_load((ROOT / "protos" / "buf.yaml").read_text())
    theirs = yaml.safe_load((EXAMPLES / "protos" / "buf.yaml").read_text())
    assert theirs["lint"]["use"] == ours["lint"]["use"]
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    exe = str(buf) if buf.exists() else shutil.which("buf")
    assert exe, "buf is missing: `make test` installs it (npm package @bufbuild/buf)"
    result = subprocess.run(
        [exe, "lint", "clients/python/examples/protos"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
