"""The Role and RoleBinding a pod's ServiceAccount needs for ``secretObjects``, as ``fetcher role`` prints them.

Each team binds a Role of its own, named per class and ServiceAccount and limited to the named Secrets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from fetcher.contract.secret_objects import SecretObject, SecretObjectsError, parse_secret_objects
from fetcher.secret_manifests import SECRET_SYNC_VERBS

# Kubernetes object names are at most 253 characters; longer Role names keep a readable start and a digest.
MAX_ROLE_NAME_LENGTH = 253
ROLE_NAME_PREFIX = "ferry-secret-sync"

ROLE_WARNING = """\
# The Role and RoleBinding Ferry's secretObjects need: get, create and patch on exactly these Secrets.
# Review before you apply: create on Secrets is powerful. RBAC cannot restrict a Secret's type, so every
# container that runs as this ServiceAccount with a token (the app's too, unless its pod sets
# automountServiceAccountToken: false) could create a Secret of these names of type
# kubernetes.io/service-account-token, which makes the cluster issue a token for any ServiceAccount in the
# namespace. Ferry itself refuses token types and writes only Secrets it created (label ferry.dev/managed-by).
# Bind it to a ServiceAccount used by this workload alone.
"""


def secret_sync_role_name(spc_name: str, service_account: str) -> str:
    """One name per SecretProviderClass and ServiceAccount (':' never occurs in either), bounded in length."""
    name = f"{ROLE_NAME_PREFIX}:{spc_name}:{service_account}"
    if len(name) <= MAX_ROLE_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: MAX_ROLE_NAME_LENGTH - len(digest) - 1]}-{digest}"


def secret_sync_rbac(
    namespace: str, service_account: str, secret_names: Sequence[str], *, spc_name: str = "inline"
) -> list[dict[str, Any]]:
    """The Role and RoleBinding that let `service_account` write exactly these Secrets (nothing else)."""
    if not secret_names:
        return []
    name = secret_sync_role_name(spc_name, service_account)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": sorted(set(secret_names)),
                "verbs": list(SECRET_SYNC_VERBS),
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    return [role, binding]


def secret_sync_rbac_yaml(
    namespace: str, service_account: str, objects: Sequence[SecretObject], *, spc_name: str = "inline"
) -> str:
    """`secret_sync_rbac` for the Secrets of these entries, as a YAML stream for ``kubectl apply -f -``."""
    import yaml

    names = [obj.secret_name for obj in objects]
    documents = secret_sync_rbac(namespace, service_account, names, spc_name=spc_name)
    return ROLE_WARNING + yaml.safe_dump_all(documents, sort_keys=False)


def rbac_yaml_for_class(manifest: Mapping[str, Any], service_account: str, namespace: str | None) -> str:
    """`secret_sync_rbac_yaml` for a SecretProviderClass manifest; SecretObjectsError says what is missing."""
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), Mapping) else {}
    meta = manifest.get("metadata") if isinstance(manifest.get("metadata"), Mapping) else {}
    assert isinstance(spec, Mapping) and isinstance(meta, Mapping)
    objects = parse_secret_objects(spec.get("secretObjects"), "spec.secretObjects")
    if not objects:
        raise SecretObjectsError(["no spec.secretObjects: its pods write no Kubernetes Secret and need no Role"])
    target = namespace or meta.get("namespace")
    if not isinstance(target, str) or not target:
        raise SecretObjectsError(["no metadata.namespace; pass --namespace (the pods' namespace)"])
    spc_name = meta.get("name")
    if not isinstance(spc_name, str) or not spc_name:
        raise SecretObjectsError(["no metadata.name; the Role is named after the class"])
    return secret_sync_rbac_yaml(target, service_account, objects, spc_name=spc_name)
