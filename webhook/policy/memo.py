"""Every cache around the admission stages, in one module that no stage imports: the stages hold no state.

What each cache keys on, and why a remembered answer stays correct, is in docs/admission.md ("Caches").
"""

from __future__ import annotations

import hashlib
import marshal
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from fetcher.contract.gcp import KsaAnnotation
from webhook.policy.containers import FerryParts, build_parts, with_texts
from webhook.policy.identity import Identity
from webhook.policy.lru import BoundedCache
from webhook.policy.patch import diff_documents
from webhook.policy.request import JOB_NAME_LABELS
from webhook.policy.resolve import InlineSpecInputs, SpecInputs
from webhook.policy.specbuild import BuiltSpec, ResolvedRequest, SpecResult, make_spec
from webhook.settings import Settings

# `isinstance(x, _OBJECT)` is `isinstance(x, Mapping)`, at once for a dict (what JSON decodes to).
_OBJECT = (dict, Mapping)

V = TypeVar("V")

# Distinct pods remembered; each entry is a patch of a few KB.
MAX_ENTRIES = 512
# And at most this many bytes of encoded answers in all, none larger than MAX_ENTRY_BYTES: a few huge pods
# (a 3 MiB body can make a patch as large) must not pin hundreds of MB.
MAX_MEMO_BYTES = 16 * 1024 * 1024
MAX_ENTRY_BYTES = 256 * 1024
# Distinct specs, serialized specs and pruned diffs remembered.
MAX_SPECS = 512
# And at most this much canonical spec JSON in all (an entry, with its inputs and typed spec, takes about four
# times its JSON), none over MAX_SPEC_ENTRY_BYTES: forged reviews with 64 KiB objects annotations must not pin
# 512 specs of a quarter MB each (the webhook's memory limit is 256 MiB).
MAX_SPECS_BYTES = 4 * 1024 * 1024
MAX_SPEC_ENTRY_BYTES = 128 * 1024
MAX_DIFFS = 256
# Distinct sets of Ferry's parts (its containers and volumes with their JSON), remembered: one per spec, mount
# path, user, sidecar and identity in use. In all at most MAX_PARTS_BYTES of JSON text (the dicts beside it
# take a few times that), and none over MAX_PARTS_ENTRY_BYTES: a spec of hundreds of objects is built each time.
MAX_PARTS = 256
MAX_PARTS_BYTES = 4 * 1024 * 1024
MAX_PARTS_ENTRY_BYTES = 128 * 1024


def _text_bytes(value: object) -> int:
    """The characters and bytes of the strings in a key (tuples of strings, numbers and tuples)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, tuple):
        return sum(_text_bytes(item) for item in value)
    return 0


_SPECS: BoundedCache[Hashable, SpecResult] = BoundedCache(
    MAX_SPECS,
    size=lambda result: len(result.json) if isinstance(result, BuiltSpec) else 0,
    # The key's text counts too: a pod's own objects (up to 64 KiB), a class's digest, the options' values.
    key_size=_text_bytes,
    max_bytes=MAX_SPECS_BYTES,
    max_entry_bytes=MAX_SPEC_ENTRY_BYTES,
)
_DIFFS: BoundedCache[bytes, bytes] = BoundedCache(MAX_DIFFS)
_PARTS: BoundedCache[Hashable, FerryParts] = BoundedCache(
    MAX_PARTS,
    size=lambda parts: parts.texts.size() if parts.texts else 0,
    max_bytes=MAX_PARTS_BYTES,
    max_entry_bytes=MAX_PARTS_ENTRY_BYTES,
)


def cached_spec(inputs: SpecInputs) -> SpecResult:
    """`make_spec(inputs)`, built once per distinct input: parsing the objects YAML dominates a miss.

    Only valid specs are kept: problems belong to a denial, and denials are never remembered. A class is keyed
    by the digest of its content: the content itself (up to 256 KiB of parameters) would make the key, not
    the spec, what an entry holds.
    """
    key = (
        inputs
        if isinstance(inputs, InlineSpecInputs)
        else (content_digest(inputs.trimmed), inputs.options, inputs.names)
    )
    return _SPECS.get_or_compute(key, lambda: make_spec(inputs), keep=lambda result: isinstance(result, BuiltSpec))


def cached_parts(resolved: ResolvedRequest, identity: Identity, settings: Settings) -> FerryParts:
    """`build_parts`, built and encoded once for every pod that gets the same parts: replicas of any Deployment
    with one spec, mount path, user, sidecar and identity.

    The key holds every input `build_parts` reads (a test changes each one). The spec is keyed by its
    canonical JSON, which is the whole spec (the fetcher rebuilds it from that text) and, coming from the
    spec cache, the same str each time, whose hash Python keeps: hashing the typed spec costs a tenth of a
    miss. The parts are shared by the pods that get them, so nothing may change them: the mutate stage and
    the platform sizing copy what they edit.
    """
    key = (
        resolved.spec_json,
        resolved.mount_path,
        resolved.run_as_user,
        resolved.sidecar,
        resolved.sidecar_unhealthy_after,
        content_key((identity.env, identity.mounts)),
        settings,
    )
    return _PARTS.get_or_compute(key, lambda: with_texts(build_parts(resolved, identity, settings)))


def cached_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """`diff_documents` of two pruned documents, remembered by their content (pods of one shape prune alike)."""
    return remembered_diff(before, after, diff_documents)


def remembered_diff(before: Any, after: Any, diff: Callable[[Any, Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """`diff(before, after)` for two small documents, remembered by their content.

    marshal (format 2, no back-references) writes dicts, lists and scalars
    exactly, so equal bytes are equal documents; the ops are kept marshalled so
    every caller gets its own copy. A document marshal cannot write (a date
    read from YAML) is diffed without the cache.
    """
    try:
        key = marshal.dumps((before, after), 2)
    except ValueError:
        return diff(before, after)
    ops: list[dict[str, Any]] = marshal.loads(_DIFFS.get_or_compute(key, lambda: marshal.dumps(diff(before, after), 2)))
    return ops


def content_key(value: Any) -> Hashable:
    """A hashable stand-in for a JSON-like value: equal content, equal key (in the same key order).

    marshal's bytes where it can write the value (C speed, and bytes keep their hash); else a nested tuple.
    """
    try:
        return marshal.dumps(value, 2)
    except ValueError:  # e.g. a date PyYAML read from an SPC file
        return _frozen(value)


def content_digest(value: Any) -> Hashable:
    """`content_key`, as a SHA-256 digest where marshal can write the value: 32 bytes whatever its size."""
    key = content_key(value)
    return hashlib.sha256(key).digest() if isinstance(key, bytes) else key


def _frozen(value: Any) -> Hashable:
    if isinstance(value, _OBJECT):
        return ("{", tuple((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return ("[", tuple(_frozen(item) for item in value))
    try:
        hash(value)
    except TypeError:
        return ("?", repr(value))
    hashable: Hashable = value
    return hashable


def clear_caches() -> None:
    """Forget every content cache (tests and benchmarks; never needed for correctness)."""
    for cache in (_SPECS, _DIFFS, _PARTS):
        cache.clear()


def cache_stats() -> dict[str, tuple[int, int, int]]:
    """(hits, misses, size) of each content cache, for tests and benchmarks."""
    caches = (("specs", _SPECS), ("diffs", _DIFFS), ("parts", _PARTS))
    return {name: (cache.hits, cache.misses, len(cache)) for name, cache in caches}


# --- The whole-answer memo. --------------------------------------------------


# Where in a pod the key looks (paths from the pod's root): `spec` whole, `metadata.annotations` whole,
# and the owner references and labels through `is_run_to_completion`. A test traces every read admission
# makes of a pod and fails if one falls outside these.
KEYED_POD_PARTS: tuple[tuple[str, ...], ...] = (
    ("metadata",),
    ("metadata", "annotations"),
    ("metadata", "ownerReferences"),
    ("metadata", "labels"),
    ("spec",),
)


def pod_key(pod: Mapping[str, Any], namespace: str, ksa: KsaAnnotation | None) -> bytes:
    """A digest of everything about `pod` that its admission answer depends on, asked of the pod as sent.

    The parts, and why a rollout's new pod-template-hash or owner still shares the key: docs/admission.md
    ("Caches"). Equal keys are equal parts of equal JSON types, so their pods pass or fail the type check
    (`podtypes`) alike: that is why the memo is asked before it. marshal, then SHA-256: equal bytes are equal
    values of equal types, and format 4's back-references follow from the JSON text alone.
    """
    meta = pod.get("metadata")
    if isinstance(meta, _OBJECT):
        meta_type: object = _AN_OBJECT
    else:  # None, or a forged value the type check refuses: kept whole, so no object's key can match it
        meta_type, meta = meta, {}
    parts: tuple[Any, ...] = (
        namespace,
        "metadata" in pod,
        meta_type,
        "annotations" in meta,
        meta.get("annotations"),
        _labels_part(meta.get("labels")),
        _owners_part(meta.get("ownerReferences")),
        "spec" in pod,
        pod.get("spec"),
        # Read from the cluster, not the pod: a re-annotated ServiceAccount must not get the old answer.
        tuple(ksa) if ksa is not None else None,
    )
    return hashlib.sha256(marshal.dumps(parts, 4)).digest()


# What `pod_key` writes for an object, or a list of objects, where the type check wants one: a tuple, which no
# JSON value decodes to. Any other value is written whole (it fails the check, or is null).
_AN_OBJECT = ("object",)
_OBJECTS = ("objects",)


def _labels_part(labels: object) -> object:
    if isinstance(labels, _OBJECT):
        return _AN_OBJECT, any(label in labels for label in JOB_NAME_LABELS)
    return labels


def _owners_part(owners: object) -> object:
    if isinstance(owners, list) and all(isinstance(owner, dict) for owner in owners):
        return _OBJECTS, any(owner.get("kind") == "Job" for owner in owners)
    return owners


class _Seen(NamedTuple):
    """An object read from the cluster view: the object itself (the view replaces, never edits) and its version."""

    obj: Mapping[str, Any] | None
    version: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> _Seen:
        meta = obj.get("metadata") if obj is not None else None
        version = meta.get("resourceVersion") if isinstance(meta, _OBJECT) else None
        return cls(obj, version if isinstance(version, str) else None)

    def still(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is not self.obj:
            return False
        meta = obj.get("metadata") if obj is not None else None
        version = meta.get("resourceVersion") if isinstance(meta, _OBJECT) else None
        return (version if isinstance(version, str) else None) == self.version


class Remembered(NamedTuple):
    """An answer, and what it was computed from."""

    answer: Any
    # Bytes the answer holds, counted against the memo's byte bound (with the objects below, each once).
    size: int
    namespace: _Seen
    # (namespace, name) of each SecretProviderClass looked up, and what the lookup returned.
    spcs: tuple[tuple[tuple[str, str], _Seen], ...]
    # The namespace's LimitRanges, in the view's order.
    limit_ranges: tuple[_Seen, ...] = ()


class AdmissionMemo(Generic[V]):
    """An LRU of answers bounded in entries and in bytes, each valid while its inputs are unchanged."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        *,
        max_bytes: int = MAX_MEMO_BYTES,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
    ) -> None:
        self._entries: OrderedDict[bytes, Remembered] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        # The cluster objects the entries keep alive, each counted once: id -> [entries holding it, its bytes].
        # An id stays that object's while an entry holds it.
        self._pinned: dict[int, list[int]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def recall(
        self,
        key: bytes,
        namespace_obj: Mapping[str, Any] | None,
        spc_lookup: Callable[[str, str], Mapping[str, Any] | None],
        limit_ranges: Sequence[Mapping[str, Any]] = (),
    ) -> V | None:
        entry = self._entries.get(key)
        if (
            entry is None
            or not entry.namespace.still(namespace_obj)
            or len(entry.limit_ranges) != len(limit_ranges)
            or not all(seen.still(obj) for seen, obj in zip(entry.limit_ranges, limit_ranges, strict=True))
        ):
            self.misses += 1
            return None
        for (namespace, name), seen in entry.spcs:
            if not seen.still(spc_lookup(namespace, name)):
                self.misses += 1
                return None
        self._entries.move_to_end(key)
        self.hits += 1
        answer: V = entry.answer
        return answer

    def remember(
        self,
        key: bytes,
        answer: V,
        namespace_obj: Mapping[str, Any] | None,
        spcs_read: Mapping[tuple[str, str], Mapping[str, Any] | None],
        limit_ranges: Sequence[Mapping[str, Any]] = (),
        *,
        size: int = 0,
    ) -> None:
        """Keep `answer` (of `size` bytes) for `key`; an answer over the per-entry bound is not kept.

        The entry keeps the objects it was made from alive (to see them replaced), after the view has let go of
        a replaced one: each such object counts against the byte bound once, however many entries hold it, or
        a tenant rewriting a large class before each of its pods would have the memo hold every old version.
        """
        self.forget(key)
        if size > self._max_entry_bytes:
            return
        entry = Remembered(
            answer,
            size,
            _Seen.of(namespace_obj),
            tuple((ref, _Seen.of(obj)) for ref, obj in spcs_read.items()),
            tuple(_Seen.of(obj) for obj in limit_ranges),
        )
        self._entries[key] = entry
        self.bytes += size
        for obj in _objects_of(entry):
            held = self._pinned.get(id(obj))
            if held is None:
                held = self._pinned[id(obj)] = [0, _kept_bytes(obj)]
                self.bytes += held[1]
            held[0] += 1
        while len(self._entries) > self._max_entries or self.bytes > self._max_bytes:
            self._drop(self._entries.popitem(last=False)[1])

    def forget(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._drop(entry)

    def _drop(self, entry: Remembered) -> None:
        self.bytes -= entry.size
        for obj in _objects_of(entry):
            held = self._pinned[id(obj)]
            held[0] -= 1
            if not held[0]:
                del self._pinned[id(obj)]
                self.bytes -= held[1]

    def __len__(self) -> int:
        return len(self._entries)


def _objects_of(entry: Remembered) -> list[Mapping[str, Any]]:
    """The cluster objects an entry holds."""
    seen = (entry.namespace, *(seen for _, seen in entry.spcs), *entry.limit_ranges)
    return [item.obj for item in seen if item.obj is not None]


def _kept_bytes(obj: Mapping[str, Any]) -> int:
    """About the bytes a cluster object holds: its marshalled length (its memory is within a small factor)."""
    value: Any = obj  # JSON from the view: what marshal writes
    try:
        return len(marshal.dumps(value, 2))
    except ValueError:  # a value marshal cannot write (a date in a YAML view): its text instead
        return len(repr(obj))


class RecordingLookup:
    """Wraps a SecretProviderClass lookup and keeps what it returned, for the memo."""

    def __init__(self, lookup: Callable[[str, str], Mapping[str, Any] | None]) -> None:
        self._lookup = lookup
        self.read: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def __call__(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        obj = self._lookup(namespace, name)
        self.read[(namespace, name)] = obj
        return obj
