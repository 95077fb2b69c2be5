"""The admission pipeline: an AdmissionRequest in, its encoded answer out, each stage called once, in order.

`/mutate` and `python -m webhook inject` both call `admit`, so they answer alike. The stages are pure and
share typed values; the caches around them (`webhook.policy.memo`) are applied here and nowhere else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from fetcher.spec import bounded
from webhook.policy import memo as caches
from webhook.policy.decide import Denial, Reinvocation, Skip, decide_injection
from webhook.policy.memo import AdmissionMemo, RecordingLookup, pod_key
from webhook.policy.mutate import mutate_pod, refresh_own_identity
from webhook.policy.patch import Differ, diff_documents, make_pod_patch
from webhook.policy.podshape import check_pod_shape
from webhook.policy.request import PodRequest
from webhook.policy.resolve import SpcLookup, resolve_spec
from webhook.policy.resources import check_limit_ranges
from webhook.policy.review import AdmissionRequest, MalformedReview, build_response
from webhook.policy.specbuild import SpecMaker, build_request, make_spec
from webhook.policy.view import ClusterView
from webhook.settings import Settings

Outcome = Literal["injected", "skipped", "denied", "reinvoked"]

NOT_A_POD_CREATE = "not-a-pod-create"
NOT_READY_MESSAGE = "Ferry has not finished reading namespaces and SecretProviderClasses yet; retry shortly"


@dataclass(frozen=True)
class Admission:
    """What the policy decided for one pod, before it is encoded."""

    outcome: Outcome
    # Short label for logs and metrics: the skip or denial reason, or the sidecar mode.
    reason: str
    # The pod to admit; the input itself when nothing changes.
    pod: Mapping[str, Any]
    message: str | None = None
    warnings: tuple[str, ...] = ()
    # Where the objects came from (a SecretProviderClass or the annotation); never a value.
    source: str | None = None
    # The JSONPatch from the pod as sent to `pod`.
    patch: list[dict[str, Any]] = field(default_factory=list)


class Decision(NamedTuple):
    """The finished answer to one AdmissionRequest, without its uid: what the memo keeps for identical pods.

    A NamedTuple rather than a frozen dataclass: as immutable, and made once per admission at a third of the cost.
    """

    outcome: Outcome
    reason: str
    namespace: str
    # The log line's fields (outcome, reason, source, counts); never a value.
    log_fields: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    # The denial's message; None unless denied.
    message: str | None = None
    # The encoded AdmissionReview, split where the uid goes: a remembered answer is not encoded again.
    head: bytes = b""
    tail: bytes = b""
    # The cluster view knows the namespace (metrics label every other one "unknown": a forged review names any).
    known_namespace: bool = False

    def encode(self, uid: str) -> bytes:
        """The AdmissionReview response for the request with this uid, as JSON bytes."""
        return self.head + json.dumps(uid).encode() + self.tail

    def patch(self) -> list[dict[str, Any]]:
        """The JSONPatch ops, read back from the encoded answer: a remembered Decision holds only bytes."""
        response = json.loads(self.encode(""))["response"]
        if "patch" not in response:
            return []
        ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
        return ops


def admit(
    request: AdmissionRequest,
    view: ClusterView,
    settings: Settings,
    *,
    native_sidecars: bool,
    memo: AdmissionMemo[Decision] | None = None,
) -> Decision:
    """Skip, deny, inject or refresh the pod in `request`; raises MalformedReview for a pod CREATE without a pod.

    The caches sit around the pipeline here: the whole answer (`memo`, for identical pods) and the spec.
    """
    kind = request["kind"]
    namespace = request.get("namespace") or ""
    if (
        kind.get("group") != ""
        or kind.get("kind") != "Pod"
        or request["operation"] != "CREATE"
        or request.get("subResource")
    ):
        # Only pod CREATE is configured; anything else is passed through untouched.
        skipped = Admission("skipped", NOT_A_POD_CREATE, {})
        return _encoded(skipped, None, namespace, known=_knows(view, namespace))
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object is missing for a pod CREATE")
    if not namespace:
        # The API server always names the namespace of a pod CREATE. Falling back to the pod's own
        # metadata.namespace would let any caller of /mutate pick a namespace and read its classes back.
        raise MalformedReview("request.namespace is missing for a pod CREATE; the API server always sends it")
    namespace_obj = view.namespace(namespace)
    limit_ranges = view.limit_ranges(namespace)
    key = pod_key(namespace, pod) if memo is not None else b""
    if memo is not None:
        remembered = memo.recall(key, namespace_obj, view.secret_provider_class, limit_ranges)
        if remembered is not None:
            return remembered
    lookup = RecordingLookup(view.secret_provider_class)
    admission = admit_pod(
        pod,
        namespace=namespace,
        namespace_obj=namespace_obj,
        spc_lookup=lookup,
        settings=settings,
        native_sidecars=native_sidecars,
        limit_ranges=limit_ranges,
        spec_maker=caches.cached_spec,
        differ=caches.cached_diff,
    )
    ready = view.is_ready()
    if admission.outcome in ("injected", "denied") and not ready:
        # Before the first list the view is empty: an SPC "not found" would be a lie. Readiness
        # keeps traffic away then; this covers a request that arrives anyway.
        admission = Admission("denied", "not-ready", pod, message=NOT_READY_MESSAGE)
    decision = _encoded(admission, pod, namespace, known=namespace_obj is not None)
    if memo is not None and ready and decision.outcome != "denied":
        # Denials are not remembered: they are rare, cheap to make again, and a hostile pod's denial must
        # not stay resident. What is remembered is bounded in bytes by the memo.
        memo.remember(
            key, decision, namespace_obj, lookup.read, limit_ranges, size=len(decision.head) + len(decision.tail)
        )
    return decision


def admit_pod(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_obj: Mapping[str, Any] | None,
    spc_lookup: SpcLookup,
    settings: Settings,
    native_sidecars: bool,
    limit_ranges: Sequence[Mapping[str, Any]] = (),
    spec_maker: SpecMaker = make_spec,
    differ: Differ = diff_documents,
) -> Admission:
    """The policy for one pod (a CREATE in `namespace`): read once, then each stage once, in order."""
    request = PodRequest.read(pod, namespace, namespace_obj)
    verdict = decide_injection(request, settings)  # 1. inject at all?
    if verdict is not None:
        return _not_injected(request, verdict, differ)
    shape = check_pod_shape(request, settings)  # 2. room for Ferry in this pod?
    if isinstance(shape, Denial):
        return _denied(request, shape)
    resolution = resolve_spec(request, shape, spc_lookup, settings)  # 3. which values win
    if isinstance(resolution, Denial):
        return _denied(request, resolution)
    resolved = build_request(request, shape, resolution, spec_maker)  # 4. the spec, validated
    if isinstance(resolved, Denial):
        return _denied(request, resolved)
    outside_limits = check_limit_ranges(limit_ranges, settings, namespace)  # 5. inside the LimitRanges?
    if outside_limits:
        return _denied(request, Denial("limit-range", outside_limits))
    mutation = mutate_pod(request, resolved, settings, native_sidecars=native_sidecars)  # 6. the injected pod
    patch = make_pod_patch(pod, mutation.pod, mutation.ops, diff=differ)  # 7. the JSONPatch
    return Admission(
        "injected", f"sidecar-{mutation.mode}", mutation.pod, None, mutation.warnings, resolved.source, patch
    )


def _not_injected(request: PodRequest, verdict: Skip | Denial | Reinvocation, differ: Differ) -> Admission:
    if isinstance(verdict, Reinvocation):
        refreshed = refresh_own_identity(request.pod)
        patch = make_pod_patch(request.pod, refreshed, diff=differ)
        return Admission("reinvoked", "identity-refreshed", refreshed, patch=patch)
    if isinstance(verdict, Skip):
        return Admission("skipped", verdict.reason, request.pod, warnings=verdict.warnings)
    return _denied(request, verdict)


def _denied(request: PodRequest, denial: Denial) -> Admission:
    return Admission("denied", denial.reason, request.pod, message=denial.message)


def _knows(view: ClusterView, namespace: str) -> bool:
    """Whether the view knows this namespace; a view that cannot answer knows nothing."""
    try:
        return bool(namespace) and view.namespace(namespace) is not None
    except Exception:
        return False


def _encoded(admission: Admission, pod: Mapping[str, Any] | None, namespace: str, *, known: bool) -> Decision:
    """The Decision for an Admission of `pod` (None: not a pod CREATE): the patch made once, encoded once."""
    fields: dict[str, Any] = {"outcome": admission.outcome, "reason": admission.reason}
    if admission.source:
        fields["source"] = admission.source
    if admission.warnings:
        fields["warnings"] = len(admission.warnings)
    if admission.outcome == "denied":
        response = build_response(
            "", allowed=False, code=403, reason="Forbidden", message=bounded(admission.message or "")
        )
    else:
        if pod is not None:
            fields["patchOps"] = len(admission.patch)
        response = build_response("", patch=admission.patch, warnings=admission.warnings)
    encoded = json.dumps(response, separators=(",", ":")).encode()
    # "uid" is the first key of "response", and any other `"uid":""` in a message would be escaped.
    split = encoded.index(_EMPTY_UID) + len(_EMPTY_UID) - 2
    return Decision(
        admission.outcome,
        admission.reason,
        namespace,
        fields,
        admission.warnings,
        bounded(admission.message or "") if admission.outcome == "denied" else None,
        encoded[:split],
        encoded[split + 2 :],
        known,
    )


_EMPTY_UID = b'"uid":""'
