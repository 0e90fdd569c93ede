"""The committed code generated from the vendored protos (Envoy's, KEDA's) is current."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "vendored_protogen", ROOT / "protos" / "generate_vendored.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("tree", "sample"), [("envoy", "rls_pb2.py"), ("externalscaler", "externalscaler_pb2_grpc.py")]
)
def test_committed_generated_code_is_current(tmp_path: Path, tree: str, sample: str) -> None:
    generator = _generator()
    committed: Path = generator.TARGETS[tree]
    fresh = generator.generate(tmp_path, tree)
    assert any(p.name == sample for p in fresh)
    fresh_names = {p.relative_to(tmp_path) for p in fresh}
    committed_names = {
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and (p.name == "__init__.py" or "_pb2" in p.name) and p.suffix != ".pyc"
    }
    assert fresh_names == committed_names, "run `make proto` and commit the result"
    for path in fresh:
        relative = path.relative_to(tmp_path)
        assert path.read_bytes() == (committed / relative).read_bytes(), (
            f"{relative} is out of date: run `make proto` and commit the result"
        )


def test_keda_code_takes_no_top_level_package() -> None:
    for path in (ROOT / "server" / "bulwark_server" / "keda_api").glob("*.py*"):
        if path.suffix in (".py", ".pyi"):
            assert not re.search(r"^(from|import) externalscaler\b", path.read_text(), re.M), path
