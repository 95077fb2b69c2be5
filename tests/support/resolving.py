"""Helpers for tests of `webhook.policy.resolve`: an SPC lookup over given classes, and result unwrapping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from webhook.policy.decide import Denial
from webhook.policy.resolve import ResolvedRequest


def lookup(*classes: Mapping[str, Any]) -> Callable[[str, str], Mapping[str, Any] | None]:
    """An SpcLookup that finds exactly these SecretProviderClasses, by (namespace, name)."""
    table = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in classes}
    return lambda ns, name: table.get((ns, name))


def resolved(result: ResolvedRequest | Denial) -> ResolvedRequest:
    assert isinstance(result, ResolvedRequest), result
    return result


def denied(result: ResolvedRequest | Denial) -> Denial:
    assert isinstance(result, Denial), result
    return result
