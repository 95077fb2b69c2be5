"""docs/troubleshooting.md covers every denial reason and every way the init container fails, from the code's lists.

Why it exists: a troubleshooting page that misses the one message a user got is
worse than none. The lists come from the code itself: the denial reasons
written in webhook/ (read from the source, so a new reason cannot be added
without the list and the page), the fetcher's exit codes, its error classes,
and the AWS error codes it gives a specific hint for.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from fetcher import __main__ as fetcher_main
from fetcher import errors, secret_sync
from fetcher.contract import FerryError
from tests.support.paths import REPO_ROOT
from webhook.reasons import DENIAL_REASONS

PAGE = (REPO_ROOT / "docs" / "troubleshooting.md").read_text()


def _denial_reasons_in_source() -> set[str]:
    """Reasons as the code writes them: Denial("x", ...), and Admission or Decision("denied", "x", ...)."""
    found: set[str] = set()
    for path in (REPO_ROOT / "webhook").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if node.func.id == "Denial" and args:
                found.add(args[0])
            elif node.func.id in ("Admission", "Decision") and len(args) >= 2 and args[0] == "denied":
                found.add(args[1])
    return found


def _section(heading: str) -> str:
    """The text under the level-3 heading that names `heading` in backquotes, up to the next heading."""
    match = re.search(rf"^###[^\n]*`{re.escape(heading)}`[^\n]*\n(.*?)(?=^#{{2,3}} |\Z)", PAGE, re.M | re.S)
    assert match, f"docs/troubleshooting.md has no ### section for `{heading}`"
    return match.group(1)


def test_the_list_of_denial_reasons_is_the_codes_own() -> None:
    assert _denial_reasons_in_source() == set(DENIAL_REASONS)


def test_every_denial_reason_has_a_section_with_cause_and_fix() -> None:
    for reason in DENIAL_REASONS:
        section = _section(reason)
        assert "**Cause:**" in section and "**Fix:**" in section, reason


def test_every_exit_code_of_the_fetcher_is_explained() -> None:
    codes = {value for name, value in vars(fetcher_main).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes >= {0, 1, 2}
    for code in codes:
        assert re.search(rf"^\| `{code}` \|", PAGE, re.M), f"exit code {code} is not in the exit-code table"


def _subclasses(cls: type) -> set[type]:
    return {cls} | {sub for direct in cls.__subclasses__() for sub in _subclasses(direct)}


def test_every_error_the_fetcher_reports_has_a_section() -> None:
    assert secret_sync.SecretSyncError and errors.FetchError  # imported so that every subclass is known
    names = {cls.__name__ for cls in _subclasses(FerryError)} - {"FerryError"}
    assert {"AwsRejectedError", "WriteError", "ConfigError", "SpecError"} <= names
    for name in names:
        section = _section(name)
        assert "**Cause:**" in section and "**Fix:**" in section, name


def _hinted_aws_codes() -> set[str]:
    """AWS codes the fetcher gives a specific hint for: its code sets and the literals `_hint_for` compares with."""
    codes = set(errors.ACCESS_DENIED_CODES) | set(errors.THROTTLING_CODES)
    tree = ast.parse(Path(errors.__file__).read_text())
    hint = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_hint_for")
    for node in ast.walk(hint):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "code":
            for comparator in node.comparators:
                for const in ast.walk(comparator):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        codes.add(const.value)
    return codes


def test_every_aws_code_with_a_hint_is_listed() -> None:
    codes = _hinted_aws_codes()
    assert "ResourceNotFoundException" in codes and "AccessDeniedException" in codes
    missing = sorted(code for code in codes if f"`{code}`" not in PAGE)
    assert not missing, f"AWS codes missing from docs/troubleshooting.md: {missing}"
