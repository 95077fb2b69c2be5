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

from webhook.policy.podshape import MAX_POD_CONTAINERS
from webhook.policy.request import OWN_CONTAINER_NAMES, SIDECAR_NAME, is_run_to_completion
from webhook.policy.resources import (
    RESOURCES,
    amount,
    containers,
    fit_pod_level,
    is_own,
    largest_own,
    pod_level_budget,
    pod_terms,
    with_own_at,
)
from webhook.policy.resources import container_request as container_request
from webhook.policy.resources import pod_request as pod_request
from webhook.quantity import format_quantity, parse_quantity
from webhook.settings import Settings

# What the EKS Fargate profile webhook writes into every pod that a Fargate profile selects.
FARGATE_SCHEDULER = "fargate-scheduler"
_MIB = 2**20
_GIB = 2**30
# Fargate adds this to the pod's memory for the kubelet, kube-proxy and containerd.
FARGATE_OVERHEAD = 256 * _MIB


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


def fit_requests(pod: Mapping[str, Any], settings: Settings, floors: Mapping[str, int], *, fargate: bool) -> Sizing:
    """Lower Ferry's requests into the room the pod already has, or say why they cannot fit.

    The room: the pod-level resources (``spec.resources``), which must cover all containers' requests; and,
    for a pod bound for Fargate, the headroom of the size it has without Ferry. A pod-level figure that even
    the floors overflow is raised by the shortfall (with a warning); a bigger Fargate size is warned or denied.
    """
    spec = _spec(pod)
    own = _own_containers(spec)
    terms = {r: pod_terms(spec, r) for r in RESOURCES}
    caps = pod_level_budget(spec)
    without = fargate_size(with_own_at(terms["cpu"], 0), with_own_at(terms["memory"], 0)) if fargate else None
    fargate_caps = {"cpu": without[0], "memory": without[1] - FARGATE_OVERHEAD} if without else {}
    for resource, cap in fargate_caps.items():
        caps[resource] = min(caps.get(resource, cap), cap)
    if not own or not caps:
        return Sizing(dict(pod))
    # From the configured requests every time: a reinvocation decides afresh, whatever an earlier pass wrote.
    configured = _configured_requests(settings)
    fitted = dict(configured)
    for resource, cap in caps.items():
        room = largest_own(terms[resource], cap)
        room = room if resource == "cpu" else room // _MIB * _MIB  # whole MiB
        fitted[resource] = max(min(floors[resource], configured[resource]), min(configured[resource], room))
    changed = {r: _format(v, r) for r, v in fitted.items() if any(container_request(c, r) != v for c in own)}
    new_pod = with_own_requests(pod, changed) if changed else dict(pod)
    need = {r: with_own_at(terms[r], fitted[r]) for r in RESOURCES}
    new_pod, warnings = _with_pod_level(new_pod, need)
    reached = fargate_size(need["cpu"], need["memory"])
    if not fargate_caps or reached == without:
        return Sizing(new_pod, warnings=warnings)
    short = [r for r in RESOURCES if need[r] > fargate_caps[r]]
    over = "; ".join(
        f"{_format(need[r] - fargate_caps[r], r)} more {r} than {describe_size(without)} holds"
        + (" (after Fargate's 256Mi)" if r == "memory" else "")
        for r in short
    )
    fields = " and ".join(f"spec.containers[*].resources.requests.{r}" for r in short)
    floors_named = " / ".join(f"FERRY_FETCHER_{r.upper()}_REQUEST_FLOOR" for r in short)
    message = (
        f"Fargate: this pod takes {describe_size(without)} without Ferry, but {describe_size(reached)} with "
        f"Ferry's containers even at their least requests ({_describe(fitted)}; configured {_describe(configured)}): "
        f"{over}. Fix: lower the app's {fields} by that much, or size the app for "
        f"{describe_size(reached)} on purpose, or have Ferry's operator lower {floors_named}"
        + (", or leave out ferry.dev/refresh-interval (no sidecar beside the app)" if _has_sidecar(spec) else "")
    )
    if settings.fargate_oversize == "deny":
        return Sizing(dict(pod), denial=message)
    return Sizing(new_pod, warnings=(*warnings, message))


def _with_pod_level(pod: dict[str, Any], need: Mapping[str, int]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """`pod` with its pod-level resources covering `need`, and Ferry's container limits within the pod's."""
    fit = fit_pod_level(_spec(pod), need)
    if fit.resources is not None:
        pod = {**pod, "spec": {**_spec(pod), "resources": fit.resources}}
    if any(_over_limits(c, fit.limits) for c in _own_containers(_spec(pod))):
        # A container limit above the pod's is refused (regular containers) and meaningless (all).
        pod = _with_own(pod, lambda container: _with_limits_within(container, fit.limits))
    return pod, ((fit.message,) if fit.message else ())


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
        resources = _copied(container.get("resources"))
        for kind in kinds:
            resources[kind] = {**_copied(resources.get(kind)), "ephemeral-storage": storage}
        return {**container, "resources": resources}

    return _with_own(pod, update)


def stripped_native_sidecar(pod: Mapping[str, Any]) -> str | None:
    """A denial's message when another webhook broke Ferry's native sidecar; None when it is intact.

    Either restartPolicy Always was removed (a plain init container never exits: the pod stays in Init
    forever), or the sidecar was moved among the app containers of a pod that runs to completion (where
    Ferry never puts one: it would never exit, and the Job would never complete).
    """
    spec = _spec(pod)
    fix = (
        f"Fix: exclude Ferry's containers (ferry-init, {SIDECAR_NAME}) from that webhook, or leave out "
        "ferry.dev/refresh-interval on this pod, or have Ferry's operator set FERRY_NATIVE_SIDECARS=false "
        "(a regular sidecar; none in Jobs)"
    )
    for container in containers(spec, "initContainers"):
        if container.get("name") == SIDECAR_NAME and container.get("restartPolicy") != "Always":
            return (
                f"another mutating webhook removed restartPolicy: Always from Ferry's native sidecar "
                f"{SIDECAR_NAME}; as a plain init container it would never exit, so the pod would stay in Init "
                f"forever (a Job would never complete). {fix}"
            )
    if is_run_to_completion(pod) and any(c.get("name") == SIDECAR_NAME for c in containers(spec, "containers")):
        return (
            f"another mutating webhook moved Ferry's native sidecar {SIDECAR_NAME} among the app containers of a "
            "pod that runs to completion (a Job's, or restartPolicy Never/OnFailure); there it would never exit, "
            f"so the pod would never complete. {fix}"
        )
    return None


def size_for_platform(
    pod: Mapping[str, Any], settings: Settings, limit_ranges: Sequence[Mapping[str, Any]] = ()
) -> Sizing:
    """Ferry's containers in `pod` (as Ferry would admit it) fitted to Autopilot or Fargate; or a denial.

    `settings` are `platform_settings(...)`'s, as the containers were built with.
    """
    stripped = stripped_native_sidecar(pod)
    if stripped:
        return Sizing(dict(pod), denial=stripped)
    if _container_count(_spec(pod)) > MAX_POD_CONTAINERS + len(OWN_CONTAINER_NAMES):
        # Stage 2 refuses to inject into more; a pod past it here is a forged reinvocation: not worth reading.
        return Sizing(dict(pod))
    sized = fit_autopilot(pod, settings) if settings.autopilot != "off" else dict(pod)
    fargate = settings.fargate_sizing == "auto" and _spec(sized).get("schedulerName") == FARGATE_SCHEDULER
    if not fargate and not isinstance(_spec(sized).get("resources"), dict):
        return Sizing(sized)
    # Autopilot would raise requests lowered below its ratio band again, past the pod-level budget: not lowered.
    floors = _configured_requests(settings) if settings.autopilot != "off" else request_floors(settings, limit_ranges)
    return fit_requests(sized, settings, floors, fargate=fargate)


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
        resources = _copied(container.get("resources"))
        resources["requests"] = {**_copied(resources.get("requests")), **requests}
        return {**container, "resources": resources}

    return _with_own(pod, update)


def _with_own(pod: Mapping[str, Any], update: Any) -> dict[str, Any]:
    new = dict(pod)
    spec = dict(_spec(pod))
    for group in ("initContainers", "containers"):
        if isinstance(spec.get(group), list):
            spec[group] = [update(c) if is_own(c) else c for c in spec[group]]
    new["spec"] = spec
    return new


def _copied(value: object) -> dict[str, Any]:
    """A copy of a JSON object from the pod; {} for anything else (a forged review may carry any JSON there)."""
    return dict(value) if isinstance(value, dict) else {}


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pod.get("spec")
    return spec if isinstance(spec, dict) else {}


def _container_count(spec: Mapping[str, Any]) -> int:
    return sum(len(items) for group in ("initContainers", "containers") if isinstance(items := spec.get(group), list))


def _own_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    groups = ("initContainers", "containers")
    return [c for group in groups for c in containers(spec, group) if is_own(c)]


def _configured_requests(settings: Settings) -> dict[str, int]:
    """Ferry's requests before any fitting (after `platform_settings`): a reinvocation starts over from them."""
    requests = settings.fetcher_resources()["requests"]
    return {resource: amount(requests[resource], resource) for resource in RESOURCES}


def _limit_items(limit_ranges: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for limit_range in limit_ranges:
        spec = limit_range.get("spec")
        items = spec.get("limits") if isinstance(spec, Mapping) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping) and item.get("type") == "Container":
                yield item


def _over_limits(container: Mapping[str, Any], ceilings: Mapping[str, int]) -> dict[str, int]:
    resources = container.get("resources")
    limits = resources.get("limits") if isinstance(resources, dict) else None
    if not isinstance(limits, dict):
        return {}
    return {r: ceiling for r, ceiling in ceilings.items() if r in limits and amount(limits[r], r) > ceiling}


def _with_limits_within(container: Mapping[str, Any], ceilings: Mapping[str, int]) -> dict[str, Any]:
    over = _over_limits(container, ceilings)
    if not over:
        return dict(container)
    resources = _copied(container.get("resources"))
    lowered = {r: _format(ceiling, r) for r, ceiling in over.items()}
    resources["limits"] = {**_copied(resources.get("limits")), **lowered}
    return {**container, "resources": resources}


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
