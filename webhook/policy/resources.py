"""Ferry's containers inside the budgets the pod already lives in: its namespace's LimitRanges, its pod-level resources.

Ferry never shrinks its containers to fit a LimitRange (an OOM-killed fetcher fails far from the cause): it denies the
pod and names the setting to change. Also Kubernetes' arithmetic of a pod's request (init containers, native
sidecars), which the pod-level check and the Fargate sizing share. Rules: docs/configuration.md, docs/fargate.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from webhook.policy.decide import Denial
from webhook.policy.request import OWN_CONTAINER_NAMES, PodRequest
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


# Amounts are whole numbers, as the scheduler counts them: CPU in millicores, memory in bytes.
RESOURCES = ("cpu", "memory")


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


class PodLevelFit(NamedTuple):
    """The pod-level ``spec.resources`` once Ferry's containers are inside them."""

    # The new spec.resources; None: unchanged.
    resources: dict[str, Any] | None
    # The pod-level limits (whole amounts) that no container limit of Ferry's may exceed.
    limits: dict[str, int]
    # Why Ferry had to raise a pod-level figure, and the fix; None when it did not.
    message: str | None


def pod_level_budget(spec: Mapping[str, Any]) -> dict[str, int]:
    """What the pod-level resources let all containers together request, per resource (cpu, memory) set there.

    The pod-level request; without one, the pod-level limit (the API server then defaults the request to the
    containers' total, which must stay within the limit). Unreadable values are left to the API server.
    """
    requests, limits = _pod_level(spec, "requests"), _pod_level(spec, "limits")
    budget: dict[str, int] = {}
    for resource in RESOURCES:
        value = requests.get(resource) if resource in requests else limits.get(resource)
        if value is not None:
            budget[resource] = math.floor(value * 1000) if resource == "cpu" else math.floor(value)
    return budget


def fit_pod_level(spec: Mapping[str, Any], need: Mapping[str, int]) -> PodLevelFit:
    """The pod-level resources raised to `need` (the pod's request with Ferry's containers) where they fall short.

    The API server refuses a pod whose containers together request more than its pod-level request, or whose
    pod-level request exceeds its pod-level limit; each figure is raised by the shortfall only, and the message
    says which and how to avoid it. Ferry's own container limits are then kept within the pod-level limits.
    """
    requests, limits = _pod_level(spec, "requests"), _pod_level(spec, "limits")
    if not requests and not limits:
        return PodLevelFit(None, {}, None)
    new: dict[str, dict[str, Any]] = {}
    raised: list[str] = []
    ceilings: dict[str, int] = {}
    for resource in RESOURCES:
        wanted = Fraction(need[resource], 1000) if resource == "cpu" else Fraction(need[resource])
        request, limit = requests.get(resource), limits.get(resource)
        if request is not None and wanted > request:
            new_request = new.setdefault("requests", {})[resource] = format_quantity(wanted)
            raised.append(f"spec.resources.requests.{resource} from {format_quantity(request)} to {new_request}")
        floor = wanted if request is None else max(request, wanted)
        if limit is not None and floor > limit:
            new_limit = new.setdefault("limits", {})[resource] = format_quantity(floor)
            raised.append(f"spec.resources.limits.{resource} from {format_quantity(limit)} to {new_limit}")
            limit = floor
        if limit is not None:
            ceilings[resource] = math.floor(limit * 1000) if resource == "cpu" else math.floor(limit)
    if not new:
        return PodLevelFit(None, ceilings, None)
    resources = dict(spec["resources"])
    for kind, values in new.items():
        resources[kind] = {**resources[kind], **values} if isinstance(resources.get(kind), dict) else values
    message = (
        "pod-level resources: Ferry raised "
        + ", ".join(raised)
        + ": the API server refuses a pod whose containers together request more than its pod-level requests "
        "(or whose pod-level requests exceed its limits), and Ferry's containers need that much even at their "
        "least requests. Fix: set these figures in the pod yourself, or lower the app containers' requests by "
        "the difference, or have Ferry's operator lower FERRY_FETCHER_CPU_REQUEST_FLOOR / "
        "FERRY_FETCHER_MEMORY_REQUEST_FLOOR"
    )
    return PodLevelFit(resources, ceilings, message)


def _pod_level(spec: Mapping[str, Any], kind: str) -> dict[str, Fraction]:
    resources = spec.get("resources")
    values = resources.get(kind) if isinstance(resources, dict) else None
    if not isinstance(values, dict):
        return {}
    read = {resource: parse_quantity(values.get(resource)) for resource in RESOURCES if resource in values}
    return {resource: value for resource, value in read.items() if value is not None and value >= 0}


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


# --- Kubernetes' arithmetic of a pod's requests ---


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


def container_request(container: Mapping[str, Any], resource: str) -> int:
    """A container's request for `resource` as the API server defaults it (its limit when only that is set)."""
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return 0
    for kind in ("requests", "limits"):
        values = resources.get(kind)
        if isinstance(values, dict) and resource in values:
            return amount(values[resource], resource)
    return 0


Terms = list[tuple[int, int]]


def pod_terms(spec: Mapping[str, Any], resource: str, *, own_unknown: bool = True) -> Terms:
    """The pod's request for `resource` as max(terms); a term is (app part, how many of Ferry's containers in it).

    Kubernetes' rule with native sidecars: each init container counts with the restartable init containers
    before it; the app containers count with all of them. Ferry's containers are left out as unknowns, so
    the pod's request with Ferry's containers at x each is max(app + count * x); with `own_unknown` False
    they count as they are, like any other container.
    """
    terms: Terms = []
    restartable = (0, 0)
    for container in containers(spec, "initContainers"):
        own = 1 if own_unknown and is_own(container) else 0
        app = 0 if own else container_request(container, resource)
        if container.get("restartPolicy") == "Always":
            restartable = (restartable[0] + app, restartable[1] + own)
            terms.append(restartable)
        else:
            terms.append((restartable[0] + app, restartable[1] + own))
    app_sum, own_count = restartable
    for container in containers(spec, "containers"):
        if own_unknown and is_own(container):
            own_count += 1
        else:
            app_sum += container_request(container, resource)
    terms.append((app_sum, own_count))
    return terms


def pod_request(spec: Mapping[str, Any], resource: str, own: int | None = None) -> int:
    """The pod's effective request for `resource`, with each of Ferry's containers requesting `own`.

    `own` None: Ferry's containers count with the requests they have; 0: as if they were not there.
    """
    if own is None:
        return max(app for app, _ in pod_terms(spec, resource, own_unknown=False))
    return with_own_at(pod_terms(spec, resource), own)


def with_own_at(terms: Terms, own: int) -> int:
    return max(app + count * own for app, count in terms)


def largest_own(terms: Terms, cap: int) -> int:
    """The largest request each of Ferry's containers can have while the pod's request stays within `cap`."""
    room = [(cap - app) // count for app, count in terms if count]
    return max(0, min(room)) if room else cap


def is_own(container: object) -> bool:
    """One of Ferry's containers (by name; a forged review's name may be any JSON, even unhashable)."""
    name = container.get("name") if isinstance(container, dict) else None
    return isinstance(name, str) and name in OWN_CONTAINER_NAMES


def containers(spec: Mapping[str, Any], group: str) -> Iterable[Mapping[str, Any]]:
    items = spec.get(group)
    # Pods arrive as JSON, so dict: isinstance(x, dict) is several times cheaper than against Mapping.
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []
