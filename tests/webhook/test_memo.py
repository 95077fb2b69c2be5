"""The admission memo: replicas are answered from memory, and never with a stale answer.

A Deployment's replicas reach /mutate as identical pods. The memo must give the
second one the same answer as the first (with its own uid), and must stop
using a remembered answer as soon as the SecretProviderClass or the namespace
it was computed from changes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.support.pods import make_pod
from tests.support.resolving import admit_request
from tests.support.reviews import pod_create_review
from webhook.edge.app import create_app
from webhook.settings import Settings

SPC = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "db", "namespace": "apps", "resourceVersion": "1"},
    "spec": {
        "provider": "aws",
        "parameters": {"region": "eu-west-1", "objects": "- objectName: prod/db\n  objectType: secretsmanager\n"},
    },
}
NAMESPACE = {"metadata": {"name": "apps", "resourceVersion": "7", "annotations": {}}}


class MutableView:
    """A cluster view whose objects a test replaces, as the watch cache does on MODIFIED events."""

    def __init__(self) -> None:
        self.spcs: dict[tuple[str, str], Mapping[str, Any]] = {("apps", "db"): copy.deepcopy(SPC)}
        self.namespaces: dict[str, Mapping[str, Any]] = {"apps": copy.deepcopy(NAMESPACE)}
        self.limit_range_lists: dict[str, list[Mapping[str, Any]]] = {}

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self.namespaces.get(name)

    def secret_provider_class(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.spcs.get((namespace, name))

    def limit_ranges(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        return tuple(self.limit_range_lists.get(namespace, ()))

    def is_ready(self) -> bool:
        return True


def replica_review(pod: dict[str, Any]) -> dict[str, Any]:
    """The review the API server sends for one replica: same pod, a fresh uid."""
    return pod_create_review(pod, namespace="apps")


def post(client: Any, review: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/mutate", content=json.dumps(review).encode(), headers={"Content-Type": "application/json"})
    assert reply.status_code == 200
    response: dict[str, Any] = reply.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


def test_replicas_get_the_same_answer_from_the_memo(asgi_client: Callable[[Any], Any]) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    first = post(client, replica_review(pod))
    second = post(client, replica_review(pod))
    assert first["allowed"] and "patch" in first
    assert {k: v for k, v in first.items() if k != "uid"} == {k: v for k, v in second.items() if k != "uid"}
    memo = app.state.memo
    assert (memo.hits, memo.misses) == (1, 1)


def test_an_edited_secret_provider_class_is_used_on_the_next_admission(asgi_client: Callable[[Any], Any]) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    assert post(client, replica_review(pod))["allowed"]

    broken = copy.deepcopy(SPC)
    broken["metadata"]["resourceVersion"] = "2"
    broken["spec"]["parameters"]["objects"] = "- objectName: prod/db\n  objectType: ssm\n"
    view.spcs[("apps", "db")] = broken
    denied = post(client, replica_review(pod))
    assert not denied["allowed"]
    assert "objectType" in denied["status"]["message"]

    del view.spcs[("apps", "db")]
    missing = post(client, replica_review(pod))
    assert not missing["allowed"] and "db" in missing["status"]["message"]


def test_a_changed_namespace_is_used_on_the_next_admission(asgi_client: Callable[[Any], Any]) -> None:
    view = MutableView()
    app = create_app(Settings(), view, native_sidecars=True)
    client = asgi_client(app)
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="apps")
    assert "patch" not in post(client, replica_review(pod))  # the namespace has not opted in

    opted_in = copy.deepcopy(NAMESPACE)
    opted_in["metadata"]["resourceVersion"] = "8"
    opted_in["metadata"]["annotations"] = {"ferry.dev/inject": "true"}
    opted_in["metadata"]["labels"] = {"ferry.dev/inject": "enabled"}
    view.namespaces["apps"] = opted_in
    assert "patch" in post(client, replica_review(pod))


def test_different_pods_are_not_confused(asgi_client: Callable[[Any], Any]) -> None:
    app = create_app(Settings(), MutableView(), native_sidecars=True)
    client = asgi_client(app)
    plain = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    elsewhere = copy.deepcopy(plain)
    elsewhere["metadata"]["annotations"]["ferry.dev/mount-path"] = "/srv/secrets"
    first, second = post(client, replica_review(plain)), post(client, replica_review(elsewhere))
    assert first["patch"] != second["patch"]
    assert app.state.memo.misses == 2


def _without_uid(response: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in response.items() if key != "uid"}


def _replica(pod: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    copied = copy.deepcopy(pod)
    copied["metadata"].update(metadata)
    return copied


def _with_spec(pod: dict[str, Any], **spec: Any) -> dict[str, Any]:
    copied = copy.deepcopy(pod)
    copied["spec"].update(spec)
    return copied


def _base_pod() -> dict[str, Any]:
    pod = make_pod(
        {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db", "ferry.dev/refresh-interval": "5m"},
        namespace="apps",
        name="",
    )
    del pod["metadata"]["name"]
    pod["metadata"].update(
        generateName="api-5d8f7c9b6a-",
        labels={"app": "api", "pod-template-hash": "5d8f7c9b6a"},
        ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d8f7c9b6a", "uid": "u-1"}],
        managedFields=[{"manager": "kube-controller-manager", "operation": "Update", "time": "2026-11-23T08:02:19Z"}],
    )
    return pod


def test_replicas_created_seconds_apart_and_across_a_rollout_share_an_answer(asgi_client: Callable[[Any], Any]) -> None:
    """managedFields times, the pod-template-hash label and the owner's name and uid never change the answer."""
    app = create_app(Settings(), MutableView(), native_sidecars=False)
    client = asgi_client(app)
    pod = _base_pod()
    later = _replica(
        pod,
        managedFields=[{"manager": "kube-controller-manager", "operation": "Update", "time": "2026-11-23T08:09:41Z"}],
    )
    rollout = _replica(
        pod,
        generateName="api-7c4b9d8f5e-",
        labels={"app": "api", "pod-template-hash": "7c4b9d8f5e"},
        ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7c4b9d8f5e", "uid": "u-2"}],
    )
    answers = [_without_uid(post(client, replica_review(p))) for p in (pod, later, rollout)]
    assert answers[0]["patch"] and answers[0] == answers[1] == answers[2]
    assert (app.state.memo.hits, app.state.memo.misses) == (2, 1)


def test_every_part_of_a_pod_that_matters_gets_its_own_answer(asgi_client: Callable[[Any], Any]) -> None:
    """Each variant, sent after all the others to one webhook, is answered as a webhook that never saw them would.

    The variants differ from the base pod in exactly the parts the memo key must hold; a key that left one out
    would hand a variant the base pod's remembered answer.
    """
    view = MutableView()
    view.namespaces["apps"] = {
        "metadata": {
            "name": "apps",
            "resourceVersion": "7",
            "annotations": {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"},
        }
    }
    base = _base_pod()
    job_owned = _replica(base, ownerReferences=[{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}])
    no_annotations = copy.deepcopy(base)
    del no_annotations["metadata"]["annotations"]
    empty_annotations = _replica(base, annotations={})
    variants = {
        "base": base,
        "image": _with_spec(base, containers=[{"name": "app", "image": "registry.example.com/app:2"}]),
        "two containers": _with_spec(
            base, containers=[*base["spec"]["containers"], {"name": "proxy", "image": "envoy:1.30"}]
        ),
        "run-to-completion": _with_spec(base, restartPolicy="Never"),
        "file owner": _with_spec(base, securityContext={"runAsUser": 1234, "fsGroup": 1234}),
        "owned by a Job": job_owned,
        "job-name label": _replica(base, labels={"batch.kubernetes.io/job-name": "nightly"}),
        "mount path": _replica(base, annotations={**base["metadata"]["annotations"], "ferry.dev/mount-path": "/srv"}),
        "no annotations (namespace opt-in)": no_annotations,
        "empty annotations (namespace opt-in)": empty_annotations,
    }
    shared = asgi_client(create_app(Settings(), view, native_sidecars=False))
    for pod in variants.values():
        post(shared, replica_review(pod))
    answers = {}
    for name, pod in variants.items():
        remembered = _without_uid(post(shared, replica_review(pod)))
        fresh = _without_uid(
            post(asgi_client(create_app(Settings(), view, native_sidecars=False)), replica_review(pod))
        )
        assert remembered == fresh, name
        answers[name] = fresh
    # Not vacuous: every variant but the new image really has an answer of its own...
    differs = {name for name, answer in answers.items() if answer != answers["base"]}
    assert differs == set(variants) - {"base", "image"}
    # ...and the image, which the answer does not depend on, still missed the memo: it is part of the spec.
    assert answers["image"] == answers["base"]


def test_a_remembered_answer_carries_each_request_uid_exactly(asgi_client: Callable[[Any], Any]) -> None:
    """The uid is spliced into the encoded answer: quotes, backslashes and non-ASCII survive it."""
    client = asgi_client(create_app(Settings(), MutableView(), native_sidecars=True))
    pod = _base_pod()
    for uid in ("plain-uid", 'a "quoted" \\ uid', "ünïcode-✓"):
        review = replica_review(pod)
        review["request"]["uid"] = uid
        reply = client.post(
            "/mutate", content=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 200
        assert reply.json()["response"]["uid"] == uid


def test_the_pods_of_a_cronjob_s_runs_share_an_answer(asgi_client: Callable[[Any], Any]) -> None:
    """Each run's Job names its pod differently (job-name, controller-uid, owner); the answer is the same."""
    app = create_app(Settings(), MutableView(), native_sidecars=False)
    client = asgi_client(app)
    base = _base_pod()

    def run(name: str, uid: str) -> dict[str, Any]:
        return _replica(
            base,
            generateName=f"{name}-",
            labels={"batch.kubernetes.io/job-name": name, "job-name": name, "controller-uid": uid},
            ownerReferences=[{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}],
        )

    first = _without_uid(post(client, replica_review(run("nightly-29100000", "u-1"))))
    second = _without_uid(post(client, replica_review(run("nightly-29101440", "u-2"))))
    assert first == second
    assert first["warnings"]  # no regular sidecar in a Job without native sidecars: the Job-specific answer
    assert (app.state.memo.hits, app.state.memo.misses) == (1, 1)


class _TracedDict(dict):  # type: ignore[type-arg]
    """A pod (or its metadata) that records which keys admission reads; `spec` and annotations stay plain."""

    def __init__(self, data: Mapping[str, Any], path: tuple[str, ...], reads: set[tuple[str, ...]]) -> None:
        super().__init__(data)
        self._path = path
        self._reads = reads

    def _read(self, key: Any, value: Any) -> Any:
        self._reads.add((*self._path, str(key)))
        if self._path == () and key == "metadata" and isinstance(value, dict):
            return _TracedDict(value, ("metadata",), self._reads)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self._read(key, super().get(key, default))

    def __getitem__(self, key: Any) -> Any:
        return self._read(key, super().__getitem__(key))

    def __contains__(self, key: object) -> bool:
        self._reads.add((*self._path, str(key)))
        return super().__contains__(key)


def test_every_part_of_a_pod_that_admission_reads_is_in_the_memo_key() -> None:
    """Trace the reads of the whole policy over pods that take each path; each must be a keyed part."""
    from webhook.policy.memo import KEYED_POD_PARTS, pod_key
    from webhook.policy.request import PodRequest

    view = MutableView()
    base = _base_pod()
    pods = [
        base,
        _replica(base, ownerReferences=[{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]),
        _replica(base, annotations={"ferry.dev/inject": "false"}),
        _replica(base, annotations={"ferry.dev/inject": "true", "ferry.dev/objects": "- objectName: a"}),
        _with_spec(
            _replica(base, annotations={"ferry.dev/status": "injected"}),
            initContainers=[{"name": "ferry-init", "image": "ferry"}],
        ),
        _replica(base, annotations={"ferry.dev/injct": "true"}),
        _with_spec(base, restartPolicy="Never"),
    ]
    reads: set[tuple[str, ...]] = set()
    outcomes = set()
    for pod in pods:
        for native in (True, False):
            request = PodRequest.read(_TracedDict(pod, (), reads), "apps", view.namespace("apps"))
            pod_key(request.pod, request.namespace, request.ksa)
            admission = admit_request(
                request, Settings(), spc_lookup=view.secret_provider_class, native_sidecars=native
            )
            outcomes.add(admission.outcome)
    assert outcomes == {"injected", "skipped", "denied", "reinvoked"}, "the pods must take every path"
    assert ("spec",) in reads and ("metadata", "annotations") in reads, "not vacuous: the tracing sees reads"
    keyed = set(KEYED_POD_PARTS)
    outside = {path for path in reads if path[:2] not in keyed and path[:1] not in {("spec",)} and path not in keyed}
    assert not outside, f"admission reads {sorted(outside)}, which the memo key does not hold"


def test_content_keys_follow_content_even_for_values_marshal_cannot_write() -> None:
    import datetime

    from webhook.policy.memo import content_key

    spc = {"spec": {"parameters": {"objects": "- objectName: a", "region": "eu-west-1"}}}
    assert content_key(spc) == content_key(copy.deepcopy(spc))
    assert content_key(spc) != content_key({"spec": {"parameters": {"objects": "- objectName: b"}}})
    dated = {"spec": {"parameters": {"objects": [datetime.date(2024, 1, 1)]}}}
    assert content_key(dated) == content_key(copy.deepcopy(dated))
    assert content_key(dated) != content_key({"spec": {"parameters": {"objects": [datetime.date(2024, 1, 2)]}}})
    hash(content_key(dated))


def test_a_changed_limit_range_is_used_on_the_next_admission(asgi_client: Callable[[Any], Any]) -> None:
    view = MutableView()
    client = asgi_client(create_app(Settings(), view, native_sidecars=True))
    pod = make_pod({"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, namespace="apps")
    assert "patch" in post(client, replica_review(pod))
    small = {
        "metadata": {"name": "small", "namespace": "apps", "resourceVersion": "1"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "48Mi"}}]},
    }
    view.limit_range_lists["apps"] = [small]
    denied = post(client, replica_review(pod))
    assert not denied["allowed"] and "LimitRange small" in denied["status"]["message"]
    roomy = copy.deepcopy(small)
    roomy["metadata"]["resourceVersion"] = "2"
    roomy["spec"]["limits"][0]["max"]["memory"] = "1Gi"
    view.limit_range_lists["apps"] = [roomy]
    assert "patch" in post(client, replica_review(pod))


_OTHER_OBJECTS = "- objectName: prod/other\n  objectType: secretsmanager\n"


def test_shared_parts_follow_every_input_of_build_parts() -> None:
    """Ferry's containers are built once per key and shared: each input that shapes them must change the key.

    Each variant differs from the first in one input of `build_parts` (spec, mount path, user, sidecar,
    its probe, the pod's AWS identity, the settings); a key that left one out would hand the variant the
    first pod's containers, which the comparison with a fresh build catches.
    """
    from webhook.policy import memo
    from webhook.policy.containers import build_parts
    from webhook.policy.request import PodRequest

    base = {
        "ferry.dev/inject": "true",
        "ferry.dev/objects": SPC["spec"]["parameters"]["objects"],  # type: ignore[index]
        "ferry.dev/region": "eu-west-1",
        "ferry.dev/refresh-interval": "5m",
    }
    role = [{"name": "app", "image": "app", "env": [{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/r"}]}]
    variants: list[tuple[dict[str, Any], Settings, bool]] = [
        (make_pod(base, namespace="team-b"), Settings(), True),
        (make_pod({**base, "ferry.dev/objects": _OTHER_OBJECTS}, namespace="team-b"), Settings(), True),
        (make_pod({**base, "ferry.dev/mount-path": "/srv/secrets"}, namespace="team-b"), Settings(), True),
        (make_pod(base, securityContext={"runAsUser": 4242}, namespace="team-b"), Settings(), True),
        (
            make_pod({k: v for k, v in base.items() if k != "ferry.dev/refresh-interval"}, namespace="team-b"),
            Settings(),
            True,
        ),
        (make_pod(base, namespace="team-b"), Settings(), False),
        (make_pod({**base, "ferry.dev/sidecar-unhealthy-after": "15m"}, namespace="team-b"), Settings(), True),
        (make_pod(base, containers=role, namespace="team-b"), Settings(), True),
        (make_pod(base, namespace="team-b"), Settings(fetcher_image="registry.example/ferry-fetcher:other"), True),
    ]
    memo.clear_caches()
    try:
        fresh_pods = []
        for rounds in range(2):
            for index, (pod, settings, native) in enumerate(variants):
                admitted = {}
                for maker in (build_parts, memo.cached_parts):
                    request = PodRequest.read(pod, "apps", None)
                    admission = admit_request(request, settings, native_sidecars=native, parts_maker=maker)
                    assert admission.outcome == "injected", admission.message
                    admitted[maker] = admission
                fresh, cached = admitted[build_parts], admitted[memo.cached_parts]
                assert cached.pod == fresh.pod and list(cached.patch) == list(fresh.patch), f"variant {index}"
                if rounds == 0:
                    fresh_pods.append(fresh.pod)
        assert len({json.dumps(pod, sort_keys=True) for pod in fresh_pods}) == len(variants), "each variant differs"
        hits, misses, size = memo.cache_stats()["parts"]
        assert (hits, misses, size) == (len(variants), len(variants), len(variants))
    finally:
        memo.clear_caches()


def test_pods_of_one_key_pass_or_fail_the_type_check_alike() -> None:
    """The memo is asked before the type check: a forged pod must never share a key with a pod that passes it."""
    from fetcher.contract.gcp import KsaAnnotation
    from webhook.policy.memo import pod_key
    from webhook.policy.podtypes import pod_type_problem

    base = _base_pod()
    meta = base["metadata"]
    forged: list[dict[str, Any]] = [
        {**base, "metadata": value} for value in (None, [], "m", True, 0, {"annotations": None})
    ]
    forged += [
        {**base, "metadata": {**meta, part: value}}
        for part in ("labels", "ownerReferences", "annotations")
        for value in ([], {}, "x", None, [["x"]], {"kind": "Job"})
    ]
    forged += [{**base, "spec": value} for value in (None, [], "s")]
    forged += [{"spec": base["spec"]}, {}, {"metadata": None, "spec": None}, base]
    by_key: dict[bytes, set[str | None]] = {}
    for pod in forged:
        for ksa in (None, KsaAnnotation("default", "web@p.iam.gserviceaccount.com")):
            by_key.setdefault(pod_key(pod, "apps", ksa), set()).add(pod_type_problem(pod))
    assert all(len(problems) == 1 for problems in by_key.values()), "one key, one verdict of the type check"
    verdicts = list(by_key.values())
    assert {None} in verdicts and len(verdicts) > 30, "not vacuous: pods that pass and pods that fail, apart"


def test_replicas_parsed_from_bytes_share_a_key_after_the_first_was_admitted() -> None:
    """marshal's back-references follow the sharing in one parsed pod, which its JSON text alone decides."""
    from webhook.edge.app import AdmissionHandler
    from webhook.edge.metrics import AdmissionMetrics

    handler = AdmissionHandler(Settings(), MutableView(), True, AdmissionMetrics())
    pod = _base_pod()
    for _ in range(4):
        status, _answer = handler.handle(json.dumps(replica_review(pod)).encode())
        assert status == 200
    assert (handler.memo.hits, handler.memo.misses) == (3, 1)


def test_each_annotation_lands_in_its_own_field() -> None:
    """`FerryAnnotations.of` and `PodRequest.read` build their tuples by position: each field holds its own value."""
    from webhook.policy.request import FerryAnnotations, PodRequest

    names = [field for field in FerryAnnotations._fields if field not in ("all", "keys")]
    annotations = {f"ferry.dev/{name.replace('_', '-')}": f"value-{name}" for name in names}
    read = FerryAnnotations.of({"metadata": {"annotations": annotations}})
    assert read.keys == tuple(annotations) and read.all is annotations
    assert {name: getattr(read, name) for name in names} == {name: f"value-{name}" for name in names}
    namespace = {"metadata": {"labels": {"ferry.dev/inject": "enabled"}, "annotations": {"ferry.dev/inject": "ns"}}}
    pod = {"metadata": {"annotations": annotations}, "spec": {"restartPolicy": "Never"}}
    request = PodRequest.read(pod, "apps", namespace, None)
    assert (request.pod, request.spec, request.namespace) == (pod, pod["spec"], "apps")
    assert request.annotations == read and request.namespace_annotations.inject == "ns"
    assert (request.namespace_opted_in, request.namespace_inject_label) == (True, "enabled")
    assert (request.run_to_completion, request.has_own_containers, request.ksa) == (True, False, None)


def test_the_content_caches_hold_their_bounds_when_two_threads_use_them() -> None:
    """The large-body worker thread admits beside the event loop, and both use the same content caches.

    A tenant's large reviews with distinct specs churn the caches from the worker while other pods are
    admitted on the loop: without a lock, an entry evicted between a lookup and `move_to_end`, or a lost
    update of the byte count, raises KeyError (a fail-closed 500 for whichever pod it hit), and the count
    can drift past the bound until every miss raises. (Failed before the lock: KeyError, bytes drifted.)
    """
    import sys
    import threading

    from webhook.policy.lru import BoundedCache

    cache: BoundedCache[int, str] = BoundedCache(4, size=len, max_bytes=40, max_entry_bytes=20)
    errors: list[str] = []

    def churn(start: int) -> None:
        try:
            for step in range(60_000):
                cache.get_or_compute((start + step) % 9, lambda: "x" * 10)
        except Exception as exc:  # noqa: BLE001 - any error is the finding
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=churn, args=(start,)) for start in (0, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(cache) <= 4 and cache.bytes == 10 * len(cache) <= 40


def test_the_spec_cache_is_bounded_in_bytes_against_forged_reviews_with_large_specs() -> None:
    """Forged reviews, each with its own 60 KiB objects annotation: the specs kept hold at most MAX_SPECS_BYTES
    of JSON. Before, only the count was bounded: 512 such specs pinned some 125 MB (a quarter MB each, inputs
    and typed spec included), half the webhook's memory limit. (Failed before the byte bound: 5.3 MB of 100.)"""
    from webhook.policy import memo
    from webhook.policy.resolve import InlineSpecInputs, SpecOptions

    memo.clear_caches()
    try:
        for index in range(100):
            objects = "".join(
                f"- objectName: 'prod/{index}/{k}/{'x' * 200}'\n  objectType: secretsmanager\n  objectAlias: a{k}\n"
                for k in range(190)
            )
            options = SpecOptions(None, None, None, None, None, 0.0)
            inputs = InlineSpecInputs(objects, "eu-west-1", None, None, options, (), None, None)
            assert isinstance(memo.cached_spec(inputs), memo.BuiltSpec)
        kept = [value for value in memo._SPECS._entries.values() if isinstance(value, memo.BuiltSpec)]
        assert kept and sum(len(spec.json) for spec in kept) <= memo.MAX_SPECS_BYTES
    finally:
        memo.clear_caches()
