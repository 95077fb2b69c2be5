"""Stage 1: should this pod be injected? Its answer is None (inject), a Skip (allowed unchanged) or a Denial."""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from fetcher.contract import (
    ANNOTATION_AWS_ENDPOINTS,
    ANNOTATION_FAILOVER_REGION,
    ANNOTATION_GCP_IDENTITY_PROVIDER,
    ANNOTATION_GCP_SERVICE_ACCOUNT,
    ANNOTATION_GCP_WORKLOAD_POOL,
    ANNOTATION_INJECT,
    ANNOTATION_KEYS,
    ANNOTATION_OUTPUT_FORMATS,
    ANNOTATION_PREFIX,
    ANNOTATION_REFRESH_INTERVAL,
    ANNOTATION_REGION,
    ANNOTATION_SECRET_PROVIDER_CLASS,
    ANNOTATION_STATUS,
    STATUS_INJECTED,
    bounded,
    quote,
)
from webhook.policy.request import NAMESPACE_OPT_IN_LABEL, PodRequest
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
        ANNOTATION_AWS_ENDPOINTS,
    }
)
POD_ANNOTATIONS = frozenset(ANNOTATION_KEYS)


@dataclass(frozen=True)
class Denial:
    """An invalid request: `allowed: false` with a message that says what to fix."""

    # Short, bounded label for metrics ("invalid-spec", "missing-secret-provider-class", ...).
    reason: str
    message: str


@dataclass(frozen=True)
class Reinvocation:
    """A pod Ferry injected, seen again (reinvocationPolicy: IfNeeded): only its identity is brought up to date."""


@dataclass(frozen=True)
class Skip:
    """Not injected, and allowed unchanged."""

    reason: str
    warnings: tuple[str, ...] = ()


# Stage 1's answer: None (inject), a Skip, a Denial, or a Reinvocation.
Verdict = Skip | Denial | Reinvocation | None


def decide_injection(request: PodRequest, settings: Settings) -> Verdict:
    """None when the pod is to be injected; else why not (a Skip) or why it is refused (a Denial)."""
    pod, ns, namespace = request.annotations, request.namespace_annotations, request.namespace
    if settings.is_excluded_namespace(namespace):
        warnings: tuple[str, ...] = ()
        if parse_bool(pod.inject) is True:
            warnings = (
                f"{ANNOTATION_INJECT}: Ferry never injects in namespace {namespace}; this pod starts without secrets",
            )
        return Skip("excluded-namespace", warnings)
    if pod.status is not None:
        if pod.status != STATUS_INJECTED:
            return Denial(
                "invalid-annotation",
                f"{ANNOTATION_STATUS}: {quote(pod.status)} is written by Ferry (only {STATUS_INJECTED!r}); remove it",
            )
        if request.has_own_containers:
            return Reinvocation()
        # Written by hand on a pod Ferry never saw (copied from an injected pod, say): it proves nothing, so
        # the pod is decided like any other; if it asked for secrets, it gets them or is refused.
    unknown = unknown_keys(pod.keys, POD_ANNOTATIONS)
    if unknown:
        return Denial("unknown-annotation", unknown)
    if pod.inject is not None:
        decision = parse_bool(pod.inject)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'{ANNOTATION_INJECT}: {pod.inject!r} must be "true" or "false"',
            )
        return None if decision else Skip("opted-out")
    ns_value = ns.inject if request.namespace_opted_in else None
    if ns_value is not None:
        decision = parse_bool(ns_value)
        if decision is None:
            return Denial(
                "invalid-annotation",
                f'namespace {namespace} annotation {ANNOTATION_INJECT}: {ns_value!r} must be "true" or "false"; '
                f"fix the namespace, or set {ANNOTATION_INJECT} on the pod",
            )
        if decision:
            if pod.objects is None and not pod.secret_provider_class and not ns.secret_provider_class:
                # Namespace-wide opt-in, but nothing to fetch: this pod did not ask for secrets.
                return Skip("nothing-named")
            return None
    if pod.keys:
        shown = heapq.nsmallest(MAX_REPORTED_KEYS, pod.keys)
        listed = ", ".join(bounded(key, MAX_KEY_CHARS_SHOWN) for key in shown)
        if len(pod.keys) > MAX_REPORTED_KEYS:
            listed += f" and {len(pod.keys) - MAX_REPORTED_KEYS} more"
        label_key, label_value = NAMESPACE_OPT_IN_LABEL
        actual = request.namespace_inject_label
        if actual is not None and actual != label_value:
            hint = (
                f"; namespace {namespace}: label `{label_key}` is {bounded(actual, 63)!r}; it must be "
                f"{label_value!r} for a namespace-wide opt-in"
            )
        elif ns.inject is not None:
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


# Unknown ferry.dev/ keys named in a denial, each with a suggestion; past that they are only counted, so a pod
# with 90,000 of them costs a count, not 90,000 fuzzy searches.
MAX_REPORTED_KEYS = 5
# A key is echoed in a message up to this many characters.
MAX_KEY_CHARS_SHOWN = 100
# An annotation key is a qualified name: a 253-character prefix, a slash and a 63-character name.
MAX_ANNOTATION_KEY_CHARS = 317


def unknown_keys(keys: Iterable[str], known: frozenset[str]) -> str:
    """One message for the ``ferry.dev/`` keys that are not in `known`, with the closest known key for the first few."""
    unknown = [key for key in keys if key not in known]
    if not unknown:
        return ""
    shown = heapq.nsmallest(MAX_REPORTED_KEYS, unknown)
    known_sorted = sorted(known)
    problems = []
    for key in shown:
        fits = len(key) <= MAX_ANNOTATION_KEY_CHARS
        close = difflib.get_close_matches(key, known_sorted, n=1, cutoff=0.7) if fits else []
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known_sorted)}"
        problems.append(f"{bounded(key, MAX_KEY_CHARS_SHOWN)}: is not a Ferry annotation; {hint}")
    if len(unknown) > MAX_REPORTED_KEYS:
        more = len(unknown) - MAX_REPORTED_KEYS
        problems.append(f"and {more} more {ANNOTATION_PREFIX} keys that Ferry does not know")
    return "; ".join(problems)


def parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = str(value).strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None
