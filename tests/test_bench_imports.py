"""The benchmarks stay off the API-server suite: `bench/` may use tests/support, never tests.e2e (its conftest and
fixtures belong to pytest), and importing the API-server benchmark loads neither tests.e2e nor pytest."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.support.paths import REPO_ROOT


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_bench_script_imports_the_api_server_suite() -> None:
    scripts = sorted((REPO_ROOT / "bench").glob("*.py"))
    assert scripts
    offenders = {
        script.name: name
        for script in scripts
        for name in _imported_modules(ast.parse(script.read_text(), str(script)))
        if name == "tests.e2e" or name.startswith("tests.e2e.")
    }
    assert not offenders, f"bench/ imports tests.e2e (move what it needs to tests/support): {offenders}"


def test_the_api_server_benchmark_loads_neither_tests_e2e_nor_pytest() -> None:
    probe = (
        "import sys, bench.apiserver_admission\n"
        "print(sorted(m for m in sys.modules if m == 'pytest' or m == 'tests.e2e' or m.startswith('tests.e2e.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
