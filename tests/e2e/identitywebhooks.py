"""Two tiny mutating webhooks that stand in for EKS's identity webhooks.

Why it exists: on EKS the pod's AWS identity is added by another webhook (the
pod identity webhook for IRSA; the Pod Identity webhook for EKS Pod Identity),
before or after Ferry depending on configuration names. Ferry's containers
must end up with that identity exactly once. These servers add the same env
vars and projected token volumes as the real ones, over real TLS, so the API
server's reinvocation decides the order.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

from webhook.tls.certs import generate_bundle

IRSA_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
POD_IDENTITY_TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"
ROLE_ARN = "arn:aws:iam::111122223333:role/e2e-app"


def _projected(volume: str, audience: str, path: str) -> dict[str, Any]:
    return {
        "name": volume,
        "projected": {
            "sources": [{"serviceAccountToken": {"audience": audience, "expirationSeconds": 86400, "path": path}}]
        },
    }


def add_irsa(pod: dict[str, Any]) -> None:
    """What the EKS pod identity webhook does: env + token mount in every container, init containers too."""
    spec = pod["spec"]
    if not any(v.get("name") == "aws-iam-token" for v in spec.get("volumes") or []):
        spec.setdefault("volumes", []).append(_projected("aws-iam-token", "sts.amazonaws.com", "token"))
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            env = container.setdefault("env", [])
            if any(e.get("name") == "AWS_ROLE_ARN" for e in env):
                continue
            env.extend(
                [
                    {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                    {"name": "AWS_ROLE_ARN", "value": ROLE_ARN},
                    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{IRSA_TOKEN_DIR}/token"},
                ]
            )
            container.setdefault("volumeMounts", []).append(
                {"name": "aws-iam-token", "mountPath": IRSA_TOKEN_DIR, "readOnly": True}
            )


def add_pod_identity(pod: dict[str, Any]) -> None:
    """What the Pod Identity webhook does, in the app containers only."""
    spec = pod["spec"]
    if not any(v.get("name") == "eks-pod-identity-token" for v in spec.get("volumes") or []):
        spec.setdefault("volumes", []).append(
            _projected("eks-pod-identity-token", "pods.eks.amazonaws.com", "eks-pod-identity-token")
        )
    for container in spec.get("containers") or []:
        env = container.setdefault("env", [])
        if any(e.get("name") == "AWS_CONTAINER_CREDENTIALS_FULL_URI" for e in env):
            continue
        env.extend(
            [
                {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
                {
                    "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    "value": f"{POD_IDENTITY_TOKEN_DIR}/eks-pod-identity-token",
                },
            ]
        )
        container.setdefault("volumeMounts", []).append(
            {"name": "eks-pod-identity-token", "mountPath": POD_IDENTITY_TOKEN_DIR, "readOnly": True}
        )


class MutatingServer:
    """An HTTPS AdmissionReview server on 127.0.0.1 that applies `mutate` to each pod."""

    def __init__(self, mutate: Callable[[dict[str, Any]], None]) -> None:
        self.mutate = mutate
        self.calls = 0
        bundle = generate_bundle(["localhost"], ip_addresses=("127.0.0.1",))
        self.ca_pem = bundle.ca_pem
        with tempfile.TemporaryDirectory(prefix="ferry-e2e-idwebhook-") as name:
            folder = Path(name)
            (folder / "tls.crt").write_bytes(bundle.cert_pem)
            (folder / "tls.key").write_bytes(bundle.key_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                outer.calls += 1
                before = request["object"]
                after = copy.deepcopy(before)
                outer.mutate(after)
                response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
                patch = jsonpatch.make_patch(before, after).patch
                if patch:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
                body = json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
                )
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
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def configuration(self, name: str, namespace_label: tuple[str, str]) -> dict[str, Any]:
        """A MutatingWebhookConfiguration for pods in namespaces carrying `namespace_label`."""
        key, value = namespace_label
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"{name}.e2e.ferry.dev",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "IfNeeded",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.port}/mutate",
                        "caBundle": base64.b64encode(self.ca_pem).decode(),
                    },
                    "rules": [
                        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
                    ],
                    "namespaceSelector": {"matchLabels": {key: value}},
                }
            ],
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
