"""A role per object: STS AssumeRole from the pod's own identity, with tags that say which pod asks.

One pod may read a secret that lives in another account. The session tags, caching and the trust policy
these requests need: docs/configuration.md ("A role per object, across accounts").
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from fetcher.awscreds import STS_API_VERSION, CredentialCache, _epoch, _xml_value
from fetcher.awswire import AwsServiceError, CredentialRetrievalError, is_retryable, xml_error
from fetcher.contract.object_options import MAX_ROLES, POD_SERVICE_ACCOUNT_ENV_VAR, AssumeRole
from fetcher.contract.secret_objects import POD_NAME_ENV_VAR, POD_NAMESPACE_ENV_VAR
from fetcher.retry import with_retries
from fetcher.sigv4 import Credentials, sign
from fetcher.transport import Reply, TransportError

if TYPE_CHECKING:
    from fetcher.aws import AwsClients

# Role sessions one process keeps; past it the least recently used is dropped (and assumed again if needed).
# Admission allows no more distinct roles in one spec, so a refresh never evicts one it is about to use.
MAX_ROLE_SESSIONS = MAX_ROLES
SESSION_SECONDS = 3600
# STS's rules: RoleSessionName and SourceIdentity are 2 to 64 characters of [\w+=,.@-].
MAX_SESSION_NAME = 64
_NOT_SESSION_CHAR = re.compile(r"[^\w+=,.@-]", re.ASCII)
MAX_TAG_VALUE = 256
_NOT_TAG_CHAR = re.compile(r"[^\w .:/=+@-]", re.ASCII)
# Session tag keys, as EKS Pod Identity names them.
TAG_NAMESPACE, TAG_SERVICE_ACCOUNT, TAG_POD = (
    "kubernetes-namespace",
    "kubernetes-service-account",
    "kubernetes-pod-name",
)


class PodIdentity:
    """Who asks: the pod's namespace, ServiceAccount and name, from the downward API env vars."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.namespace = environ.get(POD_NAMESPACE_ENV_VAR, "")
        self.service_account = environ.get(POD_SERVICE_ACCOUNT_ENV_VAR, "")
        self.pod = environ.get(POD_NAME_ENV_VAR, "")
        # EKS Pod Identity tags the pod's own session with these keys, all transitive, and STS fails an
        # AssumeRole that sends an inherited key again: on Pod Identity the role session inherits EKS's tags.
        self.inherits_tags = on_pod_identity(environ)

    def session_name(self) -> str:
        return bounded_session_text(f"ferry.{self.namespace or 'pod'}.{self.pod or 'unknown'}")

    def source_identity(self) -> str:
        return bounded_session_text(f"{self.service_account or 'default'}@{self.namespace or 'unknown'}")

    def tags(self) -> list[tuple[str, str]]:
        if self.inherits_tags:
            return []
        pairs = ((TAG_NAMESPACE, self.namespace), (TAG_SERVICE_ACCOUNT, self.service_account), (TAG_POD, self.pod))
        return [(key, _NOT_TAG_CHAR.sub("-", value)[:MAX_TAG_VALUE]) for key, value in pairs if value]


def on_pod_identity(environ: Mapping[str, str]) -> bool:
    """True when the pod's own keys come from EKS Pod Identity, in awscreds.choose_source's order."""
    if environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_SECRET_ACCESS_KEY"):
        return False
    if environ.get("AWS_ROLE_ARN") and environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return False
    return bool(
        environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    )


def bounded_session_text(text: str) -> str:
    """STS's charset, at most 64 characters; a long name keeps a hash of the whole so it stays distinct."""
    clean = _NOT_SESSION_CHAR.sub("-", text)
    if len(clean) > MAX_SESSION_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = f"{clean[: MAX_SESSION_NAME - 9]}-{digest}"
    return clean if len(clean) >= 2 else (clean + "--")[:2]


def assume_role_body(role: AssumeRole, who: PodIdentity) -> bytes:
    """The AssumeRole request's form body (the query protocol)."""
    fields: list[tuple[str, str]] = [
        ("Action", "AssumeRole"),
        ("Version", STS_API_VERSION),
        ("RoleArn", role.role_arn),
        ("RoleSessionName", who.session_name()),
        ("DurationSeconds", str(SESSION_SECONDS)),
        ("SourceIdentity", who.source_identity()),
    ]
    if role.external_id:
        fields.append(("ExternalId", role.external_id))
    for number, (key, value) in enumerate(who.tags(), start=1):
        fields += [(f"Tags.member.{number}.Key", key), (f"Tags.member.{number}.Value", value)]
    return urlencode(fields).encode()


class RoleSession:
    """Assumes one role with the base credentials; CredentialCache calls `fetch` when renewal is due."""

    def __init__(self, base: AwsClients, role: AssumeRole, who: PodIdentity) -> None:
        self._base = base
        self.role = role
        self._body = assume_role_body(role, who)

    def fetch(self, region: str) -> Credentials:
        base = self._base
        url = base.endpoints.url("sts", region) + "/"
        parts = urlsplit(url)
        base.calls.record_call("sts", "AssumeRole", region)

        def attempt() -> Reply:
            base.calls.record_attempt("sts", "AssumeRole", region)
            headers = sign(
                method="POST",
                host=parts.netloc.rpartition("@")[2],
                path=parts.path or "/",
                headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
                body=self._body,
                credentials=base.credentials.get(region),
                region=region,
                service="sts",
                now=datetime.now(UTC),
            )
            for hook in base.on_send:
                hook("AssumeRole", headers)
            reply = base.http.request("POST", url, headers, self._body)
            if reply.status != 200:
                raise xml_error(reply, "AssumeRole")
            return reply

        try:
            reply = with_retries(attempt, is_retryable, base.backoff)
        except AwsServiceError as exc:
            # The role leads the message: errors.py cuts AWS's text, and the role is what to fix.
            exc.message = f"assuming {self.role.role_arn}: {exc.message}"
            raise
        except TransportError as exc:
            # No answer from STS: the object's own call never started, so the message names STS and the role.
            exc.args = (f"STS AssumeRole for {self.role.role_arn}: {exc}",)
            raise
        text = reply.body.decode("utf-8", "replace")
        fields = {name: _xml_value(text, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
        if not all(fields.values()):
            raise CredentialRetrievalError(f"STS answered AssumeRole for {self.role.role_arn} without credentials")
        expires = _epoch(_xml_value(text, "Expiration"))
        return Credentials(fields["AccessKeyId"], fields["SecretAccessKey"], fields["SessionToken"], expires)


class RoleSessions:
    """The process's role sessions: one client view per (role, ExternalId), least recently used dropped."""

    def __init__(self, base: AwsClients, environ: Mapping[str, str]) -> None:
        self._base = base
        self._who = PodIdentity(environ)
        self._views: dict[AssumeRole, AwsClients] = {}
        self._lock = threading.Lock()

    def clients_for(self, role: AssumeRole | None) -> AwsClients:
        if role is None:
            return self._base
        with self._lock:
            view = self._views.pop(role, None)
            if view is None:
                session = RoleSession(self._base, role, self._who)
                view = self._base.with_credentials(CredentialCache(session.fetch))
            self._views[role] = view  # most recently used last
            while len(self._views) > MAX_ROLE_SESSIONS:
                del self._views[next(iter(self._views))]
            return view

    def __len__(self) -> int:
        return len(self._views)
