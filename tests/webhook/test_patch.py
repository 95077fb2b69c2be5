"""webhook.policy.patch against plain `jsonpatch.make_patch`: the same document results, whatever the edit.

The pruner shares unchanged parts by identity, turns lists into stand-ins and
remembers diffs; none of that may change what the patch does. Hypothesis
builds a pod-like document, edits a copy-on-write copy of it the way the
policy does (some parts shared, some replaced, containers inserted, appended,
removed or reordered), and both patches must turn the original into the edit.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pods import make_pod
from webhook.policy import memo
from webhook.policy.patch import make_pod_patch

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8,
)
container_names = st.sampled_from(["a", "b", "c", "d", "ferry-init"])
containers = st.lists(
    st.fixed_dictionaries({"name": container_names}, optional={"image": st.text(max_size=3), "env": values}),
    max_size=4,
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {}, optional={"annotations": st.dictionaries(st.text(max_size=3), st.text())}
        ),
        "spec": st.fixed_dictionaries({}, optional={"containers": containers, "initContainers": containers}),
    },
    optional={"status": values},
)


@st.composite
def edited(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after): `after` shares what it did not change with `before`, as mutate_pod's copies do."""
    before = draw(pods)
    after = dict(before)
    spec = dict(before["spec"])
    after["spec"] = spec
    for group in ("initContainers", "containers"):
        items = list(spec.get(group) or [])
        for _ in range(draw(st.integers(0, 3))):
            action = draw(st.sampled_from(["insert", "append", "remove", "swap", "replace", "edit"]))
            if action in ("insert", "append"):
                new = draw(containers.filter(bool))[0]
                items.insert(0 if action == "insert" else len(items), new)
            elif items:
                index = draw(st.integers(0, len(items) - 1))
                if action == "remove":
                    del items[index]
                elif action == "swap":
                    items[0], items[index] = items[index], items[0]
                elif action == "replace":
                    items[index] = copy.deepcopy(items[index])
                else:
                    items[index] = {**items[index], "volumeMounts": [{"name": "v", "mountPath": "/v"}]}
        if items or group in spec:
            spec[group] = items
    if draw(st.booleans()):
        meta = dict(after["metadata"])
        meta["annotations"] = {**(meta.get("annotations") or {}), "ferry.dev/status": "injected"}
        after["metadata"] = meta
    if draw(st.booleans()):
        after["status"] = draw(values)
    return before, after


def _pod_with(init: list[Any], containers: list[Any]) -> dict[str, Any]:
    return make_pod(None, containers, name="p", init_containers=init)


A = {"name": "a", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}
B = {"name": "b", "image": "i"}
C = {"name": "c", "image": "i", "env": [{"name": "X", "value": "1"}]}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=edited())
def test_the_patch_does_what_a_plain_diff_does(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    before, after = pair
    snapshot = copy.deepcopy(before)
    ours = make_pod_patch(before, after, diff=memo.cached_diff)
    plain = jsonpatch.make_patch(before, after)
    assert jsonpatch.apply_patch(before, ours) == jsonpatch.apply_patch(before, plain) == after
    assert before == snapshot, "diffing must not change the pod"
    assert "$ferry" not in json.dumps(ours), "a stand-in leaked into the patch"
    # Asked again (the diff is remembered now), the same patch, and a copy the caller may change.
    again = make_pod_patch(before, after, diff=memo.cached_diff)
    assert again == ours and (not again or again[0] is not ours[0])


def test_the_remembered_diff_is_used_and_bounded() -> None:
    memo.clear_caches()
    before = {"spec": {"containers": [{"name": "a"}]}}
    after = {"spec": {"containers": [{"name": "ferry-init"}, before["spec"]["containers"][0]]}}
    first = make_pod_patch(before, after, diff=memo.cached_diff)
    second = make_pod_patch(before, after, diff=memo.cached_diff)
    hits, misses, size = memo.cache_stats()["diffs"]
    assert first == second and hits >= 1 and misses >= 1 and 1 <= size <= memo.MAX_DIFFS


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (_pod_with([A], [B]), _pod_with([C, A], [B])),  # insert in front, share the rest
        (_pod_with([A], [B]), _pod_with([A, C], [B, dict(C, name="d")])),  # append
        (_pod_with([A, B], []), _pod_with([B, A], [])),  # reorder shared items
        (_pod_with([A, B], [C]), _pod_with([B], [C, A])),  # move an item between lists
        (_pod_with([A], [B]), _pod_with([dict(A, image="j")], [B])),  # change in place
        (_pod_with([A], [B]), _pod_with([], [])),  # remove everything
        (_pod_with([A, B], [C]), _pod_with([dict(C, name="x"), dict(A), B], [C])),  # equal copies, not shared
    ],
)
def test_make_pod_patch_is_exact_for_any_change(before: dict[str, Any], after: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(before)
    ops = make_pod_patch(before, after)
    assert jsonpatch.apply_patch(before, ops) == after
    assert before == snapshot
    assert "$ferry" not in json.dumps(ops)


def test_stand_ins_never_leak_into_a_patch() -> None:
    from webhook.policy.patch import Pruner

    pruner = Pruner()
    pruner.prune([A], [B, A])
    assert pruner.restore([{"op": "add", "path": "/0", "value": {"$ferry-new-item": 0}}]) == [
        {"op": "add", "path": "/0", "value": B}
    ]
    assert pruner.restore([{"op": "replace", "path": "/0", "value": {"x": {"$ferry-shared-item": 0}}}]) is None


def test_a_remembered_diff_is_the_same_patch_and_a_copy_of_its_own() -> None:
    """Pods of one shape share a remembered diff; each caller gets the same ops, free to change them."""
    from webhook.policy import memo

    memo.clear_caches()
    first_before, first_after = _pod_with([A], [B]), _pod_with([C, A], [B])
    # Another pod of the same shape: other images and env, the same containers gaining the same things.
    second_before = _pod_with([dict(A, image="other")], [dict(B, image="other")])
    second_after = _pod_with([C, second_before["spec"]["initContainers"][0]], second_before["spec"]["containers"])
    first = make_pod_patch(first_before, first_after, diff=memo.cached_diff)
    second = make_pod_patch(second_before, second_after, diff=memo.cached_diff)
    hits, _, _ = memo.cache_stats()["diffs"]
    assert hits >= 1
    assert jsonpatch.apply_patch(first_before, first) == first_after
    assert jsonpatch.apply_patch(second_before, second) == second_after
    again = make_pod_patch(first_before, first_after, diff=memo.cached_diff)
    assert again == first
    again[0]["path"] = "/changed"
    for op in again:
        if isinstance(op.get("value"), dict):
            op["value"].clear()
    assert make_pod_patch(first_before, first_after, diff=memo.cached_diff) == first


# --- The ops stage 6 records, against the diff ------------------------------------------------------------------------

_ABSENT = object()
_OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'


def _maybe(strategy: Any) -> Any:
    """A value, a null, or the key left out."""
    return st.one_of(st.just(_ABSENT), st.none(), strategy)


@st.composite
def injectable_pods(draw: Any) -> dict[str, Any]:
    annotations = {"ferry.dev/inject": "true", "ferry.dev/objects": _OBJECTS, "ferry.dev/region": "eu-west-1"}
    if draw(st.booleans()):
        annotations["ferry.dev/refresh-interval"] = "5m"
    if draw(st.booleans()):
        annotations["ferry.dev/containers"] = "app"
    containers = []
    for name in ["app", *draw(st.lists(st.sampled_from(["web", "worker"]), max_size=2, unique=True))]:
        container: dict[str, Any] = {"name": name, "image": "i"}
        mounts = draw(_maybe(st.lists(st.fixed_dictionaries({"name": st.just("v"), "mountPath": st.just("/v")}))))
        if mounts is not _ABSENT:
            container["volumeMounts"] = mounts
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers}
    for key, strategy in (
        ("initContainers", st.lists(st.fixed_dictionaries({"name": st.just("setup"), "image": st.just("i")}))),
        ("volumes", st.lists(st.fixed_dictionaries({"name": st.just("v"), "emptyDir": st.just({})}))),
        ("automountServiceAccountToken", st.booleans()),
        ("restartPolicy", st.sampled_from(["Always", "Never"])),
        ("resources", st.just({"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}})),
    ):
        value = draw(_maybe(strategy))
        if value is not _ABSENT:
            spec[key] = value
    meta: dict[str, Any] = {"name": "p", "namespace": "team-b", "annotations": annotations}
    if draw(st.booleans()):
        meta["annotations"] = {**annotations, "ferry.dev/status": "injected"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=injectable_pods(), native=st.booleans())
def test_the_ops_of_an_injection_do_what_a_plain_diff_does(pod: dict[str, Any], native: bool) -> None:
    """Stage 6 records its ops instead of diffing: applied to the pod as sent, they give exactly the injected pod."""
    from tests.support.resolving import admit_request
    from webhook.policy.request import PodRequest
    from webhook.settings import Settings

    snapshot = copy.deepcopy(pod)
    admission = admit_request(PodRequest.read(pod, "team-b", None), Settings(), native_sidecars=native)
    assert admission.outcome == "injected", admission.message
    plain = jsonpatch.make_patch(snapshot, admission.pod)
    assert jsonpatch.apply_patch(snapshot, admission.patch) == jsonpatch.apply_patch(snapshot, plain) == admission.pod
    assert pod == snapshot, "injecting must not change the pod as sent"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=injectable_pods(), native=st.booleans())
def test_the_encoded_patch_of_shared_parts_is_the_ops_json_and_does_what_a_plain_diff_does(
    pod: dict[str, Any], native: bool
) -> None:
    """With the parts cache of /mutate, each op carries its value's JSON made once: the text must be exactly
    what encoding the ops would give, and the decoded patch must still turn the pod into the injected pod."""
    from tests.support.resolving import admit_request
    from webhook.policy.request import PodRequest
    from webhook.policy.review import EncodedOps, encode_patch
    from webhook.settings import Settings

    snapshot = copy.deepcopy(pod)
    for _ in range(2):  # built and encoded, then shared from the cache
        request = PodRequest.read(pod, "team-b", None)
        admission = admit_request(request, Settings(), native_sidecars=native, parts_maker=memo.cached_parts)
        assert admission.outcome == "injected", admission.message
        text = encode_patch(admission.patch)
        assert text == json.dumps(list(admission.patch), separators=(",", ":"))
        if isinstance(admission.patch, EncodedOps):  # not a pod whose shape the ops cannot describe
            assert any(known is not None for known in admission.patch.texts), "not vacuous: some texts were reused"
        plain = jsonpatch.make_patch(snapshot, admission.pod)
        assert jsonpatch.apply_patch(snapshot, json.loads(text)) == jsonpatch.apply_patch(snapshot, plain)
        assert jsonpatch.apply_patch(snapshot, plain) == admission.pod
        assert pod == snapshot, "injecting must not change the pod as sent"
