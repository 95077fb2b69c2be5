"""From the rendered files to the Secret manifests ``secretObjects`` asks for (pure: no I/O).

The manifests are checked as the API server would check them, so a mistake names the ``secretObjects`` field
instead of coming back as an HTTP 422; `fetcher.secret_sync` writes them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fetcher.contract.problems import listed, quote
from fetcher.contract.secret_objects import (
    DENIED_SECRET_TYPES,
    FERRY_LABEL,
    FERRY_LABEL_VALUE,
    MANAGED_LABEL,
    MAX_SECRET_DATA_BYTES,
    POD_NAME_ENV_VAR,
    POD_NAMESPACE_ENV_VAR,
    POD_UID_ENV_VAR,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    SecretObject,
    SecretObjectsError,
    denied_type_problem,
)

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
                f"{at}.objectName: no file named {quote(item.object_name)}; objectName is the file name after "
                f"objectAlias and path translation, one of {listed(sorted(files))}"
            )
            continue
        if obj.type == "kubernetes.io/tls" and item.key in (TLS_CERT_KEY, TLS_KEY_KEY):
            extracted = _pem_part(content, item.key)
            if extracted is None:
                wanted = "CERTIFICATE" if item.key == TLS_CERT_KEY else "PRIVATE KEY"
                problems.append(f"{at}: file {quote(item.object_name)} holds no PEM {wanted} block for key {item.key}")
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
