"""Kubernetes quantities ("50m", "64Mi", "1e3"), exact as the API server compares them: the webhook's one parser.

Bounded: whatever a pod or a forged review carries, reading it never raises and never costs more than a short
string's worth, and what is written back is short.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any, NamedTuple

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
# No quantity the API server sends is near this long (it writes them canonically); a longer one is a forged
# review's, and reading it could only cost time (or, past 4300 digits, raise in int()).
MAX_QUANTITY_CHARS = 64
# Written quantities longer than this are rounded up to this many significant digits, with a decimal exponent.
_MAX_WRITTEN_DIGITS = 18
_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def parse_quantity(value: object) -> Fraction | None:
    """The exact value of a Kubernetes quantity ("50m", "64Mi", "1e3"); None when it is not one."""
    if isinstance(value, str):
        return _parse_text(value) if len(value) <= MAX_QUANTITY_CHARS else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and value.bit_length() > 4 * MAX_QUANTITY_CHARS:
        return None  # str() of an int past 4300 digits raises
    text = str(value)
    return _parse_text(text) if len(text) <= MAX_QUANTITY_CHARS else None


# Pods repeat a few quantities ("10m", "32Mi", the app's); bounded, so a tenant's churn costs only misses.
@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> Fraction | None:
    # `$` would also match before a final newline, and the API server takes no whitespace at all: fullmatch.
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        return None
    number = Fraction(match.group(1))
    if match.group(2) is not None:
        return number * Fraction(10) ** int(match.group(2))
    return number * _SUFFIXES[match.group(3) or ""]


def format_quantity(value: Fraction) -> str:
    """A canonical quantity for `value`: binary suffixes for whole numbers, millis otherwise (rounded up).

    A value too long to write plainly (only a forged or absurd input leads to one) is rounded up to 18
    significant digits with a decimal exponent, so that what Ferry writes stays short.
    """
    if value.denominator == 1:
        whole = int(value)
        for suffix, factor in _BINARY:
            if whole and whole % factor == 0 and abs(whole // factor) < 10**_MAX_WRITTEN_DIGITS:
                return f"{whole // factor}{suffix}"
        return _short(whole, 0)
    return _short(math.ceil(value * 1000), -3, "m")


def _short(number: int, exponent: int, suffix: str = "") -> str:
    """`number` * 10**`exponent` as a quantity of at most 18 significant digits, rounded up."""
    if abs(number) < 10**_MAX_WRITTEN_DIGITS:
        return f"{number}{suffix}"
    drop = len(str(abs(number))) - _MAX_WRITTEN_DIGITS
    return f"{-(-number // 10**drop)}e{exponent + drop}"


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


class Amounts(NamedTuple):
    """A container's CPU and memory as whole amounts (`amount`); a resource it does not set is left out.

    `requests` as the API server defaults them: the limit, when only that is set.
    """

    requests: Mapping[str, int]
    limits: Mapping[str, int]


NO_AMOUNTS = Amounts({}, {})
_CONTAINER_GROUPS = ("initContainers", "containers")
_CPU_AND_MEMORY = ("cpu", "memory")


class PodAmounts(NamedTuple):
    """What the containers of a pod set of CPU and memory, each read once, before Ferry's are placed among them.

    The pod's own containers per group, in order (its JSON objects only); and the containers Ferry adds, by name.
    """

    kept: Mapping[str, tuple[Amounts, ...]]
    added: Mapping[str, Amounts]


def pod_amounts(pod: Mapping[str, Any], added: Iterable[Mapping[str, Any]] = (), *, limit: int) -> PodAmounts:
    """The amounts of `pod`'s containers and of the `added` ones; none read for a pod of more than `limit`."""
    spec = pod.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    groups = {group: spec[group] for group in _CONTAINER_GROUPS if isinstance(spec.get(group), list)}
    if sum(len(items) for items in groups.values()) > limit:
        return PodAmounts({}, {})
    kept = {g: tuple(container_amounts(c) for c in items if isinstance(c, dict)) for g, items in groups.items()}
    return PodAmounts(kept, {c["name"]: container_amounts(c) for c in added})


def container_amounts(container: Mapping[str, Any]) -> Amounts:
    """`container`'s CPU and memory requests and limits, read once."""
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return NO_AMOUNTS
    limits, requests = resources.get("limits"), resources.get("requests")
    limited: dict[str, int] = {}
    if isinstance(limits, dict):
        for resource in _CPU_AND_MEMORY:
            if resource in limits:
                limited[resource] = amount(limits[resource], resource)
    requested = dict(limited)
    if isinstance(requests, dict):
        for resource in _CPU_AND_MEMORY:
            if resource in requests:
                requested[resource] = amount(requests[resource], resource)
    return Amounts(requested, limited)
