"""A stand-in for EKS's pod identity webhook (IRSA), for the demo and the local try-out cluster.

Why it exists: on EKS nobody writes AWS_ROLE_ARN into a Deployment. The
cluster's identity webhook reads the ServiceAccount's
``eks.amazonaws.com/role-arn`` annotation and adds the role, the token file
variable and a projected token volume to every container of the pod; Ferry
then copies them into its own containers. The demo shows that same path: the
ServiceAccount carries the annotation, and this webhook (or, without a
cluster, the same function applied before the pod reaches Ferry) adds the rest.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

from webhook.tls.certs import generate_bundle

ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
AUDIENCE = "sts.amazonaws.com"
TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
VOLUME = "aws-iam-token"
MAX_REVIEW_BYTES = 3 * 1024 * 1024


def add_irsa(pod: dict[str, Any], role_arn: str) -> bool:
    """Add what the EKS pod identity webhook adds for `role_arn`; False if the pod already had it."""
    spec = pod["spec"]
    changed = False
    if not any(v.get("name") == VOLUME for v in spec.get("volumes") or []):
        token = {"audience": AUDIENCE, "expirationSeconds": 86400, "path": "token"}
        projected = {"sources": [{"serviceAccountToken": token}]}
        spec.setdefault("volumes", []).append({"name": VOLUME, "projected": projected})
        changed = True
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            env = container.setdefault("env", [])
            if any(e.get("name") == "AWS_ROLE_ARN" for e in env):
                continue
            env.extend(
                [
                    {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                    {"name": "AWS_ROLE_ARN", "value": role_arn},
                    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"},
                ]
            )
            container.setdefault("volumeMounts", []).append({"name": VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
            changed = True
    return changed


def role_of(service_account: Mapping[str, Any]) -> str | None:
    annotations = (service_account.get("metadata") or {}).get("annotations") or {}
    role = annotations.get(ROLE_ANNOTATION)
    return str(role) if role else None


class StandInWebhook:
    """A mutating AdmissionReview server on 127.0.0.1 over TLS that applies `mutate(namespace, pod)` in place."""

    def __init__(self, mutate: Callable[[str, dict[str, Any]], None]) -> None:
        self.calls = 0
        bundle = generate_bundle(["localhost"], ip_addresses=("127.0.0.1",))
        self.ca_pem = bundle.ca_pem
        with tempfile.TemporaryDirectory(prefix="ferry-stand-in-") as name:
            folder = Path(name)
            (folder / "tls.crt").write_bytes(bundle.cert_pem)
            (folder / "tls.key").write_bytes(bundle.key_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REVIEW_BYTES:
                    self.send_error(413)
                    return
                request = json.loads(self.rfile.read(length))["request"]
                outer.calls += 1
                before = request["object"]
                after = copy.deepcopy(before)
                mutate(request.get("namespace") or "", after)
                response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
                patch = jsonpatch.make_patch(before, after).patch
                if patch:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
                review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                body = json.dumps(review)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-webhook", daemon=True)
        self._thread.start()

    def registration(
        self, name: str, webhook_name: str, failure_policy: str, selector: dict[str, Any]
    ) -> dict[str, Any]:
        """A MutatingWebhookConfiguration that sends this server every pod CREATE in namespaces matching `selector`."""
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": webhook_name,
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": failure_policy,
                    "reinvocationPolicy": "IfNeeded",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.port}/mutate",
                        "caBundle": base64.b64encode(self.ca_pem).decode(),
                    },
                    "rules": [
                        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
                    ],
                    "namespaceSelector": selector,
                }
            ],
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class IdentityWebhook(StandInWebhook):
    """EKS's IRSA webhook; `lookup(namespace, name)` returns a ServiceAccount or None."""

    def __init__(self, lookup: Callable[[str, str], Mapping[str, Any] | None]) -> None:
        def mutate(namespace: str, pod: dict[str, Any]) -> None:
            account = lookup(namespace, pod["spec"].get("serviceAccountName") or "default")
            role = role_of(account) if account else None
            if role:
                add_irsa(pod, role)

        super().__init__(mutate)

    def configuration(self) -> dict[str, Any]:
        """Its MutatingWebhookConfiguration: every pod, as on EKS (pods without the annotation are left alone)."""
        outside_kube_system = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}
        return self.registration(
            "pod-identity-webhook", "iam-for-pods.amazonaws.com", "Ignore", {"matchExpressions": [outside_kube_system]}
        )
