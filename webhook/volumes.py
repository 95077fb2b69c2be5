"""The in-memory volume that carries the files, and the mounts of it.

Why it exists: one builder per Kubernetes object (vault-k8s style) keeps each
shape reviewable on its own and free of patch paths. The volume is an emptyDir
on tmpfs (`medium: Memory`) so secret bytes never touch a node's disk, with a
sizeLimit because tmpfs counts against the pod's memory.
"""

from __future__ import annotations

from typing import Any

from webhook.settings import Settings

# Name of the volume Ferry adds; reserved in every injected pod.
VOLUME_NAME = "ferry-secrets"


def build_volume(settings: Settings) -> dict[str, Any]:
    """The emptyDir (tmpfs) the fetcher writes into."""
    return {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": settings.volume_size_limit}}


def build_app_mount(mount_path: str) -> dict[str, Any]:
    """Read-only mount for app containers: they read secrets, never write them."""
    return {"name": VOLUME_NAME, "mountPath": mount_path, "readOnly": True}


def build_fetcher_mount(mount_path: str) -> dict[str, Any]:
    """Writable mount for Ferry's own containers, at the same path the app sees."""
    return {"name": VOLUME_NAME, "mountPath": mount_path}
