"""Where the webhook's TLS pair lives in the cluster: one Secret all replicas share, and the caBundle.

With two or more replicas, all must serve certificates the same ``caBundle`` trusts, so the pair lives in one
Secret, created, shared and rotated as docs/admission.md ("Serving certificates") says, and the caBundle is
patched with a guarded JSON patch. Making and checking the certificates is `webhook.tls.certs`'s job.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from webhook.tls.certs import (
    CA_CERT_KEY,
    CA_KEY_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    CertBundle,
    renewed_bundle,
    rotation_reasons,
)

__all__ = ["CertStoreError", "ensure_cluster_bundle", "patch_ca_bundle"]

log = logging.getLogger(__name__)

MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "ferry"}
_WRITE_ATTEMPTS = 5
_REQUEST_TIMEOUT = 15.0


class CertStoreError(RuntimeError):
    """The certificate Secret could not be read or written."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret_data(bundle: CertBundle) -> dict[str, str]:
    data = {TLS_CERT_KEY: _b64(bundle.cert_pem), TLS_KEY_KEY: _b64(bundle.key_pem), CA_CERT_KEY: _b64(bundle.ca_pem)}
    if bundle.ca_key_pem:
        data[CA_KEY_KEY] = _b64(bundle.ca_key_pem)
    return data


def _bundle_from_secret(data: Mapping[str, bytes | str] | None) -> CertBundle | None:
    data = data or {}
    try:
        cert, key, ca = (base64.b64decode(data[k], validate=True) for k in (TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY))
        ca_key = base64.b64decode(data[CA_KEY_KEY], validate=True) if CA_KEY_KEY in data else None
    except (KeyError, ValueError):
        return None
    return CertBundle(ca_pem=ca, cert_pem=cert, key_pem=key, ca_key_pem=ca_key)


def _read_json(read: Callable[..., Any], *args: str) -> dict[str, Any]:
    """GET an object as plain API JSON: no client-side model validation to trip over."""
    response = read(*args, _preload_content=False, _request_timeout=_REQUEST_TIMEOUT)
    try:
        body: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return body


def _secret_model(body: dict[str, Any]) -> kubernetes.client.V1Secret:
    secret = kubernetes.client.V1Secret.from_dict(body)
    assert secret is not None
    return secret


def ensure_cluster_bundle(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    secret_name: str,
    dns_names: Sequence[str],
    *,
    now: datetime | None = None,
) -> CertBundle:
    """The pair every replica serves, kept in Secret `namespace`/`secret_name`.

    Absent: create it (first writer wins; on 409 read the winner's). Present and
    still good for `dns_names` for 30+ days: use it. Otherwise rotate it with a
    resourceVersion precondition (on 409 re-read: another replica rotated).
    Raises `CertStoreError` when the API keeps refusing.
    """
    core = kubernetes.client.CoreV1Api(api_client)
    last_error: Exception | None = None
    for _attempt in range(_WRITE_ATTEMPTS):
        current_now = now or datetime.now(UTC)
        try:
            secret: dict[str, Any] | None = _read_json(core.read_namespaced_secret, secret_name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise CertStoreError(
                    f"cannot read Secret {namespace}/{secret_name}: {exc.status} {exc.reason}"
                ) from exc
            secret = None
        if secret is None:
            bundle = renewed_bundle(None, dns_names, current_now)
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {"name": secret_name, "namespace": namespace, "labels": dict(MANAGED_BY_LABEL)},
                "data": _secret_data(bundle),
            }
            try:
                core.create_namespaced_secret(namespace, _secret_model(body), _request_timeout=_REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 409:  # another replica created it first: use theirs
                    log.info("Secret %s/%s was created by another replica; reading it", namespace, secret_name)
                    last_error = exc
                    continue
                raise CertStoreError(
                    f"cannot create Secret {namespace}/{secret_name}: {exc.status} {exc.reason}"
                ) from exc
            log.info("created TLS Secret %s/%s", namespace, secret_name)
            return bundle

        existing = _bundle_from_secret(secret.get("data"))
        reasons = ["missing keys"] if existing is None else rotation_reasons(existing, dns_names, now=current_now)
        if not reasons:
            assert existing is not None
            return existing
        log.info("rotating TLS Secret %s/%s: %s", namespace, secret_name, "; ".join(reasons))
        bundle = renewed_bundle(existing, dns_names, current_now)
        metadata = secret.get("metadata") or {}
        data: dict[str, str] = {**(secret.get("data") or {}), **_secret_data(bundle)}
        if bundle.ca_key_pem is None:
            data.pop(CA_KEY_KEY, None)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            # The type of a Secret is immutable; keep whatever it was created with.
            "type": secret.get("type") or "Opaque",
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "resourceVersion": metadata.get("resourceVersion"),  # precondition: 409 if someone else wrote
                "labels": {**(metadata.get("labels") or {}), **MANAGED_BY_LABEL},
                "annotations": dict(metadata.get("annotations") or {}),
            },
            "data": data,
        }
        try:
            core.replace_namespaced_secret(
                secret_name, namespace, _secret_model(body), _request_timeout=_REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:  # another replica rotated it first: read theirs
                last_error = exc
                continue
            raise CertStoreError(f"cannot update Secret {namespace}/{secret_name}: {exc.status} {exc.reason}") from exc
        return bundle
    raise CertStoreError(f"Secret {namespace}/{secret_name} kept changing under us: {last_error}")


def patch_ca_bundle(api_client: kubernetes.client.ApiClient, webhook_config_name: str, ca_pem: bytes) -> bool:
    """Set ``clientConfig.caBundle`` of every webhook in MutatingWebhookConfiguration `webhook_config_name`.

    Reads the configuration, then sends one JSON patch that ``test``s each
    webhook's name at its index before setting its caBundle, so a concurrent
    edit fails the patch (it is retried) instead of patching the wrong webhook.
    Nothing is sent when every caBundle is already `ca_pem`. Returns whether it
    patched. Only the named configuration is read or written (RBAC: get+patch
    with resourceNames).
    """
    api = kubernetes.client.AdmissionregistrationV1Api(api_client)
    wanted = _b64(ca_pem)
    last_error: ApiException | None = None
    for _attempt in range(_WRITE_ATTEMPTS):
        config = _read_json(api.read_mutating_webhook_configuration, webhook_config_name)
        webhooks = config.get("webhooks") or []
        ops: list[dict[str, Any]] = []
        for index, webhook in enumerate(webhooks):
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]})
            if (webhook.get("clientConfig") or {}).get("caBundle") != wanted:
                ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted})
        if not any(op["op"] == "add" for op in ops):
            if not webhooks:
                log.warning("MutatingWebhookConfiguration %s has no webhooks to patch", webhook_config_name)
            return False
        try:
            api.patch_mutating_webhook_configuration(
                webhook_config_name,
                ops,
                _content_type="application/json-patch+json",
                _request_timeout=_REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status in (409, 422):  # changed since we read it (failed test op): re-read
                last_error = exc
                continue
            raise
        log.info("patched caBundle of %d webhook(s) in %s", len(webhooks), webhook_config_name)
        return True
    raise CertStoreError(f"MutatingWebhookConfiguration {webhook_config_name} kept changing: {last_error}")
