"""Build the injected pod, and the one admission decision both the server and `inject` use.

Why it exists: the whole policy — skip, deny, inject, or refresh on
reinvocation — must be the same whether a pod arrives at `/mutate` or a
manifest goes through `python -m webhook inject`, and it must be testable
without a server. So this module is pure: dicts in, dicts out. It copies the
pod (copy-on-write) and edits the copy; callers diff before and after with
`jsonpatch.make_patch` instead of assembling patch operations by hand.

Layout of an injected pod:

    initContainers: [ferry-init, ferry-sidecar (native, when refreshing), <app init containers>...]
    containers:     [<app containers>..., ferry-sidecar (regular, when refreshing without native sidecars)]
    volumes:        [..., ferry-secrets (emptyDir, medium Memory)]

Run-to-completion pods (owned by a Job, or restartPolicy Never/OnFailure) get
no regular sidecar, which would keep them running forever; native sidecars do
not have that problem.
"""

from __future__ import annotations

import functools
import marshal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from fetcher.spec import ANNOTATION_REFRESH_INTERVAL, ANNOTATION_STATUS, STATUS_INJECTED
from webhook.containers import OWN_CONTAINER_NAMES, build_init_container, build_sidecar
from webhook.identity import Identity, apply_identity, find_identity
from webhook.resolve import Denial, ResolvedRequest, Skip, SpcLookup, decide_injection, resolve_spec, status_of
from webhook.settings import Settings
from webhook.volumes import build_app_mount, build_volume

Outcome = Literal["injected", "skipped", "denied", "reinvoked"]
SidecarMode = Literal["none", "native", "regular"]

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@dataclass(frozen=True)
class Admission:
    """What to answer for one pod."""

    outcome: Outcome
    # Short label for logs and metrics: the skip or denial reason, or the sidecar mode.
    reason: str
    # The pod to admit; equal to the input when nothing changes.
    pod: dict[str, Any]
    message: str | None = None
    warnings: tuple[str, ...] = ()
    # Where the objects came from (a SecretProviderClass or the annotation); never a value.
    source: str | None = None


def admit_pod(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_obj: Mapping[str, Any] | None,
    spc_lookup: SpcLookup,
    settings: Settings,
    native_sidecars: bool,
) -> Admission:
    """Skip, deny, inject or refresh one pod (a CREATE of `namespace`)."""
    original = pod if isinstance(pod, dict) else dict(pod)
    if settings.is_excluded_namespace(namespace):
        decision = decide_injection(pod, namespace, namespace_obj, settings)
        assert isinstance(decision, Skip)
        return Admission("skipped", decision.reason, original, warnings=decision.warnings)
    status = status_of(pod)
    if status is not None:
        if status != STATUS_INJECTED:
            return Admission(
                "denied",
                "invalid-annotation",
                original,
                message=f"{ANNOTATION_STATUS}: {status!r} is written by Ferry (only {STATUS_INJECTED!r}); remove it",
            )
        return _reinvoke(original)
    decision = decide_injection(pod, namespace, namespace_obj, settings)
    if isinstance(decision, Skip):
        return Admission("skipped", decision.reason, original, warnings=decision.warnings)
    if isinstance(decision, Denial):
        return Admission("denied", decision.reason, original, message=decision.message)
    resolved = resolve_spec(pod, namespace_obj, spc_lookup, settings, namespace=namespace)
    if isinstance(resolved, Denial):
        return Admission("denied", resolved.reason, original, message=resolved.message)
    mode, sidecar_warning = plan_sidecar(pod, resolved, native_sidecars)
    warnings = resolved.warnings + ((sidecar_warning,) if sidecar_warning else ())
    return Admission(
        "injected",
        f"sidecar-{mode}",
        mutate_pod(pod, resolved, settings, native_sidecars),
        warnings=warnings,
        source=resolved.source,
    )


def mutate_pod(
    pod: Mapping[str, Any], resolved: ResolvedRequest, settings: Settings, native_sidecars: bool
) -> dict[str, Any]:
    """A copy of `pod` with Ferry's volume, containers, mounts, identity and status added.

    Copy-on-write: every dict or list on the path to a change is new, everything
    else is shared with `pod` and never modified. That keeps admission cheap
    (no deep copy of managedFields) and lets `make_pod_patch` skip shared parts.
    """
    new = dict(pod)
    meta = dict(new.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_STATUS: STATUS_INJECTED}
    new["metadata"] = meta
    spec = dict(new.get("spec") or {})
    new["spec"] = spec
    identity = find_identity(_app_containers(spec))

    spec["volumes"] = [*(spec.get("volumes") or []), build_volume(settings)]
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
    }
    own_init = [build_init_container(resolved.spec, settings, **build_args)]
    mode, _ = plan_sidecar(pod, resolved, native_sidecars)
    if mode == "native":
        own_init.append(build_sidecar(resolved.spec, settings, native=True, **build_args))
    spec["initContainers"] = [*own_init, *(spec.get("initContainers") or [])]
    if mode == "regular":
        spec["containers"] = [
            *(spec.get("containers") or []),
            build_sidecar(resolved.spec, settings, native=False, **build_args),
        ]
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


def make_pod_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch from `before` to `after`, computed by `jsonpatch.make_patch`.

    Two diffs, concatenated: first `before` -> `after` without the containers
    that are new (so each app container is compared with itself, not with the
    container that took its index), then the insertion of the new ones. The
    result is a short, readable patch. Both diffs run on pruned documents (see
    `_Pruner`), so admission does not serialize the whole pod several times;
    if pruning ever leaves a trace in the patch, the plain diff of the full
    documents is used instead.
    """
    middle = _without_new_containers(before, after)
    ops: list[dict[str, Any]] = []
    for old, new in ((before, middle), (middle, after)):
        if old is new:
            continue
        pruner = _Pruner()
        pruned_old, pruned_new = pruner.prune(old, new)
        stage = pruner.restore(_diff_pruned(pruned_old, pruned_new))
        if stage is None:
            return _diff(before, after)
        ops.extend(stage)
    return ops


def _diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """`jsonpatch.make_patch` without its search for moves.

    Ferry never moves anything, so a "move" could only pair an unrelated
    removal with an addition; and the search serializes every added value,
    which was a third of the cost of a diff.
    """
    return list(jsonpatch.JsonPatch.from_diff(before, after, optimization=False).patch)


def _diff_pruned(before: Any, after: Any) -> list[dict[str, Any]]:
    """`_diff` of two pruned documents, remembered by their content.

    Pruned documents hold only what changed, with stand-ins for whole
    containers, so pods of the same shape (the same containers gaining the
    same mounts) prune to the same pair whatever their images, env or labels,
    and their diff is a lookup. (marshal nests 2,000 deep, twice as deep as
    json.loads or jsonpatch go.)
    """
    ops: list[dict[str, Any]] = marshal.loads(_marshalled_diff(marshal.dumps((before, after), 2)))
    return ops


@functools.lru_cache(maxsize=256)
def _marshalled_diff(documents: bytes) -> bytes:
    # marshal (format 2, no back-references) round-trips dicts, lists and scalars exactly, so equal keys
    # are equal documents, and loading the cached ops gives every caller its own copy.
    before, after = marshal.loads(documents)
    return marshal.dumps(_diff(before, after), 2)


def _without_new_containers(before: Mapping[str, Any], after: Mapping[str, Any]) -> Mapping[str, Any]:
    old_spec = before.get("spec") or {}
    new_spec = after.get("spec") or {}
    trimmed: dict[str, Any] = {}
    for group in ("initContainers", "containers"):
        old_names = {c.get("name") for c in old_spec.get(group) or [] if isinstance(c, Mapping)}
        items = new_spec.get(group)
        if not isinstance(items, list):
            continue
        kept = [c for c in items if not isinstance(c, Mapping) or c.get("name") in old_names]
        if len(kept) != len(items):
            trimmed[group] = kept
    if not trimmed:
        return after
    spec = {**new_spec, **trimmed}
    if "initContainers" in trimmed and not trimmed["initContainers"] and "initContainers" not in old_spec:
        del spec["initContainers"]
    return {**after, "spec": spec}


# Keys no Kubernetes object has: stand-ins for list items while diffing.
_SHARED = "$ferry-shared-item"
_NEW = "$ferry-new-item"


class _Pruner:
    """Makes smaller documents with the same JSONPatch between them.

    - dict entries that are the same object on both sides are dropped;
    - lists of equal length whose items pair up by name (the containers that
      only gained a mount) become dicts keyed "0", "1", ...: a JSON pointer
      reads the same for both, and the items are diffed pairwise, never
      re-matched; a list that only gained items at its end (a mount, a
      volume) becomes the dict of the new indices, whose "add" appends;
    - in other lists, an item that is the same object on both sides (an app
      container next to which Ferry inserts its own) becomes a stand-in
      unique to it, and so does an item only `after` has (Ferry's new
      container): jsonpatch matches and places them without serializing them,
      and `restore` puts the real item back into the `add` operation.
    """

    def __init__(self) -> None:
        self.added: list[Any] = []

    def prune(self, before: Any, after: Any) -> tuple[Any, Any]:
        # Exact types, not Mapping: abc checks dominate a walk this hot. Anything else is left whole.
        if type(before) is dict and type(after) is dict:
            left = {key: value for key, value in before.items() if key not in after or after[key] is not value}
            right = {key: value for key, value in after.items() if key not in before or before[key] is not value}
            for key in [key for key in left if key in right]:  # in document order: a deterministic patch
                left[key], right[key] = self.prune(left[key], right[key])
            return left, right
        if type(before) is list and type(after) is list:
            if len(before) == len(after) and all(_same_item(old, new) for old, new in zip(before, after, strict=True)):
                pairs = {
                    str(index): self.prune(old, new)
                    for index, (old, new) in enumerate(zip(before, after, strict=True))
                    if old is not new
                }
                return {key: pair[0] for key, pair in pairs.items()}, {key: pair[1] for key, pair in pairs.items()}
            if len(after) > len(before) and all(old is new for old, new in zip(before, after, strict=False)):
                # Items appended after a shared prefix: "add /list/<len>" appends, in order.
                return {}, {str(index): after[index] for index in range(len(before), len(after))}
            before_ids = {id(item): index for index, item in enumerate(before) if type(item) is dict}
            after_ids = {id(item) for item in after}
            stand_ins = {key: {_SHARED: index} for key, index in before_ids.items() if key in after_ids}
            right_items = []
            for item in after:
                if id(item) in stand_ins:
                    right_items.append(stand_ins[id(item)])
                elif type(item) is dict:
                    right_items.append({_NEW: len(self.added)})
                    self.added.append(item)
                else:
                    right_items.append(item)
            return [stand_ins.get(id(item), item) for item in before], right_items
        return before, after

    def restore(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The ops with real items for new stand-ins; None if a stand-in shows up anywhere else."""
        restored = []
        for op in ops:
            value = op.get("value")
            if op.get("op") == "add" and isinstance(value, dict) and list(value) == [_NEW]:
                op = {**op, "value": self.added[value[_NEW]]}
            elif "value" in op and _has_stand_in(value):
                return None
            restored.append(op)
        return restored


def _has_stand_in(value: Any) -> bool:
    if type(value) is dict:
        return _SHARED in value or _NEW in value or any(_has_stand_in(v) for v in value.values())
    if type(value) is list:
        return any(_has_stand_in(v) for v in value)
    return False


def _same_item(old: Any, new: Any) -> bool:
    if old is new:
        return True
    return type(old) is dict and type(new) is dict and "name" in old and old.get("name") == new.get("name")


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


def is_run_to_completion(pod: Mapping[str, Any]) -> bool:
    """Owned by a Job, or meant to exit: a regular sidecar would keep it running forever.

    Never raises: the admission memo keys every pod on this, well-formed or not.
    """
    meta = pod.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    owners = meta.get("ownerReferences")
    if isinstance(owners, list) and any(isinstance(o, Mapping) and o.get("kind") == "Job" for o in owners):
        return True
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and any(label in labels for label in JOB_NAME_LABELS):
        return True
    spec = pod.get("spec")
    return isinstance(spec, Mapping) and spec.get("restartPolicy") in ("Never", "OnFailure")


def _reinvoke(pod: dict[str, Any]) -> Admission:
    spec = pod.get("spec") or {}
    if not any(True for _ in _own_containers(spec)):
        return Admission(
            "reinvoked",
            "no-own-containers",
            pod,
            warnings=(
                f"{ANNOTATION_STATUS} is {STATUS_INJECTED!r} but the pod has no Ferry containers; "
                "it was not injected by Ferry and starts without secrets",
            ),
        )
    return Admission("reinvoked", "identity-refreshed", refresh_own_identity(pod))


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
