"""One admission: an AdmissionRequest in, its encoded answer out, with the caches around the pipeline.

`/mutate` and `python -m webhook inject` both call `admit`, so they answer alike.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from fetcher.contract import bounded
from webhook.policy import memo as caches
from webhook.policy.decide import decide_injection
from webhook.policy.memo import AdmissionMemo, RecordingLookup, pod_key
from webhook.policy.pipeline import Admission, Outcome, admit_pod
from webhook.policy.podtypes import pod_type_problem
from webhook.policy.request import PodRequest
from webhook.policy.review import AdmissionRequest, MalformedReview, encode_answer
from webhook.policy.view import ClusterView
from webhook.settings import Settings

NOT_A_POD_CREATE = "not-a-pod-create"
NOT_READY_MESSAGE = "Ferry has not finished reading namespaces and SecretProviderClasses yet; retry shortly"


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
    from_api_server: bool = True,
) -> Decision:
    """Skip, deny, inject or refresh the pod in `request`; raises MalformedReview for a pod CREATE without a pod.

    Around the pipeline: the whole-answer memo for identical pods, and the spec and diff caches.
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
        try:
            known = bool(namespace) and view.namespace(namespace) is not None
        except Exception:  # a view that cannot answer knows nothing
            known = False
        return _NOT_A_POD_CREATE._replace(namespace=namespace, known_namespace=known)
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object is missing for a pod CREATE")
    if not namespace:
        # The API server always names the namespace of a pod CREATE. Falling back to the pod's own
        # metadata.namespace would let any caller of /mutate pick a namespace and read its classes back.
        raise MalformedReview("request.namespace is missing for a pod CREATE; the API server always sends it")
    namespace_obj = view.namespace(namespace)
    limit_ranges = view.limit_ranges(namespace)
    account_name = service_account_name(pod)
    # The pod's ServiceAccount's Google service account, from views that keep ServiceAccounts (GCP installs).
    read_ksa = getattr(view, "gke_service_account", None)
    ksa = read_ksa(namespace, account_name, may_get=False) if read_ksa is not None else None
    key = b""
    if memo is not None and (ksa is None or ksa.settled):
        # Asked first, of the pod as sent: the key holds every part a stage reads, with its JSON types, and
        # only pods that passed every check are remembered, so a hit needs neither the checks nor the reading.
        key = pod_key(pod, namespace, ksa)
        remembered = memo.recall(key, namespace_obj, view.secret_provider_class, limit_ranges)
        if remembered is not None:
            return remembered
    problem = pod_type_problem(pod)  # a forged pod's fields of the wrong JSON type, before any stage reads them
    lookup = RecordingLookup(view.secret_provider_class)
    if problem is not None:
        invalid = f"the pod is not a valid Pod: {problem}; only a pod the API server accepts can be admitted"
        admission = Admission("denied", "invalid-pod", pod, message=invalid)
    else:
        pod_request = PodRequest.read(pod, namespace, namespace_obj)
        verdict = decide_injection(pod_request, settings)  # stage 1, decided once: it also gates the GET below
        # A ServiceAccount the view has not read yet costs a GET of the cluster-wide budget only for a pod Ferry
        # injects, in a review from the API server (when its addresses are known): a forged review naming
        # made-up accounts must not spend other tenants' reads.
        if read_ksa is not None and ksa is not None and not ksa.settled and from_api_server and verdict is None:
            ksa = read_ksa(namespace, account_name)  # a miss: the GET, for this one pod
        if ksa is not None:
            pod_request = pod_request._replace(ksa=ksa)
        admission = admit_pod(
            pod_request,
            verdict,
            spc_lookup=lookup,
            settings=settings,
            native_sidecars=native_sidecars,
            limit_ranges=limit_ranges,
            spec_maker=caches.cached_spec,
            differ=caches.cached_diff,
            parts_maker=caches.cached_parts,
        )
    ready = view.is_ready()
    if admission.outcome in ("injected", "denied") and not ready:
        # Before the first list the view is empty: an SPC "not found" would be a lie. Readiness
        # keeps traffic away then; this covers a request that arrives anyway.
        admission = Admission("denied", "not-ready", pod, message=NOT_READY_MESSAGE)
    # Encoded once, here: the log fields, and the answer split where the uid goes.
    denied = admission.outcome == "denied"
    message = bounded(admission.message or "") if denied else None
    fields: dict[str, Any] = {"outcome": admission.outcome, "reason": admission.reason}
    if admission.source:
        fields["source"] = admission.source
    if admission.warnings:
        fields["warnings"] = len(admission.warnings)
    if not denied:
        fields["patchOps"] = len(admission.patch)
    head, tail = encode_answer(denied=denied, message=message or "", warnings=admission.warnings, patch=admission.patch)
    decision = Decision(
        admission.outcome,
        admission.reason,
        namespace,
        fields,
        admission.warnings,
        message,
        head,
        tail,
        namespace_obj is not None,
    )
    keep = ready and from_api_server and decision.outcome != "denied" and (ksa is None or ksa.settled)
    if memo is not None and keep:
        # Denials are not remembered: they are rare, cheap to make again, and a hostile pod's denial must
        # not stay resident (nor can a pod that fails the type check be). What is remembered is bounded in
        # bytes by the memo. Nor is an answer made with a ServiceAccount unread for now: it may change once read.
        # Nor a review from outside FERRY_API_SERVER_ADDRESSES (when set): it is answered, from the memo too,
        # but forged reviews of ever-new pods must not push the API server's replicas out of it.
        memo.remember(
            key or pod_key(pod, namespace, ksa),  # made here when the ServiceAccount was read for this pod
            decision,
            namespace_obj,
            lookup.read,
            limit_ranges,
            size=len(decision.head) + len(decision.tail),
        )
    return decision


def service_account_name(pod: Mapping[str, Any]) -> str:
    """The pod's spec.serviceAccountName, as the API server defaults it ("default"). Never raises."""
    spec = pod.get("spec")
    name = spec.get("serviceAccountName") if isinstance(spec, dict) else None
    return name if isinstance(name, str) and name else "default"


_NOT_A_POD_CREATE = Decision(
    "skipped",
    NOT_A_POD_CREATE,
    "",
    {"outcome": "skipped", "reason": NOT_A_POD_CREATE},
    (),
    None,
    *encode_answer(denied=False, message="", warnings=(), patch=()),
)
