"""The fetcher's own small Kubernetes API client: in-cluster token, CA, JSON over HTTPS with the stdlib.

``secretObjects`` needs a metadata-only GET and a server-side apply of a Secret, nothing more, and the
``kubernetes`` package would add 161 MB to an image every Fargate pod pulls.
Why, and its bounds: docs/fetcher.md ("secretObjects: Kubernetes Secrets").
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fetcher.errors import ConfigError, KubeAPIError, KubeForbiddenError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_PATH = f"{SERVICE_ACCOUNT_DIR}/token"
CA_PATH = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
HOST_ENV_VAR = "KUBERNETES_SERVICE_HOST"
PORT_ENV_VAR = "KUBERNETES_SERVICE_PORT"
DEFAULT_TIMEOUT_SECONDS = 10.0
# A Secret holds at most 1 MiB of data (about 1.4 MiB in base64) plus metadata and managedFields.
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
# How much of the API server's own message is quoted in ours.
MAX_SERVER_MESSAGE_CHARS = 300
APPLY_PATCH_CONTENT_TYPE = "application/apply-patch+yaml"
# Asks the API server for an object's metadata only (labels, managedFields, uid), never its data.
METADATA_ONLY_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# What RBAC checks for a server-side apply: create when the object does not exist yet, patch always.
APPLY_VERBS = ("create", "patch")

_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_PATH = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)/(?:namespaces/([^/]+)/)?([^/?]+)(?:/([^/?]+))?(?:/([^/?]+))?")
_FORBIDDEN_MESSAGE = re.compile(r'User "([^"]{1,300})" cannot ([a-z]{1,30}) resource "([^"]{1,100})"')
_INVALID_VALUE = re.compile(r'Invalid value: (?:"(?:[^"\\]|\\.)*"|\S+)')
_SERVICE_ACCOUNT_USER = re.compile(r"^system:serviceaccount:[a-z0-9.-]{1,253}:[a-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class KubeTarget:
    """What one API path names, for messages: verb, resource (with subresource), name and namespace."""

    verb: str
    resource: str
    name: str
    namespace: str


def describe_request(method: str, path: str) -> KubeTarget:
    """The RBAC view of a request: ``PATCH /api/v1/namespaces/ns/secrets/s`` -> patch secrets "s" in ns."""
    match = _PATH.match(path)
    if not match:
        return KubeTarget(_VERBS.get(method, method.lower()), path[:100], "", "")
    namespace, resource, name, subresource = match.groups()
    verb = _VERBS.get(method, method.lower())
    if method == "GET" and not name:
        verb = "list"
    if subresource:
        resource = f"{resource}/{subresource}"
    return KubeTarget(verb, resource, name or "", namespace or "")


def service_account_from_token(token: str) -> str:
    """The ``sub`` claim of a ServiceAccount JWT (``system:serviceaccount:NS:NAME``), or "" if it has none.

    Only read for error messages; the token's signature is the API server's business.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return ""
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) and _SERVICE_ACCOUNT_USER.match(subject) else ""


def scrub_server_message(message: str) -> str:
    """The API server's message, without echoed values and bounded in length."""
    text = " ".join(_INVALID_VALUE.sub("Invalid value: (not shown)", message).split())
    return text if len(text) <= MAX_SERVER_MESSAGE_CHARS else text[: MAX_SERVER_MESSAGE_CHARS - 1] + "…"


def forbidden_message(target: KubeTarget, user: str, fix_verbs: Sequence[str] = ()) -> str:
    """The termination message for a 403: who may not do what, and the two commands that allow it.

    `fix_verbs` are the verbs the suggested Role grants (default: the denied one), e.g. an apply needs
    create and patch even when only one of them was denied this time.
    """
    who = f"ServiceAccount {user}" if user else "the pod's ServiceAccount"
    what = f'{target.verb} {target.resource} "{target.name}"' if target.name else f"{target.verb} {target.resource}"
    where = f" in namespace {target.namespace}" if target.namespace else ""
    text = f"Forbidden: the {who} may not {what}{where}."
    if user.startswith("system:serviceaccount:"):
        namespace, account = user.split(":")[2:4]
        resource = target.resource.split("/")[0]
        name_flag = f" --resource-name={target.name}" if target.name else ""
        verbs = ",".join(fix_verbs or [target.verb])
        text += (
            f" Fix: grant it with a Role and a RoleBinding, e.g. `kubectl -n {namespace} create role ferry-{account}"
            f" --verb={verbs} --resource={resource}{name_flag}` and `kubectl -n {namespace} create rolebinding"
            f" ferry-{account} --role=ferry-{account} --serviceaccount={namespace}:{account}`"
            " (or apply the Role Ferry prints for this SecretProviderClass)."
        )
    else:
        text += " Fix: bind a Role that allows it to the pod's ServiceAccount."
    return text


@dataclass(frozen=True)
class KubeClient:
    """One API server, one CA, one token file. Thread-safe: every request uses its own connection."""

    host: str
    port: int
    ssl_context: ssl.SSLContext
    token_file: str = TOKEN_PATH
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @classmethod
    def in_cluster(
        cls,
        environ: Mapping[str, str],
        *,
        token_file: str = TOKEN_PATH,
        ca_file: str = CA_PATH,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> KubeClient:
        """The client a pod uses: service host/port from the environment, the mounted CA and token."""
        host = environ.get(HOST_ENV_VAR, "").strip()
        port_text = environ.get(PORT_ENV_VAR, "443").strip() or "443"
        if not host:
            raise ConfigError(
                f"{HOST_ENV_VAR} is not set: secretObjects needs the Kubernetes API; the kubelet sets it in every "
                "pod unless the pod's enableServiceLinks and environment were overridden"
            )
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"{PORT_ENV_VAR} must be a TCP port number, got {port_text[:20]!r}")
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the Kubernetes CA from {ca_file}: {exc.strerror or exc}; secretObjects needs the "
                "ServiceAccount token volume (automountServiceAccountToken must not be false)"
            ) from exc
        return cls(host.strip("[]"), int(port_text), context, token_file, timeout)

    def read_token(self) -> str:
        """The current ServiceAccount token (re-read every time: the kubelet rotates it)."""
        try:
            with open(self.token_file, "rb") as handle:
                raw = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the ServiceAccount token at {self.token_file}: {exc.strerror}; secretObjects needs it "
                "(automountServiceAccountToken must not be false)"
            ) from exc
        if len(raw) > MAX_TOKEN_BYTES:
            raise ConfigError(f"the ServiceAccount token at {self.token_file} is larger than {MAX_TOKEN_BYTES} bytes")
        return raw.decode("ascii", errors="replace").strip()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
        fix_verbs: Sequence[str] = (),
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """Send one request; return the decoded JSON object of a 2xx answer, raise KubeAPIError otherwise.

        `fix_verbs`: the verbs a 403's suggested Role should grant (default: the one denied).
        """
        target = describe_request(method, path)
        token = self.read_token()
        url = quote(path, safe="/:@-._~") + ("?" + urlencode(dict(query)) if query else "")
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {token}", "Accept": accept, "User-Agent": "ferry-fetcher"}
        if data is not None:
            headers["Content-Type"] = content_type
        deadline = time.monotonic() + self.timeout
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
        try:
            connection.request(method, url, body=data, headers=headers)
            response = connection.getresponse()
            payload = self._read_bounded(response, deadline, target)
            status = response.status
        except ssl.SSLCertVerificationError as exc:
            raise KubeAPIError(
                f"could not {target.verb} {target.resource} {target.name!r} in namespace {target.namespace}: "
                f"the Kubernetes API at {self.host}:{self.port} presented a certificate the pod's CA does not "
                "verify; check the ServiceAccount CA (ca.crt) and KUBERNETES_SERVICE_HOST",
                status=0,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise KubeAPIError(
                f"could not {target.verb} {target.resource} {target.name!r} in namespace {target.namespace}: "
                f"the Kubernetes API at {self.host}:{self.port} did not answer ({type(exc).__name__}); "
                "check the pod's egress to the API server",
                status=0,
            ) from exc
        finally:
            connection.close()
        decoded = _decode(payload)
        if 200 <= status < 300:
            return decoded
        raise self._error(status, decoded, target, token, fix_verbs)

    def apply(
        self,
        path: str,
        manifest: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool,
        fix_verbs: Sequence[str] = APPLY_VERBS,
    ) -> dict[str, Any]:
        """Server-side apply of `manifest` at `path` (JSON is YAML, so the body is plain JSON)."""
        query = {"fieldManager": field_manager}
        if force:
            query["force"] = "true"
        return self.request(
            "PATCH", path, manifest, content_type=APPLY_PATCH_CONTENT_TYPE, query=query, fix_verbs=fix_verbs
        )

    def get_metadata(self, path: str, *, fix_verbs: Sequence[str] = ("get",)) -> dict[str, Any] | None:
        """The object's metadata only (PartialObjectMetadata: never its data), or None when it does not exist."""
        try:
            answer = self.request("GET", path, accept=METADATA_ONLY_ACCEPT, fix_verbs=fix_verbs)
        except KubeAPIError as exc:
            if exc.status == 404 and not isinstance(exc, KubeForbiddenError):
                return None
            raise
        metadata = answer.get("metadata")
        return metadata if isinstance(metadata, dict) else {}

    def _read_bounded(self, response: http.client.HTTPResponse, deadline: float, target: KubeTarget) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise KubeAPIError(
                    f"the Kubernetes API took longer than {self.timeout:g}s to answer {target.verb} {target.resource}",
                    status=0,
                )
            chunk = response.read1(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                raise KubeAPIError(
                    f"the Kubernetes API's answer to {target.verb} {target.resource} is larger than "
                    f"{self.max_response_bytes} bytes; refused",
                    status=0,
                )
            chunks.append(chunk)

    def _error(
        self, status: int, decoded: dict[str, Any], target: KubeTarget, token: str, fix_verbs: Sequence[str]
    ) -> KubeAPIError:
        raw_message = decoded.get("message")
        message = scrub_server_message(raw_message) if isinstance(raw_message, str) else ""
        reason = decoded.get("reason") if isinstance(decoded.get("reason"), str) else ""
        if status == 403:
            match = _FORBIDDEN_MESSAGE.search(raw_message) if isinstance(raw_message, str) else None
            user = match.group(1) if match else service_account_from_token(token)
            if match:
                target = KubeTarget(match.group(2), target.resource, target.name, target.namespace)
            return KubeForbiddenError(
                forbidden_message(target, user, fix_verbs),
                verb=target.verb,
                resource=target.resource,
                name=target.name,
                namespace=target.namespace,
                user=user,
            )
        what = f'{target.verb} {target.resource} "{target.name}"' if target.name else f"{target.verb} {target.resource}"
        where = f" in namespace {target.namespace}" if target.namespace else ""
        text = f"could not {what}{where}: HTTP {status} {reason or 'error'}"
        if message:
            text += f": {message}"
        if "field is immutable" in message:
            text += " (delete the existing object, or write to another name)"
        if status == 401:
            text += " (the ServiceAccount token was refused; it may have expired or been revoked)"
        return KubeAPIError(text, status=status, reason=str(reason))


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
