"""Every failure the fetcher reports on purpose, and the one place AWS client errors become ours.

An init container's termination message is all an app team sees, so every AWS call site must get the same
wording, hint and failover decision, and never a secret value. The error tree: docs/fetcher.md ("Errors and retries").
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fetcher.contract.problems import FerryError as FerryError  # re-exported: the root of this tree

if TYPE_CHECKING:
    from fetcher.awswire import AwsServiceError

# Error codes that mean "AWS is overloaded", whatever the HTTP status says.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})
# AWS's own message is quoted in ours up to this length (a termination message keeps 4096 bytes).
MAX_AWS_MESSAGE_CHARS = 300
# An error code is a short identifier; anything longer or stranger is cut (it is quoted as-is otherwise).
MAX_AWS_CODE_CHARS = 64
_PLAIN_CODE = re.compile(r"[A-Za-z0-9_.:#-]+")
# Names listed by one ParametersNotFoundError (AWS echoes them back; a broken endpoint could send thousands).
MAX_LISTED_NAMES = 10
MAX_NAME_CHARS = 120
_RESOURCE_IN_MESSAGE = re.compile(r"on resource: (\S+)")


class ObjectError(FerryError):
    """One object (secret or parameter) could not be delivered."""

    def __init__(self, message: str, *, object_name: str, region: str | None = None) -> None:
        super().__init__(message)
        self.object_name = object_name
        self.region = region


class FetchError(ObjectError):
    """AWS refused the request or could not be reached."""

    def __init__(
        self,
        *,
        object_name: str,
        region: str,
        code: str,
        operation: str,
        hint: str,
        detail: str = "",
        kind: str = "object",
    ) -> None:
        # The code and the detail may be an answer's text: bounded and on one line, whoever builds the error.
        self.code = _aws_code(code)
        self.operation = operation
        self.hint = hint
        self.detail = _short(detail) if detail else ""
        self.kind = kind
        self.after: FetchError | None = None
        super().__init__(self._compose(object_name, region), object_name=object_name, region=region)

    def _compose(self, object_name: str, region: str) -> str:
        text = f"{self.kind} {object_name!r} in {region}: {self.code} from {self.operation}"
        if self.detail:
            text += f" ({self.detail})"
        if self.hint:
            text += f". Hint: {self.hint}"
        return text

    def __str__(self) -> str:
        text = super().__str__()
        if self.after is not None:
            text += f" [asked after the primary region {self.after.region} failed: {self.after.code}]"
        return text

    def after_primary(self, primary: FetchError) -> FetchError:
        """Mark this failover-region error as following `primary`'s failure."""
        self.after = primary
        return self


class AwsRejectedError(FetchError):
    """AWS answered, and the answer is no: asking another region would hide a real problem."""


class ParametersNotFoundError(AwsRejectedError):
    """SSM's GetParameters listed these names as InvalidParameters: reported together."""

    def __init__(self, *, names: Sequence[str], region: str) -> None:
        self.names = tuple(names)
        listed = ", ".join(_short(name, MAX_NAME_CHARS) for name in self.names[:MAX_LISTED_NAMES])
        if len(self.names) > MAX_LISTED_NAMES:
            listed += f" and {len(self.names) - MAX_LISTED_NAMES} more"
        super().__init__(
            object_name=listed,
            region=region,
            code="InvalidParameters",
            operation="GetParameters",
            hint=(
                "no such parameter, version or label in this region; check each name (a leading '/' matters), "
                "objectVersion / objectVersionLabel, and the region"
            ),
            kind="SSM parameter" if len(self.names) == 1 else "SSM parameters",
        )


class AwsUnavailableError(FetchError):
    """AWS could not answer (5xx, throttling, timeout, connection): the failover region may."""


class RenderError(ObjectError):
    """A fetched value does not fit what the spec asks of it."""

    def __init__(self, reason: str, *, object_name: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        where = f"object {object_name!r}" + (f", jmesPath {path!r}" if path else "")
        super().__init__(f"{where}: {reason}", object_name=object_name)


class ObjectErrors(FerryError):
    """Several objects failed in one run: all of them are reported, in the order they were asked for."""

    def __init__(self, errors: Sequence[ObjectError]) -> None:
        self.errors = tuple(errors)
        if len(self.errors) == 1:
            text = str(self.errors[0])
        else:
            text = f"{len(self.errors)} objects failed: " + "; ".join(str(error) for error in self.errors)
        super().__init__(text)


class OutputFormatError(FerryError):
    """The files cannot be written as a requested dotenv or JSON document; names the files, never a value."""


class WriteError(FerryError):
    """The target directory could not be written."""


class ConfigError(FerryError):
    """The fetcher's own configuration is missing or wrong."""


class KubeAPIError(FerryError):
    """The Kubernetes API answered a request with an error, or could not be reached (status 0)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeForbiddenError(KubeAPIError):
    """RBAC denied the pod's ServiceAccount: the message says which verb on which resource, and how to allow it."""

    def __init__(self, message: str, *, verb: str, resource: str, name: str, namespace: str, user: str) -> None:
        super().__init__(message, status=403, reason="Forbidden")
        self.verb = verb
        self.resource = resource
        self.name = name
        self.namespace = namespace
        self.user = user


# --- The one translation from the AWS client's raw errors to Ferry errors. -----------------------


@contextmanager
def translating_aws_errors(*, object_name: str, region: str, service: str, operation: str) -> Iterator[None]:
    """Run one AWS call; any SDK failure leaves as a FetchError naming object, region, code and hint."""
    # Imported here: `fetcher status` (the probe) imports this module and must stay free of ssl and http.
    from fetcher.awsendpoints import EndpointError
    from fetcher.awswire import AwsServiceError, CredentialError
    from fetcher.transport import TransportError

    try:
        yield
    except AwsServiceError as exc:
        raise _from_client_error(exc, object_name, region, service, operation) from exc
    except CredentialError as exc:
        raise AwsRejectedError(
            object_name=object_name,
            region=region,
            code=exc.code,
            operation=operation,
            hint=(
                "the pod has no usable AWS identity: annotate its service account with "
                "eks.amazonaws.com/role-arn (IRSA) or create an EKS Pod Identity association, "
                "and check that the identity webhook ran before Ferry's"
            ),
            detail=_short(str(exc)),
            kind=_kind(service),
        ) from exc
    except TransportError as exc:
        raise AwsUnavailableError(
            object_name=object_name,
            region=region,
            code=exc.code,
            operation=operation,
            hint=(
                "could not reach the AWS endpoint; check the pod's egress (VPC endpoint, NAT, proxy, "
                "AWS_CA_BUNDLE) and DNS"
            ),
            detail=_short(str(exc)),
            kind=_kind(service),
        ) from exc
    except EndpointError as exc:
        raise AwsRejectedError(
            object_name=object_name,
            region=region,
            code=exc.code,
            operation=operation,
            hint="the endpoint settings name no endpoint; check AWS_USE_FIPS_ENDPOINT and AWS_USE_DUALSTACK_ENDPOINT",
            detail=_short(str(exc)),
            kind=_kind(service),
        ) from exc


def _from_client_error(exc: AwsServiceError, object_name: str, region: str, service: str, operation: str) -> FetchError:
    code = _aws_code(exc.code)
    aws_message = _short(exc.message)
    status = exc.status
    failed_operation = exc.operation or operation
    transient = code in THROTTLING_CODES or status >= 500 or status == 429
    if transient and code not in THROTTLING_CODES:
        hint = (
            f"AWS failed on its side (HTTP {status}) after the configured retries; nothing to fix in the pod. "
            "It is usually brief: the init container is restarted, or set a failover region"
        )
    else:
        hint = _hint_for(code, aws_message, service, failed_operation, object_name, region)
    error_class = AwsUnavailableError if transient else AwsRejectedError
    return error_class(
        object_name=object_name,
        region=region,
        code=code,
        operation=failed_operation,
        hint=hint,
        detail=aws_message,
        kind=_kind(service),
    )


def _hint_for(code: str, aws_message: str, service: str, operation: str, object_name: str, region: str) -> str:
    if operation == "AssumeRole":
        return (
            "the role named above did not let the pod's identity assume it: its trust policy must allow "
            "sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity to the pod's IAM role (with the "
            "object's externalId as sts:ExternalId if set), and the pod's role must be allowed sts:AssumeRole "
            "on it (docs/configuration.md, a role per object)"
        )
    if operation.startswith("AssumeRole"):
        return (
            "STS refused the pod's web identity token (IRSA): check the role ARN on the service account "
            "and that the role's trust policy allows this cluster's OIDC provider and service account"
        )
    if code in ACCESS_DENIED_CODES:
        if "kms" in aws_message.lower():
            return "grant kms:Decrypt on the KMS key that encrypts it to the pod's IAM role"
        action = f"{'secretsmanager' if service == 'secretsmanager' else 'ssm'}:{operation}"
        match = _RESOURCE_IN_MESSAGE.search(aws_message)
        resource = match.group(1).rstrip(".") if match else _guess_arn(service, object_name, region)
        return f"grant {action} on {resource} to the pod's IAM role (IRSA role or Pod Identity association)"
    if code in ("ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"):
        return (
            f"it does not exist in {region}, or not with this version/label; check objectName, "
            "objectVersion / objectVersionLabel, and the region"
        )
    if code == "DecryptionFailure":
        return "grant kms:Decrypt on the secret's KMS key to the pod's IAM role"
    if code in ("UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException"):
        return "AWS does not recognise the pod's credentials; check the IRSA role or Pod Identity association"
    if code in ("ExpiredTokenException", "ExpiredToken"):
        return "the pod's credentials expired; check that the projected service account token is refreshed"
    if code == "InvalidRequestException":
        return "the secret may be scheduled for deletion or disabled; restore it or point at another secret"
    if code in THROTTLING_CODES:
        return "AWS throttled the request; spread refreshes out (longer interval) or raise the quota"
    if aws_message:
        return "see AWS's message in parentheses"
    api = {"secretsmanager": "Secrets Manager", "ssm": "Systems Manager"}.get(service, service)
    return f"AWS sent no message with this error; look up {code} in the {api} API reference"


def _guess_arn(service: str, object_name: str, region: str) -> str:
    if object_name.startswith("arn:"):
        return object_name
    if service == "secretsmanager":
        return f"arn:aws:secretsmanager:{region}:<account>:secret:{object_name}-*"
    return f"arn:aws:ssm:{region}:<account>:parameter/{object_name.lstrip('/')}"


def _kind(service: str) -> str:
    return {"secretsmanager": "secret", "ssm": "SSM parameter"}.get(service, "object")


def _short(text: str, limit: int = MAX_AWS_MESSAGE_CHARS) -> str:
    """`text` on one line, printable characters only, at most `limit` characters."""
    text = text[: limit * 4]  # bound the work before splitting a reply of any size
    text = "".join(char if char.isprintable() else " " for char in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _aws_code(raw: object) -> str:
    """AWS's error code, as sent when it looks like one; otherwise cut and made printable."""
    code = str(raw or "") or "Unknown"
    if len(code) <= MAX_AWS_CODE_CHARS and _PLAIN_CODE.fullmatch(code):
        return code
    return _short(code, MAX_AWS_CODE_CHARS) or "Unknown"
