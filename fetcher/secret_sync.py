"""``secretObjects``: the rendered files, copied into Kubernetes Secrets the way the CSI driver does it.

Why it exists: many SecretProviderClasses sync values into a Kubernetes Secret
so that ``env.valueFrom.secretKeyRef`` and ``envFrom`` work. The init container
writes those Secrets before the app starts, with the pod's own ServiceAccount,
and the sidecar keeps them current. Everything here but `sync_secrets` is pure:
plain data in (the parsed ``secretObjects`` entries and the rendered files,
file name -> bytes), Secret manifests out, so the webhook can check the same
rules at admission and the fetcher can build the Secrets without a cluster.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Kept equal to fetcher.kube.APPLY_VERBS (a test checks); not imported, so this module stays free of botocore.
APPLY_VERBS = ("create", "patch")

MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"
# Downward API env vars the webhook injects into Ferry's containers (fieldRef metadata.name / uid / namespace).
POD_NAME_ENV_VAR = "FERRY_POD_NAME"
POD_UID_ENV_VAR = "FERRY_POD_UID"
POD_NAMESPACE_ENV_VAR = "FERRY_POD_NAMESPACE"
# The field manager that owns a Secret's content, shared by every pod.
CONTENT_FIELD_MANAGER = "ferry"
# Prefix of the per-pod field manager that owns only that pod's ownerReference.
OWNER_FIELD_MANAGER_PREFIX = "ferry-pod-"
# The verbs server-side apply needs: create (when the Secret does not exist yet) and patch.
SECRET_SYNC_VERBS = APPLY_VERBS

SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
# The API server's limit on a Secret's data, and on all annotations of one object.
MAX_SECRET_DATA_BYTES = 1024 * 1024
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_SECRET_OBJECTS = 64
MAX_DATA_ENTRIES = 256
MAX_PROBLEMS_SHOWN = 10
MAX_NAMES_LISTED = 8

# The CSI driver's types, each with the API server's rule for its keys (checked by `_type_problems`).
SECRET_TYPES = (
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/tls",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/service-account-token",
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n.*?-----END \1-----", re.DOTALL)
_KNOWN_ENTRY_FIELDS = frozenset({"secretName", "type", "labels", "annotations", "data"})
_KNOWN_DATA_FIELDS = frozenset({"objectName", "key"})


class SecretObjectsError(ValueError):
    """``secretObjects`` cannot be honoured; each problem names its field and says how to fix it."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(self.problems[:MAX_PROBLEMS_SHOWN])
        extra = len(self.problems) - MAX_PROBLEMS_SHOWN
        super().__init__(shown + (f"; and {extra} more" if extra > 0 else ""))

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class SecretObjectData:
    """One key of a synced Secret and the file (name after alias and path translation) it copies."""

    object_name: str
    key: str


@dataclass(frozen=True)
class SecretObject:
    """One ``secretObjects`` entry, checked."""

    secret_name: str
    type: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    data: tuple[SecretObjectData, ...]


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


# --- Parsing and checking the entries (no files needed: the webhook can run this at admission). ----------------


def parse_secret_objects(raw: object, field: str = "secretObjects") -> tuple[SecretObject, ...]:
    """Check the ``secretObjects`` list as written in an SPC; raise SecretObjectsError with every problem."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SecretObjectsError([f"{field}: must be a list of entries with secretName, type and data"])
    if len(raw) > MAX_SECRET_OBJECTS:
        raise SecretObjectsError([f"{field}: at most {MAX_SECRET_OBJECTS} entries, got {len(raw)}"])
    problems: list[str] = []
    objects: list[SecretObject] = []
    seen_names: dict[str, int] = {}
    for index, entry in enumerate(raw):
        where = f"{field}[{index}]"
        parsed = _parse_entry(entry, where, problems)
        if parsed is None:
            continue
        if parsed.secret_name in seen_names:
            problems.append(
                f"{where}.secretName: {_show(parsed.secret_name)} is already used by "
                f"{field}[{seen_names[parsed.secret_name]}]; merge the two entries' data into one"
            )
            continue
        seen_names[parsed.secret_name] = index
        objects.append(parsed)
    if problems:
        raise SecretObjectsError(problems)
    return tuple(objects)


def _parse_entry(entry: object, where: str, problems: list[str]) -> SecretObject | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: must be a mapping with secretName, type and data")
        return None
    start = len(problems)
    unknown = sorted(str(key) for key in entry if key not in _KNOWN_ENTRY_FIELDS)
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {_names(unknown)}; the fields are secretName, type, labels, annotations, data"
        )
    name = entry.get("secretName")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}.secretName: required, the name of the Kubernetes Secret to write")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            f"{where}.secretName: {_show(name)} is not a valid Secret name (lower-case letters, digits, '-' and '.', "
            "at most 253 characters, starting and ending with a letter or digit)"
        )
    secret_type = entry.get("type")
    if secret_type is None or secret_type == "":
        problems.append(f"{where}.type: required; use Opaque for plain key/value data")
    elif secret_type not in SECRET_TYPES:
        problems.append(f"{where}.type: {_show(secret_type)} is not supported; use one of {', '.join(SECRET_TYPES)}")
    labels = _string_map(entry.get("labels"), f"{where}.labels", problems)
    annotations = _string_map(entry.get("annotations"), f"{where}.annotations", problems)
    for key, value in labels:
        _check_label(key, value, f"{where}.labels", problems)
    for key, _ in annotations:
        _check_qualified_name(key, f"{where}.annotations", problems)
    if sum(len(key) + len(value) for key, value in annotations) > MAX_ANNOTATIONS_BYTES:
        problems.append(f"{where}.annotations: larger than {MAX_ANNOTATIONS_BYTES} bytes in total")
    data = _parse_data(entry.get("data"), f"{where}.data", problems)
    if secret_type == "kubernetes.io/service-account-token" and not dict(annotations).get(
        SERVICE_ACCOUNT_NAME_ANNOTATION
    ):
        problems.append(
            f"{where}.annotations: type kubernetes.io/service-account-token needs the annotation "
            f"{SERVICE_ACCOUNT_NAME_ANNOTATION} naming a ServiceAccount"
        )
    if len(problems) > start:
        return None
    assert isinstance(name, str) and isinstance(secret_type, str)
    return SecretObject(name, secret_type, labels, annotations, data)


def _parse_data(raw: object, where: str, problems: list[str]) -> tuple[SecretObjectData, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: required, a non-empty list of {{objectName, key}}")
        return ()
    if len(raw) > MAX_DATA_ENTRIES:
        problems.append(f"{where}: at most {MAX_DATA_ENTRIES} entries, got {len(raw)}")
        return ()
    items: list[SecretObjectData] = []
    keys: dict[str, int] = {}
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a mapping with objectName and key")
            continue
        unknown = sorted(str(key) for key in item if key not in _KNOWN_DATA_FIELDS)
        if unknown:
            problems.append(f"{at}: unknown field(s) {_names(unknown)}; the fields are objectName and key")
        object_name = item.get("objectName")
        key = item.get("key")
        if not isinstance(object_name, str) or not object_name.strip():
            problems.append(f"{at}.objectName: required, the file name (after objectAlias and path translation)")
        if not isinstance(key, str) or not key.strip():
            problems.append(f"{at}.key: required, the key in the Secret's data")
        elif not _is_data_key(key.strip()):
            problems.append(
                f"{at}.key: {_show(key)} is not a valid Secret key (letters, digits, '-', '_' and '.', at most 253 "
                "characters, not '.' or '..' and not starting with '..')"
            )
        elif key.strip() in keys:
            problems.append(f"{at}.key: {_show(key)} is already set by {where}[{keys[key.strip()]}]; keys must differ")
        else:
            keys[key.strip()] = index
        if isinstance(object_name, str) and isinstance(key, str) and object_name.strip() and key.strip():
            items.append(SecretObjectData(object_name.strip(), key.strip()))
    return tuple(items)


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
                f"{at}.objectName: no file named {_show(item.object_name)}; objectName is the file name after "
                f"objectAlias and path translation, one of {_names(sorted(files))}"
            )
            continue
        if obj.type == "kubernetes.io/tls" and item.key in (TLS_CERT_KEY, TLS_KEY_KEY):
            extracted = _pem_part(content, item.key)
            if extracted is None:
                wanted = "CERTIFICATE" if item.key == TLS_CERT_KEY else "PRIVATE KEY"
                problems.append(f"{at}: file {_show(item.object_name)} holds no PEM {wanted} block for key {item.key}")
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


# --- Small helpers for bounded messages. --------------------------------------------------------------------------


def _string_map(raw: object, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        problems.append(f"{where}: must be a mapping of strings to strings (quote numbers and booleans)")
        return ()
    return tuple(sorted(raw.items()))


def _check_label(key: str, value: str, where: str, problems: list[str]) -> None:
    _check_qualified_name(key, where, problems)
    if key == MANAGED_LABEL and value != "true":
        problems.append(f'{where}: {MANAGED_LABEL} is set to "true" by Ferry, as by the CSI driver; remove it')
    elif len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        problems.append(
            f"{where}[{_show(key)}]: the value is not a valid label value (at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit)"
        )


def _check_qualified_name(key: str, where: str, problems: list[str]) -> None:
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _LABEL_NAME.match(name)
    ):
        problems.append(
            f"{where}: {_show(key)} is not a valid key (an optional DNS prefix and '/', then at most 63 letters, "
            "digits, '-', '_' or '.')"
        )


def _is_data_key(key: str) -> bool:
    return len(key) <= 253 and bool(_DATA_KEY.match(key)) and key not in (".", "..") and not key.startswith("..")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(_show(name) for name in names[:MAX_NAMES_LISTED])
    extra = len(names) - MAX_NAMES_LISTED
    return (shown + (f" and {extra} more" if extra > 0 else "")) if names else "(none)"
