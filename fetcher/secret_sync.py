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
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fetcher.spec.problems import FerryError
from fetcher.spec.secret_objects import (
    DENIED_SECRET_TYPES,
    FERRY_LABEL,
    FERRY_LABEL_VALUE,
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
    denied_type_problem,
    listed,
    parse_secret_objects,
    shown,
)

__all__ = [
    "FERRY_LABEL",
    "FERRY_LABEL_VALUE",
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
# The verbs the sync needs: get (metadata only: whose is the Secret?), then the apply's create and patch.
SECRET_SYNC_VERBS = ("get", *APPLY_VERBS)

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
        except ValueError:
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
    """The content apply (manager ``ferry``): type, labels (with the CSI and Ferry labels), annotations, data, owner."""
    if obj.type in DENIED_SECRET_TYPES:
        raise SecretObjectsError([denied_type_problem(obj.type, "secretObjects")])
    labels = dict(obj.labels)
    labels[MANAGED_LABEL] = "true"
    labels[FERRY_LABEL] = FERRY_LABEL_VALUE
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


# --- Whose Secret is it (pure). ----------------------------------------------------------------------------------


def is_ferrys_secret(metadata: Mapping[str, Any]) -> bool:
    """Whether Ferry created this Secret: its label and an apply by its field manager.

    Secrets an earlier Ferry created carry the CSI label instead of Ferry's, set by that same apply; they count.
    """
    applied = [
        entry
        for entry in metadata.get("managedFields") or []
        if isinstance(entry, Mapping)
        and entry.get("manager") == CONTENT_FIELD_MANAGER
        and entry.get("operation") == "Apply"
    ]
    if not applied:
        return False
    labels = metadata.get("labels") or {}
    if isinstance(labels, Mapping) and labels.get(FERRY_LABEL) == FERRY_LABEL_VALUE:
        return True
    return any(_applied_label(entry, MANAGED_LABEL) for entry in applied)


def _applied_label(entry: Mapping[str, Any], label: str) -> bool:
    fields = entry.get("fieldsV1")
    metadata = fields.get("f:metadata") if isinstance(fields, Mapping) else None
    labels = metadata.get("f:labels") if isinstance(metadata, Mapping) else None
    return isinstance(labels, Mapping) and f"f:{label}" in labels


def foreign_managers(metadata: Mapping[str, Any]) -> list[str]:
    """Field managers that are not Ferry's (its content manager and its per-pod owner managers)."""
    names = {
        str(entry.get("manager"))
        for entry in metadata.get("managedFields") or []
        if isinstance(entry, Mapping)
        and entry.get("manager") != CONTENT_FIELD_MANAGER
        and not str(entry.get("manager")).startswith(OWNER_FIELD_MANAGER_PREFIX)
    }
    return sorted(names)


def not_ferrys_message(name: str, namespace: str, metadata: Mapping[str, Any]) -> str:
    """Why Ferry stops: the Secret is someone else's. Names it, never a value; says what the user can do."""
    labels = metadata.get("labels") or {}
    managers = foreign_managers(metadata)
    by = f" (written by {listed(managers)})" if managers else ""
    text = (
        f'Secret "{name}" in namespace {namespace} exists and was not created by Ferry{by}: it lacks the label '
        f"{FERRY_LABEL}={FERRY_LABEL_VALUE} and an apply by the field manager {CONTENT_FIELD_MANAGER!r}, so Ferry "
        "leaves it alone. Give the secretObjects entry another secretName, or delete that Secret if nothing else "
        "needs it; Ferry then creates its own."
    )
    if isinstance(labels, Mapping) and labels.get(MANAGED_LABEL) == "true":
        text += (
            " It carries the CSI driver's label: the Secrets Store CSI Driver created it. See 'If you use "
            "secretObjects' in docs/migration-from-csi.md."
        )
    return text


# --- The I/O edge. -----------------------------------------------------------------------------------------------


class SecretApplier(Protocol):
    """What `sync_secrets` needs of a client (`fetcher.kube.KubeClient`): a metadata-only GET and an apply."""

    def get_metadata(self, path: str, *, fix_verbs: Sequence[str]) -> dict[str, Any] | None: ...

    def apply(
        self, path: str, manifest: Mapping[str, Any], *, field_manager: str, force: bool, fix_verbs: Sequence[str]
    ) -> dict[str, Any]: ...


class SecretSyncError(FerryError):
    """The Secrets ``secretObjects`` asks for cannot be written: a missing file or key, or a Secret not Ferry's."""


# The sidecar re-applies the Secrets this often when nothing changed, so a Secret deleted or edited by hand is
# repaired. Each re-apply costs one metadata GET and one no-op apply per Secret, each on a new TLS connection:
# about 2 requests and some milliseconds of CPU (docs/benchmarks.md), too much for every cycle.
RESYNC_ENV_VAR = "FERRY_SECRET_RESYNC_SECONDS"
DEFAULT_RESYNC_SECONDS = 300.0

# Check-then-write attempts per Secret: a Secret deleted or replaced between the two is checked again.
MAX_SYNC_ATTEMPTS = 3


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
    """Write every Secret Ferry may write: create it if absent, else update it only if Ferry created it.

    Returns the names written. Raises SecretSyncError (a token type, a Secret that is not Ferry's) or
    KubeAPIError / KubeForbiddenError, at the first Secret that fails; token types are refused before any request.
    """
    for manifest in manifests:
        if manifest.get("type") in DENIED_SECRET_TYPES:
            raise SecretSyncError(denied_type_problem(str(manifest["type"]), "secretObjects"))
    written: list[str] = []
    for manifest in manifests:
        _sync_one(client, manifest, owner)
        written.append(str(manifest["metadata"]["name"]))
    return written


def _sync_one(client: SecretApplier, manifest: Mapping[str, Any], owner: PodOwner) -> None:
    """Check whose the Secret is (metadata only), then write bound to what was checked.

    Absent: an apply creates it, and its answer must show no other writer (one that created it meanwhile).
    Ferry's: the apply carries the checked uid, so the API server refuses it if the Secret was replaced
    meanwhile (422) or deleted (409); both are checked again, at most MAX_SYNC_ATTEMPTS times.
    """
    name = str(manifest["metadata"]["name"])
    path = secret_path(owner.namespace, name)
    for attempt in range(1, MAX_SYNC_ATTEMPTS + 1):
        current = client.get_metadata(path, fix_verbs=SECRET_SYNC_VERBS)
        if current is not None and not is_ferrys_secret(current):
            raise SecretSyncError(not_ferrys_message(name, owner.namespace, current))
        uid = str(current.get("uid") or "") if current is not None else ""
        try:
            answer = _apply(client, path, _with_uid(manifest, uid), CONTENT_FIELD_MANAGER)
        except FerryError as exc:  # fetcher.kube's KubeAPIError (not imported: fetcher.errors imports botocore)
            if uid and getattr(exc, "status", None) in (409, 422) and attempt < MAX_SYNC_ATTEMPTS:
                continue  # replaced or deleted since the check: check again
            raise
        metadata = answer.get("metadata") if isinstance(answer.get("metadata"), Mapping) else {}
        assert isinstance(metadata, Mapping)
        if not uid and foreign_managers(metadata):
            raise SecretSyncError(
                f'Secret "{name}" in namespace {owner.namespace} was created by {listed(foreign_managers(metadata))} '
                "while Ferry was creating it; Ferry wrote it once and stops: give the secretObjects entry another "
                "secretName, or delete that Secret"
            )
        managers = {entry.get("manager") for entry in metadata.get("managedFields") or [] if isinstance(entry, Mapping)}
        if owner.field_manager not in managers:
            written_uid = str(metadata.get("uid") or uid)
            _apply(client, path, _with_uid(owner_manifest(name, owner), written_uid), owner.field_manager)
        return


def _apply(client: SecretApplier, path: str, manifest: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    return client.apply(path, manifest, field_manager=field_manager, force=True, fix_verbs=SECRET_SYNC_VERBS)


def _with_uid(manifest: Mapping[str, Any], uid: str) -> Mapping[str, Any]:
    """The manifest bound to one object: with metadata.uid, the API server applies it to that object or refuses."""
    if not uid:
        return manifest
    return {**manifest, "metadata": {**manifest["metadata"], "uid": uid}}


# --- RBAC: what the pod's ServiceAccount needs. ------------------------------------------------------------------

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
