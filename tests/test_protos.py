"""The committed generated code matches protos/, and the protos pass `buf lint`."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients" / "python" / "bulwark" / "v1"


def _generate_into(out: Path) -> list[Path]:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate(out)


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
