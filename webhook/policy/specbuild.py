"""Stage 4: the FetchSpec, built by the one spec model (`fetcher.contract`) from stage 3's inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from fetcher.contract import (
    ANNOTATION_NOTIFY_SIGNAL,
    ANNOTATION_NOTIFY_URL,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_SIDECAR_UNHEALTHY_AFTER,
    DEFAULT_MOUNT_PATH,
    FetchSpec,
    Problem,
    SpecError,
    build_spec,
    join_problems,
    spec_from_secret_provider_class,
    spec_to_json,
)
from webhook.policy.decide import Denial
from webhook.policy.podshape import PodShape
from webhook.policy.request import PodRequest
from webhook.policy.resolve import InlineSpecInputs, Resolution, SpecInputs, SpecOptions


@dataclass(frozen=True, slots=True)
class BuiltSpec:
    """A valid spec and its canonical JSON (FERRY_SPEC), serialized once: the same spec goes into every replica."""

    spec: FetchSpec
    json: str


SidecarMode = Literal["none", "native", "regular"]
# A built spec, or its problems (a tuple, not the exception: a cached traceback would pin frames).
SpecResult = BuiltSpec | tuple[Problem, ...]
SpecMaker = Callable[[SpecInputs], SpecResult]


class ResolvedRequest(NamedTuple):
    """A valid request: everything the pod builders need."""

    spec: FetchSpec
    spec_json: str
    mount_path: str
    # Names of the app's containers and init containers that get the read-only mount.
    containers: tuple[str, ...]
    # uid Ferry's containers run as (the app's, else FERRY_DEFAULT_USER_ID).
    run_as_user: int
    # Where the objects came from, for logs: "SecretProviderClass ns/name" or the annotation.
    source: str
    warnings: tuple[str, ...] = ()
    # The refresh sidecar's liveness probe fails after this long of refreshes failing in a row (0: no probe).
    sidecar_unhealthy_after: float = 0.0
    # Which refresh sidecar Ferry adds.
    sidecar: SidecarMode = "none"


def make_spec(inputs: SpecInputs) -> SpecResult:
    """The spec for these inputs, or the spec model's problems with them. Pure: the caller may cache it."""
    try:
        if isinstance(inputs, InlineSpecInputs):
            spec = build_spec(
                objects=inputs.objects,
                region=inputs.region,
                failover_region=inputs.failover,
                path_translation=inputs.translation,
                field_names=dict(inputs.names),
                secret_objects=inputs.secret_objects,
                output_formats=inputs.output_formats,
                provider=inputs.provider,
                **_arguments(inputs.options),
            )
        else:
            spec = spec_from_secret_provider_class(
                inputs.trimmed, field_names=dict(inputs.names), **_arguments(inputs.options)
            )
    except SpecError as exc:
        return exc.problems
    return BuiltSpec(spec, spec_to_json(spec))


def build_request(
    request: PodRequest,
    shape: PodShape,
    resolution: Resolution,
    spec_maker: SpecMaker = make_spec,
    *,
    native_sidecars: bool = True,
) -> ResolvedRequest | Denial:
    """The spec (from `spec_maker`, the cached `make_spec` on the admission path) with everything the builders need.

    Every problem found so far is reported in one message, so one edit fixes them all.
    """
    built = spec_maker(resolution.inputs)
    if isinstance(built, tuple) or resolution.problems:
        spec_problems = [str(problem) for problem in built] if isinstance(built, tuple) else []
        return Denial("invalid-spec", join_problems([*resolution.problems, *spec_problems]))
    spec, annotations = built.spec, request.annotations
    warnings = list(resolution.warnings)
    if (annotations.notify_url or annotations.notify_signal) and not spec.refresh_seconds:
        warnings.append(
            f"{ANNOTATION_NOTIFY_URL if annotations.notify_url else ANNOTATION_NOTIFY_SIGNAL} has no effect without "
            f"{ANNOTATION_REFRESH_INTERVAL}: files are fetched once, before the app starts"
        )
    if annotations.sidecar_unhealthy_after and not spec.refresh_seconds:
        warnings.append(
            f"{ANNOTATION_SIDECAR_UNHEALTHY_AFTER} has no effect without {ANNOTATION_REFRESH_INTERVAL}: "
            "there is no refresh sidecar to probe"
        )
    sidecar, sidecar_warning = plan_sidecar(request.run_to_completion, spec, native_sidecars)
    if sidecar_warning:
        warnings.append(sidecar_warning)
    return ResolvedRequest(
        spec=spec,
        spec_json=built.json,
        mount_path=shape.mount_path or DEFAULT_MOUNT_PATH,
        containers=shape.containers,
        run_as_user=shape.run_as_user,
        source=resolution.source,
        warnings=tuple(warnings),
        sidecar_unhealthy_after=resolution.sidecar_unhealthy_after,
        sidecar=sidecar,
    )


def plan_sidecar(run_to_completion: bool, spec: FetchSpec, native_sidecars: bool) -> tuple[SidecarMode, str]:
    """Which sidecar to add, and a warning when one was asked for but cannot be given."""
    if not spec.refresh_seconds:
        return "none", ""
    if native_sidecars:
        return "native", ""
    if run_to_completion:
        return "none", (
            f"{ANNOTATION_REFRESH_INTERVAL}: no refresh sidecar in this run-to-completion pod (Job, or "
            "restartPolicy Never/OnFailure) without native sidecars (Kubernetes < 1.29); files are fetched once"
        )
    return "regular", ""


def _arguments(options: SpecOptions) -> dict[str, Any]:
    return {
        "gcp_identity": dict(options.gcp_identity),
        "endpoints": options.endpoints,
        "refresh_interval": options.refresh,
        "file_uid": options.file_uid,
        "file_gid": options.file_gid,
        "notify_url": options.notify_url,
        "notify_signal": options.notify_signal,
        "min_refresh_seconds": options.min_refresh_seconds,
    }
