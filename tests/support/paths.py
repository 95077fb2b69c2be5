"""Where the repository and its recorded fixtures are, for tests and benchmarks alike."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Responses recorded from a real kube-apiserver v1.28 (see the README beside them).
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "kube-apiserver-v1.28"
