"""Turn `ferry-webhook inject` output into a preview that cannot freeze a workload when committed.

The preview shows the pod the cluster will store, but two of its fields, committed as they are, would keep
later changes from the pods or the app's token from its containers; the preview leaves them out and says so.
Details: docs/admission.md ("The command line").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fetcher.contract import ANNOTATION_STATUS
from webhook.policy.workloads import TEMPLATE_PATHS

HEADER = (
    "# Preview by ferry-webhook inject: the pods Ferry would produce, for review. Apply your original\n"
    "# manifest, not this: Ferry injects at admission (a committed preview is refused). Left out here:\n"
    f"# {ANNOTATION_STATUS}, and automountServiceAccountToken: false (see the notes on stderr).\n"
)
NOTES = (
    "note: this is a preview; apply the original manifest and Ferry injects when each pod is created.",
    f"note: in the cluster Ferry also writes {ANNOTATION_STATUS}: injected, so a re-invocation does not inject "
    "twice; the preview leaves it out, so a committed preview cannot freeze the workload at today's spec.",
    "note: in the cluster Ferry sets automountServiceAccountToken: false after the ServiceAccount plugin has "
    "mounted the app containers' API token, so Ferry's own containers get none; in a template it would also "
    "take the token from the app, so the preview keeps your value.",
)


def as_preview(injected: Any, original: Any) -> Any:
    """`injected` (one document of `inject`'s output) with the two cluster-only changes undone."""
    if not isinstance(injected, Mapping) or not isinstance(original, Mapping):
        return injected
    kind = injected.get("kind")
    path: tuple[str, ...] = () if kind == "Pod" else TEMPLATE_PATHS.get(str(kind), ("",))
    if path == ("",):
        return injected
    result = copy.deepcopy(dict(injected))
    pod = _dig(result, path)
    before = _dig(original, path)
    if pod is None:
        return result
    meta = pod.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        meta["annotations"].pop(ANNOTATION_STATUS, None)
    spec = pod.get("spec")
    if isinstance(spec, dict):
        old_spec = (before or {}).get("spec") or {}
        if "automountServiceAccountToken" in old_spec:
            spec["automountServiceAccountToken"] = old_spec["automountServiceAccountToken"]
        else:
            spec.pop("automountServiceAccountToken", None)
    return result


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, dict) else None
