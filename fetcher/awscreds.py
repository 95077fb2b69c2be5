"""The pod's own AWS identity, and nothing else: static keys, IRSA web identity, EKS Pod Identity.

The fetcher must sign with the pod's identity and never fall through to the node's instance role, so there
is no instance-metadata (IMDS) provider at all. The chain and renewal: docs/aws-client.md.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from fetcher.awsendpoints import EndpointRules
from fetcher.awswire import (
    AwsServiceError,
    CredentialError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    is_retryable,
    xml_error,
)
from fetcher.logs import log
from fetcher.sigv4 import Credentials
from fetcher.transport import Backoff, HttpClient, Reply, TransportError, with_retries

# Renew temporary keys this long before they expire (STS and Pod Identity keys last an hour or more).
REFRESH_BEFORE_SECONDS = 15 * 60
# If renewal fails, keys with at least this much life left are still used (and renewal is tried next call).
STILL_USABLE_SECONDS = 60
MAX_TOKEN_BYTES = 64 * 1024
ECS_HOST = "169.254.170.2"
# Hosts a plain-HTTP container credentials URI may name (as the AWS SDKs allow): the agent is link-local.
CONTAINER_HTTP_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23", "localhost"})
STS_API_VERSION = "2011-06-15"


class CallRecorder(Protocol):
    def record_call(self, service: str, operation: str, region: str) -> None: ...

    def record_attempt(self, service: str, operation: str, region: str) -> None: ...


Fetch = Callable[[str], Credentials]


def choose_source(
    environ: Mapping[str, str], http: HttpClient, endpoints: EndpointRules, backoff: Backoff, calls: CallRecorder
) -> Fetch:
    """The first configured source of the chain; a fetch that raises NoCredentialsError when none is."""
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        static = Credentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)
        return lambda region: static
    if key or secret:
        missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
        return _raiser(
            PartialCredentialsError(f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together; {missing} is missing")
        )
    role, token_file = environ.get("AWS_ROLE_ARN"), environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if role and token_file:
        web = WebIdentity(role, Path(token_file), environ, http, endpoints, backoff, calls)
        return web.fetch
    full, relative = (
        environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
    )
    if full or relative:
        url = full or f"http://{ECS_HOST}{relative}"
        problem = container_uri_problem(url)
        if problem:
            return _raiser(CredentialRetrievalError(problem))
        container = ContainerCredentials(url, environ, http, backoff)
        return container.fetch
    return _raiser(
        NoCredentialsError(
            "no static keys, no IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) and no EKS Pod Identity "
            "(AWS_CONTAINER_CREDENTIALS_FULL_URI) in the environment"
        )
    )


def _raiser(error: CredentialError) -> Fetch:
    def fetch(region: str) -> Credentials:
        raise error

    return fetch


class CredentialCache:
    """Thread-safe: one renewal at a time, early; keys that can still sign survive a failed renewal."""

    def __init__(self, fetch: Fetch, clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clock = clock
        self._current: Credentials | None = None
        self._lock = threading.Lock()

    def get(self, region: str) -> Credentials:
        with self._lock:
            current = self._current
            if current is not None and (
                current.expires is None or current.expires - self._clock() > REFRESH_BEFORE_SECONDS
            ):
                return current
            try:
                fresh = self._fetch(region)
            except (CredentialError, AwsServiceError, TransportError) as exc:
                if current is not None and current.expires is not None:
                    if current.expires - self._clock() > STILL_USABLE_SECONDS:
                        log.warning("could not renew AWS credentials; the current ones still work", code=_code(exc))
                        return current
                raise
            self._current = fresh
            return fresh


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "code", "") or type(exc).__name__)


class WebIdentity:
    """IRSA: the projected token, exchanged with STS AssumeRoleWithWebIdentity (unsigned) in the region."""

    def __init__(
        self,
        role_arn: str,
        token_file: Path,
        environ: Mapping[str, str],
        http: HttpClient,
        endpoints: EndpointRules,
        backoff: Backoff,
        calls: CallRecorder,
    ) -> None:
        self.role_arn = role_arn
        self.token_file = token_file
        self.session_name = environ.get("AWS_ROLE_SESSION_NAME") or ""
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
        self._http = http
        self._endpoints = endpoints
        self._backoff = backoff
        self._calls = calls

    def fetch(self, call_region: str) -> Credentials:
        region = self.region or call_region
        token = read_token(self.token_file, "AWS_WEB_IDENTITY_TOKEN_FILE")
        body = urlencode(
            {
                "Action": "AssumeRoleWithWebIdentity",
                "Version": STS_API_VERSION,
                "RoleArn": self.role_arn,
                "RoleSessionName": self.session_name or f"ferry-{int(time.time())}",
                "WebIdentityToken": token,
            }
        ).encode()
        url = self._endpoints.url("sts", region) + "/"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        self._calls.record_call("sts", "AssumeRoleWithWebIdentity", region)

        def attempt() -> Reply:
            self._calls.record_attempt("sts", "AssumeRoleWithWebIdentity", region)
            reply = self._http.request("POST", url, headers, body)
            if reply.status != 200:
                raise xml_error(reply, "AssumeRoleWithWebIdentity")
            return reply

        reply = with_retries(attempt, is_retryable, self._backoff)
        text = reply.body.decode("utf-8", "replace")
        fields = {name: _xml_value(text, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
        expiration = _xml_value(text, "Expiration")
        if not all(fields.values()):
            raise CredentialRetrievalError("STS answered AssumeRoleWithWebIdentity without credentials")
        return Credentials(fields["AccessKeyId"], fields["SecretAccessKey"], fields["SessionToken"], _epoch(expiration))


class ContainerCredentials:
    """EKS Pod Identity (and ECS): GET the agent's URI with the token file's content as Authorization."""

    def __init__(self, url: str, environ: Mapping[str, str], http: HttpClient, backoff: Backoff) -> None:
        self.url = url
        self.token_file = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") or ""
        self.token = environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") or ""
        self._http = http
        self._backoff = backoff

    def fetch(self, call_region: str) -> Credentials:
        headers = {"Accept": "application/json"}
        if self.token_file:
            headers["Authorization"] = read_token(Path(self.token_file), "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        elif self.token:
            headers["Authorization"] = self.token
        if any(char in headers.get("Authorization", "") for char in "\r\n"):
            raise CredentialRetrievalError("the container authorization token holds a line break")

        def attempt() -> Reply:
            reply = self._http.request("GET", self.url, headers)
            if reply.status >= 500:
                raise AwsServiceError(
                    code="ContainerCredentialsUnavailable", message="", status=reply.status, operation="GetCredentials"
                )
            return reply

        try:
            reply = with_retries(attempt, is_retryable, self._backoff)
        except (AwsServiceError, TransportError) as exc:
            raise CredentialRetrievalError(f"the Pod Identity Agent did not answer: {_code(exc)}") from exc
        body = reply.json()
        if reply.status != 200 or not isinstance(body, dict):
            raise CredentialRetrievalError(f"the Pod Identity Agent answered HTTP {reply.status}")
        try:
            return Credentials(
                str(body["AccessKeyId"]),
                str(body["SecretAccessKey"]),
                str(body.get("Token") or "") or None,
                _epoch(str(body.get("Expiration") or "")),
            )
        except KeyError:
            raise CredentialRetrievalError("the Pod Identity Agent's answer holds no credentials") from None


def container_uri_problem(url: str) -> str | None:
    """None when the fetcher may send its token to `url`; otherwise why not."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _allowed_http_host((parts.hostname or "").lower()):
        return None
    return "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback or the EKS/ECS agent address"


def _allowed_http_host(host: str) -> bool:
    if host in CONTAINER_HTTP_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path, variable: str) -> str:
    """The token file's content, read now (never cached: the kubelet rotates it)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise CredentialRetrievalError(
            f"cannot read {variable} ({path}): {exc.strerror or type(exc).__name__}"
        ) from None
    if len(raw) > MAX_TOKEN_BYTES or not raw.strip():
        raise CredentialRetrievalError(f"{variable} ({path}) is empty or larger than {MAX_TOKEN_BYTES} bytes")
    return raw.decode("utf-8", "replace").strip()


def _xml_value(text: str, name: str) -> str:
    start = text.find(f"<{name}>")
    end = text.find(f"</{name}>", start)
    if start < 0 or end < 0:
        return ""
    value = text[start + len(name) + 2 : end]
    for escaped, plain in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
        value = value.replace(escaped, plain)
    return value.strip()


def _epoch(expiration: str) -> float | None:
    if not expiration:
        return None
    try:
        return datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + STILL_USABLE_SECONDS * 2  # unreadable: use briefly, renew soon
