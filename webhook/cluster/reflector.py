"""One resource, listed then watched, in a background thread: the engine under `webhook.cluster.kube.WatchCache`.

client-go's informer pattern (list for the state and a resourceVersion, watch from there, re-list on 410 Expired,
back off on other errors, a missing CRD is "none yet") is the subtle part of the watch cache, so it lives apart
from the cache's public face. Objects are kept as API JSON without ``metadata.managedFields``, cut further by the
resource's slimmer and counted against its byte budget.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
from kubernetes.client.exceptions import ApiException

# The watch cache's logger: its messages read the same whichever module sends them.
log = logging.getLogger("webhook.cluster.kube")

_HTTP_GONE = 410
_HTTP_NOT_FOUND = 404
_HTTP_FORBIDDEN = 403

# Turns an object as the API server sent it into what the cache keeps, given the bytes the cache may still
# spend; returns the kept object (None: not kept at all) and the bytes it counts for.
Slimmer = Callable[[dict[str, Any], int], tuple[dict[str, Any] | None, int]]


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


class Reflector:
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
        slimmer: Slimmer | None = None,
        page_size: int = 500,
        max_total_bytes: int = 0,
        backoff_initial: float,
        backoff_max: float,
        watch_timeout: float,
        request_timeout: float,
        slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        forbidden_is_absent: bool = False,
    ) -> None:
        self.resource = resource
        self.kind = kind
        self.api_version = api_version
        self._list_fn = list_fn
        self._key_fn = key_fn
        # What of each object is kept, beyond dropping managedFields (None: all of it).
        self._slim_fn = slim
        self._optional = optional
        # A 403 (RBAC not granted) reads as "not served" too: for a resource only some installs may read.
        self._forbidden_is_absent = forbidden_is_absent
        self._slimmer = slimmer
        self._page_size = page_size
        # The bytes all kept objects may count for (0: no bound); `bytes_kept` is what they count for now.
        self._max_total_bytes = max_total_bytes
        self.bytes_kept = 0
        self._sizes: dict[Any, int] = {}
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
        if status == _HTTP_FORBIDDEN and self._forbidden_is_absent:
            if not self.absent:
                log.warning("listing %s is forbidden (RBAC): lookups return nothing; re-checking", self.resource)
            self._mark_absent(quiet=True)
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

    def _mark_absent(self, *, quiet: bool = False) -> None:
        if not self.absent and not quiet:
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

    def _keep(self, obj: dict[str, Any], items: dict[Any, dict[str, Any]], sizes: dict[Any, int], spent: int) -> int:
        """Put the object, slimmed and within the byte budget, into `items`; returns the bytes now spent."""
        obj = self._slimmed(obj)
        key = self._key_fn(obj)
        if self._slimmer is not None:
            spent -= sizes.get(key, 0)
            left = self._max_total_bytes - spent if self._max_total_bytes else 1 << 62
            slimmed, size = self._slimmer(obj, left)
            if slimmed is None:  # over the budget, and not even a marker is kept
                sizes.pop(key, None)
                items.pop(key, None)
                return spent
            obj = slimmed
            sizes[key] = size
            spent += size
        items[key] = obj
        return spent

    def _list(self) -> None:
        """A paginated list: pages of `page_size` objects, each slimmed as it arrives, so the peak is one page."""
        items: dict[Any, dict[str, Any]] = {}
        sizes: dict[Any, int] = {}
        spent = 0
        kwargs: dict[str, Any] = {"limit": self._page_size}
        while True:
            body = self._call(self._list_fn, **kwargs)
            for obj in body.pop("items", None) or []:
                spent = self._keep(obj, items, sizes, spent)
            metadata = body.get("metadata") or {}
            token = metadata.get("continue")
            del body
            if not token:
                break
            kwargs["_continue"] = token
        if self.absent:
            log.info("the %s API is served now", self.resource)
        self.absent = False
        self.items = items
        self._sizes = sizes
        self.bytes_kept = spent
        self.resource_version = metadata.get("resourceVersion")
        self.last_activity = time.monotonic()
        self.synced.set()
        log.debug("listed %d %s at resourceVersion %s", len(items), self.resource, self.resource_version)

    def _slimmed(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = _slim(obj, self.kind, self.api_version)
        return self._slim_fn(obj) if self._slim_fn is not None else obj

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
            self.bytes_kept = self._keep(obj, self.items, self._sizes, self.bytes_kept)
        elif event_type == "DELETED":
            key = self._key_fn(obj)
            self.items.pop(key, None)
            self.bytes_kept -= self._sizes.pop(key, 0)
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
