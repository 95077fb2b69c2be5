"""The one annotation Ferry reads of ServiceAccounts, iam.gke.io/gcp-service-account, kept per (namespace, name).

A GKE pod impersonates the Google service account its Kubernetes ServiceAccount names, and the webhook writes
that account into the fetcher's spec. Built only with GCP settings; how the accounts are watched, kept and read
on a miss, within bounds: docs/gke.md.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from fetcher.contract.gcp import KSA_GCP_SERVICE_ACCOUNT, KsaAnnotation
from webhook.cluster.reflector import Reflector
from webhook.policy.view import namespaced_key

log = logging.getLogger("webhook.cluster.kube")

SERVICE_ACCOUNTS = "serviceaccounts"
# What the API server sends for list/watch/get when asked for metadata only (client-go's metadata client asks
# the same way); plain JSON is the fallback an older server answers with.
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
# A kept value is cut to this many characters: a valid account is at most 130, and a cut one still fails
# validation with a message naming the ServiceAccount and the annotation.
MAX_VALUE_CHARS = 256
# The bytes the view may count for, and what an entry costs besides its strings (key tuple, dict and slots; an
# annotated one as much again): about 1 KB for a 253-character name with a 256-character value, so at least
# 30,000 such, some 130,000 of the usual kind. A tenant can create ServiceAccounts at will: past the bound one
# is not kept, and a pod naming it has it read with the GET below, so no replica runs out of memory.
MAX_VIEW_BYTES = 32 * 1024 * 1024
ENTRY_BYTES = 200
# ServiceAccounts per list page (metadata only: a few hundred bytes each, more with large annotations).
PAGE_SIZE = 500
# A ServiceAccount name is a DNS subdomain; anything else (a forged review) is never looked up.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
# What an entry is when the ServiceAccount has no such annotation: one shared, never-mutated dict.
_NO_ANNOTATION: dict[str, Any] = {}

# The short GET on a miss: its timeout (connect, read), how many per second (a token bucket), how long the API
# server is left alone after one failed, and how long an answer is remembered (an absent ServiceAccount
# briefly: it may be created next; a found one until the watch has surely delivered it).
GET_TIMEOUT = (0.5, 0.5)
GETS_PER_SECOND = 5.0
GET_BURST = 10
# And per namespace, so one tenant's misses (forged reviews naming made-up accounts) leave the rest for others.
NAMESPACE_GETS_PER_SECOND = 1.0
NAMESPACE_GET_BURST = 3
GET_PAUSE_AFTER_FAILURE = 10.0
FOUND_TTL = 60.0
ABSENT_TTL = 5.0
MAX_REMEMBERED = 1024


def slim_service_account(obj: dict[str, Any], left: int) -> tuple[dict[str, Any] | None, int]:
    """What the view keeps of one ServiceAccount: {"gsa": value} when annotated, else a shared empty dict;
    None (not kept) when its bytes, key included, are more than the `left` of MAX_VIEW_BYTES."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    key_chars = sum(len(part) for part in (meta.get("name"), meta.get("namespace")) if isinstance(part, str))
    value = annotation_of(obj)
    size = ENTRY_BYTES + key_chars + (0 if value is None else len(value) + ENTRY_BYTES)
    if size > left:
        return None, 0
    return (_NO_ANNOTATION if value is None else {"gsa": value}), size


def slim_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """Name, namespace and the one annotation: enough for the key, dropped by the slimmer right after."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    value = annotation_of(obj)
    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "annotations": {} if value is None else {KSA_GCP_SERVICE_ACCOUNT: value},
    }


def annotation_of(obj: dict[str, Any]) -> str | None:
    """The ServiceAccount's iam.gke.io/gcp-service-account, interned and cut to MAX_VALUE_CHARS; None if unset."""
    annotations = obj.get("annotations")  # already slimmed
    if not isinstance(annotations, dict):
        meta = obj.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(KSA_GCP_SERVICE_ACCOUNT) if isinstance(annotations, dict) else None
    if not isinstance(value, str) or not value:
        return None
    return sys.intern(value[:MAX_VALUE_CHARS])  # as written: a stray space or newline is denied, not fixed


class ServiceAccountView:
    """The reflector of ServiceAccounts, and the short, bounded GET for one it has not seen yet."""

    def __init__(
        self,
        core: kubernetes.client.CoreV1Api,
        *,
        common: dict[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._clock = clock
        self.reflector = Reflector(
            SERVICE_ACCOUNTS,
            "ServiceAccount",
            "v1",
            self._list_metadata,
            namespaced_key,
            optional=False,
            slim=slim_metadata,
            slimmer=slim_service_account,
            page_size=PAGE_SIZE,
            max_total_bytes=MAX_VIEW_BYTES,
            forbidden_is_absent=True,
            **common,
        )
        self._lock = threading.Lock()
        self._remembered: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._budget = TokenBucket(GETS_PER_SECOND, GET_BURST, clock())
        self._namespace_budgets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._paused_until = 0.0
        self.gets = 0  # GETs made (tests and metrics)

    def _list_metadata(self, **kwargs: Any) -> Any:
        accept = _METADATA_OBJECT if kwargs.get("watch") else _METADATA_LIST
        return self._core.list_service_account_for_all_namespaces(_headers={"Accept": accept}, **kwargs)

    def lookup(self, namespace: str, name: str, *, namespace_known: bool = True, may_get: bool = True) -> KsaAnnotation:
        """The annotation of ServiceAccount `namespace`/`name`: from the view or a GET's answer still fresh, else
        one bounded GET (never for a namespace the cluster view does not know, nor when `may_get` is False: a
        forged review names any)."""
        if not _NAME_RE.match(name):
            shown = name[:64] + ("..." if len(name) > 64 else "")
            return KsaAnnotation(shown, None, f"spec.serviceAccountName {shown!r} is not a ServiceAccount name", True)
        kept = self.reflector.items.get((namespace, name))
        if kept is not None:
            return KsaAnnotation(name, kept.get("gsa"))
        if not self.reflector.synced.is_set():
            return KsaAnnotation(name, None, _unread("Ferry has not finished listing ServiceAccounts"))
        if self.reflector.absent:  # forbidden: every pod still admitted, but none told a wrong account
            return KsaAnnotation(name, None, _unread(FORBIDDEN, retry=False), True)
        if not namespace_known:
            return KsaAnnotation(name, None, _unread("its namespace is not known yet"))
        return self._read_missing(namespace, name, may_get)

    def _read_missing(self, namespace: str, name: str, may_get: bool) -> KsaAnnotation:
        """A GET's answer still fresh, else (when `may_get`) one bounded GET."""
        key = (namespace, name)
        now = self._clock()
        with self._lock:
            remembered = self._remembered.get(key)
            if remembered is not None and remembered[0] > now:
                return KsaAnnotation(name, remembered[1])
            if not may_get or now < self._paused_until or not self._take_tokens(namespace, now):
                return KsaAnnotation(name, None, _unread("its watch has not delivered it yet"))
            self.gets += 1
        try:
            response: Any = self._core.read_namespaced_service_account(
                name,
                namespace,
                _headers={"Accept": _METADATA_OBJECT},
                _preload_content=False,
                _request_timeout=GET_TIMEOUT,
            )
            try:
                body = json.loads(response.data)
            finally:
                response.release_conn()
            value, ttl = annotation_of(body) if isinstance(body, dict) else None, FOUND_TTL
        except ApiException as exc:
            if exc.status != 404:
                return self._failed(namespace, name, f"HTTP {exc.status}")
            value, ttl = None, ABSENT_TTL  # pods of a missing ServiceAccount are refused by the API server
        except Exception as exc:  # timeouts, refused connections, a body that is not JSON
            return self._failed(namespace, name, type(exc).__name__)
        with self._lock:
            self._remembered[key] = (self._clock() + ttl, value)
            self._remembered.move_to_end(key)
            while len(self._remembered) > MAX_REMEMBERED:
                self._remembered.popitem(last=False)
        return KsaAnnotation(name, value)

    def _take_tokens(self, namespace: str, now: float) -> bool:
        """One token from the namespace's budget and one from the shared one, or neither."""
        mine = self._namespace_budgets.pop(namespace, None) or TokenBucket(
            NAMESPACE_GETS_PER_SECOND, NAMESPACE_GET_BURST, now
        )
        self._namespace_budgets[namespace] = mine  # most recent last; the oldest are forgotten (full again)
        while len(self._namespace_budgets) > MAX_REMEMBERED:
            self._namespace_budgets.popitem(last=False)
        if not mine.has_token(now) or not self._budget.has_token(now):
            return False
        mine.take()
        self._budget.take()
        return True

    def _failed(self, namespace: str, name: str, why: str) -> KsaAnnotation:
        with self._lock:
            self._paused_until = self._clock() + GET_PAUSE_AFTER_FAILURE
        log.warning(
            "reading ServiceAccount %s/%s failed (%s); no such reads for %.0fs",
            namespace,
            name,
            why,
            GET_PAUSE_AFTER_FAILURE,
        )
        return KsaAnnotation(name, None, _unread("the API server did not answer"))


# Why a ServiceAccount is unread when the webhook may not list them: the install lacks the grant.
FORBIDDEN = (
    "the webhook may not list ServiceAccounts: grant get, list and watch on serviceaccounts, as the chart does "
    "with fetcher.gcp.project and manifests/components/gke does"
)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._refilled = now

    def has_token(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        return self._tokens >= 1.0

    def take(self) -> None:
        self._tokens -= 1.0


def _unread(why: str, *, retry: bool = True) -> str:
    """Why a ServiceAccount is unread; the denial puts "ServiceAccount NAMESPACE/NAME annotation ..." before it."""
    return (
        f"Ferry could not read it ({why}); {'retry in a few seconds, or ' if retry else ''}"
        "name the Google service account with ferry.dev/gcp-service-account on the pod"
    )
