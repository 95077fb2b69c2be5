"""The refresh sidecar's health, kept beside the secrets and judged by its liveness probe.

A sidecar that keeps failing still serves the last good files, so its failure must show without logs, on
Fargate and under a read-only root filesystem. Details: docs/fetcher.md ("The status entry").
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from fetcher.contract import ObjectSpec
    from fetcher.values import FetchedValue

_T = TypeVar("_T")

STATUS_NAME = "..ferry-status"
_STATUS_TMP_NAME = STATUS_NAME + ".tmp"
# The entry is a few hundred bytes, up to ~130 KB for 200 objects with long names; a bigger one is not ours,
# and is never read whole.
MAX_STATUS_BYTES = 256 * 1024
# The last error kept in the entry and printed by the probe: bounded whatever the cloud said.
MAX_ERROR_CHARS = 400
# Each object's fields in the entry, bounded whatever the spec or the cloud said.
MAX_OBJECT_NAME_CHARS = 512
MAX_VERSION_CHARS = 80
MAX_REGION_CHARS = 40
MAX_OBJECTS_RECORDED = 200


@dataclass(frozen=True)
class ObjectVersion:
    """Which version of one object the files on disk hold: the same shape for AWS and Google Cloud."""

    # The object as the spec names it: objectName (AWS) or resourceName (Google Cloud).
    name: str
    # Secrets Manager VersionId, the SSM parameter's version number, or Google's version number (`latest` and
    # aliases resolved); a discovery's digest of its members' names and versions.
    version: str
    # The region that answered (after a failover, the failover region); Google Cloud: the location, or global.
    region: str


@dataclass(frozen=True)
class SidecarStatus:
    """What the last refresh cycle found, and since when the refreshes have been failing."""

    ok: bool
    # Failed cycles in a row (0 when ok).
    failures: int = 0
    # Unix time of the first failure of the current run of failures (None when ok).
    failing_since: float | None = None
    last_success: float | None = None
    last_error: str = ""
    updated: float = 0.0
    # The version of each object behind the files on disk, in the spec's order (kept through a failure run:
    # the last good files stay, and so do their versions).
    objects: tuple[ObjectVersion, ...] = ()


def object_versions(objects: Sequence[ObjectSpec], values: Mapping[int, FetchedValue]) -> tuple[ObjectVersion, ...]:
    """The entry's `objects` for the values behind the files: nothing derived from a value (bounded on write).

    A Parameter Manager version carries a checksum of what it rendered to (so a moved reference is a new
    version); the entry keeps only the version's name before the first `#`.
    """
    return tuple(
        ObjectVersion(obj.object_name, values[index].version.partition("#")[0], values[index].region)
        for index, obj in enumerate(objects[:MAX_OBJECTS_RECORDED])
        if index in values
    )


def record_success(
    previous: SidecarStatus | None, now: float, objects: tuple[ObjectVersion, ...] = ()
) -> SidecarStatus:
    """The status after a successful cycle: healthy, the failure run ended, the versions now on disk."""
    del previous  # a success clears everything a failure run recorded
    return SidecarStatus(ok=True, last_success=now, updated=now, objects=objects)


def record_failure(previous: SidecarStatus | None, now: float, error: str) -> SidecarStatus:
    """The status after a failed cycle: the failure run goes on (or starts now)."""
    failing = previous is not None and not previous.ok
    since = previous.failing_since if failing and previous and previous.failing_since is not None else now
    return SidecarStatus(
        ok=False,
        failures=(previous.failures if failing and previous else 0) + 1,
        failing_since=since,
        last_success=previous.last_success if previous else None,
        last_error=bound_error(error),
        updated=now,
        objects=previous.objects if previous else (),
    )


def verdict(status: SidecarStatus | None, now: float, unhealthy_after: float) -> tuple[bool, str]:
    """(healthy, one line for the probe's output). Unhealthy once failing for `unhealthy_after` seconds."""
    if status is None:
        return True, "no refresh has finished yet"
    if status.ok:
        return True, f"last refresh succeeded {_ago(now - status.updated)}"
    failing_for = max(0.0, now - (status.failing_since if status.failing_since is not None else now))
    line = (
        f"refresh failing for {_duration(failing_for)} ({status.failures} tries in a row); "
        f"last good files kept; last error: {status.last_error}"
    )
    if unhealthy_after > 0 and failing_for >= unhealthy_after:
        return False, f"unhealthy: {line} (allowed: {_duration(unhealthy_after)})"
    return True, line


def bound_error(error: str) -> str:
    """One line of at most MAX_ERROR_CHARS characters, cut at a word boundary when it is longer."""
    flat = " ".join(error.split())
    if len(flat) <= MAX_ERROR_CHARS:
        return flat
    cut = flat[: MAX_ERROR_CHARS - 4]
    space = cut.rfind(" ")
    return (cut[:space] if space > MAX_ERROR_CHARS // 2 else cut) + " ..."


def write_status(target_dir: str | Path, status: SidecarStatus) -> None:
    """Replace the entry atomically (write a temporary file, then rename). Raises OSError."""
    target = Path(target_dir)
    entry: dict[str, Any] = {
        "ok": status.ok,
        "failures": status.failures,
        "failing_since": status.failing_since,
        "last_success": status.last_success,
        "last_error": status.last_error,
        "updated": status.updated,
        "objects": [],
    }
    data = _encoded(entry, status.objects[:MAX_OBJECTS_RECORDED])
    tmp = target / _STATUS_TMP_NAME
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, target / STATUS_NAME)


def _encoded(entry: dict[str, Any], objects: Sequence[ObjectVersion]) -> bytes:
    """The entry as JSON, its objects' fields bounded and as many objects as fit in MAX_STATUS_BYTES.

    A version or region from the cloud is untrusted text: anything but printable ASCII becomes "?" (ids and
    numbers never hold it). Names come from the spec; escaped in JSON, a character can take 12 bytes, so the
    objects past the byte bound are left out rather than make an entry the probe would not read.
    """
    head = json.dumps(entry, separators=(",", ":")).encode()
    room = MAX_STATUS_BYTES - len(head)
    kept: list[dict[str, str]] = []
    for o in objects:
        item = {
            "name": _cut(o.name, MAX_OBJECT_NAME_CHARS),
            "version": _printable(_cut(o.version, MAX_VERSION_CHARS)),
            "region": _printable(_cut(o.region, MAX_REGION_CHARS)),
        }
        room -= len(json.dumps(item, separators=(",", ":"))) + 1
        if room < 0:
            break
        kept.append(item)
    entry["objects"] = kept
    return json.dumps(entry, separators=(",", ":")).encode()


def read_status(target_dir: str | Path) -> SidecarStatus | None:
    """The entry, or None when it is absent, too big or not one Ferry wrote."""
    try:
        fd = os.open(Path(target_dir) / STATUS_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, MAX_STATUS_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) > MAX_STATUS_BYTES:
        return None
    try:
        data = json.loads(raw)
        status = SidecarStatus(
            ok=_typed(data["ok"], bool),
            failures=_typed(data.get("failures", 0), int),
            failing_since=_time(data.get("failing_since")),
            last_success=_time(data.get("last_success")),
            last_error=bound_error(_typed(data.get("last_error", ""), str)),
            updated=_time(data.get("updated")) or 0.0,
            objects=tuple(_object(entry) for entry in _typed(data.get("objects", []), list)[:MAX_OBJECTS_RECORDED]),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return status


def check(target_dir: str | Path, unhealthy_after: float, now: float | None = None) -> tuple[bool, str]:
    """The probe: read the entry and judge it."""
    return verdict(read_status(target_dir), time.time() if now is None else now, unhealthy_after)


def _typed(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(kind.__name__)
    return value


def _object(entry: Any) -> ObjectVersion:
    return ObjectVersion(
        name=_cut(_typed(entry["name"], str), MAX_OBJECT_NAME_CHARS),
        version=_cut(_typed(entry["version"], str), MAX_VERSION_CHARS),
        region=_cut(_typed(entry["region"], str), MAX_REGION_CHARS),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    return text if text.isascii() and text.isprintable() else _NOT_PRINTABLE.sub("?", text)


_NOT_PRINTABLE = re.compile(r"[^ -~]")


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("time")
    return float(value)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 120:
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def _ago(seconds: float) -> str:
    return f"{_duration(max(0.0, seconds))} ago"
