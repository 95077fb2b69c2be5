"""The cert-manager component is consistent with the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.manifests.render import (
    MANIFESTS,
    MWC_NAME,
    NAMESPACE,
    TLS_SECRET,
    WEBHOOK_NAME,
    env_of,
    grants,
    kustomize,
    only,
    restricted_violations,
    webhook_container,
    webhook_deployment,
)

# --- cert-manager component ------------------------------------------------------------------


def test_cert_manager_component_is_consistent(cert_manager: list[dict[str, Any]]) -> None:
    certificate = only(cert_manager, "Certificate")
    issuer = only(cert_manager, "Issuer")
    spec = certificate["spec"]
    assert certificate["metadata"]["namespace"] == issuer["metadata"]["namespace"] == NAMESPACE
    assert spec["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert "selfSigned" in issuer["spec"]
    service = only(cert_manager, "Service", WEBHOOK_NAME)
    svc = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert svc in spec["dnsNames"]
    assert spec["secretName"] != TLS_SECRET  # never the Secret the self-managed mode writes

    mwc = only(cert_manager, "MutatingWebhookConfiguration", MWC_NAME)
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    )
    pod = webhook_deployment(cert_manager)["spec"]["template"]["spec"]
    container = webhook_container(cert_manager)
    env = env_of(container)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for var, key in (("FERRY_TLS_CERT_FILE", "tls.crt"), ("FERRY_TLS_KEY_FILE", "tls.key")):
        path = Path(env[var]["value"])
        assert path.name == key
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == spec["secretName"]
    assert restricted_violations(pod) == []
    # Files mode: the webhook no longer writes Secrets, so it may not.
    assert not [o for o in cert_manager if o["kind"] in {"Role", "RoleBinding"}]
    # Nor patch its webhook configuration: cainjector fills the caBundle.
    base_grants = grants(only(kustomize(MANIFESTS), "ClusterRole"))
    patch_ca = {g for g in base_grants if g[1] == "mutatingwebhookconfigurations"}
    assert patch_ca and grants(only(cert_manager, "ClusterRole")) == base_grants - patch_ca
