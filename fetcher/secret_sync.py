"""``secretObjects``: the rendered files, copied into Kubernetes Secrets the way the CSI driver does it.

Why it exists: many SecretProviderClasses sync values into a Kubernetes Secret
so that ``env.valueFrom.secretKeyRef`` and ``envFrom`` work. The init container
writes those Secrets before the app starts, with the pod's own ServiceAccount,
and the sidecar keeps them current (`file_syncer` is what they call after each
swap). The entries themselves are parsed and checked in the spec model
(`fetcher.spec.secret_objects`), so the webhook denies a bad entry at
admission; this module takes the checked entries and the rendered files (file
name -> bytes) and builds the Secret manifests (pure), then applies them (the
I/O edge, `sync_secrets`).

The CSI driver's rules, kept: ``data[].objectName`` is a *file name* after
alias and path translation; the types are the driver's eight; for
``kubernetes.io/tls`` the keys ``tls.crt`` and ``tls.key`` take the
CERTIFICATE blocks and the private key block out of the PEM file (so one file
holding both can feed both keys); every Secret carries the label
``secrets-store.csi.k8s.io/managed: "true"``. The API server's checks for each
type (required keys, JSON for docker configs, the service-account annotation,
key names, the 1 MiB size) are made here first, so a mistake is reported naming
the ``secretObjects`` field instead of as an HTTP 422.

How replicas write without fighting (server-side apply, two field managers):

- ``ferry`` (shared by every pod, ``force=true``) owns the content: type,
  labels, annotations, data, plus the writing pod's own ownerReference so the
  Secret is never created without an owner. Identical content from many
  replicas is a no-op for the API server; a newer value (rotation) wins, and
  because every pod applies as the same manager, a key removed from the SPC is
  removed from the Secret.
- ``ferry-pod-<pod uid>`` owns only that pod's ownerReference entry.
  ownerReferences is a list keyed by uid, so each pod adds its own entry and
  never removes another's; when a pod is deleted, the garbage collector drops
  its dangling entry (and with it that manager's managedFields record, so
  managedFields stays bounded by the live pods), and deletes the Secret with
  the last owner.

There is no read-modify-write, so there is no lost update and no conflict
retry loop: the API server merges each apply atomically. The Role this needs
is `secret_sync_rbac`: ``create`` (an apply that creates) and ``patch`` on the
named Secrets only.

The env vars the webhook sets from the downward API, naming the owner pod, are
`POD_NAME_ENV_VAR`, `POD_UID_ENV_VAR` and `POD_NAMESPACE_ENV_VAR`.

Values never appear in messages: problems name files, keys and fields only.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fetcher.spec.problems import FerryError
from fetcher.spec.secret_objects import (
    MANAGED_LABEL,
    MAX_SECRET_DATA_BYTES,
    POD_NAME_ENV_VAR,
    POD_NAMESPACE_ENV_VAR,
    POD_UID_ENV_VAR,
    SECRET_TYPES,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    SecretObject,
    SecretObjectData,
    SecretObjectsError,
    listed,
    parse_secret_objects,
    shown,
)

__all__ = [
    "MANAGED_LABEL",
    "POD_NAME_ENV_VAR",
    "POD_NAMESPACE_ENV_VAR",
    "POD_UID_ENV_VAR",
    "SECRET_TYPES",
    "SecretObject",
    "SecretObjectData",
    "SecretObjectsError",
    "parse_secret_objects",
]

# Kept equal to fetcher.kube.APPLY_VERBS (a test checks); not imported, so this module stays free of botocore.
APPLY_VERBS = ("create", "patch")

# The field manager that owns a Secret's content, shared by every pod.
CONTENT_FIELD_MANAGER = "ferry"
# Prefix of the per-pod field manager that owns only that pod's ownerReference.
OWNER_FIELD_MANAGER_PREFIX = "ferry-pod-"
# The verbs server-side apply needs: create (when the Secret does not exist yet) and patch.
SECRET_SYNC_VERBS = APPLY_VERBS

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class PodOwner:
    """The pod that writes (and owns) the Secrets."""

    name: str
    uid: str
    namespace: str

    @property
    def field_manager(self) -> str:
        return OWNER_FIELD_MANAGER_PREFIX + self.uid

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


def pod_owner_from_env(environ: Mapping[str, str]) -> PodOwner:
    """The owner pod from the downward API env vars the webhook injects."""
    values = {
        name: environ.get(name, "").strip() for name in (POD_NAME_ENV_VAR, POD_UID_ENV_VAR, POD_NAMESPACE_ENV_VAR)
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise SecretObjectsError(
            [
                f"{', '.join(missing)} not set: secretObjects needs the pod's name, uid and namespace from the "
                "downward API (fieldRef metadata.name, metadata.uid, metadata.namespace); the webhook sets them"
            ]
        )
    for name, value in values.items():
        if len(value) > 253 or not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]*", value):
            raise SecretObjectsError([f"{name} is not a Kubernetes name or uid (got {len(value)} characters)"])
    return PodOwner(values[POD_NAME_ENV_VAR], values[POD_UID_ENV_VAR], values[POD_NAMESPACE_ENV_VAR])


# --- From files to manifests (pure). -----------------------------------------------------------------------------


def secret_data(obj: SecretObject, files: Mapping[str, bytes], where: str = "secretObjects") -> dict[str, bytes]:
    """The Secret's data for one entry: each key gets its file's bytes (TLS keys: their PEM blocks)."""
    problems: list[str] = []
    data: dict[str, bytes] = {}
    for index, item in enumerate(obj.data):
        at = f"{where}.data[{index}]"
        content = files.get(item.object_name)
        if content is None:
            problems.append(
                f"{at}.objectName: no file named {shown(item.object_name)}; objectName is the file name after "
                f"objectAlias and path translation, one of {listed(sorted(files))}"
            )
            continue
        if obj.type == "kubernetes.io/tls" and item.key in (TLS_CERT_KEY, TLS_KEY_KEY):
            extracted = _pem_part(content, item.key)
            if extracted is None:
                wanted = "CERTIFICATE" if item.key == TLS_CERT_KEY else "PRIVATE KEY"
                problems.append(f"{at}: file {shown(item.object_name)} holds no PEM {wanted} block for key {item.key}")
                continue
            content = extracted
        data[item.key] = content
    if not problems:
        problems.extend(_type_problems(obj.type, data, where))
        size = sum(len(value) for value in data.values())
        if size > MAX_SECRET_DATA_BYTES:
            problems.append(
                f"{where}: the Secret's data would be {size} bytes; Kubernetes allows at most {MAX_SECRET_DATA_BYTES}"
            )
    if problems:
        raise SecretObjectsError(problems)
    return data


def _type_problems(secret_type: str, data: Mapping[str, bytes], where: str) -> list[str]:
    """The API server's per-type rules, worded for secretObjects."""

    def need(key: str) -> str:
        return f"{where}.data: type {secret_type} needs the key {key!r}; add {{objectName: <file>, key: {key}}}"

    if secret_type == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        return [f"{where}.data: type kubernetes.io/basic-auth needs the key 'username' or 'password' (or both)"]
    if secret_type == "kubernetes.io/tls":
        return [need(key) for key in (TLS_CERT_KEY, TLS_KEY_KEY) if key not in data]
    if secret_type == "kubernetes.io/ssh-auth" and not data.get("ssh-privatekey"):
        return [need("ssh-privatekey") + " (its file must not be empty)"]
    for docker_type, key in (
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"),
        ("kubernetes.io/dockercfg", ".dockercfg"),
    ):
        if secret_type != docker_type:
            continue
        if key not in data:
            return [need(key)]
        try:
            document = json.loads(data[key])
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes
            document = None
        if not isinstance(document, dict):
            return [f"{where}.data: the file for key {key!r} must hold a JSON object (a Docker config); it does not"]
    return []


def _pem_part(content: bytes, key: str) -> bytes | None:
    blocks = list(_PEM_BLOCK.finditer(content))
    if key == TLS_CERT_KEY:
        chosen = [block.group(0) for block in blocks if block.group(1) == b"CERTIFICATE"]
    else:
        chosen = [block.group(0) for block in blocks if block.group(1).endswith(b"PRIVATE KEY")][:1]
    return b"\n".join(chosen) + b"\n" if chosen else None


def secret_manifest(obj: SecretObject, data: Mapping[str, bytes], owner: PodOwner) -> dict[str, Any]:
    """The content apply (manager ``ferry``): type, labels (with the managed label), annotations, data, owner."""
    labels = dict(obj.labels)
    labels[MANAGED_LABEL] = "true"
    metadata: dict[str, Any] = {
        "name": obj.secret_name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.owner_reference()],
    }
    if obj.annotations:
        metadata["annotations"] = dict(obj.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": obj.type,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in sorted(data.items())},
    }


def owner_manifest(secret_name: str, owner: PodOwner) -> dict[str, Any]:
    """The per-pod apply (manager ``ferry-pod-<uid>``): only this pod's ownerReference."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": owner.namespace, "ownerReferences": [owner.owner_reference()]},
    }


def build_secret_manifests(
    objects: Sequence[SecretObject], files: Mapping[str, bytes], owner: PodOwner, where: str = "secretObjects"
) -> list[dict[str, Any]]:
    """Every Secret to apply, in order; raises SecretObjectsError listing every problem of every entry."""
    problems: list[str] = []
    manifests: list[dict[str, Any]] = []
    for index, obj in enumerate(objects):
        try:
            manifests.append(secret_manifest(obj, secret_data(obj, files, f"{where}[{index}]"), owner))
        except SecretObjectsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SecretObjectsError(problems)
    return manifests


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


# --- The I/O edge. -----------------------------------------------------------------------------------------------


class SecretApplier(Protocol):
    """What `sync_secrets` needs of a client: server-side apply (`fetcher.kube.KubeClient.apply`)."""

    def apply(self, path: str, manifest: Mapping[str, Any], *, field_manager: str, force: bool) -> dict[str, Any]: ...


class SecretSyncError(FerryError):
    """The files cannot fill the Secrets ``secretObjects`` asks for (a missing file, a type's missing key)."""


def file_syncer(
    objects: Sequence[SecretObject], client: SecretApplier, owner: PodOwner
) -> Callable[[Mapping[str, tuple[bytes, int]]], list[str]]:
    """What the fetcher calls after each swap: the rendered files (name -> (bytes, mode)) into the Secrets."""

    def sync(files: Mapping[str, tuple[bytes, int]]) -> list[str]:
        try:
            manifests = build_secret_manifests(objects, {name: content for name, (content, _) in files.items()}, owner)
        except SecretObjectsError as exc:
            raise SecretSyncError(str(exc)) from None
        return sync_secrets(client, manifests, owner)

    return sync


def sync_secrets(client: SecretApplier, manifests: Sequence[Mapping[str, Any]], owner: PodOwner) -> list[str]:
    """Apply every manifest (content as ``ferry``, then this pod's ownerReference as its own manager).

    Returns the names written. Errors (KubeAPIError, KubeForbiddenError) leave at the first failing Secret.
    """
    written: list[str] = []
    for manifest in manifests:
        name = str(manifest["metadata"]["name"])
        path = secret_path(owner.namespace, name)
        client.apply(path, manifest, field_manager=CONTENT_FIELD_MANAGER, force=True)
        client.apply(path, owner_manifest(name, owner), field_manager=owner.field_manager, force=True)
        written.append(name)
    return written


# --- RBAC: what the pod's ServiceAccount needs. ------------------------------------------------------------------


def secret_sync_rbac(
    namespace: str, service_account: str, secret_names: Sequence[str], name: str = "ferry-secret-sync"
) -> list[dict[str, Any]]:
    """The Role and RoleBinding that let `service_account` write exactly these Secrets (nothing else)."""
    if not secret_names:
        return []
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


def secret_sync_rbac_yaml(namespace: str, service_account: str, objects: Sequence[SecretObject]) -> str:
    """`secret_sync_rbac` for the Secrets of these entries, as a YAML stream for ``kubectl apply -f -``."""
    import yaml

    documents = secret_sync_rbac(namespace, service_account, [obj.secret_name for obj in objects])
    return yaml.safe_dump_all(documents, sort_keys=False)
