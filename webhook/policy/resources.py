"""Stage 5: Ferry's containers inside the budgets the pod already lives in (its LimitRanges, its pod-level resources).

Ferry never shrinks its containers to fit a LimitRange (an OOM-killed fetcher fails far from the cause): it denies the
pod and names the setting to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from webhook.policy.decide import Denial
from webhook.policy.request import PodRequest
from webhook.policy.specbuild import ResolvedRequest
from webhook.quantity import format_quantity, parse_quantity
from webhook.settings import Settings

# A LimitRange is written by a namespace's admin, not a tenant; still, a denial names at most this many problems.
MAX_PROBLEMS = 3
# The resources Ferry's containers set (FERRY_FETCHER_{CPU,MEMORY}_{REQUEST,LIMIT}).
_SETTING = {
    ("requests", "cpu"): "FERRY_FETCHER_CPU_REQUEST",
    ("requests", "memory"): "FERRY_FETCHER_MEMORY_REQUEST",
    ("limits", "cpu"): "FERRY_FETCHER_CPU_LIMIT",
    ("limits", "memory"): "FERRY_FETCHER_MEMORY_LIMIT",
}


class ResourceFit(NamedTuple):
    """Stage 5's answer for a pod that fits: its pod-level resources grown by Ferry's containers (None: unchanged)."""

    pod_resources: dict[str, Any] | None


def fit_resources(
    request: PodRequest, resolved: ResolvedRequest, settings: Settings, limit_ranges: Sequence[Mapping[str, Any]]
) -> ResourceFit | Denial:
    """Stage 5: Ferry's containers inside the namespace's LimitRanges, and the pod-level budget grown to hold them."""
    outside_limits = check_limit_ranges(limit_ranges, settings, request.namespace)
    if outside_limits:
        return Denial("limit-range", outside_limits)
    pod_resources = request.spec.get("resources")
    if not isinstance(pod_resources, Mapping):
        return ResourceFit(None)
    return ResourceFit(account_pod_resources(pod_resources, settings, sidecar=resolved.sidecar != "none"))


def account_pod_resources(
    pod_resources: Mapping[str, Any], settings: Settings, *, sidecar: bool
) -> dict[str, Any] | None:
    """The pod-level ``spec.resources`` grown by Ferry's containers; None when nothing needs to change.

    With a sidecar, Ferry's container runs beside the app all along: its requests and limits are added.
    Without one, only the init container runs, alone and first: the pod's values need only cover it.
    Only resources the pod already sets at pod level are touched; a quantity that cannot be read is
    left as it is (the API server will say what is wrong with it).
    """
    own = settings.fetcher_resources()
    changed = False
    result: dict[str, Any] = dict(pod_resources)
    for kind in ("requests", "limits"):
        values = pod_resources.get(kind)
        if not isinstance(values, Mapping):
            continue
        updated = dict(values)
        for name, own_value in own.get(kind, {}).items():
            current = parse_quantity(values.get(name)) if name in values else None
            extra = parse_quantity(own_value)
            if current is None or extra is None:
                continue
            wanted = current + extra if sidecar else max(current, extra)
            if wanted != current:
                updated[name] = format_quantity(wanted)
                changed = True
        result[kind] = updated
    return result if changed else None


def check_limit_ranges(limit_ranges: Sequence[Mapping[str, Any]], settings: Settings, namespace: str) -> str | None:
    """Why Ferry's containers break a LimitRange of `namespace` (a denial message), or None.

    Only ``type: Container`` limits bind a single container. Ferry sets its CPU and memory requests and
    limits itself, so a LimitRange's ``default``/``defaultRequest`` never apply to those two; for any
    other resource with a ``max`` or ``min`` and no default, the LimitRanger would reject Ferry's
    container for not setting it, so that is named too.
    """
    own = settings.fetcher_resources()
    problems: list[str] = []
    for limit_range in limit_ranges:
        meta = limit_range.get("metadata")
        name = str(meta.get("name")) if isinstance(meta, Mapping) else "?"
        spec = limit_range.get("spec")
        items = spec.get("limits") if isinstance(spec, Mapping) else None
        for index, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, Mapping) or item.get("type") != "Container":
                continue
            where = f"LimitRange {name} in namespace {namespace}: spec.limits[{index}]"
            problems.extend(_container_problems(item, own, where))
    if not problems:
        return None
    shown = problems[:MAX_PROBLEMS]
    more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return (
        "Ferry's containers would break this namespace's LimitRange, and the API server would reject the pod: "
        + "; ".join(shown)
        + more
    )


def _container_problems(item: Mapping[str, Any], own: Mapping[str, Mapping[str, str]], where: str) -> list[str]:
    problems: list[str] = []
    requests = {name: parse_quantity(value) for name, value in own.get("requests", {}).items()}
    limits = {name: parse_quantity(value) for name, value in own.get("limits", {}).items()}
    for bound, kind_checked in (("max", "limits"), ("min", "requests")):
        values = item.get(bound)
        if not isinstance(values, Mapping):
            continue
        for resource, raw in values.items():
            allowed = parse_quantity(raw)
            if allowed is None:
                continue
            ours = (limits if kind_checked == "limits" else requests).get(resource)
            if ours is None:
                default_key = "default" if kind_checked == "limits" else "defaultRequest"
                defaults = item.get(default_key)
                if not (isinstance(defaults, Mapping) and resource in defaults):
                    problems.append(
                        f"{where}.{bound}.{resource} is set without {default_key}.{resource}, and Ferry's "
                        f"containers set no {resource}; add {default_key}.{resource} to the LimitRange"
                    )
                continue
            if (bound == "max" and ours > allowed) or (bound == "min" and ours < allowed):
                setting = _SETTING.get((kind_checked, resource), "")
                problems.append(
                    f"{where}.{bound}.{resource} is {format_quantity(allowed)} but Ferry's containers "
                    f"{'limit' if bound == 'max' else 'request'} {format_quantity(ours)}; "
                    f"{'raise' if bound == 'max' else 'lower'} it to {format_quantity(ours)}"
                    + (f", or have Ferry's operator set {setting} within it" if setting else "")
                )
    ratios = item.get("maxLimitRequestRatio")
    if isinstance(ratios, Mapping):
        for resource, raw in ratios.items():
            allowed = parse_quantity(raw)
            request, limit = requests.get(resource), limits.get(resource)
            if allowed is None or not request or limit is None:
                continue
            ratio = limit / request
            if ratio > allowed:
                problems.append(
                    f"{where}.maxLimitRequestRatio.{resource} is {format_quantity(allowed)} but Ferry's containers "
                    f"limit {resource} to {format_quantity(ratio)} times their request; raise it to "
                    f"{format_quantity(ratio)}, or have Ferry's operator bring FERRY_FETCHER_{resource.upper()}_LIMIT "
                    f"and FERRY_FETCHER_{resource.upper()}_REQUEST closer"
                )
    return problems


def slim_limit_range(obj: dict[str, Any]) -> dict[str, Any]:
    """A LimitRange as the watch cache keeps it: its name, version and ``type: Container`` limits only."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    spec = obj.get("spec")
    limits = spec.get("limits") if isinstance(spec, Mapping) else None
    kept = [
        item if isinstance(item, Mapping) and item.get("type") == "Container" else {}
        for item in (limits if isinstance(limits, list) else [])
    ]
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "LimitRange"),
        "metadata": {key: meta[key] for key in ("name", "namespace", "resourceVersion") if key in meta},
        # Other types become {} so that spec.limits[i] in a message still points at the right entry.
        "spec": {"limits": kept},
    }
