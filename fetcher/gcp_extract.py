"""The GCP provider's extractJSONKey and extractYAMLKey: one top-level string of a JSON or YAML value.

A pod moved from the GCP provider must get the same file from the same value, so the value is read as the
provider's Go parsers read it, at a bounded cost. The differences that remain: docs/gke.md.
"""

from __future__ import annotations

import codecs
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from fetcher.contract import ObjectSpec
from fetcher.errors import RenderError
from fetcher.values import FetchedValue, text_bytes

# extractYAMLKey reads one top-level key; a value nested deeper than this is refused, not built.
MAX_VALUE_YAML_DEPTH = 64


def extracted(obj: ObjectSpec, value: FetchedValue) -> FetchedValue:
    """The provider's extractJSONKey / extractYAMLKey: the file holds one top-level string value."""
    key = obj.extract_json_key or obj.extract_yaml_key
    if key is None:
        return value
    kind = "JSON" if obj.extract_json_key else "YAML"
    try:
        document = _go_json(value.data) if obj.extract_json_key else _safe_yaml(value.data)
    except _Refused as exc:
        raise RenderError(
            f"is not {kind} ({exc}), so extract{kind}Key cannot apply", object_name=obj.object_name
        ) from None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the JSON decoder goes
        raise RenderError(f"is not {kind}, so extract{kind}Key cannot apply", object_name=obj.object_name) from None
    if not isinstance(document, Mapping) or key not in document:
        raise RenderError(f"has no top-level key {key[:80]!r} (extract{kind}Key)", object_name=obj.object_name)
    picked = document[key]
    if not isinstance(picked, str):
        raise RenderError(f"key {key[:80]!r} is not a string (extract{kind}Key)", object_name=obj.object_name)
    return FetchedValue(text_bytes(picked), value.version, value.region)


class _Refused(ValueError):
    """A value the provider's Go parser refuses; the reason names no part of the value."""


def _go_json(data: bytes) -> Any:
    """The value as Go's encoding/json reads it into map[string]any (the provider's extractJSONKey).

    Each byte of invalid UTF-8 becomes U+FFFD (inside a string; anywhere else it is a syntax error either
    way); a byte-order mark, NaN, Infinity and numbers beyond float64 are refused, where Python's json
    would skip, accept or widen them.
    """
    text = data.decode("utf-8", _GO_UTF8)
    if text.startswith("\ufeff"):
        raise _Refused("it starts with a byte-order mark")
    return json.loads(text, parse_constant=_no_constant, parse_float=_float64, parse_int=_float64_int)


def _go_replace(error: UnicodeError) -> tuple[str, int]:
    """One U+FFFD per invalid byte, resuming at the next byte: what Go's utf8.DecodeRune does."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\ufffd", error.start + 1


_GO_UTF8 = "ferry-go-utf8"
codecs.register_error(_GO_UTF8, _go_replace)


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name[:9]} is not a JSON number")


def _float64(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Refused("a number is out of range")
    return number


def _float64_int(text: str) -> int:
    _float64(text)  # Go reads every number as a float64
    return int(text)


def _safe_yaml(data: bytes) -> Any:
    """The value as the provider's YAML 1.2 parser reads it; aliases and deep nesting refused before building."""
    import yaml  # only for extractYAMLKey

    loader = _yaml12_loader()
    depth = 0
    try:
        for event in yaml.parse(data, Loader=loader):
            if isinstance(event, yaml.AliasEvent):  # an alias bomb expands 64 KiB into gigabytes
                raise ValueError("YAML aliases are not read")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_VALUE_YAML_DEPTH:  # libyaml's composer recurses on the C stack: 32k '[' crash it
                    raise ValueError("YAML nested too deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        reader = loader(data)
        try:
            node = reader.get_single_node()
            _unique_keys(node)
            return None if node is None else reader.construct_document(node)
        finally:
            reader.dispose()
    except (yaml.YAMLError, RecursionError):
        raise ValueError("not YAML") from None


def _unique_keys(root: Any) -> None:
    """yaml.v3 refuses a mapping whose keys repeat (by kind and text, quoted or not), at any depth."""
    import yaml

    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                text = key.value if isinstance(key, yaml.ScalarNode) else ""
                if (type(key), text) in seen:
                    raise _Refused("a mapping key is given twice")
                seen.add((type(key), text))
                pending.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)


@functools.cache
def _yaml12_loader() -> Any:
    """A safe loader whose plain scalars resolve as YAML 1.2's core schema (go-yaml v3, the provider's parser).

    PyYAML follows YAML 1.1: `yes`, `off` and `2026-12-06` are a bool and a date there, but strings to the
    provider, so a value the provider extracts would be refused here. Only true/false, numbers and null stay
    typed (and so are refused by extract, as by the provider).
    """
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    dropped = {f"tag:yaml.org,2002:{tag}" for tag in ("bool", "int", "float", "timestamp", "value")}
    kept = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in dropped]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    loader: Any = type("Yaml12SafeLoader", (base,), {"yaml_implicit_resolvers": kept})
    for tag, pattern, first in (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*)$", "-+0123456789"),
        (
            "float",
            r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            "-+.0123456789",
        ),
    ):
        loader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(pattern), list(first))
    return loader
