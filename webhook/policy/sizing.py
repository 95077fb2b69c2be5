"""What Ferry's containers add to the bill of a pod on EKS Fargate and GKE Autopilot, kept at nothing or said.

Why it exists: both platforms size (and bill) a pod from its requests, so a
sidecar that idles at a few millicores can push a pod into the next Fargate
size or make Autopilot rewrite Ferry's containers. This module takes the pod
as Ferry is about to admit it and returns it with Ferry's requests fitted,
plus a warning or a denial that names both sizes and the fix. It also refuses
a pod whose native sidecar another webhook turned into a plain init container.
Pure: dicts and settings in, dicts and messages out. The rules and worked
tables are in docs/fargate.md and docs/autopilot.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from webhook.policy.request import OWN_CONTAINER_NAMES, SIDECAR_NAME
from webhook.quantity import ContainerRequests, amount, container_requests, format_quantity, parse_quantity
from webhook.settings import Settings

# What the EKS Fargate profile webhook writes into every pod that a Fargate profile selects.
FARGATE_SCHEDULER = "fargate-scheduler"
_MIB = 2**20
_GIB = 2**30
# Fargate adds this to the pod's memory for the kubelet, kube-proxy and containerd.
FARGATE_OVERHEAD = 256 * _MIB
# Amounts are whole numbers, as the scheduler counts them: CPU in millicores, memory in bytes.
RESOURCES = ("cpu", "memory")


def _tier(millicores: int, first_gib: int, last_gib: int, step_gib: int) -> list[tuple[int, int]]:
    return [(millicores, gib * _GIB) for gib in range(first_gib, last_gib + 1, step_gib)]


# Fargate's vCPU and memory combinations, cheapest first (Fargate's "GB" is GiB: 0.5 GB is 512 MiB).
FARGATE_SIZES: tuple[tuple[int, int], ...] = (
    (250, _GIB // 2),
    (250, _GIB),
    (250, 2 * _GIB),
    *_tier(500, 1, 4, 1),
    *_tier(1000, 2, 8, 1),
    *_tier(2000, 4, 16, 1),
    *_tier(4000, 8, 30, 1),
    *_tier(8000, 16, 60, 4),
    *_tier(16000, 32, 120, 8),
)
# Autopilot's CPU-to-memory band: 1 GiB to 6.5 GiB of memory for each vCPU.
AUTOPILOT_MIN_GIB_PER_CPU = Fraction(1)
AUTOPILOT_MAX_GIB_PER_CPU = Fraction(13, 2)


@dataclass(frozen=True)
class Sizing:
    """The pod with Ferry's requests fitted, and what to say about it (a warning, or a denial's message)."""

    pod: dict[str, Any]
    warnings: tuple[str, ...] = ()
    denial: str | None = None


def container_request(container: Mapping[str, Any], resource: str, requests: ContainerRequests) -> int:
    """A container's request for `resource` as the API server defaults it (its limit when only that is set)."""
    name = container.get("name")
    return requests.get(name, {}).get(resource, 0) if isinstance(name, str) else 0


Terms = list[tuple[int, int]]


def pod_terms(
    spec: Mapping[str, Any], resource: str, requests: ContainerRequests, *, own_unknown: bool = True
) -> Terms:
    """The pod's request for `resource` as max(terms); a term is (app part, how many of Ferry's containers in it).

    Kubernetes' rule with native sidecars: each init container counts with the restartable init containers
    before it; the app containers count with all of them. Ferry's containers are left out as unknowns, so
    the pod's request with Ferry's containers at x each is max(app + count * x); with `own_unknown` False
    they count as they are, like any other container.
    """
    terms: Terms = []
    restartable = (0, 0)
    for container in _containers(spec, "initContainers"):
        own = 1 if own_unknown and container.get("name") in OWN_CONTAINER_NAMES else 0
        app = 0 if own else container_request(container, resource, requests)
        if container.get("restartPolicy") == "Always":
            restartable = (restartable[0] + app, restartable[1] + own)
            terms.append(restartable)
        else:
            terms.append((restartable[0] + app, restartable[1] + own))
    app_sum, own_count = restartable
    for container in _containers(spec, "containers"):
        if own_unknown and container.get("name") in OWN_CONTAINER_NAMES:
            own_count += 1
        else:
            app_sum += container_request(container, resource, requests)
    terms.append((app_sum, own_count))
    return terms


def pod_request(spec: Mapping[str, Any], resource: str, own: int | None = None) -> int:
    """The pod's effective request for `resource`, with each of Ferry's containers requesting `own`.

    `own` None: Ferry's containers count with the requests they have; 0: as if they were not there.
    """
    requests = container_requests({"spec": spec})
    if own is None:
        return max(app for app, _ in pod_terms(spec, resource, requests, own_unknown=False))
    return _with_own_at(pod_terms(spec, resource, requests), own)


def _with_own_at(terms: Terms, own: int) -> int:
    return max(app + count * own for app, count in terms)


def _largest_own(terms: Terms, cap: int) -> int:
    """The largest request each of Ferry's containers can have while the pod's request stays within `cap`."""
    room = [(cap - app) // count for app, count in terms if count]
    return max(0, min(room)) if room else cap


def fargate_size(cpu: int, memory: int) -> tuple[int, int] | None:
    """The Fargate size of a pod requesting `cpu` millicores and `memory` bytes; None when none is big enough."""
    wanted_memory = memory + FARGATE_OVERHEAD
    for size in FARGATE_SIZES:
        if size[0] >= cpu and size[1] >= wanted_memory:
            return size
    return None


def describe_size(size: tuple[int, int] | None) -> str:
    if size is None:
        return "more than Fargate's largest size"
    return f"{size[0] / 1000:g} vCPU / {size[1] / _GIB:g} GB"


def fit_fargate(
    pod: Mapping[str, Any], requests: ContainerRequests, settings: Settings, floors: Mapping[str, int]
) -> Sizing:
    """Lower Ferry's requests into the headroom of the Fargate size the pod has without Ferry, or say why not."""
    spec = _spec(pod)
    own = _own_containers(spec)
    terms = {r: pod_terms(spec, r, requests) for r in RESOURCES}
    without = fargate_size(_with_own_at(terms["cpu"], 0), _with_own_at(terms["memory"], 0))
    if not own or _has_pod_level_requests(spec) or without is None:
        return Sizing(dict(pod))
    # From the configured requests every time: a reinvocation decides afresh, whatever an earlier pass wrote.
    configured = _configured_requests(settings)
    caps = {"cpu": without[0], "memory": without[1] - FARGATE_OVERHEAD}
    fitted: dict[str, int] = {}
    for resource in RESOURCES:
        room = _largest_own(terms[resource], caps[resource])
        room = room if resource == "cpu" else room // _MIB * _MIB  # whole MiB
        fitted[resource] = max(min(floors[resource], configured[resource]), min(configured[resource], room))
    changed = {r: _format(v, r) for r, v in fitted.items() if any(container_request(c, r, requests) != v for c in own)}
    new_pod = with_own_requests(pod, changed) if changed else dict(pod)
    need = {r: _with_own_at(terms[r], fitted[r]) for r in RESOURCES}
    reached = fargate_size(need["cpu"], need["memory"])
    if reached == without:
        return Sizing(new_pod)
    over = "; ".join(
        f"{_format(need[r] - caps[r], r)} more {r} than {describe_size(without)} holds"
        + (" (after Fargate's 256Mi)" if r == "memory" else "")
        for r in RESOURCES
        if need[r] > caps[r]
    )
    message = (
        f"Fargate: this pod takes {describe_size(without)} without Ferry, but {describe_size(reached)} with "
        f"Ferry's containers even at their least requests ({_describe(fitted)}; configured {_describe(configured)}): "
        f"{over}. Fix: lower the app's requests by that much, or size the app for "
        f"{describe_size(reached)} on purpose, or have Ferry's operator lower FERRY_FETCHER_CPU_REQUEST_FLOOR / "
        "FERRY_FETCHER_MEMORY_REQUEST_FLOOR"
        + (", or leave out ferry.dev/refresh-interval (no sidecar beside the app)" if _has_sidecar(spec) else "")
    )
    if settings.fargate_oversize == "deny":
        return Sizing(dict(pod), denial=message)
    return Sizing(new_pod, warnings=(message,))


def _has_sidecar(spec: Mapping[str, Any]) -> bool:
    return any(c.get("name") == SIDECAR_NAME for c in _own_containers(spec))


def autopilot_resources(resources: Mapping[str, Any], mode: str) -> dict[str, dict[str, str]]:
    """Ferry's container resources as Autopilot accepts them unchanged.

    The CPU-to-memory ratio is kept within 1:1 to 1:6.5 (vCPU:GiB) by raising the smaller side, as
    Autopilot would. Without bursting, limits equal requests: the memory request is raised to the
    configured limit first, so the fetcher gets the memory it was meant to have and is not OOM-killed.
    """
    requests = {r: _quantity(resources, "requests", r) for r in ("cpu", "memory")}
    limits = {r: _quantity(resources, "limits", r) for r in ("cpu", "memory")}
    if mode == "no-bursting":
        requests["memory"] = max(requests["memory"], limits["memory"])
    least_cpu = _round_up(requests["memory"] / _GIB / AUTOPILOT_MAX_GIB_PER_CPU, "cpu")
    requests["cpu"] = max(requests["cpu"], least_cpu)
    least_memory = _round_up(requests["cpu"] * AUTOPILOT_MIN_GIB_PER_CPU * _GIB, "memory")
    requests["memory"] = max(requests["memory"], least_memory)
    if mode == "no-bursting":
        limits = dict(requests)
    else:
        limits = {r: max(limits[r], requests[r]) for r in limits}
    return {
        "requests": {r: format_quantity(v) for r, v in requests.items()},
        "limits": {r: format_quantity(v) for r, v in limits.items()},
    }


def platform_settings(settings: Settings) -> Settings:
    """`settings` with Ferry's requests and limits as Autopilot accepts them (the same object when it is off).

    Applied before Ferry's containers are built, so that the containers, the pod-level resources Ferry grows
    and the LimitRange check all see the same figures.
    """
    return settings if settings.autopilot == "off" else _autopilot_settings(settings)


@functools.lru_cache(maxsize=8)  # settings are made once per process
def _autopilot_settings(settings: Settings) -> Settings:
    wanted = autopilot_resources(settings.fetcher_resources(), settings.autopilot)
    return settings.with_overrides(
        fetcher_cpu_request=wanted["requests"]["cpu"],
        fetcher_memory_request=wanted["requests"]["memory"],
        fetcher_cpu_limit=wanted["limits"]["cpu"],
        fetcher_memory_limit=wanted["limits"]["memory"],
    )


def fit_autopilot(pod: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The pod with Ferry's containers' ephemeral-storage set (their CPU and memory come from `platform_settings`)."""
    if not _own_containers(_spec(pod)):
        return dict(pod)
    storage = settings.autopilot_ephemeral_storage
    kinds = ("requests", "limits") if settings.autopilot == "no-bursting" else ("requests",)

    def update(container: Mapping[str, Any]) -> dict[str, Any]:
        resources = dict(container.get("resources") or {})
        for kind in kinds:
            resources[kind] = {**(resources.get(kind) or {}), "ephemeral-storage": storage}
        return {**container, "resources": resources}

    return _with_own(pod, update)


def stripped_native_sidecar(pod: Mapping[str, Any]) -> str | None:
    """A denial's message when Ferry's sidecar sits among the init containers without restartPolicy Always.

    Another webhook removed it. As a plain init container the sidecar never exits: the pod would stay in
    Init forever, and a Job would never complete.
    """
    for container in _containers(_spec(pod), "initContainers"):
        if container.get("name") == SIDECAR_NAME and container.get("restartPolicy") != "Always":
            return (
                f"another mutating webhook removed restartPolicy: Always from Ferry's native sidecar "
                f"{SIDECAR_NAME}; as a plain init container it would never exit, so the pod would stay in Init "
                "forever (a Job would never complete). Fix: exclude Ferry's containers (ferry-init, "
                f"{SIDECAR_NAME}) from that webhook, or leave out ferry.dev/refresh-interval on this pod, or "
                "have Ferry's operator set FERRY_NATIVE_SIDECARS=false (a regular sidecar; none in Jobs)"
            )
    return None


def size_for_platform(
    pod: Mapping[str, Any],
    requests: ContainerRequests,
    settings: Settings,
    limit_ranges: Sequence[Mapping[str, Any]] = (),
) -> Sizing:
    """Ferry's containers in `pod` (as Ferry would admit it) fitted to Autopilot or Fargate; or a denial.

    `requests` are the pod's containers' (`container_requests`); `settings` are `platform_settings(...)`'s, as
    the containers were built with.
    """
    stripped = stripped_native_sidecar(pod)
    if stripped:
        return Sizing(dict(pod), denial=stripped)
    sized = fit_autopilot(pod, settings) if settings.autopilot != "off" else dict(pod)
    if settings.fargate_sizing == "auto" and _spec(sized).get("schedulerName") == FARGATE_SCHEDULER:
        return fit_fargate(sized, requests, settings, request_floors(settings, limit_ranges))
    return Sizing(sized)


def request_floors(settings: Settings, limit_ranges: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The least requests Ferry lowers to: its settings, raised to any LimitRange's per-container minimum."""
    memory_floor = settings.fetcher_memory_request_floor or settings.fetcher_memory_request
    floors = {"cpu": amount(settings.fetcher_cpu_request_floor, "cpu"), "memory": amount(memory_floor, "memory")}
    for item in _limit_items(limit_ranges):
        minimum = item.get("min")
        if isinstance(minimum, Mapping):
            for resource in floors:
                if resource in minimum:
                    floors[resource] = max(floors[resource], amount(minimum[resource], resource))
    return floors


def with_own_requests(pod: Mapping[str, Any], requests: Mapping[str, str]) -> dict[str, Any]:
    """A copy of `pod` whose Ferry containers request `requests` (other resources unchanged); copy-on-write."""

    def update(container: Mapping[str, Any]) -> dict[str, Any]:
        resources = dict(container.get("resources") or {})
        resources["requests"] = {**(resources.get("requests") or {}), **requests}
        return {**container, "resources": resources}

    return _with_own(pod, update)


def _with_own(pod: Mapping[str, Any], update: Any) -> dict[str, Any]:
    new = dict(pod)
    spec = dict(_spec(pod))
    for group in ("initContainers", "containers"):
        if group in spec:
            spec[group] = [
                update(c) if isinstance(c, dict) and c.get("name") in OWN_CONTAINER_NAMES else c
                for c in spec[group] or []
            ]
    new["spec"] = spec
    return new


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pod.get("spec")
    return spec if isinstance(spec, dict) else {}


def _containers(spec: Mapping[str, Any], group: str) -> Iterable[Mapping[str, Any]]:
    items = spec.get(group)
    # Pods arrive as JSON, so dict: isinstance(x, dict) is several times cheaper than against Mapping.
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _own_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    groups = ("initContainers", "containers")
    return [c for group in groups for c in _containers(spec, group) if c.get("name") in OWN_CONTAINER_NAMES]


def _configured_requests(settings: Settings) -> dict[str, int]:
    """Ferry's requests before any fitting (after `platform_settings`): a reinvocation starts over from them."""
    requests = settings.fetcher_resources()["requests"]
    return {resource: amount(requests[resource], resource) for resource in RESOURCES}


def _has_pod_level_requests(spec: Mapping[str, Any]) -> bool:
    # Pod-level resources are the pod's figure; resources.account_pod_resources already grew them for Ferry.
    resources = spec.get("resources")
    return isinstance(resources, Mapping) and bool(resources.get("requests"))


def _limit_items(limit_ranges: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for limit_range in limit_ranges:
        spec = limit_range.get("spec")
        items = spec.get("limits") if isinstance(spec, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping) and item.get("type") == "Container":
                yield item


def _quantity(resources: Mapping[str, Any], kind: str, resource: str) -> Fraction:
    values = resources.get(kind)
    raw = values.get(resource) if isinstance(values, Mapping) else None
    return parse_quantity(raw) or Fraction(0)


def _round_up(value: Fraction, resource: str) -> Fraction:
    unit = Fraction(1, 1000) if resource == "cpu" else Fraction(_MIB)
    return Fraction(math.ceil(value / unit)) * unit


def _format(value: int, resource: str) -> str:
    return format_quantity(Fraction(value, 1000) if resource == "cpu" else Fraction(value))


def _describe(values: Mapping[str, int]) -> str:
    return f"{_format(values['cpu'], 'cpu')} CPU, {_format(values['memory'], 'memory')} memory"
