"""The one builder of Pod dicts for the tests (and what the API-server suite and the benchmarks send)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

APP_IMAGE = "registry.example.com/app:1"
_NO_ANNOTATIONS: Mapping[str, str] = MappingProxyType({})


def make_pod(
    annotations: Mapping[str, str] | None = _NO_ANNOTATIONS,
    containers: list[Any] | None = None,
    *,
    name: str = "app",
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    init_containers: list[Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Pod named `name` with these annotations (a copy; None: no annotations at all), in `namespace` when given.

    Its containers are `containers` (even an empty list), else one app container; `spec` adds to the spec.
    """
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    pod_spec: dict[str, Any] = {
        "containers": containers if containers is not None else [{"name": "app", "image": APP_IMAGE}],
        **spec,
    }
    if init_containers is not None:
        pod_spec["initContainers"] = init_containers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
