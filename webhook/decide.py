"""Should this pod be injected? The first question of every admission, answered once.

Why it exists: opting in is spread over the pod's and its namespace's
`ferry.dev/inject` annotations (the namespace's counts only with the label that
routes its pods here, as the API server decides) and the webhook's excluded
namespaces, and a
mistyped Ferry annotation must be refused before anything else reads it. The
answer is `None` (inject), a `Skip` (allowed unchanged, maybe with a warning)
or a `Denial` whose message names what to edit. Pure: dicts in, values out.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.spec import (
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_GCP_IDENTITY_PROVIDER,
    ANNOTATION_GCP_SERVICE_ACCOUNT,
    ANNOTATION_GCP_WORKLOAD_POOL,
    ANNOTATION_INJECT,
    ANNOTATION_KEYS,
    ANNOTATION_OBJECTS,
    ANNOTATION_OUTPUT_FORMATS,
    ANNOTATION_PREFIX,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_REGION,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    ANNOTATION_STATUS,
)
from webhook.settings import Settings

# Keys a namespace may carry; the others only make sense on a pod.
NAMESPACE_ANNOTATIONS = frozenset(
    {
        ANNOTATION_INJECT,
        ANNOTATION_SECRET_PROVIDER_CLASS,
        ANNOTATION_REGION,
        ANNOTATION_FAILOVER_REGION,
        ANNOTATION_REFRESH_INTERVAL,
        ANNOTATION_OUTPUT_FORMATS,
        ANNOTATION_GCP_SERVICE_ACCOUNT,
        ANNOTATION_GCP_WORKLOAD_POOL,
        ANNOTATION_GCP_IDENTITY_PROVIDER,
    }
)
POD_ANNOTATIONS = frozenset(ANNOTATION_KEYS)
# The namespace label that routes a namespace's pods to Ferry (the ns.pods.ferry.dev entry of the
# MutatingWebhookConfiguration). A namespace's ferry.dev/inject annotation counts only with it: the API
# server never sends Ferry the pods of a namespace without it, so the webhook must not read the annotation
# as an opt-in either, or the offline preview and a pod routed for another reason would disagree with it.
NAMESPACE_OPT_IN_LABEL = (ANNOTATION_INJECT, "enabled")


@dataclass(frozen=True)
class Denial:
    """An invalid request: `allowed: false` with a message that says what to fix."""

    # Short, bounded label for metrics ("invalid-spec", "missing-secret-provider-class", ...).
    reason: str
    message: str


@dataclass(frozen=True)
class Skip:
    """Not injected, and allowed unchanged."""

    reason: str
    warnings: tuple[str, ...] = ()


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not obj:
        return {}
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return annotations if isinstance(annotations, Mapping) else {}


def decide_injection(
    pod: Mapping[str, Any], namespace: str, namespace_obj: Mapping[str, Any] | None, settings: Settings
) -> Skip | Denial | None:
    """None when the pod is to be injected; else why not (a Skip) or why it is refused (a Denial)."""
    pod_annotations = annotations_of(pod)
    if settings.is_excluded_namespace(namespace):
        warnings: tuple[str, ...] = ()
        if parse_bool(pod_annotations.get(ANNOTATION_INJECT)) is True:
            warnings = (
                f"{ANNOTATION_INJECT}: Ferry never injects in namespace {namespace}; this pod starts without secrets",
            )
        return Skip("excluded-namespace", warnings)
    unknown = unknown_keys(pod_annotations, POD_ANNOTATIONS)
    if unknown:
        return Denial("unknown-annotation", unknown)
    pod_value = pod_annotations.get(ANNOTATION_INJECT)
    if pod_value is not None:
        decision = parse_bool(pod_value)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'{ANNOTATION_INJECT}: {pod_value!r} must be "true" or "false"',
            )
        return None if decision else Skip("opted-out")
    ns_value = annotations_of(namespace_obj).get(ANNOTATION_INJECT) if is_opted_in_namespace(namespace_obj) else None
    if ns_value is not None:
        decision = parse_bool(ns_value)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'namespace {namespace} annotation {ANNOTATION_INJECT}: {ns_value!r} must be "true" or "false"; '
                f"fix the namespace, or set {ANNOTATION_INJECT} on the pod",
            )
        if decision:
            if not names_secrets(pod_annotations) and not value_of(
                annotations_of(namespace_obj), ANNOTATION_SECRET_PROVIDER_CLASS
            ):
                # Namespace-wide opt-in, but nothing to fetch: this pod did not ask for secrets.
                return Skip("nothing-named")
            return None
    leftovers = [key for key in pod_annotations if key.startswith(ANNOTATION_PREFIX)]
    if leftovers:
        listed = ", ".join(short(key) for key in heapq.nsmallest(MAX_REPORTED_KEYS, leftovers))
        if len(leftovers) > MAX_REPORTED_KEYS:
            listed += f" and {len(leftovers) - MAX_REPORTED_KEYS} more"
        label_key, label_value = NAMESPACE_OPT_IN_LABEL
        actual = namespace_label(namespace_obj, label_key)
        if actual is not None and actual != label_value:
            hint = (
                f"; namespace {namespace}: label `{label_key}` is {short(actual, 63)!r}; it must be {label_value!r} "
                "for a namespace-wide opt-in"
            )
        elif ANNOTATION_INJECT in annotations_of(namespace_obj):
            hint = (
                f"; namespace {namespace} has the annotation but not the label {label_key}={label_value}, "
                "which a namespace-wide opt-in needs"
            )
        else:
            hint = ""
        return Skip(
            "not-requested",
            (
                f'{listed} set but {ANNOTATION_INJECT} is not "true" on the pod or its namespace'
                f"{hint}; this pod starts without secrets",
            ),
        )
    return Skip("not-requested")


def is_opted_in_namespace(namespace_obj: Mapping[str, Any] | None) -> bool:
    """True when the namespace carries the label that routes its pods to Ferry."""
    key, value = NAMESPACE_OPT_IN_LABEL
    return namespace_label(namespace_obj, key) == value


def namespace_label(namespace_obj: Mapping[str, Any] | None, key: str) -> str | None:
    meta = (namespace_obj or {}).get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    value = labels.get(key) if isinstance(labels, Mapping) else None
    return str(value) if value is not None else None


def status_of(pod: Mapping[str, Any]) -> str | None:
    return annotations_of(pod).get(ANNOTATION_STATUS)


# Unknown ferry.dev/ keys named in a denial, each with a suggestion; past that they are only counted, so a pod
# with 90,000 of them costs a count, not 90,000 fuzzy searches.
MAX_REPORTED_KEYS = 5
# An annotation key is a qualified name: a 253-character prefix, a slash and a 63-character name.
MAX_ANNOTATION_KEY_CHARS = 317


def unknown_keys(annotations: Mapping[str, str], known: frozenset[str]) -> str:
    """One message for the ``ferry.dev/`` keys that are not in `known`, with the closest known key for the first few."""
    unknown = [key for key in annotations if key.startswith(ANNOTATION_PREFIX) and key not in known]
    if not unknown:
        return ""
    shown = heapq.nsmallest(MAX_REPORTED_KEYS, unknown)
    known_sorted = sorted(known)
    problems = []
    for key in shown:
        fits = len(key) <= MAX_ANNOTATION_KEY_CHARS
        close = difflib.get_close_matches(key, known_sorted, n=1, cutoff=0.7) if fits else []
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known_sorted)}"
        problems.append(f"{short(key)}: is not a Ferry annotation; {hint}")
    if len(unknown) > MAX_REPORTED_KEYS:
        more = len(unknown) - MAX_REPORTED_KEYS
        problems.append(f"and {more} more {ANNOTATION_PREFIX} keys that Ferry does not know")
    return "; ".join(problems)


def short(text: str, limit: int = 100) -> str:
    """A user's key or name, cut to `limit` characters, for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def names_secrets(annotations: Mapping[str, str]) -> bool:
    return ANNOTATION_OBJECTS in annotations or bool(value_of(annotations, ANNOTATION_SECRET_PROVIDER_CLASS))


def parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = str(value).strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def value_of(mapping: Mapping[str, Any], key: str) -> str | None:
    """The annotation's value stripped of blanks; None when absent or blank."""
    value = mapping.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None
