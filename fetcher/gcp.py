"""Google Cloud with the pod's own identity: GKE Workload Identity over plain HTTPS, one client per process.

The fetcher runs in every pod, so it speaks the few REST calls it needs with the standard library (no grpcio,
no google-auth), and never asks the metadata server, which can answer with the node's identity.
Details: docs/gke.md ("What the fetcher does", "Never the node's identity").
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fetcher.contract import FetchSpec, GcpIdentity
from fetcher.contract.gcp import GCP_TOKEN_PATH
from fetcher.errors import ConfigError, FerryError
from fetcher.retry import Backoff, next_retry
from fetcher.transport import HttpClient, HttpSettings, Proxies
from fetcher.transport import TransportError as TransportError

# Tests and local runs only: every Google host is reached as BASE/<host>/..., e.g. https://127.0.0.1:8443.
# The webhook never sets it and never copies it from a tenant's container (docs/gke.md).
API_BASE_ENV_VAR = "FERRY_GCP_API_BASE"
TOKEN_FILE_ENV_VAR = "FERRY_GCP_TOKEN_FILE"
STS_HOST = "sts.googleapis.com"
IAM_CREDENTIALS_HOST = "iamcredentials.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
USER_AGENT = "ferry-fetcher"
RENEW_BEFORE_SECONDS = 300.0
IMPERSONATED_LIFETIME = "3600s"
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
# The whole of one request, from the send to the last byte: a reply that trickles in never trips READ_TIMEOUT.
# (Connect and the TLS handshake are bounded by CONNECT_TIMEOUT: CPython times a whole handshake with it.)
REQUEST_DEADLINE = 15.0
MAX_ATTEMPTS = 4
# The shared policy (full jitter, bounded in tries and in time), with Google's shorter waits.
BACKOFF = Backoff(max_attempts=MAX_ATTEMPTS, base=0.2, cap=2.0, budget=30.0)
# A secret version holds at most 64 KiB; base64 and JSON stay far below this.
MAX_REPLY_BYTES = 1024 * 1024
MAX_TOKEN_FILE_BYTES = 64 * 1024
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_HOST_RE = re.compile(r"^[a-z0-9.-]{1,120}$")
_ERROR_CODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,60}")


class GcpIdentityError(FerryError):
    """The pod has no usable Workload Identity, or Google refused to exchange it; names the fix."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status and JSON body (an empty dict when the body was not JSON)."""

    status: int
    body: Mapping[str, Any]


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


def http_settings(env: Mapping[str, str]) -> HttpSettings:
    """The shared transport's settings for Google: its timeouts and reply bound, the pod's proxies and CAs.

    HTTPS_PROXY / NO_PROXY apply to Google's hosts as to AWS's; SSL_CERT_FILE names a CA bundle to trust
    instead of the system store (as Python's own default context reads it).
    """
    return HttpSettings(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_reply_bytes=MAX_REPLY_BYTES,
        ca_bundle=env.get("SSL_CERT_FILE") or None,
        proxies=Proxies.from_env(env),
    )


class Https:
    """Google's hosts over the shared transport: the shared retry policy, a deadline per request, JSON replies.

    No redirect is followed (a 3xx is an answer like any other), and 429 and 5xx are retried.
    """

    def __init__(self, api_base: str | None, settings: HttpSettings | None = None, backoff: Backoff = BACKOFF) -> None:
        self._base = urllib.parse.urlsplit(api_base) if api_base else None
        self.http = HttpClient(settings or http_settings({}))
        self.backoff = backoff
        self.sleep: Callable[[float], None] = time.sleep

    def url(self, host: str, path: str) -> str:
        """The URL of a Google host, or of its stand-in below FERRY_GCP_API_BASE."""
        if not _HOST_RE.match(host):
            raise ConfigError(f"{host[:120]!r} is not a Google API host")
        if self._base is None:
            return f"https://{host}{path}"
        return f"https://{self._base.netloc}{self._base.path.rstrip('/')}/{host}{path}"

    def request(self, method: str, host: str, path: str, headers: Mapping[str, str], body: bytes = b"") -> Reply:
        """Send with retries on 429, 5xx and transport failures; the last answer (or TransportError) stands."""
        url = self.url(host, path)
        sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            began = time.monotonic()
            try:
                raw = self.http.request(method, url, sent, body, deadline=REQUEST_DEADLINE)
            except TransportError as exc:
                delay = next_retry(self.backoff, attempts, time.monotonic() - started, exc.retryable)
                if delay is None:
                    if time.monotonic() - began >= REQUEST_DEADLINE:
                        raise TransportError(f"no whole answer within {REQUEST_DEADLINE:g}s") from None
                    raise
            else:
                reply = Reply(raw.status, _json_object(raw.body))
                delay = next_retry(self.backoff, attempts, time.monotonic() - started, raw.status in RETRIED_STATUSES)
                if delay is None:
                    return reply
            self.sleep(delay)

    def close(self) -> None:
        """Close the idle connections (tests; a pod's process simply exits)."""
        self.http.close()


def _json_object(raw: bytes) -> Mapping[str, Any]:
    try:
        parsed = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes
        return {}
    return parsed if isinstance(parsed, dict) else {}


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
        return cls(spec.gcp, Https(base, http_settings(env)), env.get(TOKEN_FILE_ENV_VAR) or GCP_TOKEN_PATH)

    def close(self) -> None:
        self.https.close()

    def access_token(self) -> str:
        """A token for the pod's identity, renewed `RENEW_BEFORE_SECONDS` before it expires."""
        with self._lock:
            if self._token is None or self._token[1] - time.monotonic() < RENEW_BEFORE_SECONDS:
                self._token = self._exchange()
            return self._token[0]

    def forget_token(self, token: str) -> None:
        """Google refused `token` (401): the next call exchanges the pod's token again, whatever its expiry said."""
        with self._lock:
            if self._token is not None and self._token[0] == token:
                self._token = None

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
                f"serviceAccount:{identity.workload_pool}[NAMESPACE/KSA]), or name another account "
                "(ferry.dev/gcp-service-account, or the ServiceAccount's iam.gke.io/gcp-service-account)"
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
    """HTTP status and the error code of a refusal; only the code's leading token, so no line or escape gets in."""
    error = reply.body.get("error")
    text = f"HTTP {reply.status}"
    code = error if isinstance(error, str) else error.get("status") if isinstance(error, Mapping) else None
    # OAuth-style {"error": "invalid_grant", ...} or Google's {"error": {"status": "PERMISSION_DENIED", ...}}
    if isinstance(code, str) and (token := _ERROR_CODE_RE.match(code)):
        text += f" {token[0]}"
    return text


def _seconds(value: Any) -> float:
    try:
        return max(60.0, min(float(value), 12 * 3600.0))
    except (TypeError, ValueError):
        return 3600.0
