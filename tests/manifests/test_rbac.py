"""RBAC grants exactly what the design allows, and the webhook holds no AWS identity or secret."""

from __future__ import annotations

import re
from typing import Any

from tests.manifests.render import (
    MWC_NAME,
    NAMESPACE,
    NEVER_INJECTED,
    TLS_SECRET,
    WEBHOOK_NAME,
    env_of,
    grants,
    only,
    webhook_container,
    webhook_deployment,
)

# --- RBAC -------------------------------------------------------------------------


def test_cluster_role_grants_exactly_what_the_design_allows(base: list[dict[str, Any]]) -> None:
    assert grants(only(base, "ClusterRole", WEBHOOK_NAME)) == {
        ("", "namespaces", "get", None),
        ("", "namespaces", "list", None),
        ("", "namespaces", "watch", None),
        ("", "limitranges", "list", None),
        ("", "limitranges", "watch", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "get", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "list", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "watch", None),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", MWC_NAME),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", MWC_NAME),
        # Warnings and denials as Events on the pod's owner (webhook.ownerevents): write-only, no read of events.
        ("", "events", "create", None),
        ("", "events", "patch", None),
    }


def test_role_grants_only_the_tls_secret(base: list[dict[str, Any]]) -> None:
    role = only(base, "Role", WEBHOOK_NAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == {
        # create cannot be limited by name; the Role confines it to ferry-system.
        ("", "secrets", "create", None),
        ("", "secrets", "get", TLS_SECRET),
        ("", "secrets", "update", TLS_SECRET),
    }


def test_rbac_has_no_wildcards_or_unenforceable_resource_names(
    base: list[dict[str, Any]], cert_manager: list[dict[str, Any]]
) -> None:
    for objects in (base, cert_manager):
        for role in (o for o in objects if o["kind"] in {"ClusterRole", "Role"}):
            for group, resource, verb, name in grants(role):
                assert "*" not in (group, resource, verb)
                # These requests carry no object name for the authorizer, so a
                # rule with resourceNames reads as a grant but never matches.
                assert not (name and verb in {"list", "watch", "create", "deletecollection"})


def test_bindings_give_the_roles_to_the_webhook_service_account_only(base: list[dict[str, Any]]) -> None:
    subject = [{"kind": "ServiceAccount", "name": WEBHOOK_NAME, "namespace": NAMESPACE}]
    crb = only(base, "ClusterRoleBinding", WEBHOOK_NAME)
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WEBHOOK_NAME}
    assert crb["subjects"] == subject
    rb = only(base, "RoleBinding", WEBHOOK_NAME)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WEBHOOK_NAME}
    assert rb["subjects"] == subject
    assert webhook_deployment(base)["spec"]["template"]["spec"]["serviceAccountName"] == WEBHOOK_NAME


def test_rbac_names_match_the_webhook_settings(base: list[dict[str, Any]]) -> None:
    """resourceNames and the webhook's FERRY_* names must point at the same objects."""
    from webhook import settings as settings_module

    environ = {
        name: item.get("value", NAMESPACE if "fieldRef" in item.get("valueFrom", {}) else "")
        for name, item in env_of(webhook_container(base)).items()
    }
    settings = settings_module.Settings.from_env(environ)
    assert settings.namespace == NAMESPACE
    assert settings.service_name == only(base, "Service")["metadata"]["name"]
    assert settings.webhook_config_name == only(base, "MutatingWebhookConfiguration")["metadata"]["name"]
    assert settings.tls_secret_name == TLS_SECRET
    assert settings.tls_cert_file is None and settings.tls_key_file is None  # self-managed TLS in the base
    for excluded in NEVER_INJECTED:
        assert settings.is_excluded_namespace(excluded)


# --- The webhook holds no AWS credentials and no Secrets --------------------------

AWS_CREDENTIAL_ENV = re.compile(
    r"^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|ROLE_ARN|WEB_IDENTITY_TOKEN_FILE|PROFILE|"
    r"CONTAINER_CREDENTIALS_FULL_URI|CONTAINER_CREDENTIALS_RELATIVE_URI|CONTAINER_AUTHORIZATION_TOKEN(_FILE)?|"
    r"SHARED_CREDENTIALS_FILE|CONFIG_FILE)$"
)


def test_webhook_has_no_aws_identity_and_no_secret_material(base: list[dict[str, Any]]) -> None:
    assert not [o for o in base if o["kind"] == "Secret"]
    sa = only(base, "ServiceAccount", WEBHOOK_NAME)
    assert not any(key.startswith("eks.amazonaws.com/") for key in sa["metadata"].get("annotations", {}))
    pod = webhook_deployment(base)["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        assert "envFrom" not in container
        for item in container.get("env", []):
            assert not item["name"].startswith("AWS_"), item
            assert not AWS_CREDENTIAL_ENV.match(item["name"])
            assert "secretKeyRef" not in item.get("valueFrom", {}), item
    for volume in pod.get("volumes", []):
        assert "secret" not in volume and "hostPath" not in volume, volume
        for source in volume.get("projected", {}).get("sources", []):
            assert "secret" not in source
            assert source.get("serviceAccountToken", {}).get("audience") not in {
                "sts.amazonaws.com",
                "pods.eks.amazonaws.com",
            }
