"""What admission reads from the cluster, and a cluster that is only files.

The policy needs three lookups (a namespace, a SecretProviderClass, a namespace's LimitRanges) and a readiness
flag, nothing of the Kubernetes client: `ClusterView` is that contract, served by `webhook.cluster.kube.WatchCache`
in the server and by `StaticView` from YAML files for `python -m webhook inject` and tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fetcher.contract import ManifestError, load_manifests

# The SecretProviderClass API of the Secrets Store CSI Driver (what ASCP users already have).
SPC_GROUP = "secrets-store.csi.x-k8s.io"
SPC_VERSION = "v1"
SPC_PLURAL = "secretproviderclasses"
SPC_KIND = "SecretProviderClass"

# Set by the watch cache, in place of `spec`, on a SecretProviderClass it would not keep: {"bytes": its size
# in the fields Ferry reads, "limit": the bound it broke}. Admission denies pods that name it, saying so.
SPC_TOO_LARGE = "ferryTooLarge"
# The fields Ferry reads of one class (provider, parameters, secretObjects), as JSON: the objects YAML is at
# most 64 KiB, so four times that is far above any real class.
MAX_SPC_BYTES = 256 * 1024


class ClusterView(Protocol):
    """What the admission logic reads from the cluster."""

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        """The Namespace as API JSON (``metadata.labels``/``annotations``); None if unknown."""
        ...

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The SecretProviderClass as API JSON; None if there is none by that name."""
        ...

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        """The namespace's LimitRanges as API JSON (slimmed to ``spec.limits``); empty if none."""
        ...

    def is_ready(self) -> bool:
        """True once lookups reflect the cluster (for /readyz)."""
        ...


def name_key(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def namespaced_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta["name"]))


class StaticView(ClusterView):
    """A cluster view with no cluster: fixed SecretProviderClasses and namespaces.

    It knows no LimitRanges: a preview checks what Ferry adds, not the namespace's quotas.
    A SecretProviderClass without ``metadata.namespace`` matches a lookup in
    any namespace (kustomize bases often leave the namespace to the overlay);
    one with a namespace matches only there, and wins over a namespace-less one.
    """

    def __init__(
        self,
        secret_provider_classes: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._spcs: dict[tuple[str, str], Mapping[str, Any]] = {}
        for spc in secret_provider_classes:
            self._spcs[namespaced_key(spc)] = spc
        self._namespaces: dict[str, Mapping[str, Any]] = {name_key(ns): ns for ns in namespaces}

    @classmethod
    def from_files(
        cls,
        spc_files: Sequence[str | Path],
        namespace_annotations: Mapping[str, Mapping[str, str]] | None = None,
        extra_classes: Iterable[Mapping[str, Any]] = (),
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> StaticView:
        """SecretProviderClasses from YAML files (multi-document, or a List); raises ValueError naming the
        file and document for anything that is not a SecretProviderClass. `extra_classes` (e.g. those found
        among the workloads being injected) come last, so they win over a file's class of the same name."""
        spcs: list[Mapping[str, Any]] = []
        for file in spc_files:
            spcs.extend(load_secret_provider_classes(Path(file)))
        spcs.extend(extra_classes)
        namespaces = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": dict((namespace_labels or {}).get(name) or {}),
                    "annotations": dict(annotations),
                },
            }
            for name, annotations in (namespace_annotations or {}).items()
        ]
        return cls(spcs, namespaces)

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._namespaces.get(name)

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._spcs.get((namespace, name)) or self._spcs.get(("", name))

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return ()

    def is_ready(self) -> bool:
        return True


def secret_provider_classes_in(documents: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The SecretProviderClasses among manifests (top level or in a List), named ones only; others are skipped."""
    found: list[Mapping[str, Any]] = []
    for doc in documents:
        items = doc.get("items") if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List") else [doc]
        for item in items if isinstance(items, list) else []:
            if (
                isinstance(item, Mapping)
                and item.get("kind") == SPC_KIND
                and str(item.get("apiVersion", "")).startswith(f"{SPC_GROUP}/")
                and isinstance(item.get("metadata"), Mapping)
                and item["metadata"].get("name")
            ):
                found.append(item)
    return found


def load_secret_provider_classes(path: Path) -> list[dict[str, Any]]:
    """Every SecretProviderClass in a YAML file; ValueError names the file and document otherwise."""
    try:
        documents = load_manifests(path.read_bytes(), str(path))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read SecretProviderClasses: {exc}") from exc
    except ManifestError as exc:
        raise ValueError(f"cannot read SecretProviderClasses: {exc}") from exc
    spcs: list[dict[str, Any]] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else [doc]
        for item in items or []:
            where = f"{path}: document {index}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a SecretProviderClass mapping, got {type(item).__name__}")
            api_version = str(item.get("apiVersion", ""))
            if item.get("kind") != SPC_KIND or not api_version.startswith(f"{SPC_GROUP}/"):
                raise ValueError(
                    f"{where}: expected kind {SPC_KIND} (apiVersion {SPC_GROUP}/{SPC_VERSION}), "
                    f"got kind {item.get('kind')!r} apiVersion {api_version!r}"
                )
            if not isinstance(item.get("metadata"), dict) or not item["metadata"].get("name"):
                raise ValueError(f"{where}: SecretProviderClass has no metadata.name")
            spcs.append(item)
    return spcs
