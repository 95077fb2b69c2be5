"""``secretObjects``: the rendered files, copied into Kubernetes Secrets the way the CSI driver does it.

Apps read synced Secrets through ``secretKeyRef`` and ``envFrom``; this module writes them with the pod's own
ServiceAccount, touching only Secrets Ferry created, and lets replicas apply without fighting.
Details: docs/fetcher.md ("secretObjects: Kubernetes Secrets") and docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fetcher.contract.problems import FerryError, listed, quote
from fetcher.contract.secret_objects import (
    DENIED_SECRET_TYPES,
    FERRY_LABEL,
    FERRY_LABEL_VALUE,
    MANAGED_LABEL,
    POD_NAME_ENV_VAR,
    POD_NAMESPACE_ENV_VAR,
    POD_UID_ENV_VAR,
    SECRET_TYPES,
    SecretObject,
    SecretObjectData,
    SecretObjectsError,
    denied_type_problem,
    parse_secret_objects,
)
from fetcher.secret_manifests import (
    APPLY_VERBS,
    CONTENT_FIELD_MANAGER,
    OWNER_FIELD_MANAGER_PREFIX,
    SECRET_SYNC_VERBS,
    PodOwner,
    build_secret_manifests,
    owner_manifest,
    pod_owner_from_env,
    secret_data,
    secret_manifest,
    secret_path,
)
from fetcher.secret_rbac import (
    MAX_ROLE_NAME_LENGTH,
    ROLE_WARNING,
    secret_sync_rbac,
    secret_sync_rbac_yaml,
    secret_sync_role_name,
)

# The manifests (pure) and the Role are built in their own modules, and re-exported here.
__all__ = [
    "APPLY_VERBS",
    "CONTENT_FIELD_MANAGER",
    "FERRY_LABEL",
    "FERRY_LABEL_VALUE",
    "MANAGED_LABEL",
    "MAX_ROLE_NAME_LENGTH",
    "OWNER_FIELD_MANAGER_PREFIX",
    "POD_NAME_ENV_VAR",
    "POD_NAMESPACE_ENV_VAR",
    "POD_UID_ENV_VAR",
    "ROLE_WARNING",
    "SECRET_SYNC_VERBS",
    "SECRET_TYPES",
    "PodOwner",
    "SecretObject",
    "SecretObjectData",
    "SecretObjectsError",
    "build_secret_manifests",
    "owner_manifest",
    "parse_secret_objects",
    "pod_owner_from_env",
    "secret_data",
    "secret_manifest",
    "secret_path",
    "secret_sync_rbac",
    "secret_sync_rbac_yaml",
    "secret_sync_role_name",
]

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


def resync_seconds_from_env(environ: Mapping[str, str]) -> float:
    """`RESYNC_ENV_VAR` as seconds (0: never), else `DEFAULT_RESYNC_SECONDS`; SecretObjectsError if malformed."""
    text = environ.get(RESYNC_ENV_VAR, "").strip()
    try:
        value = float(text) if text else DEFAULT_RESYNC_SECONDS
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise SecretObjectsError([f"{RESYNC_ENV_VAR} must be a number of seconds (0: no repair), got {quote(text)}"])
    return value


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
            # Withdraw what only Ferry set (its ownerReference above all, so GC never deletes it with the pod).
            withdrawal = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "uid": metadata.get("uid")}}
            _apply(client, path, withdrawal, CONTENT_FIELD_MANAGER)
            raise SecretSyncError(
                f'Secret "{name}" in namespace {owner.namespace} was created by {listed(foreign_managers(metadata))} '
                "while Ferry was creating it; Ferry withdrew its owner reference and stops: give the secretObjects "
                "entry another secretName, or delete that Secret"
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
