"""The product's modules stay short enough to read in one sitting (issue 17).

None is over 400 lines, and a module's docstring says why the module exists in a few lines: a module that
outgrows either is split along what it holds, and the detail goes to docs/ (docs/admission.md, docs/fetcher.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO_ROOT

MAX_MODULE_LINES = 400
MAX_MODULE_DOCSTRING_LINES = 8


def _modules() -> list[Path]:
    modules = sorted(path for package in ("webhook", "fetcher") for path in (REPO_ROOT / package).rglob("*.py"))
    assert len(modules) > 50, "the product packages were not found"
    return modules


def test_no_product_module_is_over_400_lines() -> None:
    modules = _modules()
    lengths = {path.relative_to(REPO_ROOT).as_posix(): len(path.read_text().splitlines()) for path in modules}
    too_long = {name: count for name, count in lengths.items() if count > MAX_MODULE_LINES}
    assert not too_long, f"split these modules (over {MAX_MODULE_LINES} lines): {too_long}"


def test_module_docstrings_say_why_in_a_few_lines() -> None:
    too_long = {}
    for path in _modules():
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        if len(docstring.splitlines()) > MAX_MODULE_DOCSTRING_LINES:
            too_long[path.relative_to(REPO_ROOT).as_posix()] = len(docstring.splitlines())
    limit = MAX_MODULE_DOCSTRING_LINES
    assert not too_long, f"move the detail to docs/ (module docstrings over {limit} lines): {too_long}"
