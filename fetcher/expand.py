"""Files whose names are known only at fetch time: a JSON secret's keys (expandJson) and discovered objects.

Admission cannot see these names, so they get its rules here once they are known. Pure, no I/O: the result
joins the rest of the file set, so a name that appears or disappears is one atomic swap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fetcher.contract import FetchSpec, ObjectSpec, quote, translate_path
from fetcher.contract.paths import unsafe_path_reason
from fetcher.errors import RenderError

if TYPE_CHECKING:
    from fetcher.sources import FetchedValue

Files = dict[str, tuple[bytes, int]]
MAX_KEY_CHARS_QUOTED = 80
# Files one expandJson object may write: a secret of 64 KiB holds thousands of keys, each a file and an inode.
MAX_EXPANDED_KEYS = 1000


def dynamic_files(
    spec: FetchSpec, fetched: Mapping[int, FetchedValue], taken: Mapping[str, object]
) -> tuple[Files, list[RenderError]]:
    """The files of every expandJson and discover object; `taken` are the names already in the set."""
    files: Files = {}
    errors: list[RenderError] = []
    owners: dict[str, str] = {}
    # Every directory the names so far imply, so each new name is checked by lookups, not by a scan of all.
    directories: set[str] = {parent for name in taken for parent in _parents(name)}
    for index, obj in enumerate(spec.objects):
        if not obj.expand_json and obj.discover is None:
            continue
        value = fetched.get(index)
        if value is None:
            errors.append(RenderError("was not fetched", object_name=obj.object_name))
            continue
        try:
            members = json_members(obj, value) if obj.expand_json else discovered_members(obj, value)
        except RenderError as exc:
            errors.append(exc)
            continue
        base = obj.file_name(spec.path_translation) if (obj.expand_json or obj.object_alias) else ""
        for key, data in members:
            translated = translate_path(key, spec.path_translation)
            path = f"{base}/{translated}" if base else translated
            problem = _name_problem(path, key, taken, owners, directories)
            if problem:
                errors.append(RenderError(problem, object_name=obj.object_name))
                continue
            owners[path] = f"{obj.object_name}'s key {_quoted(key)}"
            files[path] = (data, obj.file_permission)
            directories.update(_parents(path))
    return files, errors


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def _name_problem(
    path: str, key: str, taken: Mapping[str, object], owners: Mapping[str, str], directories: set[str]
) -> str | None:
    reason = unsafe_path_reason(path)
    if reason:
        return f"key {_quoted(key)} gives the file name {_quoted(path)}, which {reason}; rename the key"
    if path in taken or path in owners:
        other = owners.get(path, "another object")
        return f"key {_quoted(key)} gives the file name {_quoted(path)}, which {other} already gives; rename one"
    for prefix in _parents(path):
        if prefix in taken or prefix in owners:
            return f"key {_quoted(key)} writes below {_quoted(prefix)}, which is already a file; rename one"
    if path in directories:
        return f"key {_quoted(key)} gives {_quoted(path)}, which is already a directory; rename one"
    return None


def json_members(obj: ObjectSpec, value: FetchedValue) -> list[tuple[str, bytes]]:
    """(key, bytes) per top-level key: a string as its text, anything else as compact JSON."""
    if value.binary:
        raise RenderError(
            "expandJson needs a JSON SecretString, but this secret holds SecretBinary; remove expandJson",
            object_name=obj.object_name,
        )
    try:
        document = json.loads(value.data.decode("utf-8"), object_pairs_hook=_KeyPairs)
        if not isinstance(document, dict):
            raise RenderError(
                f"expandJson needs a JSON object, but the value is {_kind(document)}; store an object of keys",
                object_name=obj.object_name,
            )
        return _members(obj, document)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RenderError(
            "expandJson needs a JSON object, but the value is not JSON; store a JSON object or remove expandJson",
            object_name=obj.object_name,
        ) from None
    except RecursionError:  # the value is untrusted: never a crash, whatever its shape
        raise RenderError(
            "expandJson needs a JSON object, but the value is nested too deep to read; store a flatter object",
            object_name=obj.object_name,
        ) from None


class _KeyPairs(dict[str, object]):
    """A JSON object that remembers a key it saw twice (json.loads keeps the last one silently)."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.repeated: str | None = None
        if len(self) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.repeated = key
                    break
                seen.add(key)


def _members(obj: ObjectSpec, document: dict[str, object]) -> list[tuple[str, bytes]]:
    repeated = getattr(document, "repeated", None)
    if repeated is not None:
        raise RenderError(
            f"key {_quoted(repeated)} appears twice in the JSON object; keep one", object_name=obj.object_name
        )
    if len(document) > MAX_EXPANDED_KEYS:
        raise RenderError(
            f"expandJson writes one file per key, and the object has more than {MAX_EXPANDED_KEYS} keys; "
            "group them into fewer top-level keys or name them with jmesPath",
            object_name=obj.object_name,
        )
    members: list[tuple[str, bytes]] = []
    for key, item in document.items():
        text = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"), sort_keys=True)
        members.append((str(key), text.encode("utf-8")))
    return members


def discovered_members(obj: ObjectSpec, value: FetchedValue) -> Sequence[tuple[str, bytes]]:
    """(name relative to the prefix, bytes) per discovered object."""
    prefix = obj.object_name
    members: list[tuple[str, bytes]] = []
    for name, data in value.members or ():
        relative = name[len(prefix) :] if name.startswith(prefix) else name
        relative = relative.lstrip("/") or name.rstrip("/").rpartition("/")[2]
        members.append((relative, data))
    return members


def _quoted(text: str) -> str:
    return quote(text[:MAX_KEY_CHARS_QUOTED] + ("..." if len(text) > MAX_KEY_CHARS_QUOTED else ""))


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return "a string"
