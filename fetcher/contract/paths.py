"""Whether the files a spec writes are safe and distinct, after ASCP's path translation.

These rules keep the fetcher inside its volume (no absolute paths, no '..', no look-alike slashes, no names reserved
by the atomic swap) and keep two objects from writing the same file. They are checked at admission, where the user
can still fix the request.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from fetcher.contract.model import MAX_FILE_NAME_BYTES, MAX_PATH_BYTES, ObjectSpec, list_output_files
from fetcher.contract.problems import Problem, quote

# Slashes NFKC leaves alone (division, fraction, big solidus, ...): a file name with one reads like a path.
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f5\u2571\u27cb")


def check_file_names(
    objects: Sequence[ObjectSpec],
    positions: Sequence[int],
    translation: str | None,
    name: str,
    problems: list[Problem],
) -> None:
    """Every output file must be a safe relative path, and unique, after translation.

    `positions` maps each parsed object back to its index in the user's list
    (invalid entries were dropped), so messages point at the right entry.
    """
    owners: dict[str, str] = {}
    for out in list_output_files(objects, translation):
        obj = objects[out.object_index]
        index = positions[out.object_index]
        if out.jmes_index is not None:
            origin = f"{name}[{index}].jmesPath[{out.jmes_index}].objectAlias"
        else:
            origin = f"{name}[{index}].objectAlias" if obj.object_alias else f"{name}[{index}].objectName"
        reason = unsafe_path_reason(out.name)
        if reason:
            problems.append(
                Problem(
                    origin,
                    f"gives the file name {quote(out.name)}, which {reason}; set objectAlias to a plain name",
                )
            )
            continue
        key = out.name
        if key in owners:
            problems.append(
                Problem(
                    origin,
                    f"gives the file name {quote(out.name)}, which {owners[key]} already gives"
                    + (" after path translation" if translation else "")
                    + "; set a distinct objectAlias",
                )
            )
            continue
        owners[key] = origin
    # A file and a directory of the same name cannot both exist ("a" and "a/b").
    for path, origin in owners.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in owners:
                problems.append(
                    Problem(
                        origin,
                        f"writes {quote(path)} below {quote(prefix)}, which {owners[prefix]} writes as a file",
                    )
                )


def unsafe_path_reason(path: str) -> str | None:
    if not path:
        return "is empty"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if any(not ch.isprintable() for ch in path):
        return "contains a control character"
    normalized = unicodedata.normalize("NFKC", path)
    if normalized.count("/") != path.count("/") or "\\" in normalized or any(ch in _SLASH_LOOKALIKES for ch in path):
        return "contains a character that looks like a slash"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "has an empty, '.' or '..' path segment"
        if part.startswith(".."):
            return "starts with '..', which is reserved for the atomic-swap directories"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
            return f"has a segment longer than {MAX_FILE_NAME_BYTES} bytes"
    if ".." in normalized.split("/"):
        return "contains a character sequence that normalizes to '..'"
    return None


def check_file_component(alias: str, where: str, problems: list[Problem]) -> None:
    """An alias names one file directly in the volume: no directories, nothing that climbs out.

    ASCP would translate a "/" in an alias; Ferry denies it (its own rule, stricter than ASCP), because an
    alias is the user's chosen file name and a slash in it is almost always a
    path mistake or an attempt to escape the volume.
    """
    fix = "use a plain file name like db-password"
    if alias.startswith("/"):
        problems.append(Problem(where, f"{quote(alias)} is an absolute path; {fix}"))
    elif alias in (".", "..") or alias.startswith("../") or "/../" in alias or alias.endswith("/.."):
        problems.append(Problem(where, f"{quote(alias)} climbs out of the volume; {fix}"))
    elif "/" in alias:
        problems.append(Problem(where, f"{quote(alias)} contains a slash; {fix}"))
