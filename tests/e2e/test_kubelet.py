"""The kubelet step: run what Ferry injected, as stored by the API server, against moto.

Why it exists: a pod the API server accepts can still never start, if the
injected container cannot do its job with the identity and volume it is given
(the container-level runAsGroup bug was of that kind). Here the init container
and the sidecar of stored pods run as local processes with their own command,
args, env, uid, gid and groups; the files, their modes and owners are checked,
and the sidecar goes through one rotation.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest

from tests.conftest import MotoEndpoint
from tests.e2e.kubelet import identity_of, make_empty_dir, run_container, run_liveness_probe, start_container
from tests.support.ferrylib import Ferry, opted_pod, wait_for

OBJECTS = """
- objectName: e2e/db
  objectType: secretsmanager
  jmesPath:
    - {path: username, objectAlias: db-user}
    - {path: password, objectAlias: db-password}
- objectName: /e2e/flags
  objectType: ssmparameter
  objectAlias: flags
"""


@pytest.fixture
def node(moto_server: MotoEndpoint) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder that every uid can enter, and the node's AWS stand-in (moto), with secrets in it."""
    moto_server.reset()
    env = moto_server.env()
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    session.client("secretsmanager", endpoint_url=moto_server.url).create_secret(
        Name="e2e/db", SecretString='{"username": "app", "password": "first-password"}'
    )
    session.client("ssm", endpoint_url=moto_server.url).put_parameter(Name="/e2e/flags", Value="on", Type="String")
    folder = Path(tempfile.mkdtemp(prefix="ferry-e2e-node-"))
    os.chmod(folder, 0o755)
    try:
        yield folder, {**env, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _stored(
    ferry: Ferry, security: dict[str, Any], container_security: dict[str, Any] | None = None, **extra: str
) -> dict[str, Any]:
    ns = ferry.create_namespace("kubelet")
    manifest = opted_pod("app", extra={"ferry.dev/objects": OBJECTS, **extra})
    manifest["spec"]["securityContext"] = security
    if container_security:
        manifest["spec"]["containers"][0]["securityContext"].update(container_security)
    return ferry.create_pod(ns, manifest)


def _read(volume: Path, name: str) -> str:
    return (volume / name).read_text()


def test_init_container_writes_the_files_with_modes_and_owners(
    serving_ferry: Ferry, node: tuple[Path, dict[str, str]]
) -> None:
    folder, node_env = node
    stored = _stored(
        serving_ferry,
        {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
    )
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, node_env, folder)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in volume.iterdir() if not p.name.startswith("..")) == [
        "db-password",
        "db-user",
        "e2e_db",
        "flags",
    ]
    assert _read(volume, "db-password") == "first-password"
    assert _read(volume, "flags") == "on"
    assert (volume / "..data").is_symlink()
    for name in ("db-password", "db-user", "e2e_db", "flags"):
        info = (volume / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o644, name
        assert (info.st_uid, info.st_gid) == (1000, 2000), name
    # The process really ran as the pod's user, not as root.
    assert (
        identity_of(stored, next(c for c in stored["spec"]["initContainers"] if c["name"] == "ferry-init")).uid == 1000
    )
    assert "first-password" not in result.stdout + result.stderr


def test_sidecar_rotates_the_files_once(
    serving_ferry: Ferry, node: tuple[Path, dict[str, str]], moto_server: MotoEndpoint
) -> None:
    folder, node_env = node
    stored = _stored(
        serving_ferry,
        {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        **{"ferry.dev/refresh-interval": "10s"},
    )
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    assert run_container(stored, "ferry-init", {"ferry-secrets": volume}, node_env, folder).returncode == 0
    generation = os.readlink(volume / "..data")
    sidecar = start_container(stored, "ferry-sidecar", {"ferry-secrets": volume}, node_env, folder)
    try:
        time.sleep(0.5)
        assert sidecar.poll() is None, sidecar.communicate()
        rotated = '{"username": "app", "password": "second-password"}'
        moto_server.client().put_secret_value(SecretId="e2e/db", SecretString=rotated)
        wait_for(
            lambda: _read(volume, "db-password") == "second-password", 60, what="the sidecar's rotation", interval=0.5
        )
        assert os.readlink(volume / "..data") != generation
        assert _read(volume, "flags") == "on"
        assert (volume / "db-password").stat().st_gid == 2000
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            out, err = sidecar.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            out, err = sidecar.communicate()
    assert sidecar.returncode == 0, err
    assert "second-password" not in out + err and "first-password" not in out + err


def test_a_failing_sidecar_fails_its_liveness_probe(
    serving_ferry: Ferry, node: tuple[Path, dict[str, str]], moto_server: MotoEndpoint
) -> None:
    """The secret is deleted after the pod started: the sidecar keeps the files, and its probe fails after N."""
    folder, node_env = node
    stored = _stored(
        serving_ferry,
        {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        **{"ferry.dev/refresh-interval": "10s", "ferry.dev/sidecar-unhealthy-after": "10s"},
    )
    probe = next(c for c in stored["spec"]["initContainers"] if c["name"] == "ferry-sidecar")["livenessProbe"]
    assert probe["exec"]["command"][-2:] == ["--unhealthy-after", "10"]  # as the API server stored it
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    volumes = {"ferry-secrets": volume}
    assert run_container(stored, "ferry-init", volumes, node_env, folder).returncode == 0
    moto_server.client().delete_secret(SecretId="e2e/db", ForceDeleteWithoutRecovery=True)
    sidecar = start_container(stored, "ferry-sidecar", volumes, node_env, folder)
    try:
        first = wait_for(
            lambda: (
                (r := run_liveness_probe(stored, "ferry-sidecar", volumes, node_env, folder)).stdout.startswith(
                    "refresh failing"
                )
                and r
            ),
            60,
            what="the sidecar's first failed refresh",
            interval=0.5,
        )
        assert first.returncode == 0  # failing, but not for 10 s yet
        failed = wait_for(
            lambda: (r := run_liveness_probe(stored, "ferry-sidecar", volumes, node_env, folder)).returncode == 1 and r,
            60,
            what="the liveness probe to fail",
            interval=1.0,
        )
        assert failed.stdout.startswith("unhealthy: refresh failing for ")
        assert "e2e/db" in failed.stdout and "ResourceNotFoundException" in failed.stdout
        assert "us-east-1" in failed.stdout
        assert _read(volume, "db-password") == "first-password"  # the last good files stay
        assert "first-password" not in failed.stdout + failed.stderr
        assert (volume / "..ferry-status").stat().st_uid == 1000  # written by the sidecar, as the pod's user
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            sidecar.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            sidecar.communicate()


ROLE = "arn:aws:iam::222233334444:role/e2e-reader"
SECURE = {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}}


def _stored_with(ferry: Ferry, objects: str) -> dict[str, Any]:
    ns = ferry.create_namespace("kubelet")
    manifest = opted_pod("app", extra={"ferry.dev/objects": objects})
    manifest["spec"]["securityContext"] = SECURE
    return ferry.create_pod(ns, manifest)


def test_a_role_per_object_pod_reads_another_accounts_secret_and_names_itself(
    serving_ferry: Ferry, node: tuple[Path, dict[str, str]], moto_server: MotoEndpoint
) -> None:
    from tests.support.aws import LocalHttpStub, forwarding_sts, seed_in_account

    folder, node_env = node
    seed_in_account(moto_server.url, ROLE, "shared/db", "from account 2222")
    objects = f"- objectName: shared/db\n  objectType: secretsmanager\n  roleArn: {ROLE}\n  externalId: e2e-42\n"
    stored = _stored_with(serving_ferry, objects)
    sts = LocalHttpStub(forwarding_sts(moto_server.url)).start()
    try:
        volume = make_empty_dir(folder / "ferry-secrets", stored)
        env = {**node_env, "AWS_ENDPOINT_URL_STS": sts.url}
        result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, env, folder)
    finally:
        sts.stop()
    assert result.returncode == 0, result.stderr
    assert _read(volume, "shared_db") == "from account 2222"
    [assume] = sts.requests
    sent = {key: values[0] for key, values in parse_qs(assume.body.decode()).items()}
    namespace, pod_name = stored["metadata"]["namespace"], stored["metadata"]["name"]
    assert sent["RoleArn"] == ROLE and sent["ExternalId"] == "e2e-42"
    assert sent["RoleSessionName"] == f"ferry.{namespace}.{pod_name}"
    assert sent["SourceIdentity"] == f"default@{namespace}"
    tags = {sent[f"Tags.member.{n}.Key"]: sent[f"Tags.member.{n}.Value"] for n in (1, 2, 3)}
    assert tags == {
        "kubernetes-namespace": namespace,
        "kubernetes-service-account": "default",
        "kubernetes-pod-name": pod_name,
    }


def test_a_discovery_pod_writes_what_it_finds_and_a_json_secret_key_by_key(
    serving_ferry: Ferry, node: tuple[Path, dict[str, str]], moto_server: MotoEndpoint
) -> None:
    folder, node_env = node
    ssm = moto_server.client("ssm")
    for name, value in (("/e2e/conf/a", "1"), ("/e2e/conf/deep/b", "2")):
        ssm.put_parameter(Name=name, Value=value, Type="SecureString")
    objects = (
        "- objectName: /e2e/conf\n  objectType: ssmparameter\n  objectAlias: conf\n  discover: {recursive: true}\n"
        "- objectName: e2e/db\n  objectType: secretsmanager\n  objectAlias: db\n  expandJson: true\n"
    )
    stored = _stored_with(serving_ferry, objects)
    volume = make_empty_dir(folder / "ferry-secrets", stored)
    result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, node_env, folder)
    assert result.returncode == 0, result.stderr
    assert _read(volume, "conf/a") == "1" and _read(volume, "conf/deep_b") == "2"
    assert _read(volume, "db/username") == "app" and _read(volume, "db/password") == "first-password"
    assert (volume / "db" / "password").stat().st_uid == 1000
    assert "first-password" not in result.stdout + result.stderr
