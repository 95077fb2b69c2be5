"""The patch stage: the JSONPatch from the pod as sent to the pod Ferry admits.

The mutate stage records the ops of its edits, so a patch is usually known. Otherwise it is a diff of pruned documents
(`Pruner`), checked against `jsonpatch.make_patch` by a property test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch

# Two JSON documents -> the JSONPatch between them.
Differ = Callable[[Any, Any], list[dict[str, Any]]]


def diff_documents(before: Any, after: Any) -> list[dict[str, Any]]:
    """`jsonpatch.make_patch` without its search for moves.

    Ferry never moves anything, so a "move" could only pair an unrelated
    removal with an addition; and the search serializes every added value,
    which was a third of the cost of a diff.
    """
    return list(jsonpatch.JsonPatch.from_diff(before, after, optimization=False).patch)


def make_pod_patch(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    ops: list[dict[str, Any]] | None = None,
    *,
    diff: Differ = diff_documents,
) -> list[dict[str, Any]]:
    """`ops` when the stage that made `after` recorded them; else the JSONPatch from `before` to `after`.

    Two diffs, concatenated: first `before` -> `after` without the containers
    that are new (so each app container is compared with itself, not with the
    container that took its index), then the insertion of the new ones. The
    result is a short, readable patch. Both diffs run on pruned documents (see
    `Pruner`), so admission does not serialize the whole pod several times;
    if pruning ever leaves a trace in the patch, the plain diff of the full
    documents is used instead. `diff` diffs the pruned documents (the caller may cache it).
    """
    if ops is not None:
        return ops
    if before is after:
        return []
    middle = _without_new_containers(before, after)
    patch: list[dict[str, Any]] = []
    for old, new in ((before, middle), (middle, after)):
        if old is new:
            continue
        pruner = Pruner()
        pruned_old, pruned_new = pruner.prune(old, new)
        stage = pruner.restore(diff(pruned_old, pruned_new))
        if stage is None:
            return diff_documents(before, after)
        patch.extend(stage)
    return patch


def _without_new_containers(before: Mapping[str, Any], after: Mapping[str, Any]) -> Mapping[str, Any]:
    old_spec = before.get("spec") or {}
    new_spec = after.get("spec") or {}
    trimmed: dict[str, Any] = {}
    for group in ("initContainers", "containers"):
        old_names = {c.get("name") for c in old_spec.get(group) or [] if isinstance(c, Mapping)}
        items = new_spec.get(group)
        if not isinstance(items, list):
            continue
        kept = [c for c in items if not isinstance(c, Mapping) or c.get("name") in old_names]
        if len(kept) != len(items):
            trimmed[group] = kept
    if not trimmed:
        return after
    spec = {**new_spec, **trimmed}
    if "initContainers" in trimmed and not trimmed["initContainers"] and "initContainers" not in old_spec:
        del spec["initContainers"]
    return {**after, "spec": spec}


# Keys no Kubernetes object has: stand-ins for list items while diffing.
_SHARED = "$ferry-shared-item"
_NEW = "$ferry-new-item"
_STAND_IN_PREFIX = "$ferry-"


class Pruner:
    """Makes smaller documents with the same JSONPatch between them.

    - dict entries that are the same object on both sides are dropped;
    - lists of equal length whose items pair up by name (the containers that
      only gained a mount) become dicts keyed "0", "1", ...: a JSON pointer
      reads the same for both, and the items are diffed pairwise, never
      re-matched; a list that only gained items at its end (a mount, a
      volume) becomes the dict of the new indices, whose "add" appends;
    - in other lists, an item that is the same object on both sides (an app
      container next to which Ferry inserts its own) becomes a stand-in
      unique to it, and so does an item only `after` has (Ferry's new
      container): jsonpatch matches and places them without serializing them,
      and `restore` puts the real item back into the `add` operation.
    """

    def __init__(self) -> None:
        self.added: list[Any] = []

    def prune(self, before: Any, after: Any) -> tuple[Any, Any]:
        # dict and list, not Mapping: abc checks dominate a walk this hot. Anything else is left whole.
        if isinstance(before, dict) and isinstance(after, dict):
            left = {key: value for key, value in before.items() if key not in after or after[key] is not value}
            right = {key: value for key, value in after.items() if key not in before or before[key] is not value}
            for key in [key for key in left if key in right]:  # in document order: a deterministic patch
                left[key], right[key] = self.prune(left[key], right[key])
            return left, right
        if isinstance(before, list) and isinstance(after, list):
            if len(before) == len(after) and all(_same_item(old, new) for old, new in zip(before, after, strict=True)):
                pairs = {
                    str(index): self.prune(old, new)
                    for index, (old, new) in enumerate(zip(before, after, strict=True))
                    if old is not new
                }
                return {key: pair[0] for key, pair in pairs.items()}, {key: pair[1] for key, pair in pairs.items()}
            if len(after) > len(before) and all(old is new for old, new in zip(before, after, strict=False)):
                # Items appended after a shared prefix: "add /list/<len>" appends, in order.
                return {}, {str(index): after[index] for index in range(len(before), len(after))}
            before_ids = {id(item): index for index, item in enumerate(before) if type(item) is dict}
            after_ids = {id(item) for item in after}
            stand_ins = {key: {_SHARED: index} for key, index in before_ids.items() if key in after_ids}
            right_items = []
            for item in after:
                if id(item) in stand_ins:
                    right_items.append(stand_ins[id(item)])
                elif type(item) is dict:
                    right_items.append({_NEW: len(self.added)})
                    self.added.append(item)
                else:
                    right_items.append(item)
            return [stand_ins.get(id(item), item) for item in before], right_items
        return before, after

    def restore(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The ops with real items for new stand-ins; None if a stand-in shows up anywhere else."""
        restored = []
        for op in ops:
            if _STAND_IN_PREFIX in op["path"] or _STAND_IN_PREFIX in op.get("from", ""):
                return None  # an edit inside a stand-in (e.g. two items of one name): only the plain diff is exact
            value = op.get("value")
            if op.get("op") == "add" and isinstance(value, dict) and list(value) == [_NEW]:
                op = {**op, "value": self.added[value[_NEW]]}
            elif "value" in op and _has_stand_in(value):
                return None
            restored.append(op)
        return restored


def _has_stand_in(value: Any) -> bool:
    if type(value) is dict:
        return _SHARED in value or _NEW in value or any(_has_stand_in(v) for v in value.values())
    if type(value) is list:
        return any(_has_stand_in(v) for v in value)
    return False


def _same_item(old: Any, new: Any) -> bool:
    if old is new:
        return True
    return type(old) is dict and type(new) is dict and "name" in old and old.get("name") == new.get("name")
