"""The webhook's one quantity parser and writer against what a tenant can put in a pod or a forged review.

Why it exists: every figure Ferry reads from a pod (container requests, pod-level resources, LimitRanges) goes
through `webhook.quantity`; a value that makes it raise is an admission error (a 5xx-like denial and an error
metric), and a value it writes back must stay a short quantity whatever came in.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from webhook.quantity import format_quantity, parse_quantity


@pytest.mark.parametrize(
    "value",
    [
        "1" * 5000,  # past CPython's 4300-digit int conversion limit
        "0." + "1" * 5000,
        "1" * 10_000 + "Ei",
        "9" * 4299 + "e999",
        "1" * 200,  # no quantity the API server sends is near this long
    ],
    ids=["5000-digits", "5000-decimals", "10000-digits-Ei", "4299-digits-e999", "200-digits"],
)
def test_overlong_quantities_are_not_quantities(value: str) -> None:
    assert parse_quantity(value) is None


@pytest.mark.parametrize(
    "value",
    [" 1", "1 ", "1\u00a0", "\t50m", "\u0661", "1\n", "5\u0000"],  # the API server accepts none of these
)
def test_whitespace_and_unicode_digits_are_not_quantities(value: str) -> None:
    assert parse_quantity(value) is None


@pytest.mark.parametrize(
    "value",
    [10**5000, -(10**5000), float("inf"), float("nan"), None, [], {}, True],
    ids=["huge-int", "huge-negative-int", "inf", "nan", "null", "list", "object", "bool"],
)
def test_non_string_values_never_raise(value: Any) -> None:
    assert parse_quantity(value) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e999", Fraction(10) ** 999), ("9999999999999Ei", Fraction(9999999999999 * 2**60)), ("-5", Fraction(-5))],
)
def test_large_but_short_quantities_are_read_exactly(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "value",
    [Fraction(10) ** 999, Fraction(10) ** 999 + Fraction(1, 100), Fraction(2**3000), Fraction(10**40 + 1, 3)],
    ids=["1e999", "1e999-and-a-bit", "2^3000", "a-third-of-1e40"],
)
def test_huge_values_are_written_short_and_never_rounded_down(value: Fraction) -> None:
    text = format_quantity(value)
    assert len(text) <= 32, text
    parsed = parse_quantity(text)
    assert parsed is not None and parsed >= value
    assert parsed - value <= value / 10**15, "rounded up by a hair, not to another order of magnitude"
