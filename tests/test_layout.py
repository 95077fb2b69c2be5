"""The product's modules stay short enough to read in one sitting: none over 400 lines (issue 17).

A module that outgrows it is split along what it holds, not cut at a line count; docs/admission.md says
where each part of the admission path lives.
"""

from __future__ import annotations

from tests.support.paths import REPO_ROOT

MAX_MODULE_LINES = 400


def test_no_product_module_is_over_400_lines() -> None:
    modules = sorted(path for package in ("webhook", "fetcher") for path in (REPO_ROOT / package).rglob("*.py"))
    assert len(modules) > 50, "the product packages were not found"
    lengths = {path.relative_to(REPO_ROOT).as_posix(): len(path.read_text().splitlines()) for path in modules}
    too_long = {name: count for name, count in lengths.items() if count > MAX_MODULE_LINES}
    assert not too_long, f"split these modules (over {MAX_MODULE_LINES} lines): {too_long}"
