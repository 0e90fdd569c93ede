"""The revisions ``compare_commits.py`` compares: each materialised into its own source tree,
run with only that tree's code on the path, and checked to import its own packages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from bench_report import progress_to
from bench_servers import SERVING_TIMEOUT

REPO = Path(__file__).resolve().parent.parent
GIT_TIMEOUT = 120.0

_progress = progress_to("compare")


def git(*args: str) -> str:
    """``git -C REPO args``; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-C", str(REPO), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
    )
    return done.stdout.strip()


def resolve(rev: str) -> str:
    """The full hash of the commit ``rev`` names."""
    try:
        return git("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        message = f"compare_commits.py: not a commit: {rev!r} ({exc.stderr.strip()})"
        raise SystemExit(message) from None


def materialise(commit: str, dest: Path) -> None:
    """Extract the tree of ``commit`` into ``dest`` (``git archive``; nothing in the repo)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        check=True,
        capture_output=True,
        timeout=GIT_TIMEOUT,
    )
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(dest, filter="data")


def _side_env(tree: Path, *, server: bool) -> dict[str, str]:
    """This environment with PYTHONPATH naming only ``tree``'s code, without BULWARK_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    paths = [tree / "server", tree / "clients" / "python"] if server else []
    paths.append(tree / "clients" / "python")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(str(p) for p in paths))
    env.pop("PYTHONHOME", None)
    return env


def inside(path: str, tree: Path) -> bool:
    return Path(path).resolve().is_relative_to(tree.resolve())


@dataclass
class Side:
    """One revision under test: its tree, how it is run and what it imported."""

    key: str
    rev: str
    commit: str
    tree: Path
    run_dir: Path
    server_env: dict[str, str] = field(repr=False)
    client_env: dict[str, str] = field(repr=False)
    bulwark_server_file: str = ""
    bulwark_file: str = ""
    address: str = ""

    def describe(self) -> dict[str, str]:
        return {
            "rev": self.rev,
            "commit": self.commit,
            "tree": str(self.tree),
            "bulwark_server_file": self.bulwark_server_file,
            "bulwark_file": self.bulwark_file,
        }

    def check_imports(self) -> None:
        """Import the side's packages as its server will; fail unless they are its own."""
        code = (
            "import json, bulwark, bulwark_server; "
            "print(json.dumps([bulwark_server.__file__, bulwark.__file__]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=self.server_env,
            cwd=self.run_dir,
            capture_output=True,
            text=True,
            timeout=SERVING_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.key}: importing its packages failed:\n{done.stderr}")
        self.bulwark_server_file, self.bulwark_file = json.loads(done.stdout)
        for path in (self.bulwark_server_file, self.bulwark_file):
            if not inside(path, self.tree):
                raise RuntimeError(
                    f"{self.key}: imported {path}, outside its tree {self.tree}: PYTHONPATH "
                    "does not win over the installed packages"
                )


def make_side(key: str, rev: str | None, root: Path) -> Side:
    """The side for ``rev`` (None: the working tree of this script), materialised under root."""
    run_dir = root / f"{key}-run"
    run_dir.mkdir()
    if rev is None:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        commit = f"working tree at {head}" + (" + uncommitted changes" if dirty else "")
        tree = REPO
        rev = "working tree"
    else:
        commit = resolve(rev)
        tree = root / f"{key}-tree"
        _progress(f"{key}: git archive {commit[:12]} ({rev}) into {tree}")
        materialise(commit, tree)
    return Side(
        key=key,
        rev=rev,
        commit=commit,
        tree=tree,
        run_dir=run_dir,
        server_env=_side_env(tree, server=True),
        client_env=_side_env(tree, server=False),
    )


def server_side(rev: str | None, root: Path) -> Side:
    """Where a one-revision benchmark runs its server from: ``rev``'s tree (its imports
    checked to be its own), or this working tree when ``rev`` is None."""
    side = make_side("server", rev, root)
    if rev:
        side.check_imports()
    return side
