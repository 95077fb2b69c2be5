"""Build the injected pod: Ferry's volume, containers, mounts, identity and status.

Why it exists: where a pod is built must be one place, apart from the decision
to build it (`webhook.admission`) and from the patch that describes it
(`webhook.patch`). This module is pure: dicts in, dicts out. It copies the pod
(copy-on-write) and edits the copy; the patch is a diff of before and after,
never operations assembled by hand.

Layout of an injected pod:

    initContainers: [ferry-init, ferry-sidecar (native, when refreshing), <app init containers>...]
    containers:     [<app containers>..., ferry-sidecar (regular, when refreshing without native sidecars)]
    volumes:        [..., ferry-secrets (emptyDir, medium Memory),
                     ferry-kube-api-access (projected token, only when secretObjects are synced)]

Ferry's containers get no Kubernetes API token of the ServiceAccount plugin's
(the pod's automountServiceAccountToken is switched off once the app's
containers have theirs; secretObjects sync brings its own projected token),
and a pod with pod-level resources has them grown by what Ferry's containers
add (`webhook.resources`).

Run-to-completion pods (owned by a Job, or restartPolicy Never/OnFailure) get
no regular sidecar, which would keep them running forever; native sidecars do
not have that problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from fetcher.spec import ANNOTATION_REFRESH_INTERVAL, ANNOTATION_STATUS, STATUS_INJECTED, needs_kube_api
from webhook.containers import OWN_CONTAINER_NAMES, build_init_container, build_sidecar
from webhook.identity import Identity, apply_identity, find_identity
from webhook.podshape import is_run_to_completion
from webhook.resolve import ResolvedRequest
from webhook.resources import account_pod_resources
from webhook.settings import Settings
from webhook.volumes import build_app_mount, build_gcp_token_volume, build_kube_api_volume, build_volume

SidecarMode = Literal["none", "native", "regular"]


def mutate_pod(
    pod: Mapping[str, Any], resolved: ResolvedRequest, settings: Settings, mode: SidecarMode
) -> dict[str, Any]:
    """A copy of `pod` with Ferry's volume, containers, mounts, identity and status added.

    `mode` is `plan_sidecar`'s answer, decided once by the caller.

    Copy-on-write: every dict or list on the path to a change is new, everything
    else is shared with `pod` and never modified. That keeps admission cheap
    (no deep copy of managedFields) and lets `webhook.patch` skip shared parts.
    """
    new = dict(pod)
    meta = dict(new.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_STATUS: STATUS_INJECTED}
    new["metadata"] = meta
    spec = dict(new.get("spec") or {})
    new["spec"] = spec
    identity = find_identity(_app_containers(spec))

    spec["volumes"] = [*(spec.get("volumes") or []), build_volume(settings)]
    if needs_kube_api(resolved.spec):
        spec["volumes"].append(build_kube_api_volume())
    if resolved.spec.gcp is not None:
        spec["volumes"].append(build_gcp_token_volume(resolved.spec.gcp.workload_pool))
    selected = frozenset(resolved.containers)
    for group in ("initContainers", "containers"):
        if group in spec:
            spec[group] = [
                {**c, "volumeMounts": [*(c.get("volumeMounts") or []), build_app_mount(resolved.mount_path)]}
                if isinstance(c, Mapping) and c.get("name") in selected
                else c
                for c in spec.get(group) or []
            ]

    build_args: dict[str, Any] = {
        "mount_path": resolved.mount_path,
        "run_as_user": resolved.run_as_user,
        "identity": identity,
        "spec_json": resolved.spec_json,
    }
    sidecar_args = {**build_args, "unhealthy_after": resolved.sidecar_unhealthy_after}
    own_init = [build_init_container(resolved.spec, settings, **build_args)]
    if mode == "native":
        own_init.append(build_sidecar(resolved.spec, settings, native=True, **sidecar_args))
    own_regular = [build_sidecar(resolved.spec, settings, native=False, **sidecar_args)] if mode == "regular" else []
    if spec.get("automountServiceAccountToken") is not False:
        # The ServiceAccount admission plugin ran before this webhook and mounted the API token into the
        # app's containers, which keep it; switched off, it adds none to Ferry's when it runs again after
        # this webhook (so Ferry is not called a second time either). Ferry's containers call the API only
        # to sync secretObjects, and then carry their own projected token (ferry-kube-api-access).
        spec["automountServiceAccountToken"] = False
    spec["initContainers"] = [*own_init, *(spec.get("initContainers") or [])]
    if own_regular:
        spec["containers"] = [*(spec.get("containers") or []), *own_regular]
    pod_resources = spec.get("resources")
    if isinstance(pod_resources, Mapping):
        accounted = account_pod_resources(pod_resources, settings, sidecar=mode != "none")
        if accounted is not None:
            spec["resources"] = accounted
    return new


def refresh_own_identity(pod: Mapping[str, Any]) -> dict[str, Any]:
    """On reinvocation: bring Ferry's containers' identity env and token mounts up to date, nothing else.

    Copy-on-write like `mutate_pod`: only Ferry's own containers are copied.
    """
    new = dict(pod)
    spec = dict(new.get("spec") or {})
    identity = find_identity(_app_containers(spec))
    if not identity:
        return new
    for group in ("initContainers", "containers"):
        if group in spec:
            spec[group] = [
                _with_identity(c, identity) if isinstance(c, Mapping) and c.get("name") in OWN_CONTAINER_NAMES else c
                for c in spec[group] or []
            ]
    new["spec"] = spec
    return new


def _with_identity(container: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    copied = dict(container)
    for key in ("env", "volumeMounts"):
        if key in copied:
            copied[key] = list(copied[key] or [])
    apply_identity(copied, identity)
    return copied


def plan_sidecar(pod: Mapping[str, Any], resolved: ResolvedRequest, native_sidecars: bool) -> tuple[SidecarMode, str]:
    """Which sidecar to add, and a warning when one was asked for but cannot be given."""
    if not resolved.spec.refresh_seconds:
        return "none", ""
    if native_sidecars:
        return "native", ""
    if is_run_to_completion(pod):
        return "none", (
            f"{ANNOTATION_REFRESH_INTERVAL}: no refresh sidecar in this run-to-completion pod (Job, or "
            "restartPolicy Never/OnFailure) without native sidecars (Kubernetes < 1.29); files are fetched once"
        )
    return "regular", ""


def has_own_containers(pod: Mapping[str, Any]) -> bool:
    """True when Ferry's init container or sidecar is in the pod: the sign of a pod Ferry injected.

    The status annotation alone proves nothing: anyone can write it on a new pod.
    """
    spec = pod.get("spec")
    return isinstance(spec, Mapping) and any(True for _ in _own_containers(spec))


def _app_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """App containers first, then app init containers: where identity webhooks put credentials."""
    return [
        container
        for group in ("containers", "initContainers")
        for container in spec.get(group) or []
        if isinstance(container, Mapping) and container.get("name") not in OWN_CONTAINER_NAMES
    ]


def _own_containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, dict) and container.get("name") in OWN_CONTAINER_NAMES:
                yield container
