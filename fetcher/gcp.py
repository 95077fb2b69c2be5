"""Google Cloud with the pod's own identity: GKE Workload Identity over plain HTTPS, one client per process.

Why it exists: the fetcher runs in every pod, so it speaks the few REST calls it needs with the standard
library (no grpcio, no google-auth) and never holds anything but the pod's identity. The projected
ServiceAccount token (audience: the workload pool) is exchanged at the security token endpoint for a
federated token, and, when the spec names a Google service account, that is traded for the account's token
through generateAccessToken. The GKE metadata server is never asked: on a node pool without Workload
Identity it answers with the node's identity, and in a pod's first seconds it does not answer at all.
Tokens are cached and renewed `RENEW_BEFORE_SECONDS` before they expire, re-reading the token file the
kubelet rotates. Endpoints and the test override are in docs/gke.md.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.errors import ConfigError, FerryError
from fetcher.spec import FetchSpec, GcpIdentity
from fetcher.spec.gcp import GCP_TOKEN_PATH

# Tests and local runs only: every Google host is reached as BASE/<host>/..., e.g. https://127.0.0.1:8443.
# The webhook never sets it and never copies it from a tenant's container (docs/gke.md).
API_BASE_ENV_VAR = "FERRY_GCP_API_BASE"
TOKEN_FILE_ENV_VAR = "FERRY_GCP_TOKEN_FILE"
STS_HOST = "sts.googleapis.com"
IAM_CREDENTIALS_HOST = "iamcredentials.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
RENEW_BEFORE_SECONDS = 300.0
IMPERSONATED_LIFETIME = "3600s"
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
MAX_ATTEMPTS = 4
# A secret version holds at most 64 KiB; base64 and JSON stay far below this.
MAX_REPLY_BYTES = 1024 * 1024
MAX_TOKEN_FILE_BYTES = 64 * 1024
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_HOST_RE = re.compile(r"^[a-z0-9.-]{1,120}$")


class GcpIdentityError(FerryError):
    """The pod has no usable Workload Identity, or Google refused to exchange it; names the fix."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status and JSON body (an empty dict when the body was not JSON)."""

    status: int
    body: Mapping[str, Any]


class TransportError(Exception):
    """No answer: connection refused or reset, timeout, TLS failure, or a reply over the size bound."""


class StaleConnection(TransportError):
    """A pooled keep-alive connection failed: the server closed it while idle (retried at once, uncounted)."""


class CallCounter:
    """Thread-safe count of Google API calls by (service, operation, location), like AwsClients.calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str, str]] = Counter()

    def record(self, service: str, operation: str, location: str) -> None:
        with self._lock:
            self._calls[(service, operation, location)] += 1

    def by_operation(self) -> dict[str, int]:
        with self._lock:
            totals: Counter[str] = Counter()
            for (_, operation, _), count in self._calls.items():
                totals[operation] += count
            return dict(totals)

    def count(self, operation: str | None = None) -> int:
        with self._lock:
            return sum(n for (_, op, _), n in self._calls.items() if operation in (None, op))


class Https:
    """Minimal HTTPS client: pooled keep-alive connections, timeouts, bounded replies, retries with backoff."""

    def __init__(self, api_base: str | None, context: ssl.SSLContext) -> None:
        self._base = urllib.parse.urlsplit(api_base) if api_base else None
        self._context = context
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def url(self, host: str, path: str) -> tuple[str, str]:
        """(netloc, request path) for a Google host, or its stand-in below FERRY_GCP_API_BASE."""
        if not _HOST_RE.match(host):
            raise ConfigError(f"{host[:120]!r} is not a Google API host")
        if self._base is None:
            return host, path
        return self._base.netloc, f"{self._base.path.rstrip('/')}/{host}{path}"

    def request(self, method: str, host: str, path: str, headers: Mapping[str, str], body: bytes = b"") -> Reply:
        """Send with retries on 429, 5xx and transport failures; the last answer (or TransportError) stands."""
        netloc, full_path = self.url(host, path)
        attempt = 0
        while True:
            try:
                reply = self._send(method, netloc, full_path, headers, body)
            except StaleConnection:
                continue  # a kept-alive connection the server had closed: a new one at once, not an attempt
            except TransportError:
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    raise
            else:
                attempt += 1
                if reply.status not in RETRIED_STATUSES or attempt >= MAX_ATTEMPTS:
                    return reply
            time.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto

    def _send(self, method: str, netloc: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        conn = self._take(netloc)
        reused = conn.sock is not None
        try:
            if not reused:  # a new connection: CONNECT_TIMEOUT to connect, READ_TIMEOUT for each read
                conn.connect()
                sock: Any = conn.sock
                sock.settimeout(READ_TIMEOUT)
            conn.request(method, path, body=body or None, headers={"User-Agent": "ferry-fetcher", **headers})
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_REPLY_BYTES):
                raise TransportError(f"reply of {length[:20]} bytes is over {MAX_REPLY_BYTES}")
            raw = response.read(MAX_REPLY_BYTES + 1)
            if len(raw) > MAX_REPLY_BYTES:
                raise TransportError(f"reply over {MAX_REPLY_BYTES} bytes")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise (StaleConnection if reused else TransportError)(type(exc).__name__) from exc
        except TransportError:
            conn.close()
            raise
        self._give_back(netloc, conn, response)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return Reply(response.status, parsed if isinstance(parsed, dict) else {})

    def _take(self, netloc: str) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get(netloc)
            if idle:
                return idle.pop()
        host, _, port = netloc.rpartition(":") if netloc.count(":") == 1 else (netloc, "", "")
        return http.client.HTTPSConnection(
            host or netloc, int(port) if port else None, timeout=CONNECT_TIMEOUT, context=self._context
        )

    def close(self) -> None:
        """Close the idle connections (tests; a pod's process simply exits)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _give_back(self, netloc: str, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.will_close:
            conn.close()
            return
        with self._lock:
            self._idle.setdefault(netloc, []).append(conn)


class GcpClients:
    """One per process: the HTTPS client, the pod's Workload Identity tokens, and the call counter."""

    def __init__(self, identity: GcpIdentity, https: Https, token_file: str) -> None:
        self.identity = identity
        self.https = https
        self.token_file = token_file
        self.calls = CallCounter()
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)

    @classmethod
    def from_env(cls, spec: FetchSpec, env: Mapping[str, str]) -> GcpClients:
        if spec.gcp is None:
            raise ConfigError("the spec names provider gcp but carries no Workload Identity settings")
        base = env.get(API_BASE_ENV_VAR) or None
        if base is not None and not re.match(r"^https://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._/-]*)?$", base):
            raise ConfigError(f"{API_BASE_ENV_VAR}={base[:80]!r} must be an https:// URL")
        return cls(spec.gcp, Https(base, ssl.create_default_context()), env.get(TOKEN_FILE_ENV_VAR) or GCP_TOKEN_PATH)

    def close(self) -> None:
        self.https.close()

    def access_token(self) -> str:
        """A token for the pod's identity, renewed `RENEW_BEFORE_SECONDS` before it expires."""
        with self._lock:
            if self._token is None or self._token[1] - time.monotonic() < RENEW_BEFORE_SECONDS:
                self._token = self._exchange()
            return self._token[0]

    def _exchange(self) -> tuple[str, float]:
        subject = self._read_token_file()
        identity = self.identity
        form = urllib.parse.urlencode(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "audience": f"identitynamespace:{identity.workload_pool}:{identity.identity_provider}",
                "scope": CLOUD_PLATFORM_SCOPE,
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "subject_token": subject,
            }
        ).encode()
        reply = self._call(
            "sts", "ExchangeToken", STS_HOST, "POST", "/v1/token", form, "application/x-www-form-urlencoded"
        )
        token, lifetime = reply.body.get("access_token"), reply.body.get("expires_in", 3600)
        if reply.status != 200 or not isinstance(token, str) or not token:
            raise GcpIdentityError(
                f"the security token endpoint refused the pod's Workload Identity token ({_status(reply)}); "
                f"check that the cluster's workload pool is {identity.workload_pool!r} and its identity provider "
                f"{identity.identity_provider!r} (the webhook's FERRY_GCP_* settings)"
            )
        expiry = time.monotonic() + _seconds(lifetime)
        if not identity.service_account:
            return token, expiry
        account = identity.service_account
        body = json.dumps({"scope": [CLOUD_PLATFORM_SCOPE], "lifetime": IMPERSONATED_LIFETIME}).encode()
        path = f"/v1/projects/-/serviceAccounts/{urllib.parse.quote(account)}:generateAccessToken"
        reply = self._call(
            "iamcredentials", "GenerateAccessToken", IAM_CREDENTIALS_HOST, "POST", path, body, "application/json", token
        )
        impersonated = reply.body.get("accessToken")
        if reply.status != 200 or not isinstance(impersonated, str) or not impersonated:
            raise GcpIdentityError(
                f"impersonating Google service account {account!r} was refused ({_status(reply)}); grant the pod's "
                "Kubernetes ServiceAccount roles/iam.workloadIdentityUser on it (member "
                f"serviceAccount:{identity.workload_pool}[NAMESPACE/KSA]), or remove ferry.dev/gcp-service-account"
            )
        return impersonated, time.monotonic() + 3600.0

    def _read_token_file(self) -> str:
        try:
            with open(self.token_file, "rb") as handle:
                raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise GcpIdentityError(
                f"no Workload Identity token at {self.token_file} ({exc.strerror or type(exc).__name__}); the pod "
                "has no usable Google identity, and Ferry never falls back to the node's (the GKE metadata server). "
                "Inject the pod with Ferry's webhook, which mounts the token"
            ) from None
        token = raw.decode("ascii", "replace").strip()
        if not token or len(raw) > MAX_TOKEN_FILE_BYTES or token.count(".") != 2:
            raise GcpIdentityError(
                f"{self.token_file} holds no ServiceAccount token (a JWT); check the projected volume"
            )
        return token

    def _call(
        self,
        service: str,
        operation: str,
        host: str,
        method: str,
        path: str,
        body: bytes,
        content_type: str,
        bearer: str | None = None,
    ) -> Reply:
        headers = {"Content-Type": content_type}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        self.calls.record(service, operation, "global")
        try:
            return self.https.request(method, host, path, headers, body)
        except TransportError as exc:
            raise GcpIdentityError(f"could not reach {host} ({exc}); check the pod's egress and DNS") from None


def _status(reply: Reply) -> str:
    error = reply.body.get("error")
    text = f"HTTP {reply.status}"
    if isinstance(error, str):  # OAuth-style {"error": "invalid_grant", "error_description": ...}
        text += f" {error[:60]}"
    elif isinstance(error, Mapping) and isinstance(error.get("status"), str):
        text += f" {error['status'][:60]}"
    return text


def _seconds(value: Any) -> float:
    try:
        return max(60.0, min(float(value), 12 * 3600.0))
    except (TypeError, ValueError):
        return 3600.0
