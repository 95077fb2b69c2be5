"""Ferry's small Kubernetes client against the real API server: TLS, tokens that rotate, errors, size bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.controlplane import ControlPlane
from fetcher.errors import KubeAPIError, KubeForbiddenError
from fetcher.kube import KubeClient
from fetcher.secret_sync import secret_sync_rbac
from tests.support.secretlib import AdminApi


@pytest.fixture
def api(control_plane: ControlPlane) -> AdminApi:
    return AdminApi(control_plane)


@pytest.fixture
def namespace(api: AdminApi) -> str:
    """A fresh namespace for one test."""
    return api.new_namespace()


def _client(plane: AdminApi, token_file: Path, **kwargs: int) -> KubeClient:
    return KubeClient(plane.host, plane.port, plane.ssl_context(), str(token_file), **kwargs)  # type: ignore[arg-type]


def test_in_cluster_settings_reach_the_api_server(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.admin_token + "\n")
    env = {"KUBERNETES_SERVICE_HOST": api.host, "KUBERNETES_SERVICE_PORT": str(api.port)}

    client = KubeClient.in_cluster(env, token_file=str(token_file), ca_file=str(api.ca_file))

    assert client.request("GET", f"/api/v1/namespaces/{namespace}")["metadata"]["name"] == namespace


def test_the_token_is_read_again_for_every_request(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    writer_token = api.service_account_token(namespace, "app")
    outsider_token = api.service_account_token(namespace, "outsider")
    role, binding = secret_sync_rbac(namespace, "app", ["db"])
    api.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", role)
    api.admin("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding)
    token_file = tmp_path / "token"
    token_file.write_text(outsider_token)
    client = _client(api, token_file)
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"k": "v"}}
    path = f"/api/v1/namespaces/{namespace}/secrets/db"

    with pytest.raises(KubeForbiddenError) as caught:
        client.apply(path, manifest, field_manager="ferry", force=True)
    assert caught.value.user == f"system:serviceaccount:{namespace}:outsider"

    token_file.write_text(writer_token)  # the kubelet rotated the projected token
    applied = client.apply(path, manifest, field_manager="ferry", force=True)
    assert applied["metadata"]["name"] == "db"


def test_a_missing_object_is_a_bounded_error_naming_it(api: AdminApi, namespace: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.admin_token)

    with pytest.raises(KubeAPIError) as caught:
        _client(api, token_file).request("GET", f"/api/v1/namespaces/{namespace}/secrets/absent")

    assert caught.value.status == 404
    assert f'could not get secrets "absent" in namespace {namespace}: HTTP 404 NotFound' in str(caught.value)


def test_an_expired_or_unknown_token_is_said_to_be_refused(api: AdminApi, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token")

    with pytest.raises(KubeAPIError) as caught:
        _client(api, token_file).request("GET", "/api/v1/namespaces/default")

    assert caught.value.status == 401 and "token was refused" in str(caught.value)


def test_an_answer_larger_than_the_bound_is_refused(api: AdminApi, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.admin_token)

    with pytest.raises(KubeAPIError, match=r"larger than 512 bytes; refused"):
        _client(api, token_file, max_response_bytes=512).request("GET", "/api/v1/namespaces")


def test_the_api_servers_certificate_is_verified(api: AdminApi, tmp_path: Path) -> None:
    import ssl

    token_file = tmp_path / "token"
    token_file.write_text(api.admin_token)
    client = KubeClient(api.host, api.port, ssl.create_default_context(), str(token_file))

    with pytest.raises(KubeAPIError, match="presented a certificate the pod's CA does not verify"):
        client.request("GET", "/api/v1/namespaces")
