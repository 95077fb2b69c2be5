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
    from webhook.settings import Settings

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
