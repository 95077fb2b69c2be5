"""Where the repository and its recorded fixtures are, for tests and benchmarks alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
# Responses recorded from a real kube-apiserver v1.28 (see the README beside them).
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "kube-apiserver-v1.28"


def load_script(relative: str, name: str) -> ModuleType:
    """Import a script of the repository that is not in a package (scripts/, images/) under `name`."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
