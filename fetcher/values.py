"""What every source returns, whichever cloud it reads: values, version probes, and the `Source` protocol.

Kept apart from both clouds so a pod loads only its own cloud's code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from fetcher.contract import ObjectSpec


@dataclass(frozen=True)
class FetchedValue:
    """One object's bytes as the cloud returned them, and which version of it."""

    data: bytes
    # Secrets Manager VersionId, the SSM parameter's version number, or GCP's version number (latest resolved).
    version: str
    # The region that answered (the failover region after a failover); GCP: the location, or global.
    region: str
    # True for a SecretBinary; jmesPath applies only to text.
    binary: bool = False
    # A discovery's objects: (full name, bytes) each, sorted by name (`data` is then empty).
    members: tuple[tuple[str, bytes], ...] | None = None

    def __repr__(self) -> str:  # never show the value, even in a debugger or a test failure
        return f"FetchedValue(<{len(self.data)} bytes>, version={self.version!r}, region={self.region!r})"


# Object index in spec.objects -> its value.
FetchResult: TypeAlias = dict[int, FetchedValue]


@dataclass(frozen=True)
class VersionProbe:
    """What a cheap version check found for one object."""

    index: int
    region: str
    # None: the label points at no version (the re-fetch will report why).
    version: str | None
    # SSM's check is GetParameters, which returns the value too.
    value: FetchedValue | None = None


IndexedObject: TypeAlias = tuple[int, ObjectSpec]

# What json.loads leaves of an escaped half surrogate pair ("\ud800"); a whole pair is one code point already.
_LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def text_bytes(text: str) -> bytes:
    """A string picked out of a JSON or YAML value, as file bytes: UTF-8, a lone surrogate as U+FFFD.

    Python's decoder keeps an escaped half pair, which UTF-8 cannot encode; Go's (ASCP's, the GCP provider's)
    writes U+FFFD for it, and so does Ferry.
    """
    return _LONE_SURROGATE_RE.sub("\ufffd", text).encode("utf-8")


class Source(Protocol):
    """One cloud service, as independent units of work the caller may run concurrently."""

    def fetch_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], FetchResult]]: ...

    def probe_units(self, items: Sequence[IndexedObject]) -> list[Callable[[], list[VersionProbe]]]: ...
