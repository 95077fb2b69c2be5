"""The JSON types of the pod fields admission reads, checked once before any stage reads them.

The API server decodes every pod into its schema before calling a webhook, so a wrong type comes only in a forged
review; unchecked, it made a stage raise, and any pod could inflate "internal error" answers, ERROR log lines and
the error count at will. A pod failing the check is a malformed review (HTTP 400) naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from webhook.policy.review import MalformedReview

_WHERE = "request.object"
_CONTAINER_GROUPS = ("initContainers", "containers")


def pod_type_problem(pod: Mapping[str, Any]) -> str | None:
    """The first field admission reads that is not of its schema's JSON type, named; None when all are."""
    try:
        check_pod_types(pod)
    except MalformedReview as exc:
        return str(exc)
    return None


def check_pod_types(pod: Mapping[str, Any]) -> None:
    """Raise MalformedReview naming the first field admission reads that is not of its schema's JSON type."""
    meta = _object(pod, "metadata", _WHERE)
    if meta is not None:
        for key in ("annotations", "labels"):
            _object(meta, key, f"{_WHERE}.metadata")
        _objects(meta, "ownerReferences", f"{_WHERE}.metadata", lambda owner, where: None)
    spec = _object(pod, "spec", _WHERE)
    if spec is None:
        return
    where = f"{_WHERE}.spec"
    for key in ("resources", "securityContext", "os"):
        _object(spec, key, where)
    _objects(spec, "volumes", where, _check_named)
    for group in _CONTAINER_GROUPS:
        _objects(spec, group, where, _check_container)


def _check_container(container: Mapping[str, Any], where: str) -> None:
    _check_named(container, where)
    for key in ("securityContext", "resources"):
        values = _object(container, key, where)
        if key == "resources" and values is not None:
            for kind in ("requests", "limits"):
                _object(values, kind, f"{where}.resources")
    _objects(container, "env", where, _check_named)
    _objects(container, "volumeMounts", where, _check_named)


def _check_named(item: Mapping[str, Any], where: str) -> None:
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise MalformedReview(f"{where}.name must be a string")


def _object(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise MalformedReview(f"{where}.{key} must be an object or null")


def _objects(parent: Mapping[str, Any], key: str, where: str, check: Callable[[Mapping[str, Any], str], None]) -> None:
    items = parent.get(key)
    if items is None:
        return
    if not isinstance(items, list):
        raise MalformedReview(f"{where}.{key} must be a list or null")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedReview(f"{where}.{key}[{index}] must be an object")
        check(item, f"{where}.{key}[{index}]")
