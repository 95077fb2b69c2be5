"""Remembered admissions: a Deployment's replicas arrive as identical pods.

Why it exists: in a rollout the API server sends Ferry the same pod N times
(the ReplicaSet's template; the object carries no name or uid yet), and
resolving the spec, building the containers and diffing the patch cost about a
millisecond of CPU each time on the event loop. This module remembers the
answer for a pod it has seen, so replica 2..N cost a hash and a few dict
lookups.

An answer depends on the parts of the pod that the policy reads or the patch
touches (see `pod_key`), on the namespace object and on every
SecretProviderClass that was looked up. Everything else in the body differs
between replicas without changing the answer: the review's uid, the
`managedFields` timestamps (one-second resolution, so replicas created a
second apart would never share an entry), and, across a rollout, the
`pod-template-hash` label and the owning ReplicaSet's name and uid. The
memo records the version (resourceVersion, and the object's identity in the
view) of each of those it read, and an entry is used only while all of them are
unchanged, so an edited SecretProviderClass or namespace annotation takes
effect on the very next admission. Settings and the sidecar mode are fixed for
the life of the app, so they are not part of the key.
"""

from __future__ import annotations

import hashlib
import marshal
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.mutate import is_run_to_completion

# Distinct pods remembered; each entry is a patch of a few KB.
MAX_ENTRIES = 512

# (resourceVersion, identity) of an object read from the cluster view; None when absent.
Version = tuple[str | None, int] | None


def object_version(obj: Mapping[str, Any] | None) -> Version:
    if obj is None:
        return None
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return (version if isinstance(version, str) else None, id(obj))


def pod_key(namespace: str, pod: Mapping[str, Any]) -> bytes:
    """A digest of everything about `pod` that its admission answer depends on.

    That is the namespace, the whole `spec`, the annotations, whether the pod
    runs to completion (`webhook.mutate.is_run_to_completion`, which reads the
    owner references and the Job labels), and whether `metadata`,
    `annotations` and `spec` are present at all (the patch adds a missing map
    but replaces a null one). The patch only touches `metadata.annotations`
    and `spec`, so two pods equal in these parts get the same patch. Keeping
    this list complete is what keeps the memo honest: `tests/webhook/test_memo.py`
    checks each part.

    The parts are serialized with `marshal` (format 2, which has no
    back-references): three times faster than JSON, and equal bytes mean equal
    values. marshal nests 2,000 deep, twice as deep as json.loads goes.
    """
    meta = pod.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    parts = (
        namespace,
        "metadata" in pod,
        "annotations" in meta,
        meta.get("annotations"),
        is_run_to_completion(pod),
        "spec" in pod,
        pod.get("spec"),
    )
    return hashlib.blake2b(marshal.dumps(parts, 2), digest_size=20).digest()


@dataclass(frozen=True)
class Remembered:
    """An answer, and what it was computed from."""

    answer: Any
    namespace_version: Version
    # ((namespace, name), version) of each SecretProviderClass looked up.
    spc_versions: tuple[tuple[tuple[str, str], Version], ...]


class AdmissionMemo:
    """A bounded LRU of answers, each valid while its inputs are unchanged."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[bytes, Remembered] = OrderedDict()
        self._max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def recall(
        self,
        key: bytes,
        namespace_obj: Mapping[str, Any] | None,
        spc_lookup: Callable[[str, str], Mapping[str, Any] | None],
    ) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry.namespace_version != object_version(namespace_obj):
            self.misses += 1
            return None
        for (namespace, name), version in entry.spc_versions:
            if object_version(spc_lookup(namespace, name)) != version:
                self.misses += 1
                return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.answer

    def remember(
        self,
        key: bytes,
        answer: Any,
        namespace_obj: Mapping[str, Any] | None,
        spcs_read: Mapping[tuple[str, str], Mapping[str, Any] | None],
    ) -> None:
        self._entries[key] = Remembered(
            answer,
            object_version(namespace_obj),
            tuple((ref, object_version(obj)) for ref, obj in spcs_read.items()),
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class RecordingLookup:
    """Wraps a SecretProviderClass lookup and keeps what it returned, for the memo."""

    def __init__(self, lookup: Callable[[str, str], Mapping[str, Any] | None]) -> None:
        self._lookup = lookup
        self.read: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def __call__(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        obj = self._lookup(namespace, name)
        self.read[(namespace, name)] = obj
        return obj
