"""What the sizing stage knows of the platforms, and how it words what it does, apart from its pod arithmetic.

Fargate's sizes, Ferry's requests as Autopilot takes them, the floors from the settings and the LimitRanges, and
the messages: none of it reads the pod. Rules: docs/fargate.md, docs/autopilot.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from webhook.quantity import amount, format_quantity, parse_quantity
from webhook.settings import Settings

# Amounts are whole numbers, as the scheduler counts them: CPU in millicores, memory in bytes.
RESOURCES = ("cpu", "memory")
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


def describe_size(size: tuple[int, int] | None) -> str:
    if size is None:
        return "more than Fargate's largest size"
    return f"{size[0] / 1000:g} vCPU / {size[1] / _GIB:g} GB"


def fargate_oversize(
    without: tuple[int, int] | None,
    reached: tuple[int, int] | None,
    over: Mapping[str, int],
    fitted: Mapping[str, int],
    configured: Mapping[str, int],
    *,
    sidecar: bool,
) -> str:
    """Why Ferry's containers take a pod from size `without` to `reached`, and the fix (a warning or a denial).

    `over`: how much more of each resource than `without` holds, for those it does not hold.
    """
    shortfalls = "; ".join(
        f"{format_amount(extra, r)} more {r} than {describe_size(without)} holds"
        + (" (after Fargate's 256Mi)" if r == "memory" else "")
        for r, extra in over.items()
    )
    fields = " and ".join(f"spec.containers[*].resources.requests.{r}" for r in over)
    floors_named = " / ".join(f"FERRY_FETCHER_{r.upper()}_REQUEST_FLOOR" for r in over)
    return (
        f"Fargate: this pod takes {describe_size(without)} without Ferry, but {describe_size(reached)} with "
        f"Ferry's containers even at their least requests ({_describe(fitted)}; configured {_describe(configured)}): "
        f"{shortfalls}. Fix: lower the app's {fields} by that much, or size the app for "
        f"{describe_size(reached)} on purpose, or have Ferry's operator lower {floors_named}"
        + (", or leave out ferry.dev/refresh-interval (no sidecar beside the app)" if sidecar else "")
    )


def format_amount(value: int, resource: str) -> str:
    return format_quantity(Fraction(value, 1000) if resource == "cpu" else Fraction(value))


def _describe(values: Mapping[str, int]) -> str:
    return f"{format_amount(values['cpu'], 'cpu')} CPU, {format_amount(values['memory'], 'memory')} memory"


def pod_level_raised(raised: Sequence[str]) -> str:
    """Why Ferry raised the pod-level figures `raised` ("spec.resources.requests.cpu from 1 to 2"), and the fix."""
    return (
        "pod-level resources: Ferry raised "
        + ", ".join(raised)
        + ": the API server refuses a pod whose containers together request more than its pod-level requests "
        "(or whose pod-level requests exceed its limits), and Ferry's containers need that much even at their "
        "least requests. Fix: set these figures in the pod yourself, or lower the app containers' requests by "
        "the difference, or have Ferry's operator lower FERRY_FETCHER_CPU_REQUEST_FLOOR / "
        "FERRY_FETCHER_MEMORY_REQUEST_FLOOR"
    )


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


def configured_requests(settings: Settings) -> dict[str, int]:
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


def _quantity(resources: Mapping[str, Any], kind: str, resource: str) -> Fraction:
    values = resources.get(kind)
    raw = values.get(resource) if isinstance(values, Mapping) else None
    return parse_quantity(raw) or Fraction(0)


def _round_up(value: Fraction, resource: str) -> Fraction:
    unit = Fraction(1, 1000) if resource == "cpu" else Fraction(_MIB)
    return Fraction(math.ceil(value / unit)) * unit
