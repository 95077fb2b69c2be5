"""The pipeline: each admission stage called once, in order, on one screen. Pure: typed values in and out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from webhook.policy.containers import FerryParts, PartsMaker, build_parts
from webhook.policy.decide import Denial, Reinvocation, Skip, Verdict
from webhook.policy.identity import pod_identity, refresh_own_identity
from webhook.policy.mutate import mutate_pod
from webhook.policy.patch import Differ, diff_documents, make_pod_patch
from webhook.policy.platform import FARGATE_SCHEDULER, platform_settings
from webhook.policy.podshape import check_pod_shape
from webhook.policy.request import PodRequest
from webhook.policy.resolve import SpcLookup, resolve_spec
from webhook.policy.resources import ResourceFit, fit_resources
from webhook.policy.sizing import MAX_SIZED_CONTAINERS, size_for_platform
from webhook.policy.specbuild import ResolvedRequest, SpecMaker, build_request, make_spec
from webhook.quantity import pod_amounts
from webhook.settings import Settings

Outcome = Literal["injected", "skipped", "denied", "reinvoked"]


class Admission(NamedTuple):
    """What the policy decided for one pod, before it is encoded."""

    outcome: Outcome
    # Short label for logs and metrics: the skip or denial reason, or the sidecar mode.
    reason: str
    # The pod to admit; the input itself when nothing changes.
    pod: Mapping[str, Any]
    message: str | None = None
    warnings: tuple[str, ...] = ()
    # Where the objects came from (a SecretProviderClass or the annotation); never a value.
    source: str | None = None
    # The JSONPatch from the pod as sent to `pod`.
    patch: Sequence[dict[str, Any]] = ()


def admit_pod(
    request: PodRequest,
    verdict: Verdict,
    *,
    spc_lookup: SpcLookup,
    settings: Settings,
    native_sidecars: bool,
    limit_ranges: Sequence[Mapping[str, Any]] = (),
    spec_maker: SpecMaker = make_spec,
    differ: Differ = diff_documents,
    parts_maker: PartsMaker = build_parts,
) -> Admission:
    """The policy for one pod CREATE, read once into `request`: each stage once, in order.

    `verdict` is stage 1's, `decide_injection(request, settings)`: the caller decides first, since the verdict
    also gates what it reads from the cluster for this pod.
    """
    pod = request.pod
    settings = platform_settings(settings)  # Ferry's requests as Autopilot takes them, when configured
    # 1. inject at all: the verdict, decided by the caller
    if isinstance(verdict, Skip):
        return Admission("skipped", verdict.reason, pod, warnings=verdict.warnings)
    if isinstance(verdict, Denial):
        return Admission("denied", verdict.reason, pod, message=verdict.message)
    identity = pod_identity(request.spec)  # 2. the app's AWS identity, which Ferry's containers copy
    # A reinvocation: the pod is Ferry's already, and only its containers' identity is brought up to date.
    reinvoked = isinstance(verdict, Reinvocation)
    base = refresh_own_identity(pod, identity) if reinvoked else pod
    resolved: ResolvedRequest | None = None  # these stay None for a reinvocation
    parts: FerryParts | None = None
    fit: ResourceFit | None = None
    if not reinvoked:
        shape = check_pod_shape(request, settings)  # 3. room for Ferry in this pod?
        if isinstance(shape, Denial):
            return Admission("denied", shape.reason, pod, message=shape.message)
        resolution = resolve_spec(request, shape, spc_lookup, settings)  # 4. which values win
        if isinstance(resolution, Denial):
            return Admission("denied", resolution.reason, pod, message=resolution.message)
        built = build_request(request, shape, resolution, spec_maker, native_sidecars=native_sidecars)  # 5. the spec
        if isinstance(built, Denial):
            return Admission("denied", built.reason, pod, message=built.message)
        parts = parts_maker(built, identity, settings)  # 6. Ferry's volumes and containers
        fitted = fit_resources(request, built, settings, limit_ranges)  # 7. LimitRanges, pod-level resources
        if isinstance(fitted, Denial):
            return Admission("denied", fitted.reason, pod, message=fitted.message)
        resolved, fit = built, fitted
    # What each container sets of CPU and memory, read once for stage 9, before Ferry's are placed; only for a pod
    # that stage sizes (pod-level resources, or bound for Fargate): a pod that is never sized parses nothing.
    sized_pod = isinstance(request.spec.get("resources"), dict) or (
        settings.fargate_sizing == "auto" and request.spec.get("schedulerName") == FARGATE_SCHEDULER
    )
    added = [*parts.init_containers, *parts.containers] if parts else []
    amounts = pod_amounts(base, added, limit=MAX_SIZED_CONTAINERS) if sized_pod else None
    mutation = mutate_pod(base, resolved, parts, fit)  # 8. Ferry's parts placed, and the ops that place them
    # Also on reinvocation: after a later webhook set Fargate's schedulerName, or stripped a native sidecar.
    # 9. Fargate / Autopilot sizing (run to completion: as read, since no stage changes the owner or restartPolicy)
    sized = size_for_platform(
        mutation.pod, amounts, settings, limit_ranges, run_to_completion=request.run_to_completion
    )
    if sized.denial:
        return Admission("denied", "platform-sizing", pod, message=sized.denial)
    resized = sized.pod != mutation.pod  # then the ops no longer say it all, and the patch is a diff
    admitted = sized.pod if resized else mutation.pod
    patch = make_pod_patch(pod, admitted, None if resized else mutation.ops, diff=differ)  # 10. the JSONPatch
    if resolved is None:
        return Admission("reinvoked", "identity-refreshed", admitted, warnings=sized.warnings, patch=patch)
    warnings = mutation.warnings + sized.warnings
    return Admission("injected", f"sidecar-{mutation.mode}", admitted, None, warnings, resolved.source, patch)
