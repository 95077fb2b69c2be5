"""The kubelet step for Google Secret Manager: a `provider: gcp` SPC from the GCP provider's examples, unchanged.

Why it exists: "existing SPCs work unchanged" must hold through the real API server, with the token the API
server itself issues. The class is created in a namespace that names the cluster's workload pool, the pod is
admitted by Ferry, and the stored pod's init container and sidecar run as local processes (tests.e2e.kubelet)
against the loopback Google fake. The projected token is what the kubelet would write: a TokenRequest for the
pod's ServiceAccount with the volume's audience.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.kubelet import make_empty_dir, run_container, start_container
from tests.support.ferrylib import Ferry, pod, wait_for
from tests.support.gcpfake import POOL, PROVIDER, GcpFake

PROJECT = "ferry-test"
# examples/app-secrets-with-extract-key.yaml.tmpl of secrets-store-csi-driver-provider-gcp v1.15.0, as a user
# renders it (envsubst of $PROJECT_ID); nothing else is changed.
PROVIDER_EXAMPLE = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app-secrets-with-extract-key
spec:
  provider: gcp
  parameters:
    secrets: |
      - resourceName: "projects/$PROJECT_ID/secrets/testsecret/versions/latest"
        path: "good1.txt"
        extractJSONKey: "user"
      - resourceName: "projects/$PROJECT_ID/locations/us-central1/secrets/testsecret/versions/latest"
        path: "good2.txt"
        extractJSONKey: "user"
""".replace("$PROJECT_ID", PROJECT)


@contextmanager
def example_secrets() -> Iterator[GcpFake]:
    """A Google fake holding the secret the provider's example reads, global and in us-central1."""
    with GcpFake() as fake:
        fake.add_version(PROJECT, "testsecret", '{"user": "global-user"}')
        fake.add_version(PROJECT, "testsecret", '{"user": "regional-user"}', location="us-central1")
        yield fake


@pytest.fixture
def google() -> Iterator[GcpFake]:
    with example_secrets() as fake:
        yield fake


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ferry-e2e-gke-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _admitted(ferry: Ferry, google: GcpFake, **annotations: str) -> tuple[str, dict[str, Any]]:
    ns = ferry.create_namespace(
        "gke", annotations={"ferry.dev/gcp-workload-pool": POOL, "ferry.dev/gcp-identity-provider": PROVIDER}
    )
    google.grant(f"{ns}/default", f"projects/{PROJECT}/")
    ferry.apply(ns, [yaml.safe_load(PROVIDER_EXAMPLE)], check=True)
    values = {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "app-secrets-with-extract-key"}
    manifest = pod("app", annotations={**values, **annotations})
    manifest["spec"]["securityContext"]["fsGroup"] = 2000
    stored: dict[str, Any] = {}

    def admitted() -> bool:  # the watch cache may not have the new class yet
        try:
            stored.update(ferry.create_pod(ns, manifest))
        except Exception:  # noqa: BLE001 - ApiException until the class is in the cache
            return False
        return True

    wait_for(admitted, timeout=30, what="the pod admitted with its SecretProviderClass")
    return ns, stored


def _volumes(ferry: Ferry, ns: str, stored: dict[str, Any], folder: Path) -> tuple[dict[str, Path], Path]:
    """The emptyDir, and the projected token as the kubelet writes it (TokenRequest with the volume's audience)."""
    volume = next(v for v in stored["spec"]["volumes"] if v["name"] == "ferry-gcp-token")
    audience = volume["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    token_dir = folder / "gcp-token"
    token_dir.mkdir()
    (token_dir / "token").write_text(ferry.plane.token_for(ns, stored["spec"]["serviceAccountName"], audience))
    os.chmod(token_dir / "token", 0o444)
    return {"ferry-secrets": make_empty_dir(folder / "ferry-secrets", stored), "ferry-gcp-token": token_dir}, token_dir


def _node_env(google: GcpFake, token_dir: Path) -> dict[str, str]:
    # The image's path /var/run/secrets/ferry.dev/gcp/token is the mapped folder here, as the kubelet mounts it.
    return google.env(token_dir / "token")


def test_a_gcp_spc_from_the_providers_examples_works_unchanged(
    serving_ferry: Ferry, google: GcpFake, folder: Path
) -> None:
    ns, stored = _admitted(serving_ferry, google)
    volumes, token_dir = _volumes(serving_ferry, ns, stored, folder)
    result = run_container(stored, "ferry-init", volumes, _node_env(google, token_dir), folder)
    assert result.returncode == 0, result.stderr
    out = volumes["ferry-secrets"]
    assert (out / "good1.txt").read_text() == "global-user"
    assert (out / "good2.txt").read_text() == "regional-user"
    info = (out / "good1.txt").stat()
    assert stat.S_IMODE(info.st_mode) == 0o644 and (info.st_uid, info.st_gid) == (1000, 2000)
    assert google.calls["secretmanager.us-central1.rep.googleapis.com AccessSecretVersion"] == 1
    assert google.count("Metadata") == 0
    assert "global-user" not in result.stdout + result.stderr


def test_the_sidecar_follows_latest_with_versions_get_only(serving_ferry: Ferry, google: GcpFake, folder: Path) -> None:
    ns, stored = _admitted(serving_ferry, google, **{"ferry.dev/refresh-interval": "10s"})
    volumes, token_dir = _volumes(serving_ferry, ns, stored, folder)
    sidecar = start_container(stored, "ferry-sidecar", volumes, _node_env(google, token_dir), folder)
    try:
        out = volumes["ferry-secrets"]
        wait_for(lambda: (out / "good1.txt").exists(), timeout=60, what="the first delivery")
        wait_for(lambda: google.count("GetSecretVersion") >= 2, timeout=40, what="one unchanged refresh")
        assert google.count("AccessSecretVersion") == 2  # the unchanged refresh read no value
        google.add_version(PROJECT, "testsecret", '{"user": "rotated-user"}')
        wait_for(lambda: (out / "good1.txt").read_text() == "rotated-user", timeout=40, what="the rotation")
        assert (out / "good2.txt").read_text() == "regional-user"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            _, err = sidecar.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            _, err = sidecar.communicate()
    assert sidecar.returncode == 0, err
    assert "rotated-user" not in err and "global-user" not in err


def test_an_app_container_cannot_mount_the_workload_pool_token(serving_ferry: Ferry) -> None:
    """Without Ferry the API server refuses a mount of an undeclared volume; Ferry declares ferry-gcp-token, so a
    pod that mounts it in its own container would store fine and hand the app the pool token. Ferry denies it."""
    from kubernetes.client.exceptions import ApiException

    from tests.support.ferrylib import app_container

    ns = serving_ferry.create_namespace(
        "gke", annotations={"ferry.dev/gcp-workload-pool": POOL, "ferry.dev/gcp-identity-provider": PROVIDER}
    )
    thief = {**app_container(), "volumeMounts": [{"name": "ferry-gcp-token", "mountPath": "/stolen", "readOnly": True}]}
    objects = f"- resourceName: projects/{PROJECT}/secrets/testsecret/versions/latest\n  path: good1.txt\n"
    annotations = {"ferry.dev/inject": "true", "ferry.dev/provider": "gcp", "ferry.dev/objects": objects}
    manifest = pod("thief", annotations=annotations, containers=[thief])
    with pytest.raises(ApiException) as caught:
        serving_ferry.create_pod(ns, manifest)
    assert "'ferry-gcp-token', which is Ferry's" in str(caught.value.body)
