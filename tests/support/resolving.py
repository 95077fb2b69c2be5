"""Helpers for tests of the admission stages: an SPC lookup over given classes, the whole pipeline for a read
request, the stages up to the spec, result unwrapping, and the injected pod for a resolved request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from webhook.policy.containers import build_parts
from webhook.policy.decide import Denial, decide_injection
from webhook.policy.identity import pod_identity
from webhook.policy.memo import cached_spec
from webhook.policy.mutate import mutate_pod
from webhook.policy.pipeline import Admission, admit_pod
from webhook.policy.podshape import check_pod_shape
from webhook.policy.request import PodRequest
from webhook.policy.resolve import resolve_spec
from webhook.policy.resources import ResourceFit
from webhook.policy.specbuild import ResolvedRequest, build_request
from webhook.settings import Settings


def lookup(*classes: Mapping[str, Any]) -> Callable[[str, str], Mapping[str, Any] | None]:
    """An SpcLookup that finds exactly these SecretProviderClasses, by (namespace, name)."""
    table = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in classes}
    return lambda ns, name: table.get((ns, name))


NO_CLASSES = lookup()  # an SpcLookup that finds no SecretProviderClass


def admit_request(
    request: PodRequest,
    settings: Settings,
    *,
    spc_lookup: Callable[[str, str], Mapping[str, Any] | None] = NO_CLASSES,
    native_sidecars: bool = True,
    **stages: Any,
) -> Admission:
    """Stage 1 (`decide_injection`) then `admit_pod` on its verdict, as the handler runs them; `stages` passes
    `admit_pod`'s other keywords (limit_ranges, parts_maker, ...). No SecretProviderClass unless `spc_lookup`."""
    verdict = decide_injection(request, settings)
    return admit_pod(
        request, verdict, spc_lookup=spc_lookup, settings=settings, native_sidecars=native_sidecars, **stages
    )


def resolve_pod(
    pod: Mapping[str, Any],
    namespace_obj: Mapping[str, Any] | None,
    spc_lookup: Callable[[str, str], Mapping[str, Any] | None],
    settings: Settings,
    *,
    namespace: str | None = None,
) -> ResolvedRequest | Denial:
    """Stages 2 to 4 (pod shape, resolve, build) for a pod that is to be injected, with admission's spec cache.

    The namespace is the test's: given, else the pod's or the namespace object's (the webhook takes it from the
    AdmissionRequest alone).
    """
    ns = namespace or (pod.get("metadata") or {}).get("namespace") or _name_of(namespace_obj) or "default"
    request = PodRequest.read(pod, ns, namespace_obj)
    shape = check_pod_shape(request, settings)
    if isinstance(shape, Denial):
        return shape
    resolution = resolve_spec(request, shape, spc_lookup, settings)
    if isinstance(resolution, Denial):
        return resolution
    return build_request(request, shape, resolution, cached_spec)


def inject_resolved(
    pod: Mapping[str, Any], request: ResolvedRequest, settings: Settings, namespace: str = "team-b"
) -> Mapping[str, Any]:
    """Stages 7 and 8 (Ferry's parts, placed in the pod) for a resolved request, with no pod-level resources."""
    pod_request = PodRequest.read(pod, namespace, None)
    parts = build_parts(request, pod_identity(pod_request.spec), settings)
    return mutate_pod(pod, request, parts, ResourceFit(None)).pod


def resolved(result: ResolvedRequest | Denial) -> ResolvedRequest:
    assert isinstance(result, ResolvedRequest), result
    return result


def denied(result: ResolvedRequest | Denial) -> Denial:
    assert isinstance(result, Denial), result
    return result


def _name_of(obj: Mapping[str, Any] | None) -> str | None:
    name = ((obj or {}).get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None
