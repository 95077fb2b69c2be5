"""AdmissionReview requests as the API server sends them, and the JSONPatch in an answer.

Why it exists: tests, the reliability suite and the soak benchmark each built
their own review and decoded patches their own way; one builder and one
decoder keep them agreeing with each other and with the recorded fixtures.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from typing import Any


def pod_create_review(
    pod: Any,
    *,
    namespace: str,
    uid: str | None = None,
    username: str = "system:serviceaccount:kube-system:replicaset-controller",
    **request: Any,
) -> dict[str, Any]:
    """The AdmissionReview for a pod CREATE in `namespace`; `request` adds or overrides request fields."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": username, "groups": []},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            **request,
        },
    }


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch ops of an AdmissionResponse ([] when it carries none)."""
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert isinstance(ops, list)
    return ops
