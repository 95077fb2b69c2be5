"""Kubernetes quantities ("50m", "64Mi", "1e3"), exact as the API server compares them: the webhook's one parser."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY_RE = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:[eE]([+-]?[0-9]{1,3})|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def parse_quantity(value: object) -> Fraction | None:
    """The exact value of a Kubernetes quantity ("50m", "64Mi", "1e3"); None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY_RE.match(str(value).strip())
    if match is None:
        return None
    number = Fraction(match.group(1))
    if match.group(2) is not None:
        return number * Fraction(10) ** int(match.group(2))
    return number * _SUFFIXES[match.group(3) or ""]


def format_quantity(value: Fraction) -> str:
    """A canonical quantity for `value`: binary suffixes for whole numbers, millis otherwise (rounded up)."""
    if value.denominator == 1:
        whole = int(value)
        for suffix, factor in _BINARY:
            if whole and whole % factor == 0:
                return f"{whole // factor}{suffix}"
        return str(whole)
    return f"{math.ceil(value * 1000)}m"


class ContainerRequests(Mapping[str, Mapping[str, int]]):
    """What each container of a pod requests of CPU and memory, by name: resource -> whole amount (`amount`).

    As the API server defaults it (its limit when only that is set; 0 when unreadable); a resource it does not
    set is left out. Parsed once, on first use: most pods are never sized, and then nothing is parsed.
    """

    __slots__ = ("_groups", "_table")

    def __init__(self, groups: Iterable[object]) -> None:
        self._groups = tuple(groups)
        self._table: dict[str, dict[str, int]] | None = None

    def _read(self) -> dict[str, dict[str, int]]:
        if self._table is None:
            self._table = {
                container["name"]: _requested(container.get("resources"))
                for items in self._groups
                for container in (items if isinstance(items, list) else [])
                if isinstance(container, dict) and isinstance(container.get("name"), str)
            }
        return self._table

    def __getitem__(self, name: str) -> Mapping[str, int]:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def container_requests(pod: Mapping[str, Any], added: Iterable[Any] = ()) -> ContainerRequests:
    """What each container of `pod`, and each `added` one (Ferry's, not placed yet), requests."""
    spec = pod.get("spec")
    groups = [spec.get("initContainers"), spec.get("containers")] if isinstance(spec, dict) else []
    return ContainerRequests([*groups, list(added)])


def _requested(resources: object) -> dict[str, int]:
    requested: dict[str, int] = {}
    if isinstance(resources, dict):
        for kind in ("limits", "requests"):  # a request wins over its limit
            values = resources.get(kind)
            if isinstance(values, dict):
                requested.update((r, amount(values[r], r)) for r in ("cpu", "memory") if r in values)
    return requested


def amount(value: object, resource: str) -> int:
    """A quantity as a whole amount, rounded up: millicores of CPU, bytes of memory (0 when unreadable)."""
    return _amount_of_text(value, resource) if isinstance(value, str) and len(value) <= 64 else _amount(value, resource)


# Pods repeat a few quantities ("50m", "64Mi", the app's); bounded, so a tenant's churn costs only misses.
@functools.lru_cache(maxsize=1024)
def _amount_of_text(value: str, resource: str) -> int:
    return _amount(value, resource)


def _amount(value: object, resource: str) -> int:
    number = parse_quantity(value)
    if number is None:
        return 0
    return math.ceil(number * 1000) if resource == "cpu" else math.ceil(number)
