"""Hints printed to a newcomer name only what exists in every clone.

Why it exists: the API-server suite's closing hint once named
`../shared/envtest/setup.sh`, a folder that exists only beside one checkout.
"""

from __future__ import annotations

import re

from tests.e2e.conftest import ENABLE_HINT
from tests.support.paths import REPO_ROOT


def test_the_suites_closing_hint_names_only_files_of_this_repository() -> None:
    assert "../" not in ENABLE_HINT
    for path in re.findall(r"[\w./-]+\.(?:md|sh|py)", ENABLE_HINT):
        assert (REPO_ROOT / path).is_file(), f"the hint names {path}, which a clone does not have"
    assert "docs/local-cluster.md" in ENABLE_HINT
