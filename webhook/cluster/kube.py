"""The webhook's in-memory view of the cluster, kept by list+watch, so an admission never calls the API server.

It keeps namespaces, SecretProviderClasses (bounded, each and together) and LimitRanges, cut to what admission
reads, and with GCP settings one annotation of each ServiceAccount (webhook.cluster.serviceaccounts); the
informer pattern of client-go, for these resources only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import yaml

from fetcher.contract import ANNOTATION_KEYS
from fetcher.contract.gcp import KsaAnnotation
from webhook.cluster.reflector import Reflector
from webhook.cluster.serviceaccounts import ServiceAccountView
from webhook.policy.request import NAMESPACE_OPT_IN_LABEL
from webhook.policy.resources import slim_limit_range
from webhook.policy.view import (
    MAX_SPC_BYTES,
    SPC_GROUP,
    SPC_KIND,
    SPC_PLURAL,
    SPC_TOO_LARGE,
    SPC_VERSION,
    ClusterView,
    name_key,
    namespaced_key,
)

log = logging.getLogger(__name__)


NAMESPACES = "namespaces"
LIMIT_RANGES = "limitranges"

# What all kept SecretProviderClasses may count for, in bytes of the fields Ferry reads. Past it, a class is
# remembered only as "too large", and pods naming it are denied with that message.
MAX_SPC_CACHE_BYTES = 64 * 1024 * 1024
# Objects per list page: a page is parsed whole before it is slimmed, so pages of classes (up to 1.5 MB each
# in etcd) are small; namespaces carry at most 256 KiB of annotations.
SPC_PAGE_SIZE = 10
NAMESPACE_PAGE_SIZE = 100
# A namespace's Ferry annotations kept: the known keys, and a few unknown ones (named in a warning, values
# dropped); each value cut to this many characters, far above any valid value, so a cut one still fails
# validation with a message that names the annotation.
MAX_NAMESPACE_VALUE_CHARS = 1024
MAX_UNKNOWN_NAMESPACE_KEYS = 5
_FERRY_PREFIX = "ferry.dev/"


_KNOWN_KEYS = frozenset(ANNOTATION_KEYS)


def slim_namespace(obj: dict[str, Any], left: int) -> tuple[dict[str, Any], int]:
    """A Namespace as the cache keeps it: name, resourceVersion, bounded Ferry annotations, and the one label
    that routes its pods to Ferry (a namespace-wide opt-in counts only with it, as in the API server)."""
    del left  # a kept namespace is a few KiB at most; namespaces are not created by tenants
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    raw = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    assert isinstance(raw, dict)
    annotations: dict[str, str] = {}
    unknown = 0
    for key, value in raw.items():
        if not isinstance(key, str) or not key.startswith(_FERRY_PREFIX):
            continue
        if key in _KNOWN_KEYS:
            annotations[key] = str(value)[:MAX_NAMESPACE_VALUE_CHARS]
        elif unknown < MAX_UNKNOWN_NAMESPACE_KEYS:
            unknown += 1
            annotations[key[:MAX_NAMESPACE_VALUE_CHARS]] = ""
    raw_labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    assert isinstance(raw_labels, dict)
    label_key, label_value = NAMESPACE_OPT_IN_LABEL
    labels = {label_key: label_value} if raw_labels.get(label_key) == label_value else {}
    kept = {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Namespace"),
        "metadata": {
            "name": meta.get("name"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": labels,
            "annotations": annotations,
        },
    }
    return kept, sum(len(key) + len(value) for key, value in annotations.items()) + 200


def slim_secret_provider_class(obj: dict[str, Any], left: int) -> tuple[dict[str, Any], int]:
    """A SecretProviderClass as the cache keeps it: the identity and the fields Ferry reads, bounded.

    Over MAX_SPC_BYTES, or past what the cache may still spend (`left`), only the identity and the
    SPC_TOO_LARGE marker are kept.
    """
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    kept: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
    }
    read = {field: spec[field] for field in ("provider", "parameters", "secretObjects") if field in spec}
    size = len(json.dumps(read, separators=(",", ":")))
    limit = min(MAX_SPC_BYTES, left)
    if size > limit:
        kept[SPC_TOO_LARGE] = {"bytes": size, "limit": limit, "cacheFull": size <= MAX_SPC_BYTES}
        return kept, 300
    kept["spec"] = read
    return kept, size + 300


class KubeConfigError(RuntimeError):
    """A kubeconfig exists but cannot be used (bad file, unknown context)."""


class WatchCache(ClusterView):
    """Namespaces, SecretProviderClasses (``secrets-store.csi.x-k8s.io/v1``) and LimitRanges from list+watch;
    with `service_accounts`, ServiceAccounts' iam.gke.io/gcp-service-account too.

    ``start()`` begins listing in a background thread per resource; ``wait_ready()``
    blocks until all have listed once (an absent SPC CRD counts as listed).
    Lookups never call the API server, but for a ServiceAccount the watch has not delivered yet.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        resync_backoff_max: float = 30.0,
        backoff_initial: float = 0.5,
        watch_timeout_seconds: float = 300.0,
        request_timeout: float = 30.0,
        max_spc_bytes: int = MAX_SPC_CACHE_BYTES,
        service_accounts: bool = False,
    ) -> None:
        """`service_accounts`: also keep each ServiceAccount's iam.gke.io/gcp-service-account (GCP installs)."""
        self._stop = threading.Event()
        self._started = False
        core = kubernetes.client.CoreV1Api(api_client)
        custom = kubernetes.client.CustomObjectsApi(api_client)

        def list_spcs(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(SPC_GROUP, SPC_VERSION, SPC_PLURAL, **kwargs)

        common: dict[str, Any] = {
            "stop": self._stop,
            "backoff_initial": backoff_initial,
            "backoff_max": resync_backoff_max,
            "watch_timeout": watch_timeout_seconds,
            "request_timeout": request_timeout,
        }
        self._namespaces = Reflector(
            NAMESPACES,
            "Namespace",
            "v1",
            core.list_namespace,
            name_key,
            optional=False,
            slimmer=slim_namespace,
            page_size=NAMESPACE_PAGE_SIZE,
            **common,
        )
        self._spcs = Reflector(
            SPC_PLURAL,
            SPC_KIND,
            f"{SPC_GROUP}/{SPC_VERSION}",
            list_spcs,
            namespaced_key,
            optional=True,
            slimmer=slim_secret_provider_class,
            page_size=SPC_PAGE_SIZE,
            max_total_bytes=max_spc_bytes,
            **common,
        )
        self._limit_ranges = Reflector(
            LIMIT_RANGES,
            "LimitRange",
            "v1",
            core.list_limit_range_for_all_namespaces,
            namespaced_key,
            optional=False,
            slim=slim_limit_range,
            **common,
        )
        self._service_accounts = ServiceAccountView(core, common=common) if service_accounts else None
        extra = (self._service_accounts.reflector,) if self._service_accounts is not None else ()
        self._reflectors = (self._namespaces, self._spcs, self._limit_ranges, *extra)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("WatchCache already started")
        self._started = True
        for reflector in self._reflectors:
            reflector.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; an in-flight watch is interrupted, a list finishes first."""
        self._stop.set()
        for reflector in self._reflectors:
            reflector.interrupt()
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        for reflector in self._reflectors:
            reflector.thread.join(max(0.0, deadline - time.monotonic()))
            if reflector.thread.is_alive():
                log.warning("%s watch thread did not stop within %.1fs", reflector.resource, timeout)

    def __enter__(self) -> WatchCache:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for reflector in self._reflectors:
            if not reflector.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def is_ready(self) -> bool:
        return all(reflector.synced.is_set() for reflector in self._reflectors)

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._namespaces.items.get(name)

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._spcs.items.get((namespace, name))

    def limit_ranges(self, namespace: str) -> tuple[Mapping[str, Any], ...]:
        # A copy of the items first: the watch thread may add or drop one meanwhile.
        return tuple(obj for (ns, _), obj in list(self._limit_ranges.items.items()) if ns == namespace)

    def gke_service_account(self, namespace: str, name: str, *, may_get: bool = True) -> KsaAnnotation | None:
        """The ServiceAccount's iam.gke.io/gcp-service-account; None when this cache does not keep them.

        `may_get`: a miss may cost a GET (else it reads as not delivered yet)."""
        if self._service_accounts is None:
            return None
        known = self._namespaces.items.get(namespace) is not None
        return self._service_accounts.lookup(namespace, name, namespace_known=known, may_get=may_get)

    def spc_crd_installed(self) -> bool | None:
        """False while the SPC API answers 404; None before the first list."""
        if not self._spcs.synced.is_set():
            return None
        return not self._spcs.absent

    def freshness_seconds(self) -> dict[str, float]:
        """Seconds since each resource's last list, event or watch (re)connection; inf before the first."""
        now = time.monotonic()
        return {
            reflector.resource: math.inf if reflector.last_activity is None else now - reflector.last_activity
            for reflector in self._reflectors
        }

    def resource_versions(self) -> dict[str, str | None]:
        """The resourceVersion each resource is watching from (for debugging)."""
        return {reflector.resource: reflector.resource_version for reflector in self._reflectors}


def load_api_client(
    *, kubeconfig: str | Path | None = None, context: str | None = None
) -> kubernetes.client.ApiClient | None:
    """An ApiClient from the in-cluster service account, else from a kubeconfig
    (`kubeconfig`, else ``$KUBECONFIG``, else ``~/.kube/config``), else None.

    Returns None when there is no cluster to talk to (not in a pod, no kubeconfig
    file); raises `KubeConfigError` only when a kubeconfig exists but is unusable.
    """
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            # Re-reads the projected (rotating) service account token when it changes.
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return kubernetes.client.ApiClient(configuration)
        except kubernetes.config.ConfigException as exc:
            log.warning("KUBERNETES_SERVICE_HOST is set but in-cluster config failed (%s); trying kubeconfig", exc)
    if kubeconfig is not None:
        candidates = [str(kubeconfig)]
    else:
        candidates = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    existing = [str(Path(p).expanduser()) for p in candidates if p and Path(p).expanduser().is_file()]
    if not existing:
        return None
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.pathsep.join(existing),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"kubeconfig {os.pathsep.join(existing)} is unusable: {exc}") from exc
    return kubernetes.client.ApiClient(configuration)


_LEADING_INT = re.compile(r"^\s*(\d+)")
_GIT_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def server_version(api_client: kubernetes.client.ApiClient, *, timeout: float = 10.0) -> tuple[int, int]:
    """(major, minor) of the API server; tolerates provider minors such as EKS's ``"28+"``."""
    info = kubernetes.client.VersionApi(api_client).get_code(_request_timeout=timeout)
    major = _LEADING_INT.match(str(info.major or ""))
    minor = _LEADING_INT.match(str(info.minor or ""))
    if major and minor:
        return int(major.group(1)), int(minor.group(1))
    git = _GIT_VERSION.match(str(info.git_version or ""))
    if git:
        return int(git.group(1)), int(git.group(2))
    raise ValueError(
        f"cannot parse the server version: major={info.major!r} minor={info.minor!r} gitVersion={info.git_version!r}"
    )
