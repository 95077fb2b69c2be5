"""Injection decision and spec resolution: precedence, and denial messages that say what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from fetcher.contract import DEFAULT_MOUNT_PATH, FetchSpec
from tests.support.pods import make_pod
from tests.support.resolving import denied, lookup, resolve_pod, resolved
from webhook.settings import Settings

SM_OBJECTS = '- objectName: "prod/db"\n  objectType: secretsmanager\n'


def namespace(name: str, **annotations: str) -> dict[str, Any]:
    """A Namespace labelled for namespace-wide opt-in (the label the MutatingWebhookConfiguration routes by)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"ferry.dev/inject": "enabled"}, "annotations": annotations},
    }


def spc(name: str, ns: str = "team-b", objects: str = SM_OBJECTS, **params: str) -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"provider": "aws", "parameters": {"objects": objects, **params}},
    }


# --- decide_injection ---------------------------------------------------------


# --- sources ------------------------------------------------------------------


def test_spc_and_inline_objects_together_are_denied(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db", "ferry.dev/objects": SM_OBJECTS}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc("db")), settings))
    assert denial.reason == "conflicting-sources"
    assert "never guesses" in denial.message and "ferry.dev/secret-provider-class (db)" in denial.message


def test_nothing_named_is_denied(settings: Settings) -> None:
    denial = denied(resolve_pod(make_pod({"ferry.dev/inject": "true"}, namespace="team-b"), None, lookup(), settings))
    assert denial.reason == "no-objects"
    assert "set ferry.dev/secret-provider-class" in denial.message and "namespace team-b" in denial.message


def test_missing_spc_names_it_and_its_namespace(settings: Settings) -> None:
    pod = make_pod({"ferry.dev/secret-provider-class": "db-creds"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(spc("db-creds", ns="team-a")), settings))
    assert denial.reason == "missing-secret-provider-class"
    assert "SecretProviderClass 'db-creds' was not found in namespace team-b" in denial.message


def test_spc_from_namespace_annotation(settings: Settings) -> None:
    ns = namespace("team-b", **{"ferry.dev/secret-provider-class": "shared", "ferry.dev/region": "eu-west-1"})
    result = resolved(resolve_pod(make_pod(namespace="team-b"), ns, lookup(spc("shared")), settings))
    assert result.source == "SecretProviderClass team-b/shared"
    assert [o.object_name for o in result.spec.objects] == ["prod/db"]
    denial = denied(resolve_pod(make_pod(namespace="team-b"), ns, lookup(), settings))
    assert denial.message.startswith("namespace team-b annotation ferry.dev/secret-provider-class:")


def test_pod_objects_win_over_the_namespace_spc(settings: Settings) -> None:
    ns = namespace("team-b", **{"ferry.dev/secret-provider-class": "shared"})
    pod = make_pod({"ferry.dev/objects": SM_OBJECTS, "ferry.dev/region": "us-east-1"}, namespace="team-b")
    assert resolved(resolve_pod(pod, ns, lookup(), settings)).source == "ferry.dev/objects"


# --- region and failover precedence --------------------------------------------


@pytest.mark.parametrize(
    ("pod_region", "spc_region", "ns_region", "default", "expected"),
    [
        ("us-east-1", "eu-west-1", "eu-central-1", "ap-south-1", "us-east-1"),
        (None, "eu-west-1", "eu-central-1", "ap-south-1", "eu-west-1"),
        (None, None, "eu-central-1", "ap-south-1", "eu-central-1"),
        (None, None, None, "ap-south-1", "ap-south-1"),
    ],
)
def test_region_precedence(
    pod_region: str | None,
    spc_region: str | None,
    ns_region: str | None,
    default: str | None,
    expected: str,
) -> None:
    settings = Settings(default_region=default)
    annotations = {"ferry.dev/secret-provider-class": "db"} | ({"ferry.dev/region": pod_region} if pod_region else {})
    ns = namespace("team-b", **({"ferry.dev/region": ns_region} if ns_region else {}))
    klass = spc("db", **({"region": spc_region} if spc_region else {}))
    assert (
        resolved(resolve_pod(make_pod(annotations, namespace="team-b"), ns, lookup(klass), settings)).spec.region
        == expected
    )


def test_failover_region_precedence(settings: Settings) -> None:
    ns = namespace("team-b", **{"ferry.dev/failover-region": "eu-central-1", "ferry.dev/region": "eu-west-1"})
    klass = spc("db", failoverRegion="eu-north-1")
    base = {"ferry.dev/secret-provider-class": "db"}
    assert (
        resolved(resolve_pod(make_pod(base, namespace="team-b"), ns, lookup(klass), settings)).spec.failover_region
        == "eu-north-1"
    )
    pod = make_pod(base | {"ferry.dev/failover-region": "us-west-2"}, namespace="team-b")
    assert resolved(resolve_pod(pod, ns, lookup(klass), settings)).spec.failover_region == "us-west-2"
    assert resolved(
        resolve_pod(make_pod(base, namespace="team-b"), ns, lookup(spc("db")), settings)
    ).spec.failover_region == ("eu-central-1")


def test_region_problems_name_where_the_region_came_from(settings: Settings) -> None:
    base = {"ferry.dev/secret-provider-class": "db"}
    # A bad pod annotation overriding the SPC is blamed on the annotation, not on the SPC.
    denial = denied(
        resolve_pod(
            make_pod(base | {"ferry.dev/region": "Ireland"}, namespace="team-b"), None, lookup(spc("db")), settings
        )
    )
    assert denial.message.startswith("ferry.dev/region: 'Ireland' is not an AWS region")
    ns = namespace("team-b", **{"ferry.dev/region": "mars-1"})
    denial = denied(resolve_pod(make_pod(base, namespace="team-b"), ns, lookup(spc("db")), settings))
    assert denial.message.startswith("namespace team-b annotation ferry.dev/region: 'mars-1' is not an AWS region")
    denial = denied(
        resolve_pod(make_pod(base, namespace="team-b"), None, lookup(spc("db", region="nowhere")), settings)
    )
    assert denial.message.startswith("SecretProviderClass team-b/db: spec.parameters.region: 'nowhere'")
    denial = denied(resolve_pod(make_pod(base, namespace="team-b"), None, lookup(spc("db")), settings))
    assert "no AWS region is set" in denial.message and "FERRY_DEFAULT_REGION" in denial.message


def test_same_failover_and_region_is_blamed_on_the_namespace(settings: Settings) -> None:
    ns = namespace("team-b", **{"ferry.dev/failover-region": "eu-west-1"})
    klass = spc("db", region="eu-west-1")
    denial = denied(
        resolve_pod(
            make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b"), ns, lookup(klass), settings
        )
    )
    assert denial.message.startswith("namespace team-b annotation ferry.dev/failover-region: is the same as the region")


# --- objects and other fields --------------------------------------------------


def test_inline_object_problems_are_prefixed_with_the_annotation(settings: Settings) -> None:
    objects = SM_OBJECTS + '- objectName: "s"\n  objectType: nope\n'
    pod = make_pod({"ferry.dev/objects": objects, "ferry.dev/region": "us-east-1"}, namespace="team-b")
    denial = denied(resolve_pod(pod, None, lookup(), settings))
    assert denial.reason == "invalid-spec"
    assert denial.message.startswith("ferry.dev/objects: objects[1].objectType: 'nope' is not secretsmanager")


def test_spc_object_problems_are_prefixed_with_the_spc(settings: Settings) -> None:
    klass = spc(
        "db", region="eu-west-1", objects='- objectName: "a"\n  objectType: secretsmanager\n  objectAlias: ../x\n'
    )
    denial = denied(
        resolve_pod(
            make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b"), None, lookup(klass), settings
        )
    )
    assert denial.message.startswith("SecretProviderClass team-b/db: spec.parameters.objects[0].objectAlias:")
    assert "climbs out of the volume" in denial.message


def test_all_problems_come_in_one_message(settings: Settings) -> None:
    pod = make_pod(
        {
            "ferry.dev/objects": '- objectName: "s"\n  objectType: nope\n',
            "ferry.dev/region": "us-east-1",
            "ferry.dev/mount-path": "etc/secrets",
            "ferry.dev/containers": "ap",
            "ferry.dev/refresh-interval": "1s",
        },
        namespace="team-b",
    )
    message = denied(resolve_pod(pod, None, lookup(), settings)).message
    for needle in (
        "ferry.dev/mount-path: 'etc/secrets' must be an absolute path",
        "ferry.dev/containers: no container named 'ap' in this pod; did you mean app?",
        "ferry.dev/refresh-interval: 1s is below the floor of 10s",
        "ferry.dev/objects: objects[0].objectType",
    ):
        assert needle in message


def test_refresh_interval_pod_then_namespace_with_a_configurable_floor() -> None:
    settings = Settings(default_region="us-east-1", min_refresh_seconds=60)
    ns = namespace("team-b", **{"ferry.dev/refresh-interval": "5m"})
    base = {"ferry.dev/objects": SM_OBJECTS}
    assert resolved(resolve_pod(make_pod(base, namespace="team-b"), ns, lookup(), settings)).spec.refresh_seconds == 300
    pod = make_pod(base | {"ferry.dev/refresh-interval": "2m"}, namespace="team-b")
    assert resolved(resolve_pod(pod, ns, lookup(), settings)).spec.refresh_seconds == 120
    pod = make_pod(base | {"ferry.dev/refresh-interval": "0"}, namespace="team-b")
    assert resolved(resolve_pod(pod, ns, lookup(), settings)).spec.refresh_seconds == 0
    pod = make_pod(base | {"ferry.dev/refresh-interval": "30s"}, namespace="team-b")
    assert "below the floor of 1m" in denied(resolve_pod(pod, ns, lookup(), settings)).message
    ns_fast = namespace("team-b", **{"ferry.dev/refresh-interval": "5s"})
    message = denied(resolve_pod(make_pod(base, namespace="team-b"), ns_fast, lookup(), settings)).message
    assert message.startswith("namespace team-b annotation ferry.dev/refresh-interval: 5s is below the floor")


def test_path_translation_from_the_pod_overrides_the_spc(settings: Settings) -> None:
    klass = spc("db", region="eu-west-1", pathTranslation="-")
    base = {"ferry.dev/secret-provider-class": "db"}
    assert (
        resolved(resolve_pod(make_pod(base, namespace="team-b"), None, lookup(klass), settings)).spec.path_translation
        == "-"
    )
    pod = make_pod(base | {"ferry.dev/path-translation": "False"}, namespace="team-b")
    assert resolved(resolve_pod(pod, None, lookup(klass), settings)).spec.path_translation is None
    pod = make_pod(base | {"ferry.dev/path-translation": "//"}, namespace="team-b")
    assert denied(resolve_pod(pod, None, lookup(klass), settings)).message.startswith("ferry.dev/path-translation:")


# --- mount path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("relative/dir", "must be an absolute path"),
        ("/mnt//secrets", "is not normalized; write it as '/mnt/secrets'"),
        ("/mnt/secrets/", "is not normalized"),
        ("/mnt/../etc", "is not normalized"),
        ("/", "would hide that whole directory"),
        ("/tmp", "would hide that whole directory"),
        ("/var/run", "would hide that whole directory"),
        ("/etc", "is in /etc"),
        ("/etc/app", "is in /etc"),
        ("/proc/x", "is in /proc"),
        ("/usr/local/secrets", "is in /usr"),
        ("/var/run/secrets/kubernetes.io", "is in /var/run/secrets"),
        ("/run/secrets/x", "is in /run/secrets"),
        ("/mnt/se\ncrets", "printable"),
    ],
)
def test_bad_mount_paths_are_denied(path: str, needle: str) -> None:
    settings = Settings(default_region="us-east-1")
    pod = make_pod({"ferry.dev/objects": SM_OBJECTS, "ferry.dev/mount-path": path}, namespace="team-b")
    message = denied(resolve_pod(pod, None, lookup(), settings)).message
    assert message.startswith("ferry.dev/mount-path:") and needle in message


@pytest.mark.parametrize("path", ["/mnt/secrets-store", "/secrets", "/tmp/secrets", "/var/secrets", "/app/config"])
def test_good_mount_paths(path: str) -> None:
    settings = Settings(default_region="us-east-1")
    pod = make_pod({"ferry.dev/objects": SM_OBJECTS, "ferry.dev/mount-path": path}, namespace="team-b")
    assert resolved(resolve_pod(pod, None, lookup(), settings)).mount_path == path


def test_mount_path_already_used_by_a_selected_container() -> None:
    settings = Settings(default_region="us-east-1")
    containers = [
        {"name": "app", "image": "i", "volumeMounts": [{"name": "cfg", "mountPath": DEFAULT_MOUNT_PATH}]},
        {"name": "other", "image": "i"},
    ]
    pod = make_pod({"ferry.dev/objects": SM_OBJECTS}, containers=containers, namespace="team-b")
    assert "container 'app' already mounts volume 'cfg'" in denied(resolve_pod(pod, None, lookup(), settings)).message
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS, "ferry.dev/containers": "other"}, containers=containers, namespace="team-b"
    )
    assert resolved(resolve_pod(pod, None, lookup(), settings)).containers == ("other",)


# --- containers, reserved names, notify, ownership ------------------------------


def test_containers_default_to_all_app_and_init_containers() -> None:
    settings = Settings(default_region="us-east-1")
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS},
        containers=[{"name": "web", "image": "i"}, {"name": "worker", "image": "i"}],
        init_containers=[{"name": "migrate", "image": "i"}],
        namespace="team-b",
    )
    assert resolved(resolve_pod(pod, None, lookup(), settings)).containers == ("migrate", "web", "worker")
    pod["metadata"]["annotations"]["ferry.dev/containers"] = " worker , migrate,worker"
    assert resolved(resolve_pod(pod, None, lookup(), settings)).containers == ("worker", "migrate")
    pod["metadata"]["annotations"]["ferry.dev/containers"] = " , "
    assert "names no container" in denied(resolve_pod(pod, None, lookup(), settings)).message


def test_reserved_names_are_denied() -> None:
    settings = Settings(default_region="us-east-1")
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS},
        containers=[{"name": "ferry-sidecar", "image": "i"}],
        volumes=[{"name": "ferry-secrets", "emptyDir": {}}],
        namespace="team-b",
    )
    message = denied(resolve_pod(pod, None, lookup(), settings)).message
    assert "'ferry-sidecar' is reserved for Ferry's own containers" in message
    assert "'ferry-secrets' is reserved for Ferry's volume" in message


def test_notify_signal_needs_a_shared_process_namespace() -> None:
    settings = Settings(default_region="us-east-1")
    annotations = {
        "ferry.dev/objects": SM_OBJECTS,
        "ferry.dev/refresh-interval": "1m",
        "ferry.dev/notify-signal": "SIGHUP:nginx",
    }
    message = denied(resolve_pod(make_pod(annotations, namespace="team-b"), None, lookup(), settings)).message
    assert message.startswith("ferry.dev/notify-signal: signalling a process needs spec.shareProcessNamespace: true")
    result = resolved(
        resolve_pod(make_pod(annotations, shareProcessNamespace=True, namespace="team-b"), None, lookup(), settings)
    )
    assert (result.spec.notify.signal, result.spec.notify.process) == ("SIGHUP", "nginx")
    bad_url = {"ferry.dev/objects": SM_OBJECTS, "ferry.dev/notify-url": "http://evil.example.com/"}
    assert denied(resolve_pod(make_pod(bad_url, namespace="team-b"), None, lookup(), settings)).message.startswith(
        "ferry.dev/notify-url:"
    )


def test_notify_without_refresh_warns() -> None:
    settings = Settings(default_region="us-east-1")
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS, "ferry.dev/notify-url": "http://localhost:8080/-/reload"}, namespace="team-b"
    )
    result = resolved(resolve_pod(pod, None, lookup(), settings))
    assert result.warnings == (
        "ferry.dev/notify-url has no effect without ferry.dev/refresh-interval: files are fetched once, "
        "before the app starts",
    )


def test_namespace_annotations_that_do_not_apply_warn() -> None:
    settings = Settings(default_region="us-east-1")
    ns = namespace("team-b", **{"ferry.dev/mount-path": "/x", "ferry.dev/regoin": "x"})
    result = resolved(
        resolve_pod(make_pod({"ferry.dev/objects": SM_OBJECTS}, namespace="team-b"), ns, lookup(), settings)
    )
    assert result.warnings == (
        "namespace team-b annotation ferry.dev/mount-path is pod-only and is ignored",
        "namespace team-b annotation ferry.dev/regoin is not a Ferry annotation and is ignored",
    )


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "expected_uid", "expected_gid", "run_as"),
    [
        ({"runAsUser": 1000, "fsGroup": 2000}, {}, 1000, 2000, 1000),
        ({"runAsGroup": 3000}, {"runAsUser": 1001}, 1001, 3000, 1001),
        ({}, {}, None, None, 65532),
        ({"runAsUser": 0}, {}, None, None, 65532),
        ({"fsGroup": 2000}, {"runAsUser": 1001, "runAsGroup": 7}, 1001, 2000, 1001),
    ],
)
def test_file_owner_follows_the_pod(
    pod_sc: dict[str, int],
    container_sc: dict[str, int],
    expected_uid: int | None,
    expected_gid: int | None,
    run_as: int,
) -> None:
    settings = Settings(default_region="us-east-1")
    container: dict[str, Any] = {"name": "app", "image": "i"}
    if container_sc:
        container["securityContext"] = container_sc
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS}, containers=[container], securityContext=pod_sc, namespace="team-b"
    )
    result = resolved(resolve_pod(pod, None, lookup(), settings))
    assert (result.spec.file_uid, result.spec.file_gid, result.run_as_user) == (expected_uid, expected_gid, run_as)


def test_containers_that_disagree_on_uid_leave_the_owner_to_the_group() -> None:
    settings = Settings(default_region="us-east-1")
    containers = [
        {"name": "a", "image": "i", "securityContext": {"runAsUser": 1}},
        {"name": "b", "image": "i", "securityContext": {"runAsUser": 2}},
    ]
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS}, containers=containers, securityContext={"fsGroup": 9}, namespace="team-b"
    )
    result = resolved(resolve_pod(pod, None, lookup(), settings))
    assert (result.spec.file_uid, result.spec.file_gid, result.run_as_user) == (None, 9, 65532)


def test_resolution_is_memoized_by_content(settings: Settings) -> None:
    klass = spc("db", region="eu-west-1")
    pod = make_pod({"ferry.dev/secret-provider-class": "db"}, namespace="team-b")
    first = resolved(resolve_pod(pod, None, lookup(klass), settings)).spec
    assert resolved(resolve_pod(pod, None, lookup(klass), settings)).spec is first
    changed = spc("db", region="eu-west-1", objects='- objectName: "prod/other"\n  objectType: secretsmanager\n')
    second = resolved(resolve_pod(pod, None, lookup(changed), settings)).spec
    assert isinstance(second, FetchSpec) and second.objects[0].object_name == "prod/other"


@pytest.mark.parametrize(
    ("app", "init", "allowed"), [(256, 0, True), (200, 56, True), (257, 0, False), (1, 256, False)]
)
def test_container_count_is_bounded(settings: Settings, app: int, init: int, allowed: bool) -> None:
    pod = make_pod(
        {"ferry.dev/objects": SM_OBJECTS, "ferry.dev/region": "us-east-1"},
        containers=[{"name": f"c{i}", "image": "x"} for i in range(app)],
        init_containers=[{"name": f"i{i}", "image": "x"} for i in range(init)],
        namespace="team-b",
    )
    result = resolve_pod(pod, None, lookup(), settings)
    if allowed:
        resolved(result)
    else:
        denial = denied(result)
        assert denial.reason == "too-many-containers"
        assert f"{app + init} containers" in denial.message and "at most 256" in denial.message


@pytest.mark.parametrize(
    ("own_mount", "ferry_path", "needle"),
    [
        ("/app", "/app/config", "inside its volume 'code' at /app"),
        ("/app/config", "/app", "over its volume 'code' at /app/config"),
    ],
)
def test_a_mount_nested_with_the_apps_own_mount_warns(own_mount: str, ferry_path: str, needle: str) -> None:
    settings = Settings(default_region="us-east-1")
    containers = [{"name": "app", "image": "i", "volumeMounts": [{"name": "code", "mountPath": own_mount}]}]
    annotations = {"ferry.dev/objects": SM_OBJECTS, "ferry.dev/mount-path": ferry_path}
    result = resolved(
        resolve_pod(make_pod(annotations, containers=containers, namespace="team-b"), None, lookup(), settings)
    )
    assert any(needle in warning and "ferry.dev/mount-path" in warning for warning in result.warnings)
    # Side by side is not nested: /app2 is not under /app.
    annotations["ferry.dev/mount-path"] = own_mount + "2"
    result = resolved(
        resolve_pod(make_pod(annotations, containers=containers, namespace="team-b"), None, lookup(), settings)
    )
    assert not any("nested" in w or "hiding" in w for w in result.warnings)
