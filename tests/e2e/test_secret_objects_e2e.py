"""secretObjects end to end: the webhook injects, the kubelet step runs Ferry's containers, the API server answers.

Why it exists: the sync's parts are tested one by one elsewhere; here they are
wired as a user meets them. A SecretProviderClass with secretObjects and a pod
whose app reads the Secret through secretKeyRef go through the real webhook
and API server; the Role comes from ``python -m fetcher role``; the stored
pod's ``ferry-init`` and ``ferry-sidecar`` run as local processes with their
own env (the downward-API owner fields resolved from the stored pod) and a
ServiceAccount token from the TokenRequest API in the folder their projected
volume would be. Then: the Secret exists before the app would start and its
secretKeyRef resolves; a rotation through the sidecar reaches it; deleting the
pod deletes it (kube-controller-manager's garbage collector); without the Role
the init container fails naming the verb, the resource and the ServiceAccount.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MotoEndpoint
from tests.e2e.kubelet import make_empty_dir, run_container, run_liveness_probe, start_container
from tests.support.ferrylib import REPO_ROOT, Ferry, app_container, pod, wait_for
from tests.support.secretlib import AdminApi

SERVICE_ACCOUNT = "shop-api"
PASSWORD = "first 'pass' $word\n"


def secret_provider_class() -> dict[str, Any]:
    """The worked example of docs/migration-from-csi.md: an SPC with secretObjects."""
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "shop-db"},
        "spec": {
            "provider": "aws",
            "parameters": {
                "region": "us-east-1",
                "objects": yaml.safe_dump(
                    [
                        {
                            "objectName": "shop/db",
                            "objectType": "secretsmanager",
                            "jmesPath": [{"path": "password", "objectAlias": "db-password"}],
                        }
                    ]
                ),
            },
            "secretObjects": [
                {
                    "secretName": "shop-db",
                    "type": "Opaque",
                    "labels": {"app": "shop"},
                    "data": [{"objectName": "db-password", "key": "password"}],
                }
            ],
        },
    }


def app_pod(name: str, service_account: str, refresh: str | None = None) -> dict[str, Any]:
    annotations = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "shop-db"}
    if refresh:
        annotations["ferry.dev/refresh-interval"] = refresh
    env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}]
    return pod(
        name,
        annotations=annotations,
        containers=[app_container(env=env)],
        serviceAccountName=service_account,
    )


@pytest.fixture
def node(moto_server: MotoEndpoint) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder every uid can enter, and the node's stand-ins: moto as AWS, the control plane as the API."""
    moto_server.reset()
    env = moto_server.env()
    moto_server.client().create_secret(Name="shop/db", SecretString=json.dumps({"password": PASSWORD}))
    folder = Path(tempfile.mkdtemp(prefix="ferry-e2e-node-"))
    os.chmod(folder, 0o755)
    try:
        yield folder, {**env, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _setup(ferry: Ferry, api: AdminApi, *, with_role: bool) -> str:
    ns = ferry.create_namespace("sync-e2e")
    manifest = secret_provider_class()
    assert ferry.apply(ns, [manifest]).returncode == 0
    api.service_account_token(ns, SERVICE_ACCOUNT)  # creates the ServiceAccount
    if with_role:
        spc_file = Path(tempfile.mkdtemp(prefix="ferry-e2e-spc-")) / "spc.yaml"
        spc_file.write_text(yaml.safe_dump(manifest))
        printed = subprocess.run(
            [sys.executable, "-m", "fetcher", "role", "--secret-provider-class", str(spc_file)]
            + ["--service-account", SERVICE_ACCOUNT, "--namespace", ns],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=True,
        )
        shutil.rmtree(spc_file.parent, ignore_errors=True)
        assert ferry.apply(ns, yaml.safe_load_all(printed.stdout)).returncode == 0
    return ns


def _kubelet_env(api: AdminApi, folder: Path, ns: str, node_env: dict[str, str]) -> dict[str, str]:
    """What the kubelet gives every container: the API's service address, and the projected token volume."""
    account = folder / "serviceaccount"
    account.mkdir(exist_ok=True)
    (account / "token").write_text(api.plane.token_for(ns, SERVICE_ACCOUNT))
    shutil.copyfile(api.ca_file, account / "ca.crt")
    for path in (account / "token", account / "ca.crt"):
        os.chmod(path, 0o444)
    os.chmod(account, 0o755)
    return {
        **node_env,
        "KUBERNETES_SERVICE_HOST": api.host,
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "FERRY_SERVICE_ACCOUNT_DIR": str(account),
    }


def _secret(api: AdminApi, ns: str) -> tuple[int, Any]:
    return api.admin_status("GET", f"/api/v1/namespaces/{ns}/secrets/shop-db")


def _value(api: AdminApi, ns: str, key: str) -> bytes | None:
    status, secret = _secret(api, ns)
    if status != 200 or key not in (secret.get("data") or {}):
        return None
    return base64.b64decode(secret["data"][key])


def test_the_secret_is_written_before_the_app_starts_rotates_and_goes_with_the_pod(
    serving_ferry: Ferry, control_plane: Any, node: tuple[Path, dict[str, str]], moto_server: MotoEndpoint
) -> None:
    api = AdminApi(control_plane)
    folder, node_env = node
    ns = _setup(serving_ferry, api, with_role=True)
    stored = serving_ferry.create_pod(ns, app_pod("shop", SERVICE_ACCOUNT, refresh="10s"))

    # Only Ferry's containers get the token volume, at the one path in-cluster clients read.
    ferry_containers = [c for c in stored["spec"]["initContainers"] if c["name"].startswith("ferry-")]
    assert [c["name"] for c in ferry_containers] == ["ferry-init", "ferry-sidecar"]
    for container in ferry_containers:
        at_token_path = [
            m["name"]
            for m in container["volumeMounts"]
            if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
        ]
        assert at_token_path == ["ferry-kube-api-access"], container["volumeMounts"]
    app = stored["spec"]["containers"][0]
    assert "ferry-kube-api-access" not in {m["name"] for m in app.get("volumeMounts") or []}

    env = _kubelet_env(api, folder, ns, node_env)
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    assert _secret(api, ns)[0] == 404
    result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, env, folder)
    assert result.returncode == 0, (folder / "ferry-init.termination-log").read_text() or result.stderr
    assert PASSWORD not in result.stdout + result.stderr

    # The init container has exited: the app's secretKeyRef resolves now, at its first start.
    ref = app["env"][0]["valueFrom"]["secretKeyRef"]
    assert _value(api, ns, ref["key"]) == PASSWORD.encode()
    status, secret = _secret(api, ns)
    assert secret["metadata"]["labels"] == {
        "app": "shop",
        "secrets-store.csi.k8s.io/managed": "true",
        "ferry.dev/managed-by": "ferry",
    }
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [stored["metadata"]["uid"]]

    # A rotation through the sidecar reaches the Secret.
    sidecar = start_container(stored, "ferry-sidecar", {"ferry-secrets": volume}, env, folder)
    try:
        moto_server.client().put_secret_value(SecretId="shop/db", SecretString='{"password": "second-password"}')
        wait_for(
            lambda: _value(api, ns, "password") == b"second-password",
            90,
            what="the sidecar to update the Secret",
            interval=0.5,
        )
        assert (volume / "db-password").read_text() == "second-password"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.communicate(timeout=30)

    # Deleting the pod deletes the Secret (garbage collection of its only owner's dependents).
    api.admin("DELETE", f"/api/v1/namespaces/{ns}/pods/shop?gracePeriodSeconds=0")
    wait_for(lambda: _secret(api, ns)[0] == 404, 120, what="the garbage collector to delete the Secret", interval=0.5)


def test_without_the_role_the_init_container_fails_naming_verb_resource_and_service_account(
    serving_ferry: Ferry, control_plane: Any, node: tuple[Path, dict[str, str]]
) -> None:
    api = AdminApi(control_plane)
    folder, node_env = node
    ns = _setup(serving_ferry, api, with_role=False)
    stored = serving_ferry.create_pod(ns, app_pod("shop", SERVICE_ACCOUNT))
    env = _kubelet_env(api, folder, ns, node_env)
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, env, folder)
    assert result.returncode == 1
    message = (folder / "ferry-init.termination-log").read_text()
    assert "patch" in message and "secrets" in message, message
    assert f"system:serviceaccount:{ns}:{SERVICE_ACCOUNT}" in message, message
    assert PASSWORD not in message + result.stdout + result.stderr
    assert _secret(api, ns)[0] == 404


def test_the_sidecar_repairs_a_deleted_secret_and_its_probe_fails_while_another_apps_secret_holds_the_name(
    serving_ferry: Ferry, control_plane: Any, node: tuple[Path, dict[str, str]]
) -> None:
    """Drift is repaired on the resync schedule; a sync that cannot succeed shows in the status entry and probe."""
    api = AdminApi(control_plane)
    folder, node_env = node
    ns = _setup(serving_ferry, api, with_role=True)
    manifest = app_pod("shop", SERVICE_ACCOUNT, refresh="10s")
    manifest["metadata"]["annotations"]["ferry.dev/sidecar-unhealthy-after"] = "10s"
    stored = serving_ferry.create_pod(ns, manifest)
    env = {**_kubelet_env(api, folder, ns, node_env), "FERRY_SECRET_RESYNC_SECONDS": "1"}
    volumes = {"ferry-secrets": make_empty_dir(folder / "ferry-secrets", stored)}
    assert run_container(stored, "ferry-init", volumes, env, folder).returncode == 0
    sidecar = start_container(stored, "ferry-sidecar", volumes, env, folder)
    try:
        status_file = volumes["ferry-secrets"] / "..ferry-status"
        wait_for(status_file.exists, 60, what="the sidecar's first cycle", interval=0.5)
        # Someone deletes the synced Secret: the next resync creates it again, though AWS did not change.
        api.admin("DELETE", f"/api/v1/namespaces/{ns}/secrets/shop-db")
        wait_for(lambda: _value(api, ns, "password") == PASSWORD.encode(), 90, what="the repair", interval=0.5)

        # Another app's Secret takes the name: Ferry leaves it alone, and says so where the probe looks.
        api.admin("DELETE", f"/api/v1/namespaces/{ns}/secrets/shop-db")
        api.admin(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets?fieldManager=other-app",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db"}, "stringData": {"k": "other"}},
        )
        failed = wait_for(
            lambda: (r := run_liveness_probe(stored, "ferry-sidecar", volumes, env, folder)).returncode == 1 and r,
            120,
            what="the liveness probe to fail",
            interval=1.0,
        )
        assert failed.stdout.startswith("unhealthy: refresh failing for "), failed.stdout
        assert 'Secret "shop-db"' in failed.stdout and "not created by Ferry" in failed.stdout, failed.stdout
        status = json.loads(status_file.read_text())
        assert status["ok"] is False and "shop-db" in status["last_error"]
        assert _value(api, ns, "k") == b"other"  # never written
        assert PASSWORD not in failed.stdout + json.dumps(status)
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.communicate(timeout=30)


def test_a_token_type_in_secret_objects_is_denied_at_admission(serving_ferry: Ferry, control_plane: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    api = AdminApi(control_plane)
    ns = serving_ferry.create_namespace("sync-e2e")
    manifest = secret_provider_class()
    manifest["spec"]["secretObjects"][0].update(
        type="kubernetes.io/service-account-token", annotations={"kubernetes.io/service-account.name": "ci-deployer"}
    )
    assert serving_ferry.apply(ns, [manifest]).returncode == 0
    api.service_account_token(ns, SERVICE_ACCOUNT)
    with pytest.raises(ApiException) as denied:
        serving_ferry.create_pod(ns, app_pod("shop", SERVICE_ACCOUNT))
    body = str(denied.value.body)
    assert "kubernetes.io/service-account-token is refused" in body and "secretObjects[0].type" in body, body


def test_the_init_container_stops_naming_another_apps_secret_and_leaves_it_alone(
    serving_ferry: Ferry, control_plane: Any, node: tuple[Path, dict[str, str]]
) -> None:
    api = AdminApi(control_plane)
    folder, node_env = node
    ns = _setup(serving_ferry, api, with_role=True)
    api.admin(
        "POST",
        f"/api/v1/namespaces/{ns}/secrets?fieldManager=billing-app",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db"}, "stringData": {"k": "billing"}},
    )
    stored = serving_ferry.create_pod(ns, app_pod("shop", SERVICE_ACCOUNT))
    env = _kubelet_env(api, folder, ns, node_env)
    volume = make_empty_dir(folder / "ferry-secrets", stored)

    result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, env, folder)

    assert result.returncode == 1
    message = (folder / "ferry-init.termination-log").read_text()
    assert f'Secret "shop-db" in namespace {ns}' in message and "not created by Ferry" in message, message
    assert "billing-app" in message  # who wrote it, to find its owner
    status, secret = _secret(api, ns)
    assert status == 200 and secret["data"] == {"k": base64.b64encode(b"billing").decode()}
    assert not secret["metadata"].get("ownerReferences")
    assert PASSWORD not in message + result.stdout + result.stderr
