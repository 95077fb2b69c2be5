"""The mutate stage: Ferry's parts (volumes, containers, the app's mounts) placed in the pod, and the ops that add them.

Layout of an injected pod, and why Ferry's containers get no API token of their own: docs/admission.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fetcher.contract import ANNOTATION_STATUS, STATUS_INJECTED
from webhook.policy.containers import FerryParts
from webhook.policy.resources import ResourceFit
from webhook.policy.review import EncodedOps
from webhook.policy.specbuild import ResolvedRequest, SidecarMode

# `isinstance(x, _OBJECT)` is `isinstance(x, Mapping)`, without the ABC's slow check for a dict.
_OBJECT = (dict, Mapping)
_STATUS_POINTER = "/metadata/annotations/" + ANNOTATION_STATUS.replace("~", "~0").replace("/", "~1")


class Mutation(NamedTuple):
    """The injected pod, and the JSONPatch from the pod as sent (None: the patch stage diffs, for an unusual pod)."""

    pod: Mapping[str, Any]
    ops: EncodedOps | None
    # Which sidecar was added, for logs and metrics.
    mode: SidecarMode
    warnings: tuple[str, ...]


def mutate_pod(
    pod: Mapping[str, Any], resolved: ResolvedRequest | None, parts: FerryParts | None, fit: ResourceFit | None
) -> Mutation:
    """A copy of `pod` with Ferry's `parts` placed and its status set, and the ops that place them.

    Copy-on-write: every dict or list on the path to a change is new, everything
    else is shared with the pod as sent and never modified. Each edit records its
    patch op as it is made; a pod whose shape the ops cannot describe exactly (a
    null where a list belongs) gets `ops=None`, and the patch stage diffs it instead.
    Without parts (a reinvocation: the pod is Ferry's already), `pod` as it is, to be diffed.
    """
    if resolved is None or parts is None or fit is None:
        return Mutation(pod, None, "none", ())
    ops = _Ops()
    new = dict(pod)
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
    # Each edit is made, and its op recorded, in patch order.
    selected = frozenset(resolved.containers)
    mount = parts.app_mount
    texts = parts.texts
    mount_texts = (texts.app_mount,) if texts else None
    spec["volumes"] = ops.appended(spec, "volumes", parts.volumes, "/spec/volumes", texts.volumes if texts else None)
    for group in ("initContainers", "containers"):
        if group in spec:
            if type(spec[group]) is not list:
                ops.spoil()
            spec[group] = [
                {
                    **c,
                    "volumeMounts": ops.appended(
                        c, "volumeMounts", [mount], f"/spec/{group}/{index}/volumeMounts", mount_texts
                    ),
                }
                if isinstance(c, _OBJECT) and c.get("name") in selected
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
    spec["initContainers"] = ops.prepended(
        spec, "initContainers", parts.init_containers, "/spec/initContainers", texts.init_containers if texts else None
    )
    if parts.containers:
        spec["containers"] = ops.appended(
            spec, "containers", parts.containers, "/spec/containers", texts.containers if texts else None
        )
    if fit.pod_resources is not None:
        spec["resources"] = fit.pod_resources
        ops.record("/spec/resources", fit.pod_resources, "replace")
    return Mutation(new, ops.ops, resolved.sidecar, resolved.warnings)


class _Ops:
    """The JSONPatch ops of the edits, recorded as they are made; None once an edit cannot be described exactly.

    Each op keeps its value's JSON text when the parts came with theirs, so the answer is not encoded again.
    """

    def __init__(self) -> None:
        self.ops: EncodedOps | None = EncodedOps()

    def spoil(self) -> None:
        self.ops = None

    def record(self, path: str, value: Any, op: str = "add", text: str | None = None) -> None:
        if self.ops is not None:
            self.ops.record(op, path, value, text)

    def appended(
        self, parent: Mapping[str, Any], key: str, items: list[Any], pointer: str, texts: Sequence[str] | None = None
    ) -> list[Any]:
        """`parent[key]` with `items` (whose JSON texts are `texts`, when known) at its end."""
        return self._placed(parent, key, items, pointer, texts, at_end=True)

    def prepended(
        self, parent: Mapping[str, Any], key: str, items: list[Any], pointer: str, texts: Sequence[str] | None = None
    ) -> list[Any]:
        """`items`, then `parent[key]`."""
        return self._placed(parent, key, items, pointer, texts, at_end=False)

    def _placed(
        self,
        parent: Mapping[str, Any],
        key: str,
        items: list[Any],
        pointer: str,
        texts: Sequence[str] | None,
        *,
        at_end: bool,
    ) -> list[Any]:
        old = parent.get(key)
        if key not in parent:
            self.record(pointer, items, text=f"[{','.join(texts)}]" if texts is not None else None)
        elif type(old) is list:
            start = len(old) if at_end else 0
            for index, item in enumerate(items):
                self.record(f"{pointer}/{start + index}", item, text=texts[index] if texts is not None else None)
        else:
            self.spoil()
        rest = old or []
        return [*rest, *items] if at_end else [*items, *rest]
