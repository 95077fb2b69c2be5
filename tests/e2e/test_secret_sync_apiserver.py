"""secretObjects against the real API server: create, rotate, many replicas, garbage collection, RBAC.

Why it exists: whether two field managers really keep every replica's
ownerReference, whether the garbage collector deletes the Secret with the last
pod, and which RBAC verbs an apply needs are the API server's answers, so they
are asked of a real one (the shared control_plane fixture). Pods stay Pending (no kubelet): the
fetcher's part is called in-process with the pod's ServiceAccount token, as
the init container would.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster.controlplane import ControlPlane
from fetcher.errors import KubeAPIError, KubeForbiddenError
from fetcher.kube import KubeClient
from fetcher.secret_sync import (
    CONTENT_FIELD_MANAGER,
    MANAGED_LABEL,
    SECRET_SYNC_VERBS,
    PodOwner,
    build_secret_manifests,
    parse_secret_objects,
    secret_sync_rbac,
    sync_secrets,
)
from tests.e2e.secretlib import AdminApi

SECRET_OBJECTS = [
    {
        "secretName": "db",
        "type": "Opaque",
        "labels": {"app": "shop"},
        "annotations": {"team": "payments"},
        "data": [{"objectName": "db-password", "key": "password"}, {"objectName": "db-user", "key": "username"}],
    }
]
PASSWORD = b's3cr3t-"quoted"-$HOME\n'
GC_TIMEOUT_SECONDS = 120


@pytest.fixture
def api(control_plane: ControlPlane) -> AdminApi:
    return AdminApi(control_plane)


@pytest.fixture
def namespace(api: AdminApi) -> str:
    """A fresh namespace for one test."""
    return api.new_namespace()


def _create_pod(plane: AdminApi, namespace: str, name: str, service_account: str = "app") -> PodOwner:
    pod = plane.admin(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app:1"}]},
        },
    )
    return PodOwner(name=name, uid=pod["metadata"]["uid"], namespace=namespace)


def _delete_pod(plane: AdminApi, namespace: str, name: str) -> None:
    plane.admin("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")


def _client(plane: AdminApi, token: str, tmp_path: Path, name: str = "token") -> KubeClient:
    token_file = tmp_path / name
    token_file.write_text(token)
    return KubeClient(plane.host, plane.port, plane.ssl_context(), str(token_file))


def _grant(plane: AdminApi, namespace: str, names: list[str], verbs: tuple[str, ...] = SECRET_SYNC_VERBS) -> None:
    role, binding = secret_sync_rbac(namespace, "app", names)
    role["rules"][0]["verbs"] = list(verbs)
    plane.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", role)
    plane.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding)


def _secret(plane: AdminApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(plane.admin("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}"))


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}


def _owner_uids(secret: dict[str, Any]) -> set[str]:
    return {ref["uid"] for ref in secret["metadata"].get("ownerReferences", [])}


def _managers(secret: dict[str, Any]) -> set[str]:
    return {entry["manager"] for entry in secret["metadata"].get("managedFields", [])}


def _sync(client: KubeClient, owner: PodOwner, files: dict[str, bytes], raw: Any = None) -> list[str]:
    objects = parse_secret_objects(SECRET_OBJECTS if raw is None else raw)
    return sync_secrets(client, build_secret_manifests(objects, files, owner), owner)


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + GC_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_secret_is_created_with_data_type_labels_and_the_pod_as_owner(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")

    written = _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"})

    assert written == ["db"]
    secret = _secret(api, namespace, "db")
    assert _decoded(secret) == {"password": PASSWORD, "username": b"admin"}
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {"app": "shop", MANAGED_LABEL: "true"}
    assert secret["metadata"]["annotations"] == {"team": "payments"}
    (reference,) = secret["metadata"]["ownerReferences"]
    assert reference == {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": owner.uid}
    assert _managers(secret) == {CONTENT_FIELD_MANAGER, owner.field_manager}


def test_a_rotation_updates_the_secret_and_a_removed_key_goes_away(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")
    client = _client(api, token, tmp_path)
    _sync(client, owner, {"db-password": b"old", "db-user": b"admin"})

    _sync(client, owner, {"db-password": b"new", "db-user": b"admin"})
    assert _decoded(_secret(api, namespace, "db")) == {"password": b"new", "username": b"admin"}

    only_password = [dict(SECRET_OBJECTS[0], data=[{"objectName": "db-password", "key": "password"}])]
    _sync(client, owner, {"db-password": b"newer"}, only_password)
    assert _decoded(_secret(api, namespace, "db")) == {"password": b"newer"}


def test_ten_replicas_starting_at_once_all_own_the_secret_without_errors(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owners = [_create_pod(api, namespace, f"web-{index}") for index in range(10)]
    files = {"db-password": PASSWORD, "db-user": b"admin"}
    barrier = threading.Barrier(len(owners))
    errors: list[BaseException] = []

    def replica(owner: PodOwner) -> None:
        client = _client(api, token, tmp_path, f"token-{owner.name}")
        barrier.wait()
        try:
            _sync(client, owner, files)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    secret = _secret(api, namespace, "db")
    assert _owner_uids(secret) == {owner.uid for owner in owners}
    assert _decoded(secret) == {"password": PASSWORD, "username": b"admin"}
    assert _managers(secret) == {CONTENT_FIELD_MANAGER} | {owner.field_manager for owner in owners}
    # A replica that writes again (its sidecar) keeps every other replica's ownerReference.
    _sync(_client(api, token, tmp_path), owners[0], {"db-password": b"rotated", "db-user": b"admin"})
    assert _owner_uids(_secret(api, namespace, "db")) == {owner.uid for owner in owners}


def test_deleting_the_pods_deletes_the_secret_with_the_last_of_them(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owners = [_create_pod(api, namespace, f"web-{index}") for index in range(3)]
    client = _client(api, token, tmp_path)
    for owner in owners:
        _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})

    for owner in owners[:2]:
        _delete_pod(api, namespace, owner.name)
    survivor = owners[2]

    def only_survivor_left() -> bool:
        secret = _secret(api, namespace, "db")
        return _owner_uids(secret) == {survivor.uid}

    _wait_for(only_survivor_left, "the garbage collector to drop the deleted pods' ownerReferences")
    managers = _managers(_secret(api, namespace, "db"))
    assert not {owner.field_manager for owner in owners[:2]} & managers

    _delete_pod(api, namespace, survivor.name)
    path = f"/api/v1/namespaces/{namespace}/secrets/db"
    _wait_for(lambda: api.admin_status("GET", path)[0] == 404, "the Secret to be deleted with its last owner")


def test_a_missing_role_fails_naming_the_verb_the_resource_and_the_service_account(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    owner = _create_pod(api, namespace, "web-1")

    with pytest.raises(KubeForbiddenError) as caught:
        _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"})

    message = str(caught.value)
    assert f"system:serviceaccount:{namespace}:app" in message
    assert caught.value.verb in SECRET_SYNC_VERBS and f"{caught.value.verb} secrets" in message
    assert '"db"' in message and f"namespace {namespace}" in message
    assert f"kubectl -n {namespace} create role" in message and f"--serviceaccount={namespace}:app" in message
    assert PASSWORD.decode() not in message and "s3cr3t" not in message
    assert len(message) < 1024


@pytest.mark.parametrize("missing", SECRET_SYNC_VERBS)
def test_every_verb_of_the_printed_role_is_needed(api: AdminApi, namespace: str, tmp_path: Path, missing: str) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"], tuple(verb for verb in SECRET_SYNC_VERBS if verb != missing))
    owner = _create_pod(api, namespace, "web-1")
    if missing == "patch":
        # Without patch nothing can be applied, even a Secret that exists already.
        api.admin(
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque"},
        )

    with pytest.raises(KubeForbiddenError) as caught:
        _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"})
    assert caught.value.verb == missing


def test_the_role_allows_only_the_named_secrets(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")
    other = [dict(SECRET_OBJECTS[0], secretName="not-granted")]

    with pytest.raises(KubeForbiddenError) as caught:
        _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"}, other)
    assert '"not-granted"' in str(caught.value)


def test_a_secret_of_another_type_is_reported_without_its_values(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")
    api.admin(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "someone"},
        },
    )

    with pytest.raises(KubeAPIError) as caught:
        _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"})
    message = str(caught.value)
    assert caught.value.status == 422 and "immutable" in message
    assert "s3cr3t" not in message and "admin" not in message.replace("ferry-test-admin", "")


def test_replicas_racing_with_old_and_new_values_end_with_one_of_them_and_every_owner(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owners = [_create_pod(api, namespace, f"web-{index}") for index in range(10)]
    barrier = threading.Barrier(len(owners))
    errors: list[BaseException] = []

    def replica(index: int, owner: PodOwner) -> None:
        client = _client(api, token, tmp_path, f"token-{owner.name}")
        password = b"old" if index % 2 else b"new"
        barrier.wait()
        try:
            _sync(client, owner, {"db-password": password, "db-user": b"admin"})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=item) for item in enumerate(owners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    secret = _secret(api, namespace, "db")
    assert _decoded(secret)["password"] in (b"old", b"new")
    assert _owner_uids(secret) == {owner.uid for owner in owners}
