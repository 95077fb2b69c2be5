"""The in-memory volume that carries the files, and the mounts of it.

One builder per Kubernetes object (vault-k8s style) keeps each shape reviewable and free of patch paths. The
volume is an emptyDir on tmpfs (`medium: Memory`), so secret bytes never touch a node's disk, with a sizeLimit
because tmpfs counts against the pod's memory; a pod that syncs Kubernetes Secrets also gets a projected
ServiceAccount token volume, for Ferry's containers only.
"""

from __future__ import annotations

from typing import Any

from fetcher.contract.gcp import GCP_TOKEN_DIR
from webhook.settings import Settings

# Name of the volume Ferry adds; reserved in every injected pod.
VOLUME_NAME = "ferry-secrets"
# The pod's ServiceAccount token, for Ferry's own containers only, when they write Kubernetes Secrets.
KUBE_API_VOLUME_NAME = "ferry-kube-api-access"
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# One hour; the kubelet renews the token at 80 % of that, and the fetcher re-reads the file on every request.
# Never 3607: the API server extends a pod-bound token asking for exactly that to a year (legacy tokens).
TOKEN_EXPIRATION_SECONDS = 3600


def build_volume(settings: Settings) -> dict[str, Any]:
    """The emptyDir (tmpfs) the fetcher writes into."""
    return {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": settings.volume_size_limit}}


def build_kube_api_volume() -> dict[str, Any]:
    """A projected volume like the kubelet's kube-api-access one: a short-lived token, the CA, the namespace.

    Added only when `fetcher.contract.needs_kube_api` says so, and mounted only into Ferry's containers, so
    the app's own token choice (automountServiceAccountToken) is left alone.
    """
    return {
        "name": KUBE_API_VOLUME_NAME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def build_kube_api_mount() -> dict[str, Any]:
    """Where every in-cluster client looks for the token and CA."""
    return {"name": KUBE_API_VOLUME_NAME, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH, "readOnly": True}


# provider: gcp: the pod's ServiceAccount token for the workload pool, for Ferry's containers only.
GCP_TOKEN_VOLUME_NAME = "ferry-gcp-token"


def build_gcp_token_mount() -> dict[str, Any]:
    return {"name": GCP_TOKEN_VOLUME_NAME, "mountPath": GCP_TOKEN_DIR, "readOnly": True}


def build_app_mount(mount_path: str) -> dict[str, Any]:
    """Read-only mount for app containers: they read secrets, never write them."""
    return {"name": VOLUME_NAME, "mountPath": mount_path, "readOnly": True}


def build_fetcher_mount(mount_path: str) -> dict[str, Any]:
    """Writable mount for Ferry's own containers, at the same path the app sees."""
    return {"name": VOLUME_NAME, "mountPath": mount_path}
