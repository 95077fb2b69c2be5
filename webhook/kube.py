"""The webhook's view of the cluster: namespaces and SecretProviderClasses.

Why it exists: the API server waits for an admission answer (``timeoutSeconds``)
and every pod creation in scope passes through Ferry, so an admission must not
call the API server. `WatchCache` lists and then watches the only two things
the webhook reads, in background threads, and serves lookups from memory: after
warm-up an admission makes zero API calls. It follows the informer pattern of
client-go, written for the two resources we need rather than as a framework:

- a list gives the state and a resourceVersion; a watch from that version
  applies ADDED/MODIFIED/DELETED/BOOKMARK events;
- a 410 ``Expired`` ERROR (the API server compacted the history we were
  watching from) triggers an immediate re-list; any other error a re-list after
  a bounded, jittered exponential backoff;
- the SecretProviderClass CRD may not be installed (a cluster that never ran
  the CSI driver): its 404 counts as "no SPCs", the cache is still ready, and it
  looks again later.

The read interface (`ClusterView`) and its file-backed twin (`StaticView`, for
``python -m webhook inject`` and a webhook started outside a cluster) live in
`webhook.view`, which imports no Kubernetes client; they are re-exported here.

Objects are plain API JSON dicts (camelCase keys, as the API server sent
them), without ``metadata.managedFields``. Callers must not mutate them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import yaml
from kubernetes.client.exceptions import ApiException

from webhook.view import (
    SPC_GROUP,
    SPC_KIND,
    SPC_PLURAL,
    SPC_VERSION,
    ClusterView,
    StaticView,
    load_secret_provider_classes,
    name_key,
    namespaced_key,
)

__all__ = [
    "SPC_GROUP",
    "SPC_KIND",
    "SPC_PLURAL",
    "SPC_VERSION",
    "ClusterView",
    "KubeConfigError",
    "StaticView",
    "WatchCache",
    "load_api_client",
    "load_secret_provider_classes",
    "server_version",
]

log = logging.getLogger(__name__)


NAMESPACES = "namespaces"

_LIST_PAGE_SIZE = 500
_HTTP_GONE = 410
_HTTP_NOT_FOUND = 404


class KubeConfigError(RuntimeError):
    """A kubeconfig exists but cannot be used (bad file, unknown context)."""


def _slim(obj: dict[str, Any], kind: str, api_version: str) -> dict[str, Any]:
    """Drop managedFields (large, never read) and make kind/apiVersion explicit."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = dict(obj)
        obj["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", api_version)
    return obj


class _Stopped(Exception):
    """The cache was stopped while a request was in flight."""


class _Reflector:
    """List, then watch, one resource in a thread, into a dict of plain objects."""

    def __init__(
        self,
        resource: str,
        kind: str,
        api_version: str,
        list_fn: Callable[..., Any],
        key_fn: Callable[[Mapping[str, Any]], Any],
        *,
        optional: bool,
        stop: threading.Event,
        backoff_initial: float,
        backoff_max: float,
        watch_timeout: float,
        request_timeout: float,
    ) -> None:
        self.resource = resource
        self.kind = kind
        self.api_version = api_version
        self._list_fn = list_fn
        self._key_fn = key_fn
        self._optional = optional
        self._stop = stop
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        # Replaced wholesale on each list; single-key updates from the one watch thread.
        self.items: dict[Any, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.absent = False  # optional API not served (CRD not installed)
        self.resource_version: str | None = None
        self.last_activity: float | None = None  # time.monotonic() of the last list, event or watch start
        self._watch: kubernetes.watch.Watch | None = None
        self._response: Any = None
        self._lock = threading.Lock()
        self._progressed = False
        self.thread = threading.Thread(target=self._run, name=f"ferry-watch-{resource}", daemon=True)

    # -- thread body -------------------------------------------------------

    def _run(self) -> None:
        failures = 0  # consecutive errors with no watch progress in between
        while not self._stop.is_set():
            self._progressed = False
            try:
                self._list()
                self._watch_forever()
                return
            except _Stopped:
                return
            except Exception as exc:  # network errors, broken streams, API errors: never let the thread die
                if self._stop.is_set():
                    return
                failures = 1 if self._progressed else failures + 1
                delay = self._delay_after(exc, failures)
            if delay > 0 and self._stop.wait(delay):
                return

    def _delay_after(self, exc: Exception, failures: int) -> float:
        """Seconds to wait before the next list, after `exc`; logs it."""
        status = exc.status if isinstance(exc, ApiException) else None
        if status == _HTTP_NOT_FOUND and self._optional:
            self._mark_absent()
            return self._backoff(failures)
        if status == _HTTP_GONE:
            # The history we watched from was compacted: re-list now, back off only if it repeats.
            log.info("watch of %s expired (410 Gone); re-listing", self.resource)
            return 0.0 if failures == 1 else self._backoff(failures - 1)
        delay = self._backoff(failures)
        reason = f"HTTP {status} {exc.reason}" if isinstance(exc, ApiException) else repr(exc)
        log.warning("%s list/watch failed (%s); re-listing in %.1fs", self.resource, reason, delay)
        return delay

    def _backoff(self, attempt: int) -> float:
        """Exponential from backoff_initial to backoff_max, with jitter so replicas do not retry in step."""
        ceiling = min(self._backoff_max, self._backoff_initial * 2 ** max(0, attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _mark_absent(self) -> None:
        if not self.absent:
            log.warning(
                "the %s API is not served (CRD not installed?): lookups return nothing; re-checking every %.0fs",
                self.resource,
                self._backoff_max,
            )
        self.absent = True
        self.items = {}
        self.resource_version = None
        self.last_activity = time.monotonic()
        self.synced.set()

    def _list(self) -> None:
        items: dict[Any, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"limit": _LIST_PAGE_SIZE}
        while True:
            body = self._call(self._list_fn, **kwargs)
            for obj in body.get("items") or []:
                obj = _slim(obj, self.kind, self.api_version)
                items[self._key_fn(obj)] = obj
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                break
            kwargs["_continue"] = token
        if self.absent:
            log.info("the %s API is served now", self.resource)
        self.absent = False
        self.items = items
        self.resource_version = metadata.get("resourceVersion")
        self.last_activity = time.monotonic()
        self.synced.set()
        log.debug("listed %d %s at resourceVersion %s", len(items), self.resource, self.resource_version)

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        response = fn(_preload_content=False, _request_timeout=self._request_timeout, **kwargs)
        try:
            body: dict[str, Any] = json.loads(response.data)
        finally:
            response.release_conn()
        return body

    def _watch_forever(self) -> None:
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        self._watch = watch
        while not self._stop.is_set():
            # Spread reconnections of replicas and resources (client-go uses 5-10 min).
            timeout = int(self._watch_timeout * random.uniform(1.0, 1.25)) or 1
            for event in watch.stream(  # type: ignore[no-untyped-call]
                self._open_watch,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=(self._request_timeout, timeout + self._request_timeout),
            ):
                self._apply(event)
            # The server ended the watch (timeoutSeconds): resume from the last version seen.
            self._progressed = True

    def _open_watch(self, **kwargs: Any) -> object:
        # Deliberately no docstring or model return type: `Watch.stream` then yields
        # the raw JSON objects instead of deserialising every event into a model.
        response = self._list_fn(**kwargs)
        with self._lock:
            self._response = response
        if self._stop.is_set():
            response.close()
            raise _Stopped
        self.last_activity = time.monotonic()
        return response

    def _apply(self, event: Mapping[str, Any]) -> None:
        event_type = event.get("type")
        obj = event.get("raw_object", event.get("object"))
        if not isinstance(obj, dict):
            obj = kubernetes.client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        if event_type == "ERROR":  # `Watch.stream` raises for these; kept for safety
            raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("message")))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if event_type in ("ADDED", "MODIFIED"):
            obj = _slim(obj, self.kind, self.api_version)
            self.items[self._key_fn(obj)] = obj
        elif event_type == "DELETED":
            self.items.pop(self._key_fn(obj), None)
        elif event_type != "BOOKMARK":
            log.debug("ignoring %s watch event of type %r", self.resource, event_type)
        if rv:
            self.resource_version = rv
        self.last_activity = time.monotonic()
        self._progressed = True

    def interrupt(self) -> None:
        """Unblock a watch read in progress (called from another thread by stop())."""
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)


def _shutdown(response: Any) -> None:
    """Shut the response's socket down both ways: a blocked read returns, and the server sees the close."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        else:
            response.shutdown()
    except Exception:  # already closed
        pass


class WatchCache(ClusterView):
    """Namespaces and SecretProviderClasses (``secrets-store.csi.x-k8s.io/v1``) from list+watch.

    ``start()`` begins listing in two background threads; ``wait_ready()``
    blocks until both have listed once (an absent SPC CRD counts as listed).
    Lookups never call the API server.
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        resync_backoff_max: float = 30.0,
        backoff_initial: float = 0.5,
        watch_timeout_seconds: float = 300.0,
        request_timeout: float = 30.0,
    ) -> None:
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
        self._namespaces = _Reflector(
            NAMESPACES, "Namespace", "v1", core.list_namespace, name_key, optional=False, **common
        )
        self._spcs = _Reflector(
            SPC_PLURAL, SPC_KIND, f"{SPC_GROUP}/{SPC_VERSION}", list_spcs, namespaced_key, optional=True, **common
        )
        self._reflectors = (self._namespaces, self._spcs)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("WatchCache already started")
        self._started = True
        for reflector in self._reflectors:
            reflector.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads; an in-flight watch is interrupted, a list finishes first."""
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
