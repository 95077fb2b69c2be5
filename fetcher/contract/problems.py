"""How a bad request is reported: the root of Ferry's error tree, and one problem per field.

The webhook and the fetcher both report an invalid spec, and the fetcher's command line catches every deliberate
failure by one root class. `FerryError` lives here because `fetcher.contract` is the only fetcher package the
webhook may import; `fetcher.errors` re-exports it so the tree reads the same from both sides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A message reports at most this many problems and is at most this long: one edit can fix many problems, but
# an input with thousands of them must not get an answer that grows with it (webhook denials, pod events and
# termination messages all carry it).
MAX_REPORTED_PROBLEMS = 20
# Names listed in one message (`listed`); the rest are counted.
MAX_LISTED_NAMES = 8
MAX_MESSAGE_CHARS = 4096


class FerryError(Exception):
    """Base of every failure Ferry reports on purpose."""


class SpecError(FerryError, ValueError):
    """A request for secrets that cannot be honoured, with every problem found.

    Each problem names the field (``objects[2].objectAlias``) and says how to fix
    it. `source` says where the spec came from (an annotation, a
    SecretProviderClass) and is prefixed by the caller that knows it.
    """

    def __init__(self, problems: Sequence[Problem], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = join_problems([str(problem) for problem in self.problems])
        return bounded(f"{self.source}: {text}" if self.source else text)

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.problems, source)


@dataclass(frozen=True)
class Problem:
    """One invalid field and how to fix it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def join_problems(problems: Sequence[str], limit: int = MAX_REPORTED_PROBLEMS) -> str:
    """The first `limit` problems joined with "; ", and how many more there are."""
    text = "; ".join(problems[:limit])
    if len(problems) > limit:
        text += f"; and {len(problems) - limit} more problems: fix these and submit again to see them"
    return text


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to at most `limit` characters, saying that it was cut."""
    if len(text) <= limit:
        return text
    suffix = f"... ({len(text) - limit} more characters cut)"
    return text[: max(0, limit - len(suffix))] + suffix


def quote(value: Any, limit: int = 80) -> str:
    """A user's value quoted for a message, cut short so a 100 KB input gives a short error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listed(names: Sequence[Any], limit: int = MAX_LISTED_NAMES, width: int = 80) -> str:
    """Up to `limit` names, each quoted and cut to `width` (`quote`), and how many more there are; "(none)"."""
    text = ", ".join(quote(name, width) for name in names[:limit])
    extra = len(names) - limit
    return (text + (f" and {extra} more" if extra > 0 else "")) if names else "(none)"


def kind_of(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
