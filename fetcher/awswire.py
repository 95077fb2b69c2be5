"""What an AWS reply means: service errors, credential failures, and which of them are worth a retry.

The client, the credential sources and errors.py must agree on one set of raw failures; they carry AWS's code,
bounded, and nothing else.
"""

from __future__ import annotations

import re

from fetcher.errors import THROTTLING_CODES
from fetcher.transport import Reply, TransportError

# Raw text kept from a reply before errors.py shortens it further.
MAX_RAW_TEXT = 2000
_XML_FIELD = {name: re.compile(rf"<{name}>([^<]{{0,2000}})</{name}>") for name in ("Code", "Message")}


class AwsServiceError(Exception):
    """AWS answered with an error: its code, message, HTTP status and the operation."""

    def __init__(self, *, code: str, message: str, status: int, operation: str) -> None:
        super().__init__(f"{operation}: {code} (HTTP {status})")
        self.code = code
        self.message = message
        self.status = status
        self.operation = operation

    @property
    def transient(self) -> bool:
        return self.code in THROTTLING_CODES or self.status >= 500 or self.status == 429


class CredentialError(Exception):
    """No usable identity: the message is the provider's own, bounded, and never holds a key."""

    @property
    def code(self) -> str:
        return type(self).__name__


class NoCredentialsError(CredentialError):
    """Neither static keys, IRSA nor EKS Pod Identity is configured in this container."""


class PartialCredentialsError(CredentialError):
    """Half of a configuration: e.g. an access key id without its secret key."""


class CredentialRetrievalError(CredentialError):
    """A configured provider (STS, the Pod Identity Agent) could not give credentials."""


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and calls that got no answer are retried; every other answer stands."""
    if isinstance(exc, AwsServiceError):
        return exc.transient
    if isinstance(exc, TransportError):
        return exc.retryable
    return False


def json_error(reply: Reply, operation: str) -> AwsServiceError:
    """The error of an AWS JSON-protocol reply (``__type``, or the x-amzn-ErrorType header)."""
    body = reply.json()
    body = body if isinstance(body, dict) else {}
    raw = str(body.get("__type") or body.get("code") or reply.headers.get("x-amzn-errortype") or "")
    code = raw.rpartition("#")[2].partition(":")[0] or _status_code(reply.status)
    message = str(body.get("message") or body.get("Message") or "")[:MAX_RAW_TEXT]
    return AwsServiceError(code=code, message=message, status=reply.status, operation=operation)


def xml_error(reply: Reply, operation: str) -> AwsServiceError:
    """The error of an AWS query-protocol (XML) reply, as STS sends it."""
    text = reply.body[: MAX_RAW_TEXT * 4].decode("utf-8", "replace")
    found = {name: pattern.search(text) for name, pattern in _XML_FIELD.items()}
    code = found["Code"].group(1) if found["Code"] else _status_code(reply.status)
    message = found["Message"].group(1) if found["Message"] else ""
    return AwsServiceError(code=code, message=message, status=reply.status, operation=operation)


def _status_code(status: int) -> str:
    return {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 500: "InternalError", 503: "ServiceUnavailable"}.get(
        status, f"HTTP{status}"
    )
