"""The admission memo: replicas are answered from memory, and never with a stale answer.

A Deployment's replicas reach /mutate as identical pods. The memo must give the
second one the same answer as the first (with its own uid), and must stop
using a remembered answer as soon as the SecretProviderClass or the namespace
it was computed from changes.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from webhook.app import create_app
from webhook.settings import Settings

SPC = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "db", "namespace": "apps", "resourceVersion": "1"},
    "spec": {
        "provider": "aws",
        "parameters": {"region": "eu-west-1", "objects": "- objectName: prod/db\n  objectType: secretsmanager\n"},
    },
}
NAMESPACE = {"metadata": {"name": "apps", "resourceVersion": "7", "annotations": {}}}


class MutableView:
    """A cluster view whose objects a test replaces, as the watch cache does on MODIFIED events."""

    def __init__(self) -> None:
        self.spcs: dict[tuple[str, str], Mapping[str, Any]] = {("apps", "db"): copy.deepcopy(SPC)}
        self.namespaces: dict[str, Mapping[str, Any]] = {"apps": copy.deepcopy(NAMESPACE)}

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self.namespaces.get(name)

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.spcs.get((namespace, name))

    def is_ready(self) -> bool:
        return True


def replica_review(pod: dict[str, Any]) -> dict[str, Any]:
    """The review the API server sends for one replica: same pod, a fresh uid."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        },
    }


def post(client: Any, review: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/mutate", content=json.dumps(review).encode(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 200
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def test_replicas_get_the_same_answer_from_the_memo(
    asgi_client: Callable[[Any], Any], pod_factory: Callable[..., dict[str, Any]]
) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = pod_factory({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    first = post(client, replica_review(pod))
    second = post(client, replica_review(pod))
    assert first["allowed"] and "patch" in first
    assert {k: v for k, v in first.items() if k != "uid"} == {k: v for k, v in second.items() if k != "uid"}
    memo = app.state.memo
    assert (memo.hits, memo.misses) == (1, 1)


def test_an_edited_secret_provider_class_is_used_on_the_next_admission(
    asgi_client: Callable[[Any], Any], pod_factory: Callable[..., dict[str, Any]]
) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = pod_factory({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    assert post(client, replica_review(pod))["allowed"]

    broken = copy.deepcopy(SPC)
    broken["metadata"]["resourceVersion"] = "2"
    broken["spec"]["parameters"]["objects"] = "- objectName: prod/db\n  objectType: ssm\n"
    view.spcs[("apps", "db")] = broken
    denied = post(client, replica_review(pod))
    assert not denied["allowed"]
    assert "objectType" in denied["status"]["message"]

    del view.spcs[("apps", "db")]
    missing = post(client, replica_review(pod))
    assert not missing["allowed"] and "db" in missing["status"]["message"]


def test_a_changed_namespace_is_used_on_the_next_admission(
    asgi_client: Callable[[Any], Any], pod_factory: Callable[..., dict[str, Any]]
) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = pod_factory({"ferry.dev/secret-provider-class": "db"}, namespace="apps")
    assert "patch" not in post(client, replica_review(pod))  # the namespace has not opted in

    opted_in = copy.deepcopy(NAMESPACE)
    opted_in["metadata"]["resourceVersion"] = "8"
    opted_in["metadata"]["annotations"] = {"ferry.dev/inject": "true"}
    view.namespaces["apps"] = opted_in
    assert "patch" in post(client, replica_review(pod))


def test_different_pods_are_not_confused(
    asgi_client: Callable[[Any], Any], pod_factory: Callable[..., dict[str, Any]]
) -> None:
    app = create_app(Settings(), MutableView(), native_sidecars=True)
    client = asgi_client(app)
    plain = pod_factory({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    elsewhere = copy.deepcopy(plain)
    elsewhere["metadata"]["annotations"]["ferry.dev/mount-path"] = "/srv/secrets"
    first, second = post(client, replica_review(plain)), post(client, replica_review(elsewhere))
    assert first["patch"] != second["patch"]
    assert app.state.memo.misses == 2
