"""Admission over workload manifests offline (`python -m webhook inject`): the same `admit` the server calls."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch

from webhook.policy.admission import Decision, admit
from webhook.policy.review import AdmissionRequest
from webhook.policy.view import ClusterView
from webhook.settings import Settings

# kind -> path of keys from the object to its pod template.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class InjectionDenied(Exception):
    """A manifest's pod would be denied at admission; the message is the server's."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class ManifestResult:
    document: Any
    # None for kinds without a pod (passed through).
    decision: Decision | None


def inject_manifest(
    document: Any,
    *,
    namespace: str,
    view: ClusterView,
    settings: Settings,
    native_sidecars: bool,
) -> ManifestResult:
    """The document with its pod (template) admitted; raises InjectionDenied with the server's message."""
    if not isinstance(document, Mapping):
        return ManifestResult(document, None)
    kind = document.get("kind")
    if kind != "Pod" and kind not in TEMPLATE_PATHS:
        return ManifestResult(document, None)
    meta = document.get("metadata") or {}
    ns = meta.get("namespace") or namespace
    where = f"{kind} {ns}/{meta.get('name') or meta.get('generateName') or '?'}"
    result = copy.deepcopy(dict(document))
    if kind == "Pod":
        pod = result
    else:
        template = _dig(result, TEMPLATE_PATHS[str(kind)])
        if template is None:
            raise InjectionDenied(where, f"has no {'.'.join(TEMPLATE_PATHS[str(kind)])}")
        pod_meta: dict[str, Any] = {**(template.get("metadata") or {}), "namespace": ns}
        if kind in ("Job", "CronJob"):
            # What the Job controller will add; it tells the policy these pods run to completion.
            pod_meta["ownerReferences"] = [
                {"apiVersion": "batch/v1", "kind": "Job", "name": meta.get("name", ""), "uid": ""}
            ]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}
    # As the API server would see it: JSON. PyYAML reads an unquoted 2024-01-01 as a date; kubectl sends a string.
    pod = json.loads(json.dumps(pod, default=str))
    decision = admit(_pod_create(pod, ns), view, settings, native_sidecars=native_sidecars)
    if decision.outcome == "denied":
        raise InjectionDenied(where, decision.message or "denied")
    patch = decision.patch()
    admitted = jsonpatch.apply_patch(pod, patch) if patch else pod
    if kind == "Pod":
        return ManifestResult(admitted, decision)
    template = _dig(result, TEMPLATE_PATHS[str(kind)])
    assert template is not None
    new_meta = dict(admitted.get("metadata") or {})
    for added in ("namespace", "ownerReferences"):
        if added not in (template.get("metadata") or {}):
            new_meta.pop(added, None)
    if new_meta or "metadata" in template:
        template["metadata"] = new_meta
    template["spec"] = admitted.get("spec") or {}
    return ManifestResult(result, decision)


def _pod_create(pod: dict[str, Any], namespace: str) -> AdmissionRequest:
    """The AdmissionRequest the API server sends when this pod is created."""
    return {
        "uid": "inject",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": namespace,
        "object": pod,
    }


def _dig(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return None
        node = node[key]
    return node if isinstance(node, dict) else None
