"""The sizing stage: Ferry's requests fitted so that its containers cost a pod on EKS Fargate or Autopilot nothing.

Both platforms size (and bill) a pod from its requests, so an idle sidecar could push a pod into the next size;
this stage lowers Ferry's requests into the room the pod has, or says what it costs, and refuses a native sidecar
another webhook broke. Kubernetes' arithmetic of a pod's request lives here too. Rules: docs/fargate.md,
docs/autopilot.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from webhook.policy.platform import (
    FARGATE_OVERHEAD,
    FARGATE_SCHEDULER,
    FARGATE_SIZES,
    RESOURCES,
    configured_requests,
    fargate_oversize,
    format_amount,
    pod_level_raised,
    request_floors,
)
from webhook.policy.podshape import MAX_POD_CONTAINERS
from webhook.policy.request import OWN_CONTAINER_NAMES, SIDECAR_NAME
from webhook.quantity import NO_AMOUNTS, Amounts, PodAmounts, format_quantity, parse_quantity, pod_amounts
from webhook.settings import Settings

_MIB = 2**20
# More containers than Ferry injects into: a forged reinvocation, left as sent (and its amounts are never read).
MAX_SIZED_CONTAINERS = MAX_POD_CONTAINERS + len(OWN_CONTAINER_NAMES)


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


def fit_requests(
    pod: Mapping[str, Any], amounts: PodAmounts, settings: Settings, floors: Mapping[str, int], *, fargate: bool
) -> Sizing:
    """Lower Ferry's requests into the room the pod already has, or say why they cannot fit.

    The room: the pod-level resources (``spec.resources``), which must cover all containers' requests; and,
    for a pod bound for Fargate, the headroom of the size it has without Ferry. A pod-level figure that even
    the floors overflow is raised by the shortfall (with a warning); a bigger Fargate size is warned or denied.
    """
    spec = _spec(pod)
    each = _aligned(spec, amounts)
    own = [a for group in _GROUPS for c, a in zip(containers(spec, group), each[group], strict=True) if is_own(c)]
    terms = {r: pod_terms(spec, r, each) for r in RESOURCES}
    caps = pod_level_budget(spec)
    without = fargate_size(with_own_at(terms["cpu"], 0), with_own_at(terms["memory"], 0)) if fargate else None
    fargate_caps = {"cpu": without[0], "memory": without[1] - FARGATE_OVERHEAD} if without else {}
    for resource, cap in fargate_caps.items():
        caps[resource] = min(caps.get(resource, cap), cap)
    if not own or not caps:
        return Sizing(dict(pod))
    # From the configured requests every time: a reinvocation decides afresh, whatever an earlier pass wrote.
    configured = configured_requests(settings)
    fitted = dict(configured)
    for resource, cap in caps.items():
        room = largest_own(terms[resource], cap)
        room = room if resource == "cpu" else room // _MIB * _MIB  # whole MiB
        fitted[resource] = max(min(floors[resource], configured[resource]), min(configured[resource], room))
    changed = {r: format_amount(v, r) for r, v in fitted.items() if any(a.requests.get(r, 0) != v for a in own)}
    new_pod = with_own_requests(pod, changed) if changed else dict(pod)
    need = {r: with_own_at(terms[r], fitted[r]) for r in RESOURCES}
    new_pod, warnings = _with_pod_level(new_pod, need, own)
    reached = fargate_size(need["cpu"], need["memory"])
    if not fargate_caps or reached == without:
        return Sizing(new_pod, warnings=warnings)
    over = {r: need[r] - fargate_caps[r] for r in RESOURCES if need[r] > fargate_caps[r]}
    message = fargate_oversize(without, reached, over, fitted, configured, sidecar=_has_sidecar(spec))
    if settings.fargate_oversize == "deny":
        return Sizing(dict(pod), denial=message)
    return Sizing(new_pod, warnings=(*warnings, message))


def _with_pod_level(
    pod: dict[str, Any], need: Mapping[str, int], own: Sequence[Amounts]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """`pod` with its pod-level resources covering `need`, and Ferry's container limits (`own`) within the pod's."""
    fit = fit_pod_level(_spec(pod), need)
    if fit.resources is not None:
        pod = {**pod, "spec": {**_spec(pod), "resources": fit.resources}}
    over = [_over_limits(amounts, fit.limits) for amounts in own]
    if any(over):
        # A container limit above the pod's is refused (regular containers) and meaningless (all).
        lowered = iter(over)  # `_with_own` visits Ferry's containers in the order of `own`
        pod = _with_own(pod, lambda container: _with_limits_lowered(container, next(lowered)))
    return pod, ((fit.message,) if fit.message else ())


def _has_sidecar(spec: Mapping[str, Any]) -> bool:
    return any(c.get("name") == SIDECAR_NAME for c in _own_containers(spec))


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


def stripped_native_sidecar(pod: Mapping[str, Any], *, run_to_completion: bool) -> str | None:
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
    if run_to_completion and any(c.get("name") == SIDECAR_NAME for c in containers(spec, "containers")):
        return (
            f"another mutating webhook moved Ferry's native sidecar {SIDECAR_NAME} among the app containers of a "
            "pod that runs to completion (a Job's, or restartPolicy Never/OnFailure); there it would never exit, "
            f"so the pod would never complete. {fix}"
        )
    return None


def size_for_platform(
    pod: Mapping[str, Any],
    amounts: PodAmounts | None,
    settings: Settings,
    limit_ranges: Sequence[Mapping[str, Any]] = (),
    *,
    run_to_completion: bool,
) -> Sizing:
    """Ferry's containers in `pod` (as Ferry would admit it) fitted to Autopilot or Fargate; or a denial.

    `amounts`: what its containers set, read before Ferry's were placed (`pod_amounts`); None for a pod with
    neither pod-level resources nor the Fargate scheduler, which is not sized. `settings` are
    `platform_settings(...)`'s, as the containers were built with; `run_to_completion` is the pod's
    `PodRequest.run_to_completion`.
    """
    stripped = stripped_native_sidecar(pod, run_to_completion=run_to_completion)
    if stripped:
        return Sizing(dict(pod), denial=stripped)
    if _container_count(_spec(pod)) > MAX_SIZED_CONTAINERS:
        # Stage 2 refuses to inject into more; a pod past it here is a forged reinvocation: not worth reading.
        return Sizing(dict(pod))
    sized = fit_autopilot(pod, settings) if settings.autopilot != "off" else dict(pod)
    fargate = settings.fargate_sizing == "auto" and _spec(sized).get("schedulerName") == FARGATE_SCHEDULER
    if not fargate and not isinstance(_spec(sized).get("resources"), dict):
        return Sizing(sized)
    if amounts is None:
        raise ValueError("the sizing stage was given no amounts for a pod it sizes")  # fails closed
    # Autopilot would raise requests lowered below its ratio band again, past the pod-level budget: not lowered.
    floors = configured_requests(settings) if settings.autopilot != "off" else request_floors(settings, limit_ranges)
    return fit_requests(sized, amounts, settings, floors, fargate=fargate)


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


def _over_limits(amounts: Amounts, ceilings: Mapping[str, int]) -> dict[str, int]:
    limits = amounts.limits
    return {r: ceiling for r, ceiling in ceilings.items() if r in limits and limits[r] > ceiling}


def _with_limits_lowered(container: Mapping[str, Any], over: Mapping[str, int]) -> dict[str, Any]:
    if not over:
        return dict(container)
    resources = _copied(container.get("resources"))
    lowered = {r: format_amount(ceiling, r) for r, ceiling in over.items()}
    resources["limits"] = {**_copied(resources.get("limits")), **lowered}
    return {**container, "resources": resources}


# --- Kubernetes' arithmetic of a pod's requests, and its pod-level resources ---


Terms = list[tuple[int, int]]
_GROUPS = ("initContainers", "containers")


def _aligned(spec: Mapping[str, Any], amounts: PodAmounts) -> dict[str, list[Amounts]]:
    """Each container's amounts, in the order of `containers(spec, group)`.

    Ferry's added containers by name; every other in the order the pod was sent in, since placing and fitting
    Ferry's containers moves no other (and the pod as sent may not use Ferry's names: the shape stage).
    """
    aligned: dict[str, list[Amounts]] = {}
    for group in _GROUPS:
        kept = iter(amounts.kept.get(group, ()))
        aligned[group] = [
            amounts.added[c["name"]] if is_own(c) and c["name"] in amounts.added else next(kept, NO_AMOUNTS)
            for c in containers(spec, group)
        ]
    return aligned


def pod_terms(
    spec: Mapping[str, Any], resource: str, each: Mapping[str, Sequence[Amounts]], *, own_unknown: bool = True
) -> Terms:
    """The pod's request for `resource` as max(terms); a term is (app part, how many of Ferry's containers in it).

    Kubernetes' rule with native sidecars: each init container counts with the restartable init containers
    before it; the app containers count with all of them. Ferry's containers are left out as unknowns, so
    the pod's request with Ferry's containers at x each is max(app + count * x); with `own_unknown` False
    they count as they are, like any other container. `each`: the containers' amounts (`_aligned`).
    """
    terms: Terms = []
    restartable = (0, 0)
    for container, amounts in zip(containers(spec, "initContainers"), each["initContainers"], strict=True):
        own = 1 if own_unknown and is_own(container) else 0
        app = 0 if own else amounts.requests.get(resource, 0)
        if container.get("restartPolicy") == "Always":
            restartable = (restartable[0] + app, restartable[1] + own)
            terms.append(restartable)
        else:
            terms.append((restartable[0] + app, restartable[1] + own))
    app_sum, own_count = restartable
    for container, amounts in zip(containers(spec, "containers"), each["containers"], strict=True):
        if own_unknown and is_own(container):
            own_count += 1
        else:
            app_sum += amounts.requests.get(resource, 0)
    terms.append((app_sum, own_count))
    return terms


def pod_request(spec: Mapping[str, Any], resource: str, own: int | None = None) -> int:
    """The pod's effective request for `resource`, with each of Ferry's containers requesting `own`.

    `own` None: Ferry's containers count with the requests they have; 0: as if they were not there.
    """
    each = _aligned(spec, pod_amounts({"spec": spec}, limit=_container_count(spec)))
    if own is None:
        return max(app for app, _ in pod_terms(spec, resource, each, own_unknown=False))
    return with_own_at(pod_terms(spec, resource, each), own)


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
    return PodLevelFit(resources, ceilings, pod_level_raised(raised))


def _pod_level(spec: Mapping[str, Any], kind: str) -> dict[str, Fraction]:
    resources = spec.get("resources")
    values = resources.get(kind) if isinstance(resources, dict) else None
    if not isinstance(values, dict):
        return {}
    read = {resource: parse_quantity(values.get(resource)) for resource in RESOURCES if resource in values}
    return {resource: value for resource, value in read.items() if value is not None and value >= 0}
