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
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devcluster.controlplane import ControlPlane
from fetcher.errors import FerryError, KubeAPIError, KubeForbiddenError
from fetcher.kube import KubeClient
from fetcher.secret_sync import (
    CONTENT_FIELD_MANAGER,
    FERRY_LABEL,
    FERRY_LABEL_VALUE,
    MANAGED_LABEL,
    SECRET_SYNC_VERBS,
    PodOwner,
    build_secret_manifests,
    parse_secret_objects,
    secret_sync_rbac,
    sync_secrets,
)
from tests.support.secretlib import AdminApi

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


def _app_with_access(plane: AdminApi, namespace: str, tmp_path: Path) -> tuple[PodOwner, KubeClient]:
    """The usual start: pod `web-1` of ServiceAccount `app`, allowed to sync Secret `db`, and its client."""
    token = plane.service_account_token(namespace, "app")
    _grant(plane, namespace, ["db"])
    return _create_pod(plane, namespace, "web-1"), _client(plane, token, tmp_path)


def _create_as_ferry(plane: AdminApi, namespace: str, name: str, secret_type: str, data: dict[str, bytes]) -> None:
    """A Secret as Ferry creates it (its label, an apply by its field manager), made here by the admin."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {FERRY_LABEL: FERRY_LABEL_VALUE, MANAGED_LABEL: "true"}},
        "type": secret_type,
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }
    path = f"/api/v1/namespaces/{namespace}/secrets/{name}?fieldManager={CONTENT_FIELD_MANAGER}&force=true"
    plane.admin("PATCH", path, body, content_type="application/apply-patch+yaml")


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
    owner, client = _app_with_access(api, namespace, tmp_path)

    written = _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})

    assert written == ["db"]
    secret = _secret(api, namespace, "db")
    assert _decoded(secret) == {"password": PASSWORD, "username": b"admin"}
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {"app": "shop", MANAGED_LABEL: "true", FERRY_LABEL: FERRY_LABEL_VALUE}
    assert secret["metadata"]["annotations"] == {"team": "payments"}
    (reference,) = secret["metadata"]["ownerReferences"]
    assert reference == {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": owner.uid}
    assert _managers(secret) == {CONTENT_FIELD_MANAGER, owner.field_manager}


def test_a_rotation_updates_the_secret_and_a_removed_key_goes_away(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    owner, client = _app_with_access(api, namespace, tmp_path)
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
        # Without patch nothing can be applied, even a Secret that exists already (one Ferry created).
        _create_as_ferry(api, namespace, "db", "Opaque", {"password": b"old"})

    with pytest.raises(KubeForbiddenError) as caught:
        _sync(_client(api, token, tmp_path), owner, {"db-password": PASSWORD, "db-user": b"admin"})
    assert caught.value.verb == missing


def test_the_role_allows_only_the_named_secrets(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    owner, client = _app_with_access(api, namespace, tmp_path)
    other = [dict(SECRET_OBJECTS[0], secretName="not-granted")]

    with pytest.raises(KubeForbiddenError) as caught:
        _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"}, other)
    assert '"not-granted"' in str(caught.value)


def test_a_secret_of_another_type_is_reported_without_its_values(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    owner, client = _app_with_access(api, namespace, tmp_path)
    _create_as_ferry(api, namespace, "db", "kubernetes.io/basic-auth", {"username": b"someone"})

    with pytest.raises(KubeAPIError) as caught:
        _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})
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


# --- Issue 15 part 2: Ferry writes only Secrets it created. -----------------------------------------------------

OTHER_APP_VALUE = "billing-only-value"


class RecordingClient(KubeClient):
    """The real client, keeping every answer it was given: what Ferry would hold in memory."""

    answers: list[str]

    def request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = super().request(*args, **kwargs)
        self.answers.append(json.dumps(answer))
        return answer


def _recording(plane: AdminApi, token: str, tmp_path: Path) -> RecordingClient:
    token_file = tmp_path / "recording-token"
    token_file.write_text(token)
    client = RecordingClient(plane.host, plane.port, plane.ssl_context(), str(token_file))
    object.__setattr__(client, "answers", [])
    return client


def _create_foreign(plane: AdminApi, namespace: str, name: str, manager: str, labels: dict[str, str]) -> dict[str, Any]:
    """Another app's Secret, created as that app's tooling does (POST with its own field manager)."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": "Opaque",
        "stringData": {"other-key": OTHER_APP_VALUE},
    }
    return dict(plane.admin("POST", f"/api/v1/namespaces/{namespace}/secrets?fieldManager={manager}", body))


def _unchanged(plane: AdminApi, namespace: str, before: dict[str, Any]) -> None:
    after = _secret(plane, namespace, before["metadata"]["name"])
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert _decoded(after) == {"other-key": OTHER_APP_VALUE.encode()}
    assert not after["metadata"].get("ownerReferences")  # so the garbage collector never deletes it with a pod


def test_another_apps_secret_of_that_name_is_never_written_read_or_given_an_owner(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    """The attack: with the printed Role, Ferry overwrote billing-db, got its other key back, and GC deleted it."""
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["billing-db"])
    owner = _create_pod(api, namespace, "web-1")
    before = _create_foreign(api, namespace, "billing-db", "billing-app", {"app": "billing"})
    client = _recording(api, token, tmp_path)

    with pytest.raises(FerryError) as caught:
        _sync(
            client,
            owner,
            {"db-password": PASSWORD, "db-user": b"admin"},
            [dict(SECRET_OBJECTS[0], secretName="billing-db")],
        )

    message = str(caught.value)
    assert '"billing-db"' in message and namespace in message and "not created by Ferry" in message, message
    assert OTHER_APP_VALUE not in message and "s3cr3t" not in message
    _unchanged(api, namespace, before)
    # Only metadata was asked for: the other app's value never reached Ferry (its key name is in managedFields).
    assert client.answers and not any(OTHER_APP_VALUE in answer for answer in client.answers)


def test_a_secret_the_csi_driver_created_is_not_adopted_and_the_message_says_what_to_do(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    owner, client = _app_with_access(api, namespace, tmp_path)
    before = _create_foreign(api, namespace, "db", "secrets-store-csi-driver", {MANAGED_LABEL: "true"})

    with pytest.raises(FerryError) as caught:
        _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})

    message = str(caught.value)
    assert '"db"' in message and "CSI driver" in message and "migration-from-csi" in message, message
    _unchanged(api, namespace, before)


def test_a_secret_replaced_by_another_apps_between_check_and_write_is_not_overwritten(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    """The write is bound to the uid Ferry checked: a Secret swapped in meanwhile is never touched."""
    owner, client = _app_with_access(api, namespace, tmp_path)
    _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})
    swapped: list[dict[str, Any]] = []

    class SwappingClient(KubeClient):
        def apply(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if not swapped:  # after Ferry's check, before its write
                api.admin("DELETE", f"/api/v1/namespaces/{namespace}/secrets/db")
                swapped.append(_create_foreign(api, namespace, "db", "billing-app", {"app": "billing"}))
            return super().apply(*args, **kwargs)

    swapping = SwappingClient(api.host, api.port, api.ssl_context(), client.token_file)
    with pytest.raises(FerryError):
        _sync(swapping, owner, {"db-password": b"new", "db-user": b"admin"})
    _unchanged(api, namespace, swapped[0])


def test_a_secret_an_earlier_ferry_created_is_still_ferrys(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    """Upgrades keep working: before Ferry's own label, its Secrets carried its field manager and the CSI label."""
    owner, client = _app_with_access(api, namespace, tmp_path)
    legacy = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "labels": {MANAGED_LABEL: "true"}, "ownerReferences": [owner.owner_reference()]},
        "type": "Opaque",
        "data": {"password": base64.b64encode(b"old").decode()},
    }
    api.admin(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/secrets/db?fieldManager={CONTENT_FIELD_MANAGER}&force=true",
        legacy,
        content_type="application/apply-patch+yaml",
    )

    _sync(client, owner, {"db-password": b"new", "db-user": b"admin"})
    assert _decoded(_secret(api, namespace, "db"))["password"] == b"new"


def test_a_deleted_secret_is_created_again_by_the_next_sync(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    owner, client = _app_with_access(api, namespace, tmp_path)
    _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})
    api.admin("DELETE", f"/api/v1/namespaces/{namespace}/secrets/db")

    _sync(client, owner, {"db-password": PASSWORD, "db-user": b"admin"})
    assert _decoded(_secret(api, namespace, "db"))["password"] == PASSWORD


# --- No ServiceAccount tokens. ----------------------------------------------------------------------------------


@pytest.mark.parametrize("secret_type", ["kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"])
def test_the_fetcher_never_writes_a_token_type_even_with_the_role(
    api: AdminApi, namespace: str, tmp_path: Path, secret_type: str
) -> None:
    """The attack: a service-account-token Secret named in the Role mints a token for any ServiceAccount."""
    token = api.service_account_token(namespace, "app")
    api.service_account_token(namespace, "ci-deployer")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": namespace,
            "labels": {MANAGED_LABEL: "true"},
            "annotations": {"kubernetes.io/service-account.name": "ci-deployer"},
        },
        "type": secret_type,
        "data": {},
    }

    with pytest.raises(FerryError) as caught:
        sync_secrets(_client(api, token, tmp_path), [manifest], owner)
    assert secret_type in str(caught.value) and "token" in str(caught.value)
    assert api.admin_status("GET", f"/api/v1/namespaces/{namespace}/secrets/db")[0] == 404


# --- Role names. -------------------------------------------------------------------------------------------------


def test_two_teams_roles_do_not_collide_and_both_keep_their_access(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    tokens = {account: api.service_account_token(namespace, account) for account in ("team-a", "team-b")}
    for account, secret_name in (("team-a", "a-db"), ("team-b", "b-db")):
        for document in secret_sync_rbac(namespace, account, [secret_name], spc_name=f"{account}-spc"):
            kind = document["kind"].lower() + "s"
            api.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{kind}", document)
    for account, secret_name in (("team-a", "a-db"), ("team-b", "b-db")):
        owner = _create_pod(api, namespace, f"{account}-pod", service_account=account)
        raw = [dict(SECRET_OBJECTS[0], secretName=secret_name)]
        assert _sync(
            _client(api, tokens[account], tmp_path, account), owner, {"db-password": b"x", "db-user": b"y"}, raw
        )


# --- The token Ferry projects for secretObjects. -----------------------------------------------------------------


def test_the_projected_token_ferry_adds_lives_an_hour_at_most_not_a_year(api: AdminApi, namespace: str) -> None:
    """The kubelet asks for the volume's expirationSeconds bound to the pod; 3607 is extended to a year."""
    from webhook.policy.volumes import build_kube_api_volume

    (source,) = [
        s["serviceAccountToken"] for s in build_kube_api_volume()["projected"]["sources"] if "serviceAccountToken" in s
    ]
    api.service_account_token(namespace, "app")
    owner = _create_pod(api, namespace, "web-1")
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": source["expirationSeconds"],
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.uid},
        },
    }
    answer = api.admin("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/app/token", request)
    payload = answer["status"]["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    assert claims["exp"] - claims["iat"] <= 3600, f"the token lives {claims['exp'] - claims['iat']} s"
    assert claims["exp"] - claims["iat"] >= 600  # the API server's minimum; the kubelet renews at 80 %


def test_a_secret_another_app_creates_while_ferry_creates_it_is_reported_not_kept(
    api: AdminApi, namespace: str, tmp_path: Path
) -> None:
    """The one window left: absent at the check, created by someone else before Ferry's apply. It is named."""
    token = api.service_account_token(namespace, "app")
    _grant(api, namespace, ["db"])
    owner = _create_pod(api, namespace, "web-1")
    created: list[dict[str, Any]] = []

    class RacingClient(KubeClient):
        def apply(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if not created:
                created.append(_create_foreign(api, namespace, "db", "billing-app", {"app": "billing"}))
            return super().apply(*args, **kwargs)

    token_file = tmp_path / "token"
    token_file.write_text(token)
    racing = RacingClient(api.host, api.port, api.ssl_context(), str(token_file))
    with pytest.raises(FerryError) as caught:
        _sync(racing, owner, {"db-password": PASSWORD, "db-user": b"admin"})
    assert "while Ferry was creating it" in str(caught.value) and "billing-app" in str(caught.value)
    after = _secret(api, namespace, "db")
    assert not after["metadata"].get("ownerReferences")  # the garbage collector will not delete it with the pod
    assert _decoded(after) == {"other-key": OTHER_APP_VALUE.encode()}  # what only Ferry set is withdrawn
