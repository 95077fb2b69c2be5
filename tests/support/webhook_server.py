"""The real webhook on real TLS for the reliability tests: certificates from Ferry's own code, uvicorn, httpx.

Why it exists: the fuzz, attack-corpus and security tests must hit `/mutate`
the way the API server does (HTTPS, verified against the CA Ferry generated,
``?timeout=5s`` appended), not an in-process ASGI shortcut, because the body
limit, HTTP parsing and TLS are part of what is under attack. `WebhookUnderTest`
starts one `TLSServer` around `create_app` with a static cluster view (two
namespaces and a few SecretProviderClasses, some of them hostile).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonpatch

from tests.support.reviews import decode_patch, pod_create_review
from tests.support.tlsserver import TLSServer
from webhook.edge.app import create_app, metrics_app
from webhook.edge.metrics import AdmissionMetrics
from webhook.policy.view import StaticView
from webhook.settings import Settings
from webhook.tls.certs import generate_bundle, write_bundle

NAMESPACE = "apps"
REGION = "us-east-1"
MUTATE_PATH = "/mutate?timeout=5s"


def namespace(name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"ferry.dev/inject": "enabled"}, "annotations": dict(annotations or {})},
    }


def spc(name: str, objects: Any, **parameters: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"provider": "aws", "parameters": {"objects": objects, **parameters}},
    }


def review(obj: Any, uid: str | None = None, namespace: str = NAMESPACE, **request: Any) -> dict[str, Any]:
    return pod_create_review(obj, namespace=namespace, uid=uid, **request)


def apply_patch(obj: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    patched = jsonpatch.apply_patch(obj, decode_patch(response), in_place=False)
    assert isinstance(patched, dict)
    return patched


@dataclass
class WebhookUnderTest:
    """One TLS webhook server; `post` sends bytes to /mutate and returns the httpx response."""

    workdir: Path
    native_sidecars: bool = True
    spcs: list[dict[str, Any]] = field(default_factory=list)
    settings: Settings = field(default_factory=lambda: Settings(default_region=REGION))

    def __post_init__(self) -> None:
        bundle = generate_bundle(["localhost"], ip_addresses=("127.0.0.1",))
        cert, key, ca = write_bundle(bundle, self.workdir)
        self.ca_file = ca
        self.metrics = AdmissionMetrics()
        view = StaticView(self.spcs, [namespace(NAMESPACE), namespace("plain")])
        app = create_app(self.settings, view, native_sidecars=self.native_sidecars, metrics=self.metrics)
        self.server = TLSServer(app, cert, key, metrics_app=metrics_app(self.metrics))
        self.client: httpx.Client | None = None

    def start(self) -> WebhookUnderTest:
        self.server.start()
        # Idle connections expire before uvicorn's 5 s keep-alive timeout closes them under us.
        self.client = httpx.Client(
            base_url=self.server.url,
            verify=self.client_context(),
            timeout=20.0,
            limits=httpx.Limits(keepalive_expiry=2.0),
        )
        return self

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def metrics_text(self) -> str:
        """GET /metrics from the plain-HTTP metrics listener."""
        response = httpx.get(self.server.metrics_url, timeout=20.0)
        assert response.status_code == 200, response.text
        return response.text

    def post(self, body: bytes, content_type: str | None = "application/json", **kwargs: Any) -> httpx.Response:
        assert self.client is not None
        headers = {"Content-Type": content_type} if content_type else {}
        return self.client.post(MUTATE_PATH, content=body, headers=headers, **kwargs)

    def admit(self, obj: Any, **request: Any) -> dict[str, Any]:
        """POST a review of `obj`; return the AdmissionReview response after checking the envelope."""
        sent = review(obj, **request)
        answer = self.post(json.dumps(sent).encode())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == sent["request"]["uid"]
        assert isinstance(body["response"]["allowed"], bool)
        response: dict[str, Any] = body["response"]
        return response
