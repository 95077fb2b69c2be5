"""Ferry's containers inside the budgets the pod already lives in: its namespace's LimitRanges, its pod-level resources.

Ferry never shrinks its containers to fit a LimitRange (an OOM-killed fetcher fails far from the cause): it denies the
pod and names the setting to change. Pod-level *requests* are fitted by the sizing stage, once Ferry's are final.
Rules: docs/configuration.md.
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
    """Stage 5's answer for a pod that fits: its pod-level limits grown by Ferry's sidecar (None: unchanged)."""

    pod_resources: dict[str, Any] | None


def fit_resources(
    request: PodRequest, resolved: ResolvedRequest, settings: Settings, limit_ranges: Sequence[Mapping[str, Any]]
) -> ResourceFit | Denial:
    """Stage 5: Ferry's containers inside the namespace's LimitRanges; the pod-level limits grown for the sidecar."""
    outside_limits = check_limit_ranges(limit_ranges, settings, request.namespace)
    if outside_limits:
        return Denial("limit-range", outside_limits)
    pod_resources = request.spec.get("resources")
    if not isinstance(pod_resources, dict) or resolved.sidecar == "none":
        return ResourceFit(None)
    return ResourceFit(account_pod_resources(pod_resources, settings))


def account_pod_resources(pod_resources: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The pod-level ``spec.resources`` with the sidecar's limits added to its limits; None when nothing changes.

    The sidecar runs beside the app, inside the pod-level limit: without this the app would lose what the
    sidecar uses. Limits are neither scheduled nor billed. A resource whose pod-level request equals its limit
    (a Guaranteed pod) is left as it is, so the pod keeps its QoS class: there the sidecar lives inside.
    Pod-level *requests* are fitted later (`fit_pod_level`), once Ferry's requests are final.
    """
    limits = pod_resources.get("limits")
    if not isinstance(limits, dict):
        return None
    requests = pod_resources.get("requests")
    requests = requests if isinstance(requests, dict) else {}
    grown = dict(limits)
    for resource, own in settings.fetcher_resources()["limits"].items():
        current, extra = parse_quantity(limits.get(resource)), parse_quantity(own)
        if current is None or extra is None or parse_quantity(requests.get(resource)) == current:
            continue
        grown[resource] = format_quantity(current + extra)
    return {**pod_resources, "limits": grown} if grown != limits else None


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
