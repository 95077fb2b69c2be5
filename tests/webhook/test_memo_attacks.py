"""Attacks on the whole-answer memo asked first, of the pod as sent (webhook/policy/admission.py `admit`).

A hostile tenant posts forged reviews naming any namespace, pod shape and ServiceAccount; each test here was
written against a weakness found that way, and failed before its fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fetcher.contract.gcp import KsaAnnotation
from tests.support.pods import make_pod
from tests.support.reviews import pod_create_review
from tests.webhook.test_gcp_admission import GKE
from tests.webhook.test_ksa_identity import AccountsView
from webhook.edge.app import AdmissionHandler
from webhook.edge.metrics import AdmissionMetrics
from webhook.settings import Settings

AWS_OBJECTS = "- objectName: prod/db\n  objectType: secretsmanager\n"


class _UnreadAccountsView(AccountsView):
    """A GKE install's view whose ServiceAccount watch has not delivered the pod's account, and whose GET fails."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def gke_service_account(self, namespace: str, name: str, *, may_get: bool = True) -> KsaAnnotation:
        if may_get:
            self.gets += 1
            return KsaAnnotation(name, None, "Ferry could not read it (the API server did not answer); retry")
        return KsaAnnotation(name, None, "Ferry could not read it (its watch has not delivered it yet); retry")


def test_an_answer_made_with_a_service_account_still_unread_after_its_get_is_not_remembered() -> None:
    """A failed (or rate-limited) GET leaves the ServiceAccount unread: the memo is never asked with such a key,
    so an entry under it could only push out the answers other tenants' replicas are served from."""
    view = _UnreadAccountsView()
    handler = AdmissionHandler(GKE, view, True, AdmissionMetrics())
    for index in range(5):
        annotations = {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1", "ferry.dev/objects": AWS_OBJECTS}
        pod = make_pod({**annotations, "team/rev": str(index)}, namespace="apps")
        status, body = handler.handle(json.dumps(pod_create_review(pod, namespace="apps")).encode())
        assert status == 200 and json.loads(body)["response"]["allowed"], body  # an AWS pod: admitted
    assert view.gets == 5, "not vacuous: each pod took the GET path, and the GET left the account unread"
    assert len(handler.memo) == 0, "entries no request can recall"


def test_forged_reviews_cannot_push_the_api_servers_answers_out_of_the_memo() -> None:
    """With FERRY_API_SERVER_ADDRESSES set, a review from elsewhere is answered but not remembered: a tenant
    posting forged reviews of ever-new pods (any pod can) would otherwise evict every tenant's replicas."""
    from tests.webhook.test_memo import MutableView
    from webhook.policy.memo import MAX_ENTRIES

    settings = Settings.from_env({"FERRY_API_SERVER_ADDRESSES": "10.0.0.0/24"})
    handler = AdmissionHandler(settings, MutableView(), True, AdmissionMetrics())
    annotations = {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1", "ferry.dev/objects": AWS_OBJECTS}

    def post(pod: dict[str, Any], peer: str) -> None:
        status, body = handler.handle(json.dumps(pod_create_review(pod, namespace="apps")).encode(), peer=peer)
        assert status == 200 and json.loads(body)["response"]["allowed"], body

    replica = make_pod(annotations, namespace="apps")
    post(replica, "10.0.0.7")  # the API server: remembered
    for index in range(MAX_ENTRIES + 10):
        post(make_pod({**annotations, "churn": str(index)}, namespace="apps"), "10.0.1.9")
    hits = handler.memo.hits
    post(replica, "10.0.0.7")
    assert handler.memo.hits == hits + 1, "the API server's replica must still be answered from the memo"
    assert len(handler.memo) == 1


class _EditedClassView:
    """A view whose SecretProviderClass a tenant rewrites between admissions, as the watch cache replaces it."""

    def __init__(self) -> None:
        self.namespace_obj = {"metadata": {"name": "apps", "resourceVersion": "1"}}
        self.spc: Mapping[str, Any] = {}
        self.version = 0

    def rewrite(self, padding_bytes: int) -> None:
        self.version += 1
        self.spc = {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "db", "namespace": "apps", "resourceVersion": str(self.version)},
            "spec": {
                "provider": "aws",
                # Parsed afresh from each watch event: a string of its own, as json.loads makes one.
                "parameters": {"region": "eu-west-1", "objects": AWS_OBJECTS, "padding": "x" * padding_bytes + "."},
            },
        }

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self.namespace_obj if name == "apps" else None

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.spc if (namespace, name) == ("apps", "db") else None

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return ()

    def is_ready(self) -> bool:
        return True


def test_remembered_answers_cannot_pin_every_old_version_of_a_rewritten_class() -> None:
    """An entry keeps the objects it was made from (to see them change). A tenant who rewrites a large class
    before each of its pods (distinct annotations, so distinct entries) made the memo hold every old version,
    outside the view's bound and the memo's: the memo's byte bound must count what its entries keep alive."""
    import gc
    import tracemalloc

    from webhook.policy.memo import AdmissionMemo

    view = _EditedClassView()
    handler = AdmissionHandler(Settings(), view, True, AdmissionMetrics())
    bound = 2 * 1024 * 1024
    handler.memo = AdmissionMemo(max_bytes=bound)
    annotations = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(40):
            view.rewrite(200 * 1024)
            pod = make_pod({**annotations, "rev": str(index)}, namespace="apps")
            status, body = handler.handle(json.dumps(pod_create_review(pod, namespace="apps")).encode())
            assert status == 200 and json.loads(body)["response"]["allowed"], body
        view.rewrite(0)  # the view lets the last large version go
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(handler.memo) >= 1, "not vacuous: the pods were remembered"
    assert held < 2 * bound, f"the memo keeps {held // 1024} KiB alive, over its {bound // 1024} KiB bound"


def test_the_spec_cache_bound_counts_its_keys_not_only_the_specs() -> None:
    """The spec cache was keyed by the class's whole marshalled content, outside its byte bound: one large class
    and forged reviews of pods that each override one option (here the refresh interval) kept a quarter MB per
    entry, 512 entries, while the bound counted a few hundred bytes of spec JSON each."""
    import gc
    import tracemalloc

    from webhook.policy import memo

    view = _EditedClassView()
    view.rewrite(250 * 1024)
    handler = AdmissionHandler(Settings(), view, True, AdmissionMetrics())
    memo.clear_caches()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(40):
            annotations = {
                "ferry.dev/inject": "true",
                "ferry.dev/secret-provider-class": "db",
                "ferry.dev/refresh-interval": f"{120 + index}s",
            }
            pod = make_pod(annotations, namespace="apps")
            body = json.dumps(pod_create_review(pod, namespace="apps")).encode()
            status, answer = handler.handle(body, memoize=False)  # the spec cache alone
            assert status == 200 and json.loads(answer)["response"]["allowed"], answer
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    try:
        assert memo.cache_stats()["specs"][2] >= 1, "not vacuous: the specs were kept"
        assert held < memo.MAX_SPECS_BYTES, f"the spec cache keeps {held // 1024} KiB alive"
    finally:
        memo.clear_caches()


def _forged_pods() -> list[dict[str, Any]]:
    """Pods a forger varies where the key summarises or the type check looks: odd JSON types, Job markers."""
    annotations = {
        "ferry.dev/inject": "true",
        "ferry.dev/region": "eu-west-1",
        "ferry.dev/objects": AWS_OBJECTS,
        "ferry.dev/refresh-interval": "5m",  # a sidecar: whether the pod runs to completion changes it
    }
    base = make_pod(annotations, namespace="apps")
    meta, spec = base["metadata"], base["spec"]
    odd: list[Any] = [None, [], {}, "x", 0, True, -0.0, 0.0, float("nan"), 10**30, [["x"]], [None]]
    odd += [{"kind": "Job"}, [{"kind": "Job"}], [{"kind": "Job"}, 1], [{"kind": ["Job"]}], [{"kind": "job"}]]
    odd += [{"job-name": None}, {"job-name": ""}, {"job-name": 1}, {"batch.kubernetes.io/job-name": "j"}]
    pods = [base, {"spec": spec}, {"metadata": meta}]
    for value in odd:
        pods += [{**base, "metadata": {**meta, part: value}} for part in ("labels", "ownerReferences", "annotations")]
        pods += [{**base, "metadata": value}, {**base, "spec": value}]
        pods += [{**base, "spec": {**spec, field: value}} for field in ("restartPolicy", "serviceAccountName")]
    pods += [{**base, "spec": {**spec, "restartPolicy": policy}} for policy in ("Never", "OnFailure", "Always")]
    return pods


def _texts(pod: dict[str, Any], namespace: str) -> list[bytes]:
    """One review as several JSON texts of equal or nearly equal meaning: key order, escapes, duplicate keys."""
    review = pod_create_review(pod, namespace=namespace, uid="u")
    text = json.dumps(review)
    reordered = json.loads(text)
    reordered["request"]["object"] = dict(reversed(list(pod.items())))
    return [
        text.encode(),
        json.dumps(review, separators=(",", ":"), ensure_ascii=False).encode(),
        text.replace('"object": {', '"object": {"metadata": [], "spec": "s", ', 1).encode(),  # the last one counts
        text.replace('"job-name"', '"job\\u002dname"').replace('"Job"', '"\\u004aob"').encode(),
        json.dumps(reordered).encode(),
    ]


def _meaning(body: bytes, answer: tuple[int, bytes]) -> Any:
    """What an answer does to its pod: status, verdict, warnings, denial and the pod the patch makes."""
    import base64

    import jsonpatch  # type: ignore[import-untyped]

    status, text = answer
    response = json.loads(text).get("response", {})
    pod = json.loads(body)["request"]["object"]
    if "patch" in response:
        pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    return json.dumps([status, response.get("allowed"), response.get("warnings"), response.get("status"), pod])


def test_a_remembered_answer_means_what_a_fresh_one_would_for_every_forged_variant() -> None:
    """Memo poisoning: forged reviews of every variant, in any order and namespace, warm the memo and the content
    caches; each answer must do to its pod what the answer of a webhook that never saw the others does."""
    import random

    from tests.webhook.test_memo import MutableView
    from webhook.policy import memo

    view = MutableView()
    view.namespaces["other"] = {"metadata": {"name": "other", "resourceVersion": "3", "annotations": {}}}
    bodies = [text for pod in _forged_pods() for namespace in ("apps", "other") for text in _texts(pod, namespace)]
    fresh = AdmissionHandler(Settings(), view, False, AdmissionMetrics())
    expected = {}
    for body in bodies:
        memo.clear_caches()
        expected[body] = _meaning(body, fresh.handle(body, memoize=False))
    memo.clear_caches()
    warm = AdmissionHandler(Settings(), view, False, AdmissionMetrics())
    order = bodies * 2
    random.Random(24).shuffle(order)
    try:
        wrong = [body for body in order if _meaning(body, warm.handle(body)) != expected[body]]
    finally:
        memo.clear_caches()
    assert warm.memo.hits > len(bodies) // 4, "not vacuous: many answers came from the memo"
    assert not wrong, f"{len(wrong)} answers differ, the first for {wrong[0][:300]!r}"


def test_a_class_shared_by_many_pods_counts_once_against_the_memo_bound() -> None:
    """The other side of the bound on kept objects: a large class that many Deployments' pods name is one
    object in memory, so it counts once; counted per entry, it pushed all but a few of them out."""
    from webhook.policy.memo import AdmissionMemo

    view = _EditedClassView()
    view.rewrite(200 * 1024)
    handler = AdmissionHandler(Settings(), view, True, AdmissionMetrics())
    handler.memo = AdmissionMemo(max_bytes=2 * 1024 * 1024)
    annotations = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}
    bodies = [
        json.dumps(pod_create_review(make_pod({**annotations, "app": str(index)}, namespace="apps"), namespace="apps"))
        for index in range(100)
    ]
    for body in bodies * 2:
        status, answer = handler.handle(body.encode())
        assert status == 200 and json.loads(answer)["response"]["allowed"], answer
    assert len(handler.memo) == 100 and handler.memo.hits == 100
    assert handler.memo.bytes < 2 * 1024 * 1024


def test_replicas_hit_the_memo_when_the_service_account_is_unread_for_good() -> None:
    """A GKE install that may not list ServiceAccounts: every account is unread for good, so replicas still share
    one answer (asking the memo only for settled accounts must not turn it off there)."""

    class ForbiddenView(_UnreadAccountsView):
        def gke_service_account(self, namespace: str, name: str, *, may_get: bool = True) -> KsaAnnotation:
            return KsaAnnotation(name, None, "Ferry could not read it (the webhook may not list them)", True)

    handler = AdmissionHandler(GKE, ForbiddenView(), True, AdmissionMetrics())
    annotations = {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1", "ferry.dev/objects": AWS_OBJECTS}
    review = json.dumps(pod_create_review(make_pod(annotations, namespace="apps"), namespace="apps")).encode()
    for _ in range(3):
        status, body = handler.handle(review)
        assert status == 200 and json.loads(body)["response"]["allowed"], body
    assert (handler.memo.hits, handler.memo.misses) == (2, 1)
