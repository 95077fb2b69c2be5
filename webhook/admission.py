"""One admission, start to finish: an AdmissionRequest and the cluster view in, the finished answer out.

Why it exists: `/mutate` and `python -m webhook inject` must give the same
answer for the same pod, so both call `admit`; the HTTP layer only moves bytes,
records metrics and logs. Following one request goes down the layers and back
once:

    admit ─ decide.decide_injection   inject? (annotations, namespace, exclusions)
          ─ resolve.resolve_spec      pod ∪ SecretProviderClass ∪ namespace ∪ defaults → FetchSpec
                                      (podshape: OS, mount path, containers, reserved names, file owner)
          ─ resources.check_limit_ranges  Ferry's containers inside the namespace's LimitRanges
          ─ mutate.plan_sidecar       which sidecar, once
          ─ mutate.mutate_pod         the injected pod (containers.py builds Ferry's containers)
          ─ sizing.size_for_platform  Ferry's requests fitted to Fargate / Autopilot (also on reinvocation)
          ─ patch.make_pod_patch      the JSONPatch from the pod as sent
          → Decision                  outcome, reason, patch, warnings or denial, encoded once

Every decision is made once per pod. Replicas are answered from the memo
(`webhook.memo.AdmissionMemo`) when one is given.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from fetcher.spec import ANNOTATION_STATUS, STATUS_INJECTED, bounded, quote
from webhook.decide import Denial, Skip, decide_injection, status_of
from webhook.memo import AdmissionMemo, RecordingLookup, pod_key
from webhook.mutate import has_own_containers, mutate_pod, plan_sidecar, refresh_own_identity
from webhook.patch import make_pod_patch
from webhook.resolve import SpcLookup, resolve_spec
from webhook.resources import check_limit_ranges
from webhook.review import AdmissionRequest, MalformedReview, build_response
from webhook.settings import Settings
from webhook.sizing import platform_settings, size_for_platform
from webhook.view import ClusterView

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
    pod: dict[str, Any]
    message: str | None = None
    warnings: tuple[str, ...] = ()
    # Where the objects came from (a SecretProviderClass or the annotation); never a value.
    source: str | None = None


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
    """Skip, deny, inject or refresh the pod in `request`; raises MalformedReview for a pod CREATE without a pod."""
    kind = request["kind"]
    if (
        kind.get("group") != ""
        or kind.get("kind") != "Pod"
        or request["operation"] != "CREATE"
        or request.get("subResource")
    ):
        # Only pod CREATE is configured; anything else is passed through untouched.
        return _encoded(Admission("skipped", NOT_A_POD_CREATE, {}), None, request.get("namespace") or "")
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object is missing for a pod CREATE")
    namespace = request.get("namespace")
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
    )
    ready = view.is_ready()
    if admission.outcome in ("injected", "denied") and not ready:
        # Before the first list the view is empty: an SPC "not found" would be a lie. Readiness
        # keeps traffic away then; this covers a request that arrives anyway.
        admission = Admission("denied", "not-ready", pod, message=NOT_READY_MESSAGE)
    decision = _encoded(admission, pod, namespace)
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
) -> Admission:
    """The policy for one pod (a CREATE in `namespace`): each question asked once, in order."""
    original = pod if isinstance(pod, dict) else dict(pod)
    settings = platform_settings(settings)  # Ferry's requests as Autopilot takes them, when configured
    excluded = settings.is_excluded_namespace(namespace)
    status = None if excluded else status_of(pod)
    if status is not None:
        if status != STATUS_INJECTED:
            return Admission(
                "denied",
                "invalid-annotation",
                original,
                message=f"{ANNOTATION_STATUS}: {quote(status)} is written by Ferry "
                f"(only {STATUS_INJECTED!r}); remove it",
            )
        if has_own_containers(pod):
            # Reinvoked after a later webhook: the Fargate webhook's schedulerName, or a stripped sidecar.
            sized = size_for_platform(refresh_own_identity(original), settings, limit_ranges)
            if sized.denial:
                return Admission("denied", "platform-sizing", original, message=sized.denial)
            return Admission("reinvoked", "identity-refreshed", sized.pod, warnings=sized.warnings)
        # Written by hand on a pod Ferry never saw (copied from an injected pod, say): it proves nothing, so
        # the pod is decided like any other; if it asked for secrets, it gets them or is refused.
    decision = decide_injection(pod, namespace, namespace_obj, settings)
    if isinstance(decision, Skip):
        return Admission("skipped", decision.reason, original, warnings=decision.warnings)
    if isinstance(decision, Denial):
        return Admission("denied", decision.reason, original, message=decision.message)
    resolved = resolve_spec(pod, namespace_obj, spc_lookup, settings, namespace=namespace)
    if isinstance(resolved, Denial):
        return Admission("denied", resolved.reason, original, message=resolved.message)
    outside_limits = check_limit_ranges(limit_ranges, settings, namespace)
    if outside_limits:
        return Admission("denied", "limit-range", original, message=outside_limits)
    mode, sidecar_warning = plan_sidecar(pod, resolved, native_sidecars)
    sized = size_for_platform(mutate_pod(pod, resolved, settings, mode), settings, limit_ranges)
    if sized.denial:
        return Admission("denied", "platform-sizing", original, message=sized.denial)
    return Admission(
        "injected",
        f"sidecar-{mode}",
        sized.pod,
        warnings=resolved.warnings + ((sidecar_warning,) if sidecar_warning else ()) + sized.warnings,
        source=resolved.source,
    )


def _encoded(admission: Admission, pod: Mapping[str, Any] | None, namespace: str) -> Decision:
    """The Decision for an Admission of `pod` (None: not a pod CREATE): the patch made once, encoded once."""
    fields: dict[str, Any] = {"outcome": admission.outcome, "reason": admission.reason}
    if admission.source:
        fields["source"] = admission.source
    if admission.warnings:
        fields["warnings"] = len(admission.warnings)
    patch: list[dict[str, Any]] = []
    if admission.outcome == "denied":
        response = build_response(
            "", allowed=False, code=403, reason="Forbidden", message=bounded(admission.message or "")
        )
    else:
        if pod is not None:
            patch = make_pod_patch(pod, admission.pod) if admission.pod is not pod else []
            fields["patchOps"] = len(patch)
        response = build_response("", patch=patch, warnings=admission.warnings)
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
    )


_EMPTY_UID = b'"uid":""'
