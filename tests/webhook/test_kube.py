"""The watch cache, driven through the real `kubernetes` client against the recorded API server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes.client
import pytest

from tests.support.kubeapi import FIXTURES, LIMIT_RANGES, NAMESPACES, SECRET_PROVIDER_CLASSES, FakeKubeAPI
from webhook.kube import KubeConfigError, StaticView, WatchCache, load_api_client, server_version

SPC_PATH = "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses"


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll until `predicate()` is truthy; a bounded wait, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def _start_cache(api: kubernetes.client.ApiClient, fake: FakeKubeAPI, **kwargs: float) -> WatchCache:
    cache = WatchCache(api, backoff_initial=0.01, resync_backoff_max=0.2, **kwargs)
    cache.start()
    assert cache.wait_ready(10)
    return cache


@pytest.fixture
def cache(api: kubernetes.client.ApiClient, fake: FakeKubeAPI) -> Iterator[WatchCache]:
    cache = _start_cache(api, fake)
    # Events are only meaningful once the watches are open (lookups work before); the LimitRange watch too,
    # or a loaded machine opens it during a test that counts requests.
    assert all(fake.wait_for_watches(r) for r in (NAMESPACES, SECRET_PROVIDER_CLASSES, LIMIT_RANGES))
    yield cache
    cache.stop()


def annotations(cache: WatchCache, name: str) -> dict[str, str]:
    ns = cache.namespace(name)
    assert ns is not None, name
    return dict(ns["metadata"].get("annotations") or {})


def version(cache: WatchCache, name: str) -> str | None:
    ns = cache.namespace(name)
    return None if ns is None else ns["metadata"].get("resourceVersion")


def test_initial_list_gives_recorded_namespaces(cache: WatchCache) -> None:
    assert cache.is_ready()
    assert annotations(cache, "team-a") == {
        "ferry.dev/inject": "true",
        "ferry.dev/refresh-interval": "5m",
        "ferry.dev/region": "eu-west-1",
    }
    assert annotations(cache, "team-b") == {}
    assert cache.namespace("team-c") is None
    team_a = cache.namespace("team-a")
    assert team_a is not None
    assert type(team_a) is dict  # plain API JSON, not a client model
    assert team_a["kind"] == "Namespace" and team_a["apiVersion"] == "v1"
    # Only what admission reads is kept: the routing label alone, no status, managedFields or other annotations.
    assert set(team_a) == {"apiVersion", "kind", "metadata"}
    assert set(team_a["metadata"]) == {"name", "resourceVersion", "labels", "annotations"}
    assert team_a["metadata"]["labels"] == {"ferry.dev/inject": "enabled"}


def test_namespace_watch_events_apply_in_order(cache: WatchCache, fake: FakeKubeAPI) -> None:
    fake.play_events(NAMESPACES, 1)  # team-b annotated
    assert eventually(lambda: annotations(cache, "team-b").get("ferry.dev/region") == "us-east-2")
    assert annotations(cache, "team-b")["ferry.dev/inject"] == "true"

    fake.play_events(NAMESPACES, 1)  # team-b labelled (only the routing label is kept)
    assert eventually(lambda: version(cache, "team-b") == "204")
    team_b = cache.namespace("team-b")
    assert team_b is not None and team_b["metadata"]["labels"] == {"ferry.dev/inject": "enabled"}

    fake.play_events(NAMESPACES, 1)  # team-c created
    assert eventually(lambda: cache.namespace("team-c") is not None)
    assert version(cache, "team-c") == "205"

    fake.play_events(NAMESPACES, 1)  # team-a's refresh annotation removed
    assert eventually(lambda: "ferry.dev/refresh-interval" not in annotations(cache, "team-a"))
    assert annotations(cache, "team-a") == {"ferry.dev/inject": "true", "ferry.dev/region": "eu-west-1"}

    fake.play_events(NAMESPACES, 1)  # team-c deleted: Terminating, still there (no namespace controller ran)
    assert eventually(lambda: version(cache, "team-c") == "207")
    assert cache.resource_versions()[NAMESPACES] == "207"
    assert fake.pending_events(NAMESPACES) == 0


def test_spc_watch_events(cache: WatchCache, fake: FakeKubeAPI) -> None:
    db = cache.secret_provider_class("team-a", "db-credentials")
    assert db is not None and db["spec"]["parameters"]["region"] == "eu-west-1"
    assert cache.secret_provider_class("team-a", "api-keys") is not None

    fake.play_events(SECRET_PROVIDER_CLASSES, 1)  # `cache` created in team-b
    assert eventually(lambda: cache.secret_provider_class("team-b", "cache") is not None)
    spc = cache.secret_provider_class("team-b", "cache")
    assert spc is not None and "pathTranslation" not in spc["spec"]["parameters"]

    fake.play_events(SECRET_PROVIDER_CLASSES, 1)  # `cache` patched
    assert eventually(
        lambda: (
            (cache.secret_provider_class("team-b", "cache") or {}).get("spec", {}).get("parameters", {})
            == {
                "objects": '- {objectName: "/team-b/redis/password", objectType: ssmparameter, '
                'objectAlias: redis-password, filePermission: "0440"}\n',
                "pathTranslation": "-",
                "region": "us-east-2",
            }
        )
    )

    fake.play_events(SECRET_PROVIDER_CLASSES, 1)  # `api-keys` deleted
    assert eventually(lambda: cache.secret_provider_class("team-a", "api-keys") is None)
    assert cache.secret_provider_class("team-a", "db-credentials") is not None
    # The same name in another namespace is another object.
    assert cache.secret_provider_class("team-b", "db-credentials") is None


def test_expired_watch_triggers_a_relist(cache: WatchCache, fake: FakeKubeAPI) -> None:
    assert fake.list_count(NAMESPACES) == 1
    fake.play_events(NAMESPACES, 1)
    assert eventually(lambda: annotations(cache, "team-b"))

    fake.expire_watches(NAMESPACES)  # 410 Expired ERROR event on the open watch

    assert eventually(lambda: fake.list_count(NAMESPACES) == 2 and fake.open_watches(NAMESPACES) == 1)
    assert cache.resource_versions()[NAMESPACES] == fake.resource_version(NAMESPACES)
    # The new watch starts from the new list's version and still sees later events.
    before = version(cache, "team-b")
    fake.play_events(NAMESPACES, 1)
    assert eventually(lambda: version(cache, "team-b") != before)
    assert fake.list_count(NAMESPACES) == 2
    assert fake.list_count(SECRET_PROVIDER_CLASSES) == 1  # the other resource was not disturbed


def test_broken_watch_and_failing_list_recover_with_backoff(cache: WatchCache, fake: FakeKubeAPI) -> None:
    fake.fail_next("/api/v1/namespaces", status=500, times=2, method="GET")
    fake.drop_watches(NAMESPACES)  # the connection dies mid-stream

    # Two failed lists (500), then a good one and a new watch.
    assert eventually(lambda: fake.request_count("/api/v1/namespaces") >= 5 and fake.open_watches(NAMESPACES) == 1)
    assert fake.list_count(NAMESPACES) == 4  # the first list, two refused, one good
    fake.play_events(NAMESPACES, 1)
    assert eventually(lambda: annotations(cache, "team-b").get("ferry.dev/region") == "us-east-2")


def test_bookmark_advances_the_resource_version(cache: WatchCache, fake: FakeKubeAPI) -> None:
    assert cache.resource_versions()[NAMESPACES] == "202"
    fake.bookmark(NAMESPACES)
    assert eventually(lambda: cache.resource_versions()[NAMESPACES] == "203")
    assert fake.resource_version(NAMESPACES) == "203"
    # A later reconnection resumes from the bookmark; no re-list was needed.
    assert fake.list_count(NAMESPACES) == 1


def test_lookups_after_warm_up_make_zero_api_calls(cache: WatchCache, fake: FakeKubeAPI) -> None:
    before = fake.request_count()
    for _ in range(2000):
        assert cache.namespace("team-a") is not None
        assert cache.namespace("no-such-namespace") is None
        assert cache.secret_provider_class("team-a", "db-credentials") is not None
        assert cache.secret_provider_class("team-a", "missing") is None
        assert cache.is_ready()
    assert fake.request_count() == before


def test_missing_spc_is_none(cache: WatchCache) -> None:
    assert cache.secret_provider_class("team-a", "missing") is None
    assert cache.secret_provider_class("nowhere", "db-credentials") is None


def test_spc_crd_absent_cache_still_ready_for_namespaces() -> None:
    with FakeKubeAPI(spc_crd_installed=False) as fake, fake.api_client() as api:
        cache = _start_cache(api, fake)
        try:
            assert cache.is_ready()
            assert cache.spc_crd_installed() is False
            assert annotations(cache, "team-a")["ferry.dev/region"] == "eu-west-1"
            assert cache.secret_provider_class("team-a", "db-credentials") is None
            # It keeps looking, and picks the CRD up once it is installed.
            fake.set_spc_crd_installed(True)
            assert eventually(lambda: cache.secret_provider_class("team-a", "db-credentials") is not None)
            assert cache.spc_crd_installed() is True
        finally:
            cache.stop()


def test_spc_list_forbidden_keeps_cache_not_ready(fake: FakeKubeAPI, api: kubernetes.client.ApiClient) -> None:
    fake.fail_next(SPC_PATH, status=403, times=1000)
    cache = WatchCache(api, backoff_initial=0.01, resync_backoff_max=0.05)
    cache.start()
    try:
        assert eventually(lambda: fake.list_count(SECRET_PROVIDER_CLASSES) >= 3)
        assert cache.namespace("team-a") is not None
        assert not cache.is_ready()  # RBAC is broken: say so in /readyz rather than deny every SPC pod
    finally:
        cache.stop()


def test_freshness_and_stop(api: kubernetes.client.ApiClient, fake: FakeKubeAPI) -> None:
    cache = WatchCache(api)
    resources = (NAMESPACES, SECRET_PROVIDER_CLASSES, LIMIT_RANGES)
    assert cache.freshness_seconds() == dict.fromkeys(resources, float("inf"))
    cache.start()
    assert cache.wait_ready(10)
    assert all(fake.wait_for_watches(resource) for resource in resources)
    freshness = cache.freshness_seconds()
    assert set(freshness) == set(resources)
    assert all(0 <= value < 60 for value in freshness.values())
    cache.stop()
    assert not any(t.is_alive() for t in (cache._namespaces.thread, cache._spcs.thread, cache._limit_ranges.thread))
    assert eventually(lambda: all(fake.open_watches(resource) == 0 for resource in resources))


def test_server_version_parses_recorded_and_provider_versions(
    fake: FakeKubeAPI, api: kubernetes.client.ApiClient
) -> None:
    assert server_version(api) == (1, 28)
    fake.version["minor"] = "29+"  # EKS and GKE style
    assert server_version(api) == (1, 29)
    fake.version.update(major="", minor="", gitVersion="v1.30.2-eks-1234")
    assert server_version(api) == (1, 30)


def test_static_view_from_recorded_spc_file(tmp_path: Path) -> None:
    view = StaticView.from_files(
        [FIXTURES / "secretproviderclasses.yaml"],
        namespace_annotations={"team-a": {"ferry.dev/region": "eu-west-1"}},
    )
    assert view.is_ready()
    db = view.secret_provider_class("team-a", "db-credentials")
    assert db is not None and db["spec"]["parameters"]["failoverRegion"] == "eu-central-1"
    assert view.secret_provider_class("team-a", "api-keys") is not None
    assert view.secret_provider_class("team-b", "db-credentials") is None
    team_a = view.namespace("team-a")
    assert team_a is not None and team_a["metadata"]["annotations"] == {"ferry.dev/region": "eu-west-1"}
    assert view.namespace("team-b") is None

    # A SecretProviderClass without a namespace serves any namespace; a namespaced one wins.
    unscoped = tmp_path / "unscoped.yaml"
    unscoped.write_text(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n"
        "metadata: {name: db-credentials}\nspec: {provider: aws, parameters: {objects: '[]'}}\n"
    )
    view = StaticView.from_files([unscoped, FIXTURES / "secretproviderclasses.yaml"])
    unscoped_spc = view.secret_provider_class("team-z", "db-credentials")
    assert unscoped_spc is not None and "namespace" not in unscoped_spc["metadata"]
    scoped = view.secret_provider_class("team-a", "db-credentials")
    assert scoped is not None and scoped["metadata"]["namespace"] == "team-a"


def test_static_view_rejects_other_kinds(tmp_path: Path) -> None:
    bad = tmp_path / "deploy.yaml"
    bad.write_text("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ValueError, match=r"deploy\.yaml: document 1: expected kind SecretProviderClass"):
        StaticView.from_files([bad])


def test_load_api_client_without_a_cluster_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_api_client() is None


def test_load_api_client_from_kubeconfig(fake: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "config")))
    client = load_api_client()
    assert client is not None
    with client:
        assert server_version(client) == (1, 28)

    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    with pytest.raises(KubeConfigError, match="broken"):
        load_api_client(kubeconfig=broken)


def test_limit_ranges_are_watched_slimmed_and_looked_up_by_namespace(cache: WatchCache, fake: FakeKubeAPI) -> None:
    assert fake.wait_for_watches(LIMIT_RANGES)
    assert cache.limit_ranges("team-a") == ()
    limit_range = {
        "metadata": {"name": "small", "namespace": "team-a", "annotations": {"big": "x" * 1000}},
        "spec": {
            "limits": [
                {"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}},
                {"type": "Container", "max": {"memory": "64Mi"}},
            ]
        },
    }
    fake.emit(LIMIT_RANGES, "ADDED", limit_range)
    assert eventually(lambda: len(cache.limit_ranges("team-a")) == 1)
    kept = cache.limit_ranges("team-a")[0]
    assert kept["metadata"]["name"] == "small" and "annotations" not in kept["metadata"]
    assert kept["spec"]["limits"] == [{}, {"type": "Container", "max": {"memory": "64Mi"}}]
    assert cache.limit_ranges("team-b") == ()
    fake.emit(LIMIT_RANGES, "DELETED", limit_range)
    assert eventually(lambda: cache.limit_ranges("team-a") == ())


# --- Bounded memory: only the fields Ferry reads, per object and in total (issue 10, item 5). ---------------


def _spc(name: str, objects: str, namespace: str = "team-b") -> dict[str, object]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"team": "b"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 100_000},
        },
        "spec": {"provider": "aws", "parameters": {"objects": objects, "region": "eu-west-1"}},
    }


def _admit_from(cache: WatchCache, spc_name: str) -> str:
    from tests.support.reviews import pod_create_review
    from webhook.admission import admit
    from webhook.settings import Settings

    annotations = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": spc_name}
    pod = {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "i"}]},
    }
    request = pod_create_review(pod, namespace="team-b")["request"]
    decision = admit(request, cache, Settings(), native_sidecars=True)  # type: ignore[arg-type]
    return decision.message or decision.outcome


def test_only_the_fields_ferry_reads_are_kept(cache: WatchCache, fake: FakeKubeAPI) -> None:
    fake.emit(SECRET_PROVIDER_CLASSES, "ADDED", _spc("slim", '- objectName: "a/b"\n  objectType: secretsmanager\n'))
    assert eventually(lambda: cache.secret_provider_class("team-b", "slim") is not None)
    kept = cache.secret_provider_class("team-b", "slim")
    assert kept is not None
    assert set(kept["metadata"]) == {"name", "namespace", "resourceVersion"}  # no 100 KB annotation, no labels
    assert set(kept["spec"]) == {"provider", "parameters"}
    assert _admit_from(cache, "slim") == "injected"
    # Lists are paginated in small pages: a page of classes is parsed whole before it is slimmed.
    lists = [r for r in fake.requests if r.path.startswith(SPC_PATH) and not r.is_watch]
    assert lists and all(0 < int(r.query.get("limit", "0")) <= 10 for r in lists)


def test_an_over_large_class_is_remembered_as_too_large(cache: WatchCache, fake: FakeKubeAPI) -> None:
    huge = "".join(f'- objectName: "team-b/secret-{i:06d}"\n  objectType: secretsmanager\n' for i in range(6_000))
    fake.emit(SECRET_PROVIDER_CLASSES, "ADDED", _spc("huge", huge))
    assert eventually(lambda: cache.secret_provider_class("team-b", "huge") is not None)
    kept = cache.secret_provider_class("team-b", "huge")
    assert kept is not None and "spec" not in kept
    assert len(str(kept)) < 1_000
    message = _admit_from(cache, "huge")
    assert "SecretProviderClass team-b/huge is" in message and "at most 262144 bytes" in message
    # Deleting it forgets it.
    fake.emit(SECRET_PROVIDER_CLASSES, "DELETED", _spc("huge", huge))
    assert eventually(lambda: cache.secret_provider_class("team-b", "huge") is None)


def test_the_cache_is_bounded_in_total(api: kubernetes.client.ApiClient, fake: FakeKubeAPI) -> None:
    cache = WatchCache(api, backoff_initial=0.01, resync_backoff_max=0.2, max_spc_bytes=40_000)
    cache.start()
    try:
        assert cache.wait_ready(10) and fake.wait_for_watches(SECRET_PROVIDER_CLASSES)
        objects = "".join(f'- objectName: "team-b/s-{i:04d}"\n  objectType: secretsmanager\n' for i in range(200))
        for i in range(5):
            fake.emit(SECRET_PROVIDER_CLASSES, "ADDED", _spc(f"c{i}", objects))
        assert eventually(lambda: cache.secret_provider_class("team-b", "c4") is not None)
        kept = [cache.secret_provider_class("team-b", f"c{i}") for i in range(5)]
        assert "spec" in (kept[0] or {})
        assert "spec" not in (kept[4] or {})
        assert "exceed what Ferry keeps in memory" in _admit_from(cache, "c4")
    finally:
        cache.stop()
