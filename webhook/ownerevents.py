"""Admission warnings and denials as Events on the pod's owner (its ReplicaSet, Job, StatefulSet ...).

A controller's pods are created by the controller, so the warnings the API server passes back reach it, not a
person; `kubectl describe` of the owner shows its Events, so that is where Ferry writes them, off the admission
path and within bounded limits. Details: docs/admission.md ("Warnings and denials as Events on the owner").
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fetcher.contract import bounded

log = logging.getLogger("ferry.webhook.events")

# An Event's message is kept under the 1 KiB that events.k8s.io allows.
MAX_MESSAGE_CHARS = 1000
MAX_WARNINGS_IN_ONE_EVENT = 4
DEDUP_SECONDS = 600.0
MAX_REMEMBERED = 4096
# Token buckets: a burst, then one Event per refill interval.
NAMESPACE_BURST, NAMESPACE_REFILL_SECONDS = 10, 6.0
GLOBAL_BURST, GLOBAL_REFILL_SECONDS = 50, 0.5
MAX_NAMESPACES = 2048
QUEUE_SIZE = 256
COMPONENT = "ferry-webhook"
REASON_WARNING = "FerryWarning"
REASON_DENIED = "FerryDenied"


@dataclass(frozen=True)
class OwnerEvent:
    """One Event to post: on `kind`/`name` (uid `uid`) in `namespace`."""

    namespace: str
    api_version: str
    kind: str
    name: str
    uid: str
    type: str
    reason: str
    message: str

    @property
    def key(self) -> str:
        text = "\0".join((self.namespace, self.uid, self.reason, self.message))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def body(self, now: datetime) -> dict[str, Any]:
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{self.name[:200]}.ferry.{self.key}", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": self.api_version,
                "kind": self.kind,
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
            },
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }


Owner = tuple[str, str, str, str, str]  # namespace, apiVersion, kind, name, uid


def owner_of(request: Mapping[str, Any]) -> Owner | None:
    """The pod's controlling owner (else its first owner), if every field is a sane string; None for a bare pod.

    Parsed JSON holds plain dicts and lists, so the checks are on those concrete types: the ABC checks
    (`Mapping`) cost more than the rest of this function on the admission path.
    """
    pod = request.get("object")
    meta = pod.get("metadata") if isinstance(pod, dict) else None
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    if not isinstance(refs, list):
        return None  # a bare pod: the API server shows its warnings or denial to whoever created it
    owner: dict[str, Any] | None = None
    for ref in refs[:16]:
        if isinstance(ref, dict):
            if ref.get("controller") is True:
                owner = ref
                break
            owner = owner or ref
    if owner is None:
        return None
    fields = (
        request.get("namespace"),
        owner.get("apiVersion"),
        owner.get("kind"),
        owner.get("name"),
        owner.get("uid"),
    )
    for value, limit in zip(fields, _OWNER_FIELD_LIMITS, strict=True):
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            return None
    return fields  # type: ignore[return-value]


# Longest namespace, apiVersion, kind, name and uid taken from an ownerReference; anything longer is not real.
_OWNER_FIELD_LIMITS = (63, 253, 63, 253, 64)


# Said first when the review may not have come from the API server (FERRY_API_SERVER_ADDRESSES is unset):
# any pod can POST a review naming any namespace and owner, so the Event must not read as the cluster's word.
UNVERIFIED = "(unverified: this admission review's sender was not checked) "


def _printable(text: str) -> str:
    """Newlines, tabs, escapes and other unprintable characters as spaces: tenant text cannot fake lines."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else " " for ch in text)


def event_for(
    owner: Owner, outcome: str, warnings: tuple[str, ...], message: str | None, *, verified: bool = False
) -> OwnerEvent:
    """The Event; its message (tenant text: the owner's kind, annotations quoted in warnings) is bounded and
    printable, and starts with `UNVERIFIED` unless the review came from the API server."""
    namespace, api_version, kind, name, uid = owner
    if outcome == "denied":
        text = f"Ferry denied this {kind}'s pod: {message or 'no reason given'}"
        reason = REASON_DENIED
    else:
        shown = warnings[:MAX_WARNINGS_IN_ONE_EVENT]
        more = f" (and {len(warnings) - len(shown)} more)" if len(warnings) > len(shown) else ""
        text = f"Ferry admitted this {kind}'s pod with warnings: {'; '.join(shown)}{more}"
        reason = REASON_WARNING
    text = _printable(bounded(("" if verified else UNVERIFIED) + text, MAX_MESSAGE_CHARS))
    return OwnerEvent(namespace, api_version, kind, name, uid, "Warning", reason, text)


def _worth_an_event(request: Mapping[str, Any], outcome: str, warnings: tuple[str, ...]) -> bool:
    return not request.get("dryRun") and (outcome == "denied" or bool(warnings))


def owner_event(
    request: Mapping[str, Any],
    outcome: str,
    warnings: tuple[str, ...],
    message: str | None,
    *,
    verified: bool = False,
) -> OwnerEvent | None:
    """The Event for this admission, or None: nothing to say, a dry run, or a pod no controller owns."""
    if not _worth_an_event(request, outcome, warnings):
        return None
    owner = owner_of(request)
    return None if owner is None else event_for(owner, outcome, warnings, message, verified=verified)


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def take(self, now: float, burst: int, refill_seconds: float) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) / refill_seconds)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class OwnerEvents:
    """Deduplicates, rate-limits and queues owner Events; one background thread posts them with `post`."""

    def __init__(
        self,
        post: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        known_namespace: Callable[[str], bool] = lambda _namespace: True,
    ) -> None:
        self._post = post
        self._clock = clock
        self._known_namespace = known_namespace
        self._lock = threading.Lock()
        self._seen: OrderedDict[int, float] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(GLOBAL_BURST, clock())
        self._queue: queue.Queue[OwnerEvent | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.counts = {"queued": 0, "duplicate": 0, "limited": 0, "dropped": 0, "posted": 0, "failed": 0}

    def offer(
        self,
        request: Mapping[str, Any],
        outcome: str,
        warnings: tuple[str, ...],
        message: str | None,
        *,
        verified: bool = False,
    ) -> None:
        """Called on the admission path: no I/O, a few dictionary operations, never raises.

        `verified`: the review arrived from one of the API server's addresses; otherwise the message says so.

        A repeat (a Deployment's replicas) costs the owner lookup and one hash: the message is built only for
        an Event that passed the limits.
        """
        try:
            if not _worth_an_event(request, outcome, warnings):
                return
            owner = owner_of(request)
            if owner is None:
                return
            # Only the hash is kept, so remembered keys cost the same whatever the messages' length.
            key = hash((owner[0], owner[4], outcome, warnings, message))
            if not self._admit(owner[0], key):
                return
            try:
                self._queue.put_nowait(event_for(owner, outcome, warnings, message, verified=verified))
            except queue.Full:
                self.counts["dropped"] += 1
                return
            self.counts["queued"] += 1
        except Exception:  # an Event is a courtesy; admission never fails because of one
            log.exception("owner event dropped")

    def _admit(self, namespace: str, key: int) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < DEDUP_SECONDS:
                self.counts["duplicate"] += 1
                return False
            if not self._known_namespace(namespace):
                return False
            bucket = self._buckets.get(namespace)
            if bucket is None:
                bucket = self._buckets[namespace] = _Bucket(NAMESPACE_BURST, now)
                if len(self._buckets) > MAX_NAMESPACES:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(namespace)
            if not bucket.take(now, NAMESPACE_BURST, NAMESPACE_REFILL_SECONDS) or not self._global.take(
                now, GLOBAL_BURST, GLOBAL_REFILL_SECONDS
            ):
                self.counts["limited"] += 1
                return False
            self._seen[key] = now
            self._seen.move_to_end(key)
            if len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="owner-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # a daemon thread: it ends with the process
        self._thread.join(timeout)

    def drain(self) -> None:
        """Post everything queued now, on this thread (tests, and `stop` without a thread)."""
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            if event is not None:
                self._send(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._send(event)

    def _send(self, event: OwnerEvent) -> None:
        try:
            self._post(event.body(datetime.now(UTC)))
            self.counts["posted"] += 1
        except Exception as exc:
            failed = self.counts["failed"] = self.counts["failed"] + 1
            if failed & (failed - 1):
                return  # logged at the 1st, 2nd, 4th, 8th ... failure: a 403 forever is a few lines, not one each
            status = getattr(exc, "status", None)
            log.warning(
                "owner event not posted",
                extra={
                    "fields": {
                        "namespace": event.namespace,
                        "kind": _printable(event.kind),
                        "status": status if isinstance(status, int) else None,
                        "failedSoFar": failed,
                    }
                },
            )


def kubernetes_poster(api_client: Any) -> Callable[[dict[str, Any]], None]:
    """POST the Event; if one of that name exists (the same message after the dedup window), bump it instead."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)

    def post(body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            core.create_namespaced_event(meta["namespace"], body, _request_timeout=10)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch = {"lastTimestamp": body["lastTimestamp"], "message": body["message"]}
            core.patch_namespaced_event(meta["name"], meta["namespace"], patch, _request_timeout=10)

    return post
