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
from webhook.edge.app import AdmissionHandler
from webhook.edge.metrics import AdmissionMetrics
from webhook.settings import Settings

AWS_OBJECTS = "- objectName: prod/db\n  objectType: secretsmanager\n"


class _UnreadAccountsView:
    """A GKE install's view whose ServiceAccount watch has not delivered the pod's account, and whose GET fails."""

    def __init__(self) -> None:
        self.namespace_obj = {"metadata": {"name": "apps", "resourceVersion": "1"}}
        self.gets = 0

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self.namespace_obj if name == "apps" else None

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return ()

    def is_ready(self) -> bool:
        return True

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
