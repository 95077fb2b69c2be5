"""Stage 6: the injected pod (Ferry's volume, containers, mounts, identity, status) and the patch ops that add them.

Layout of an injected pod, and why Ferry's containers get no API token of their own: docs/admission.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fetcher.spec import ANNOTATION_STATUS, STATUS_INJECTED, needs_kube_api
from webhook.policy.containers import build_gcp_token_volume, build_init_container, build_sidecar
from webhook.policy.identity import Identity, apply_identity, find_identity
from webhook.policy.request import OWN_CONTAINER_NAMES, PodRequest
from webhook.policy.resources import ResourceFit
from webhook.policy.specbuild import ResolvedRequest, SidecarMode
from webhook.policy.volumes import build_app_mount, build_kube_api_volume, build_volume
from webhook.settings import Settings

_STATUS_POINTER = "/metadata/annotations/" + ANNOTATION_STATUS.replace("~", "~0").replace("/", "~1")


class Mutation(NamedTuple):
    """The injected pod, and the JSONPatch from the pod as sent (None: stage 7 diffs, for an unusual pod)."""

    pod: Mapping[str, Any]
    ops: list[dict[str, Any]] | None
    # Which sidecar was added, for logs and metrics.
    mode: SidecarMode
    warnings: tuple[str, ...]


def mutate_pod(
    request: PodRequest, resolved: ResolvedRequest | None, fit: ResourceFit | None, settings: Settings
) -> Mutation:
    """A copy of the pod with Ferry's volume, containers, mounts, identity and status added, and the ops that add them.

    Copy-on-write: every dict or list on the path to a change is new, everything
    else is shared with the pod as sent and never modified. Each edit records its
    patch op as it is made; a pod whose shape the ops cannot describe exactly (a
    null where a list belongs) gets `ops=None`, and stage 7 diffs it instead.
    """
    if resolved is None:
        # A reinvocation: the pod is Ferry's already.
        return Mutation(refresh_own_identity(request.pod), None, "none", ())
    mode = resolved.sidecar
    ops = _Ops()
    new = dict(request.pod)
    old_meta = new.get("metadata")
    meta = dict(old_meta or {})
    old_annotations = meta.get("annotations")
    meta["annotations"] = {**(old_annotations or {}), ANNOTATION_STATUS: STATUS_INJECTED}
    new["metadata"] = meta
    if not isinstance(old_meta, dict):
        ops.spoil()
    elif "annotations" not in old_meta:
        ops.record("/metadata/annotations", meta["annotations"])
    elif not isinstance(old_annotations, dict):
        ops.spoil()
    elif old_annotations.get(ANNOTATION_STATUS) != STATUS_INJECTED:
        ops.record(_STATUS_POINTER, STATUS_INJECTED)
    old_spec = new.get("spec")
    if not isinstance(old_spec, dict):
        ops.spoil()
        old_spec = {}
    spec = dict(old_spec)
    new["spec"] = spec
    identity = find_identity(_app_containers(spec))

    # Everything Ferry adds is built first; then each edit is made, and its op recorded, in patch order.
    volumes = [build_volume(settings)]
    if needs_kube_api(resolved.spec):
        volumes.append(build_kube_api_volume())
    if resolved.spec.gcp is not None:
        volumes.append(build_gcp_token_volume(resolved.spec.gcp.workload_pool))
    selected = frozenset(resolved.containers)
    mount = build_app_mount(resolved.mount_path)
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
    spec["volumes"] = ops.appended(spec, "volumes", volumes, "/spec/volumes")
    for group in ("initContainers", "containers"):
        if group in spec:
            if type(spec[group]) is not list:
                ops.spoil()
            spec[group] = [
                {**c, "volumeMounts": ops.appended(c, "volumeMounts", [mount], f"/spec/{group}/{index}/volumeMounts")}
                if isinstance(c, Mapping) and c.get("name") in selected
                else c
                for index, c in enumerate(spec.get(group) or [])
            ]

    if spec.get("automountServiceAccountToken") is not False:
        # The ServiceAccount admission plugin ran before this webhook and mounted the API token into the
        # app's containers, which keep it; switched off, it adds none to Ferry's when it runs again after
        # this webhook (so Ferry is not called a second time either). Ferry's containers call the API only
        # to sync secretObjects, and then carry their own projected token (ferry-kube-api-access).
        ops.record(
            "/spec/automountServiceAccountToken", False, "replace" if "automountServiceAccountToken" in spec else "add"
        )
        spec["automountServiceAccountToken"] = False
    spec["initContainers"] = ops.prepended(spec, "initContainers", own_init, "/spec/initContainers")
    if own_regular:
        spec["containers"] = ops.appended(spec, "containers", own_regular, "/spec/containers")
    if fit is not None and fit.pod_resources is not None:
        spec["resources"] = fit.pod_resources
        ops.record("/spec/resources", fit.pod_resources, "replace")
    return Mutation(new, ops.ops, mode, resolved.warnings)


class _Ops:
    """The JSONPatch ops of the edits, recorded as they are made; None once an edit cannot be described exactly."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] | None = []

    def spoil(self) -> None:
        self.ops = None

    def record(self, path: str, value: Any, op: str = "add") -> None:
        if self.ops is not None:
            self.ops.append({"op": op, "path": path, "value": value})

    def appended(self, parent: Mapping[str, Any], key: str, items: list[Any], pointer: str) -> list[Any]:
        """`parent[key]` with `items` at its end."""
        return self._placed(parent, key, items, pointer, at_end=True)

    def prepended(self, parent: Mapping[str, Any], key: str, items: list[Any], pointer: str) -> list[Any]:
        """`items`, then `parent[key]`."""
        return self._placed(parent, key, items, pointer, at_end=False)

    def _placed(self, parent: Mapping[str, Any], key: str, items: list[Any], at: str, *, at_end: bool) -> list[Any]:
        old = parent.get(key)
        if key not in parent:
            self.record(at, items)
        elif type(old) is list:
            first = len(old) if at_end else 0
            for offset, item in enumerate(items):
                self.record(f"{at}/{first + offset}", item)
        else:
            self.spoil()
        return [*(old or []), *items] if at_end else [*items, *(old or [])]


def refresh_own_identity(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """On reinvocation: bring Ferry's containers' identity env and token mounts up to date, nothing else.

    Copy-on-write like `mutate_pod`: only Ferry's own containers are copied; without an identity, `pod` itself.
    """
    new = dict(pod)
    spec = dict(new.get("spec") or {})
    identity = find_identity(_app_containers(spec))
    if not identity:
        return pod
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


def _app_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """App containers first, then app init containers: where identity webhooks put credentials."""
    return [
        container
        for group in ("containers", "initContainers")
        for container in spec.get(group) or []
        if isinstance(container, Mapping) and container.get("name") not in OWN_CONTAINER_NAMES
    ]
