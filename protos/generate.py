"""Generate the Python code for protos/bulwark/v1, and for the client examples' protos
(clients/python/examples/protos), into an output root.

`make proto` writes into clients/python and clients/python/examples (committed). The
freshness tests write into a scratch folder and compare, so CI fails when the committed
code is stale.

The code is generated for the lowest versions the client declares, not for the
server's: protoc's Python code refuses a protobuf runtime older than the protoc
that made it, and the ``*_pb2_grpc.py`` modules refuse a grpcio older than the
grpcio-tools that made them. So protoc runs from grpcio-tools at exactly the
client's lowest grpcio (its bundled protoc emits code for the client's lowest
protobuf), installed on first use into its own environment under .tools/,
apart from the project's .venv (whose server needs a newer protobuf than that
grpcio-tools accepts). Newer runtimes load the code unchanged. The examples' code is
made the same way: an example runs wherever the client does.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import sys
import tomllib
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
CLIENT_PYPROJECT = REPO / "clients" / "python" / "pyproject.toml"
TOOLS = REPO / ".tools"
EXAMPLES = REPO / "clients" / "python" / "examples"
EXAMPLE_PROTOS = EXAMPLES / "protos"


def lowest_version(distribution: str) -> str:
    """The ``>=`` bound the client's pyproject.toml declares for ``distribution``."""
    dependencies = tomllib.loads(CLIENT_PYPROJECT.read_text())["project"]["dependencies"]
    for requirement in dependencies:
        match = re.fullmatch(rf"{re.escape(distribution)}\s*>=\s*([0-9.]+)\s*(,.*)?", requirement)
        if match:
            return match.group(1)
    raise LookupError(f"{CLIENT_PYPROJECT} declares no {distribution}>= bound")


def codegen_python() -> Path:
    """Python of the environment with grpcio-tools at the client's lowest grpcio (made once)."""
    version = lowest_version("grpcio")
    env = TOOLS / f"grpcio-tools-{version}"
    python = env / "bin" / "python"
    done = env / ".installed"
    TOOLS.mkdir(parents=True, exist_ok=True)
    with open(TOOLS / f"grpcio-tools-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (make proto beside the tests)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
            subprocess.run(
                [
                    str(python),
                    *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                    f"grpcio-tools=={version}",
                    f"grpcio=={version}",
                ],
                check=True,
            )
            done.touch()
    return python


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every bulwark proto; return the generated files."""
    _protoc(PROTO_ROOT, "bulwark", out_root)
    return sorted(p for p in (out_root / "bulwark" / "v1").glob("*_pb2*"))


def generate_examples(out_root: Path) -> list[Path]:
    """Run protoc for the examples' protos (``demo/**``); return the generated files.

    Their modules are ``demo.<service>.v1.<name>_pb2``, found when the examples'
    folder is on the path (as it is for ``python clients/python/examples/<script>.py``).
    """
    _protoc(EXAMPLE_PROTOS, "demo", out_root)
    return sorted(p for p in (out_root / "demo").rglob("*_pb2*") if p.is_file())


def _protoc(proto_root: Path, folder: str, out_root: Path) -> None:
    """protoc for every proto under ``proto_root/folder``, with ``proto_root`` the import root."""
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.glob(f"{folder}/**/*.proto"))
    if not protos:
        raise SystemExit(f"no protos under {proto_root / folder}")
    out_root = out_root.resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    # Run as a module, grpc_tools.protoc adds its bundled well-known protos (google/protobuf/*).
    args = [
        str(codegen_python()),
        *("-m", "grpc_tools.protoc"),
        f"-I{proto_root}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    code = subprocess.run(args, check=False).returncode
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    # python protos/generate.py [out_root]: protos/bulwark (default: into clients/python);
    # python protos/generate.py --examples [out_root]: the examples' protos (default: into
    # clients/python/examples).
    argv = sys.argv[1:]
    examples = argv[:1] == ["--examples"]
    if examples:
        argv = argv[1:]
    target = Path(argv[0]) if argv else (EXAMPLES if examples else REPO / "clients" / "python")
    for path in (generate_examples if examples else generate)(target):
        print(path)
