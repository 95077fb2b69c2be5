"""Kubernetes quantities ("50m", "64Mi", "1e3"), exact as the API server compares them: the webhook's one parser."""

from __future__ import annotations

import math
import re
from fractions import Fraction

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
