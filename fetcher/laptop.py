"""`fetcher once` on a laptop: AWS profiles and SSO through botocore's credential chain, when it is installed.

The migration check runs as a person, whose keys live in ``~/.aws``; the pod's commands never import this
module or botocore, and even here the instance role (IMDS) is taken out of the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fetcher.awswire import CredentialRetrievalError, NoCredentialsError
from fetcher.sigv4 import Credentials

# What the fetcher's own chain reads; when one of these is set, botocore is not needed.
POD_IDENTITY_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
NODE_ROLE_PROVIDER = "iam-role"  # botocore's name for its IMDS provider


def profile_credentials(environ: Mapping[str, str]) -> Callable[[str], Credentials] | None:
    """A credential source from botocore's chain, or None (the environment says more, or no botocore)."""
    if any(environ.get(name) for name in POD_IDENTITY_VARIABLES):
        return None
    try:
        import botocore.session
    except ImportError:
        return None
    session = botocore.session.Session()

    def fetch(region: str) -> Credentials:
        try:
            session.get_component("credential_provider").remove(NODE_ROLE_PROVIDER)
            found = session.get_credentials()
        except Exception as exc:  # noqa: BLE001 - botocore's own errors (no such profile, SSO expired)
            raise CredentialRetrievalError(f"botocore's chain failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        if found is None:
            raise NoCredentialsError("no AWS credentials in the environment, and no profile in botocore's chain")
        frozen = found.get_frozen_credentials()
        expiry = getattr(found, "_expiry_time", None)
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token, expiry.timestamp() if expiry else None)

    return fetch
