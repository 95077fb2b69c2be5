"""A loopback fake of Google's Secret Manager, Parameter Manager, STS and IAM Credentials REST APIs, over TLS.

Why it exists: no faithful Secret Manager emulator exists, and Ferry's GCP code is plain HTTPS, so the tests
run it against this server over real TLS. Every Google host is served below its own path prefix
(`https://127.0.0.1:PORT/<host>/v1/...`), which is what the fetcher's FERRY_GCP_API_BASE produces, so the
fake sees which endpoint (global or `secretmanager.LOCATION.rep`) a request went to; a request for `/v1/...`
is routed by its Host header instead (Google's own names, reached through a CONNECT proxy).

The semantics it keeps, as Google documents them:
- `latest` is the most recently created version, whatever its state; aliases name a version number;
- accessing a DISABLED or DESTROYED version (through latest too) is 400 FAILED_PRECONDITION;
- a secret the caller may not read, or that does not exist, is 403 PERMISSION_DENIED "(or it may not
  exist)"; a missing version of a readable secret is 404 NOT_FOUND;
- a regional secret is served only by its regional endpoint, a global one only by the global endpoint;
- replies name the project by NUMBER (projects/123.../secrets/S/versions/7), and carry `payload.dataCrc32c`
  as a decimal string;
- STS's token exchange checks the grant, the audience (identitynamespace:POOL:PROVIDER) and the subject
  token's `aud` claim (the JWT is decoded, not verified: the fake trusts whoever holds the file);
  generateAccessToken checks that the federated principal may impersonate the account.
Requests to `metadata.google.internal` are counted and answered with a node token, so a test can prove
the fetcher never asks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fetcher.gcp_source import crc32c
from webhook.tls.certs import generate_bundle

POOL = "ferry-test.svc.id.goog"
PROVIDER = "https://container.googleapis.com/v1/projects/ferry-test/locations/us-central1/clusters/e2e"
PROJECT_NUMBER = "123456789012"
_SECRET_PATH = re.compile(r"^/v1/projects/([^/]+)/(?:locations/([^/]+)/)?secrets/([^/]+)/versions/([^/:]+)(:access)?$")
_PARAMETER_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/parameters/([^/]+)/versions/([^/:]+):render$")
# Also named in the fake's certificate, so a test can reach it by Google's own names (through a CONNECT proxy).
GOOGLE_HOSTS = (
    "sts.googleapis.com",
    "iamcredentials.googleapis.com",
    "secretmanager.googleapis.com",
    "secretmanager.us-central1.rep.googleapis.com",
    "parametermanager.googleapis.com",
)
_IMPERSONATE_PATH = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken$")


@dataclass
class Version:
    data: bytes
    state: str = "ENABLED"


@dataclass
class Secret:
    versions: list[Version] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)


def ksa_token(namespace: str, name: str, audience: str = POOL, expires_in: float = 3600) -> str:
    """An unsigned JWT shaped like a projected ServiceAccount token (the fake reads, never verifies, it)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"aud": [audience], "sub": f"system:serviceaccount:{namespace}:{name}", "exp": time.time() + expires_in}
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


class GcpFake:
    """The fake's state and server. `with GcpFake() as fake:` serves on a free loopback port."""

    def __init__(self, *, token_lifetime: int = 3600) -> None:
        self.secrets: dict[tuple[str, str, str], Secret] = {}
        self.parameters: dict[tuple[str, str, str, str], bytes] = {}
        # principal ("ns/ksa" or a service account email) -> resource prefixes it may read
        self.grants: dict[str, set[str]] = {}
        self.impersonation: dict[str, set[str]] = {}  # service account -> principals allowed to impersonate it
        self.tokens: dict[str, str] = {}  # access token -> principal
        self.token_lifetime = token_lifetime
        self.calls: Counter[str] = Counter()  # "host OPERATION"
        self.failures: list[int] = []  # HTTP statuses to answer the next secret requests with
        self.corrupt_crc = False  # answer accesses with a dataCrc32c that does not match
        self.lock = threading.Lock()
        bundle = generate_bundle(["localhost", *GOOGLE_HOSTS], ip_addresses=["127.0.0.1"])
        self._dir = Path(tempfile.mkdtemp(prefix="gcpfake-"))
        self.ca_file = self._dir / "ca.pem"
        self.ca_file.write_bytes(bundle.ca_pem)
        os.chmod(self._dir, 0o755)  # the kubelet step runs the fetcher as the pod's uid: it must read the CA
        os.chmod(self.ca_file, 0o644)
        (self._dir / "cert.pem").write_bytes(bundle.cert_pem + bundle.ca_pem)
        (self._dir / "key.pem").write_bytes(bundle.key_pem)
        self._server: ThreadingHTTPServer | None = None

    # --- Seeding. ---------------------------------------------------------------

    def add_version(self, project: str, secret: str, data: bytes | str, *, location: str = "global") -> int:
        """A new version (numbered from 1); returns its number."""
        raw = data.encode() if isinstance(data, str) else data
        with self.lock:
            entry = self.secrets.setdefault((project, location, secret), Secret())
            entry.versions.append(Version(raw))
            return len(entry.versions)

    def set_state(self, project: str, secret: str, number: int, state: str, *, location: str = "global") -> None:
        self.secrets[(project, location, secret)].versions[number - 1].state = state

    def set_alias(self, project: str, secret: str, alias: str, number: int, *, location: str = "global") -> None:
        self.secrets[(project, location, secret)].aliases[alias] = number

    def grant(self, principal: str, resource_prefix: str) -> None:
        """Let `principal` (ns/ksa or an email) read secrets whose name starts with the prefix."""
        self.grants.setdefault(principal, set()).add(resource_prefix)

    def allow_impersonation(self, principal: str, account: str) -> None:
        self.impersonation.setdefault(account, set()).add(principal)

    def count(self, operation: str) -> int:
        return sum(n for key, n in self.calls.items() if key.endswith(" " + operation))

    # --- Serving. ---------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def env(self, token_file: Path | str) -> dict[str, str]:
        """The fetcher's environment for this fake: endpoint base, CA, and the token file."""
        return {
            "FERRY_GCP_API_BASE": self.url,
            "SSL_CERT_FILE": str(self.ca_file),
            "FERRY_GCP_TOKEN_FILE": str(token_file),
        }

    def __enter__(self) -> GcpFake:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._dir / "cert.pem", self._dir / "key.pem")
        fake = self

        class Handler(_Handler):
            state = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: GcpFake
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20))
        if self.path.startswith("/v1/"):  # reached by Google's own name (no FERRY_GCP_API_BASE): the Host header
            host, path = (self.headers.get("Host") or "").split(":")[0], self.path
        else:  # below FERRY_GCP_API_BASE: /<host>/v1/...
            host, _, path = self.path.lstrip("/").partition("/")
            path = "/" + path
        fake = self.state
        if host == "metadata.google.internal":
            fake.calls[f"{host} Metadata"] += 1
            return self._send(200, {"access_token": "node-identity", "expires_in": 3600})
        if host == "sts.googleapis.com" and method == "POST" and path == "/v1/token":
            return self._exchange(body)
        if host == "iamcredentials.googleapis.com" and method == "POST" and (m := _IMPERSONATE_PATH.match(path)):
            return self._impersonate(urllib.parse.unquote(m[1]))
        if method == "GET" and (m := _SECRET_PATH.match(path)) and host.startswith("secretmanager."):
            return self._secret(host, *m.groups())
        if method == "GET" and (m := _PARAMETER_PATH.match(path)) and host.startswith("parametermanager."):
            return self._parameter(host, *m.groups())
        self._error(404, "NOT_FOUND", f"no such method {path[:80]}")

    def _exchange(self, body: bytes) -> None:
        fake = self.state
        fake.calls["sts.googleapis.com ExchangeToken"] += 1
        form = dict(urllib.parse.parse_qsl(body.decode()))
        if (
            form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
            or form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt"
            or form.get("audience") != f"identitynamespace:{POOL}:{PROVIDER}"
        ):
            return self._send(400, {"error": "invalid_request", "error_description": "bad grant or audience"})
        claims = _claims(form.get("subject_token", ""))
        aud = claims.get("aud") or []
        sub = str(claims.get("sub") or "")
        if POOL not in (aud if isinstance(aud, list) else [aud]) or not sub.startswith("system:serviceaccount:"):
            return self._send(400, {"error": "invalid_grant", "error_description": "the token's audience is wrong"})
        if float(claims.get("exp") or 0) < time.time():
            return self._send(400, {"error": "invalid_grant", "error_description": "the token expired"})
        namespace, _, name = sub[len("system:serviceaccount:") :].partition(":")
        token = f"fed-{len(fake.tokens)}-{time.monotonic_ns()}"
        fake.tokens[token] = f"{namespace}/{name}"
        self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": fake.token_lifetime})

    def _impersonate(self, account: str) -> None:
        fake = self.state
        fake.calls["iamcredentials.googleapis.com GenerateAccessToken"] += 1
        principal = self._principal()
        if principal is None or principal not in fake.impersonation.get(account, set()):
            return self._error(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied")
        token = f"sa-{len(fake.tokens)}-{time.monotonic_ns()}"
        fake.tokens[token] = account
        self._send(200, {"accessToken": token, "expireTime": "2099-01-01T00:00:00Z"})

    def _secret(
        self, host: str, project: str, location: str | None, secret: str, version: str, access: str | None
    ) -> None:
        fake = self.state
        operation = "AccessSecretVersion" if access else "GetSecretVersion"
        fake.calls[f"{host} {operation}"] += 1
        with fake.lock:
            if fake.failures:
                status = fake.failures.pop(0)
                name = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
                return self._error(status, name, "injected failure")
        location = location or "global"
        expected = (
            "secretmanager.googleapis.com" if location == "global" else f"secretmanager.{location}.rep.googleapis.com"
        )
        full = f"projects/{project}/" + (f"locations/{location}/" if location != "global" else "") + f"secrets/{secret}"
        if host != expected:
            return self._error(400, "INVALID_ARGUMENT", f"{full} is not served by {host}")
        principal = self._principal()
        if principal is None:
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        entry = fake.secrets.get((project, location, secret))
        readable = any(full.startswith(prefix) for prefix in fake.grants.get(principal, set()))
        if entry is None or not readable:
            permission = "secretmanager.versions.access" if access else "secretmanager.versions.get"
            return self._error(
                403,
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied for resource '{full}/versions/{version}' (or it may not exist).",
            )
        if version == "latest":
            number = len(entry.versions)
        elif version.isdigit():
            number = int(version)
        else:
            number = entry.aliases.get(version, 0)
        if not 1 <= number <= len(entry.versions):
            return self._error(404, "NOT_FOUND", f"Secret Version [{full}/versions/{version}] not found.")
        found = entry.versions[number - 1]
        name = full.replace(f"projects/{project}/", f"projects/{PROJECT_NUMBER}/", 1) + f"/versions/{number}"
        if not access:
            return self._send(200, {"name": name, "state": found.state, "createTime": "2026-12-06T00:00:00Z"})
        if found.state != "ENABLED":
            return self._error(400, "FAILED_PRECONDITION", f"{name} is in {found.state} state.")
        checksum = crc32c(found.data) ^ (1 if fake.corrupt_crc else 0)
        payload = {"data": base64.b64encode(found.data).decode(), "dataCrc32c": str(checksum)}
        self._send(200, {"name": name, "payload": payload})

    def _parameter(self, host: str, project: str, location: str, parameter: str, version: str) -> None:
        fake = self.state
        fake.calls[f"{host} RenderParameterVersion"] += 1
        full = f"projects/{project}/locations/{location}/parameters/{parameter}/versions/{version}"
        principal = self._principal()
        data = fake.parameters.get((project, location, parameter, version))
        readable = principal is not None and any(full.startswith(p) for p in fake.grants.get(principal, set()))
        if data is None or not readable:
            return self._error(403, "PERMISSION_DENIED", f"Permission denied on '{full}' (or it may not exist).")
        encoded = base64.b64encode(data).decode()
        self._send(200, {"parameterVersion": full, "payload": {"data": encoded}, "renderedPayload": encoded})

    def _principal(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        return self.state.tokens.get(header[len("Bearer ") :]) if header.startswith("Bearer ") else None

    def _error(self, status: int, name: str, message: str) -> None:
        self._send(status, {"error": {"code": status, "message": message, "status": name}})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def _claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}
