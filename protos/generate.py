"""Generate the Python code for protos/bulwark/v1 into an output root.

`make proto` writes into clients/python (committed). The freshness test writes
into a scratch folder and compares, so CI fails when the committed code is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every bulwark proto; return the generated files."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("bulwark/**/*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(p for p in (out_root / "bulwark" / "v1").glob("*_pb2*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent / "clients" / "python"
    for path in generate(target):
        print(path)
