"""Admin and ServiceAccount helpers over the shared control plane, for the secretObjects and client suites.

Why it exists: these suites check Ferry's own Kubernetes client, so their
setup and their checks go through an independent path (urllib with the admin
token) rather than through the client under test.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devcluster.controlplane import ControlPlane


class AdminApi:
    """The control plane as seen by these suites: where it listens, its CA, and admin requests."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        address = urlsplit(plane.url)
        self.host = str(address.hostname)
        self.port = int(address.port or 443)
        self.ca_file = Path(plane.ca_file)
        self.admin_token = plane.admin_token

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def admin(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One admin request; returns the decoded JSON, raises on non-2xx."""
        status, payload = self.admin_status(method, path, body, content_type)
        if status >= 300:
            raise AssertionError(f"{method} {path} -> {status}: {payload}")
        return payload

    def admin_status(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.plane.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def new_namespace(self, prefix: str = "sync") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.admin("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def service_account_token(self, namespace: str, name: str) -> str:
        """Create the ServiceAccount (if needed) and return a fresh token for it (TokenRequest)."""
        status, _ = self.admin_status(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        assert status in (201, 409), status
        return self.plane.token_for(namespace, name)


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload or b"null")
    except ValueError:
        return payload.decode(errors="replace")
