"""The pod's AWS identity (IRSA or EKS Pod Identity), copied into Ferry's containers: the fetcher calls AWS as the pod.

Another webhook may add it before or after Ferry runs, so the merge is idempotent and runs again on reinvocation.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.policy.request import OWN_CONTAINER_NAMES

# Env vars that carry identity or shape STS calls; copied verbatim (value or valueFrom).
IDENTITY_ENV_VARS = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
)
# Of those, the ones naming a token file whose volume mount must come along.
TOKEN_FILE_VARS = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
# Their presence marks a container as the identity's source.
_CREDENTIAL_VARS = ("AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@dataclass(frozen=True)
class Identity:
    """What to copy: env entries and volume mounts, in a stable order."""

    env: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.env or self.mounts)


def pod_identity(spec: Mapping[str, Any]) -> Identity:
    """The identity of the pod's app containers, then of its app init containers: where identity webhooks put it."""
    return find_identity(
        container
        for group in ("containers", "initContainers")
        for container in spec.get(group) or []
        if isinstance(container, (dict, Mapping)) and container.get("name") not in OWN_CONTAINER_NAMES
    )


def find_identity(app_containers: Iterable[Mapping[str, Any]]) -> Identity:
    """The identity of the first app container that has credentials (or any identity env).

    Everything is taken from that one container, so a role ARN and its token
    file never come from two different containers.
    """
    containers = [(c, _env_names(c)) for c in app_containers]
    source = next((c for c, names in containers if not names.isdisjoint(_CREDENTIAL_VARS)), None)
    if source is None:
        source = next((c for c, names in containers if not names.isdisjoint(IDENTITY_ENV_VARS)), None)
    if source is None:
        return Identity()
    by_name = {entry.get("name"): entry for entry in source.get("env") or [] if isinstance(entry, Mapping)}
    env = tuple(copy.deepcopy(dict(by_name[name])) for name in IDENTITY_ENV_VARS if name in by_name)
    mounts: list[dict[str, Any]] = []
    for name in TOKEN_FILE_VARS:
        path = by_name.get(name, {}).get("value")
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        mount = _mount_holding(path, source.get("volumeMounts") or [])
        if mount is not None and all(m["mountPath"] != mount["mountPath"] for m in mounts):
            mounts.append({**copy.deepcopy(dict(mount)), "readOnly": True})
    return Identity(env=env, mounts=tuple(mounts))


def apply_identity(container: dict[str, Any], identity: Identity) -> None:
    """Merge the identity into one of Ferry's containers, in place; equal entries stay untouched."""
    if identity.env:
        env = container.setdefault("env", [])
        for entry in identity.env:
            _upsert(env, entry, key="name")
    if identity.mounts:
        mounts = container.setdefault("volumeMounts", [])
        for mount in identity.mounts:
            _upsert(mounts, mount, key="mountPath")


def refresh_own_identity(pod: Mapping[str, Any], identity: Identity) -> Mapping[str, Any]:
    """On reinvocation: bring Ferry's containers' identity env and token mounts up to date, nothing else.

    Copy-on-write: only Ferry's own containers are copied; without an identity, `pod` itself.
    """
    if not identity:
        return pod
    new = dict(pod)
    spec = dict(new.get("spec") or {})
    for group in ("initContainers", "containers"):
        if group in spec:
            spec[group] = [
                _with_identity(c, identity) if isinstance(c, Mapping) and c.get("name") in OWN_CONTAINER_NAMES else c
                for c in spec[group] or []
            ]
    new["spec"] = spec
    return new


def _with_identity(container: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    copied = dict(container)
    for key in ("env", "volumeMounts"):
        if key in copied:
            copied[key] = list(copied[key] or [])
    apply_identity(copied, identity)
    return copied


def _upsert(items: list[dict[str, Any]], entry: Mapping[str, Any], *, key: str) -> None:
    for index, existing in enumerate(items):
        if existing.get(key) == entry[key]:
            if existing != entry:
                items[index] = copy.deepcopy(dict(entry))
            return
    items.append(copy.deepcopy(dict(entry)))


def _env_names(container: Mapping[str, Any]) -> set[Any]:
    return {entry.get("name") for entry in container.get("env") or [] if isinstance(entry, Mapping)}


def _mount_holding(path: str, mounts: Sequence[Any]) -> Mapping[str, Any] | None:
    """The mount whose mountPath is the deepest parent directory of `path`."""
    best: Mapping[str, Any] | None = None
    best_depth = -1
    target = posixpath.normpath(path)
    for mount in mounts:
        if not isinstance(mount, Mapping) or not isinstance(mount.get("mountPath"), str):
            continue
        root = posixpath.normpath(mount["mountPath"])
        if target.startswith(root.rstrip("/") + "/") and len(root) > best_depth:
            best, best_depth = mount, len(root)
    return best
