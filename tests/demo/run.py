"""Run `scripts/demo.py` as a newcomer would, from a copy of the repository with nothing beside it.

Why it exists: the demo is the first thing a new user runs, in two modes (with
and without a real control plane), and both must keep working; the tests of
both modes share this runner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKDIR_RE = re.compile(r"(?:removed|kept) (/\S+ferry-demo-[A-Za-z0-9_]+)")


def bare_copy(destination: Path) -> Path:
    """The repository's tracked files (as in the work tree) copied to `destination`: a clone, nothing beside it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_demo(repo: Path, tmp: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The demo with TMPDIR=`tmp`, so that what it leaves behind can be checked."""
    tmp.mkdir(parents=True, exist_ok=True)
    full_env = {**env, "TMPDIR": str(tmp), "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")}
    return subprocess.run(
        [sys.executable, "scripts/demo.py", *args],
        cwd=repo,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def workdir_of(output: str) -> Path:
    match = WORKDIR_RE.search(output)
    assert match, "the demo does not say which temporary folder it used"
    return Path(match.group(1))
