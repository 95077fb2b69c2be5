"""Both images, built from their Dockerfiles with buildah and run from their own root filesystems.

Why it exists: the Dockerfiles are what users deploy, and a lint pass proves
little about them. Here each image is built for real (bases made from Debian
packages, see scripts/build_images.py), mounted, and its ENTRYPOINT is run
with chroot as the image's USER: the fetcher fetches from a moto server and
writes files; the webhook serves /healthz over TLS with a certificate its own
`certs` command made. The runtime root filesystems hold no shell, package
manager or pip, and the fetcher carries no AWS SDK.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.conftest import MotoEndpoint, free_port
from tests.images.conftest import BuiltImage, builder
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.images

IMAGE_UID = 65532
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]

# Anything that would let code in the container install software or run shell commands.
FORBIDDEN_PATHS = (
    "bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/bash", "usr/bin/dash", "bin/busybox",
    "usr/bin/apt", "usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/pip", "usr/bin/pip3", "usr/local/bin/pip",
    "usr/bin/curl", "usr/bin/wget",
)  # fmt: skip


def _seed(moto: MotoEndpoint) -> None:
    common: dict[str, Any] = {
        "endpoint_url": moto.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    moto.reset()
    boto3.client("secretsmanager", **common).create_secret(
        Name="prod/db", SecretString=json.dumps({"username": "app", "password": "hunter2-image"})
    )
    boto3.client("ssm", **common).put_parameter(Name="/prod/db-host", Value="db.internal", Type="String")


SPC = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "db", "namespace": "default"},
    "spec": {
        "provider": "aws",
        "parameters": {
            "region": "us-east-1",
            "objects": yaml.safe_dump(
                [
                    {
                        "objectName": "prod/db",
                        "objectType": "secretsmanager",
                        "jmesPath": [{"path": "password", "objectAlias": "db-password"}],
                    },
                    {"objectName": "/prod/db-host", "objectType": "ssmparameter", "objectAlias": "db-host"},
                ]
            ),
        },
    },
}


def _in_image_dir(rootfs: Path, name: str) -> Path:
    """A directory inside the image, owned by the image's user (the pod's emptyDir, say)."""
    path = rootfs / "tmp" / name
    path.mkdir(parents=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


def test_images_run_as_the_nonroot_user(fetcher_image: BuiltImage, webhook_image: BuiltImage) -> None:
    for image in (fetcher_image, webhook_image):
        assert image.config.user == f"{IMAGE_UID}:{IMAGE_UID}"  # type: ignore[attr-defined]
    assert fetcher_image.config.entrypoint == ["python3", "-m", "fetcher"]  # type: ignore[attr-defined]
    assert webhook_image.config.entrypoint == ["python3", "-m", "webhook"]  # type: ignore[attr-defined]


def test_fetcher_image_fetches_from_moto_and_writes_files(
    fetcher_image: BuiltImage, fetcher_rootfs: Path, moto_server: MotoEndpoint
) -> None:
    _seed(moto_server)
    work = _in_image_dir(fetcher_rootfs, "work")
    (work / "spc.yaml").write_text(yaml.safe_dump(SPC))
    out = _in_image_dir(fetcher_rootfs, "secrets")
    result = builder.run_in_image(
        fetcher_rootfs,
        fetcher_image.config,
        ["once", "--secret-provider-class", "/tmp/work/spc.yaml", "--dir", "/tmp/secrets",
         "--termination-log", "/tmp/work/termination-log"],
        env=moto_server.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "db-password").read_text() == "hunter2-image"
    assert (out / "db-host").read_text() == "db.internal"
    assert (out / "prod_db").is_file()  # the whole secret too, under ASCP's translated name
    assert (out / "db-password").stat().st_uid == IMAGE_UID
    assert "hunter2-image" not in result.stdout + result.stderr


def test_fetcher_image_fails_with_the_aws_error_and_writes_nothing(
    fetcher_image: BuiltImage, fetcher_rootfs: Path, moto_server: MotoEndpoint
) -> None:
    _seed(moto_server)
    work = _in_image_dir(fetcher_rootfs, "work")
    missing = {**SPC, "spec": {**SPC["spec"], "parameters": {"region": "us-east-1", "objects": yaml.safe_dump(
        [{"objectName": "prod/absent", "objectType": "secretsmanager"}])}}}  # fmt: skip
    (work / "spc.yaml").write_text(yaml.safe_dump(missing))
    out = _in_image_dir(fetcher_rootfs, "secrets")
    result = builder.run_in_image(
        fetcher_rootfs,
        fetcher_image.config,
        ["once", "--secret-provider-class", "/tmp/work/spc.yaml", "--dir", "/tmp/secrets",
         "--termination-log", "/tmp/work/termination-log"],
        env=moto_server.env(),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    message = (work / "termination-log").read_text()
    assert "prod/absent" in message and "ResourceNotFoundException" in message and "us-east-1" in message
    assert list(out.iterdir()) == []


def test_webhook_image_serves_healthz_over_tls(webhook_image: BuiltImage, webhook_rootfs: Path) -> None:
    work = _in_image_dir(webhook_rootfs, "work")
    certs = builder.run_in_image(
        webhook_rootfs,
        webhook_image.config,
        ["certs", "--dns-name", "localhost", "--ip", "127.0.0.1", "--out-dir", "/tmp/work/tls"],
    )
    assert certs.returncode == 0, certs.stderr[-3000:]
    (work / "spcs.yaml").write_text(yaml.safe_dump(SPC))
    port = free_port()
    server = builder.run_in_image(
        webhook_rootfs,
        webhook_image.config,
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--tls-cert-file", "/tmp/work/tls/tls.crt",
         "--tls-key-file", "/tmp/work/tls/tls.key", "--secret-provider-class", "/tmp/work/spcs.yaml"],
        env={"KUBECONFIG": "/tmp/work/no-kubeconfig", "FERRY_METRICS_PORT": str(free_port())},
        background=True,
    )  # fmt: skip
    assert isinstance(server, subprocess.Popen)
    context = ssl.create_default_context(cafile=str(work / "tls" / "ca.crt"))
    try:
        body = _get_when_up(f"https://127.0.0.1:{port}/healthz", context, server)
        assert body is not None
        # `serve` runs without the benchmark's /noop endpoint.
        request = urllib.request.Request(f"https://127.0.0.1:{port}/noop", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, context=context, timeout=10)
        denied.value.close()
        assert denied.value.code in (404, 405)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0, stderr[-3000:]


def _get_when_up(url: str, context: ssl.SSLContext, server: subprocess.Popen[str]) -> bytes | None:
    """GET `url` once the server listens (polls until it answers or exits; no fixed sleep decides the result)."""
    while server.poll() is None:
        try:
            with urllib.request.urlopen(url, context=context, timeout=10) as response:
                assert response.status == 200
                return bytes(response.read())
        except (ConnectionError, urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise
            time.sleep(0.2)
    _, stderr = server.communicate()
    pytest.fail(f"the webhook exited {server.returncode} before serving:\n{stderr[-3000:]}")


@pytest.mark.parametrize("name", ["fetcher", "webhook"])
def test_version_in_the_image(name: str, fetcher_image: BuiltImage, webhook_image: BuiltImage) -> None:
    image = {"fetcher": fetcher_image, "webhook": webhook_image}[name]
    with builder.mounted(image.tag) as rootfs:
        result = builder.run_in_image(rootfs, image.config, ["--version"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"ferry {VERSION}"


@pytest.mark.parametrize("name", ["fetcher", "webhook"])
def test_runtime_has_no_shell_package_manager_or_pip(
    name: str, fetcher_image: BuiltImage, webhook_image: BuiltImage
) -> None:
    image = {"fetcher": fetcher_image, "webhook": webhook_image}[name]
    with builder.mounted(image.tag) as rootfs:
        present = [path for path in FORBIDDEN_PATHS if os.path.lexists(rootfs / path)]
        site = rootfs / "opt" / "ferry" / "site-packages"
        assert (site / "yaml").is_dir()  # the check looks at a real root filesystem
        assert not (site / "pip").exists() and not list(site.glob("pip-*.dist-info"))
        interpreter = dataclasses.replace(image.config, entrypoint=["python3"])  # type: ignore[type-var]
        pip = builder.run_in_image(rootfs, interpreter, ["-m", "pip", "--version"])
    assert present == []
    assert pip.returncode != 0, "pip runs inside the image"


def test_fetcher_image_carries_no_aws_sdk(fetcher_rootfs: Path) -> None:
    """The fetcher calls AWS with the standard library (issue 16): only what the pod runs is in the image."""
    site = fetcher_rootfs / "opt" / "ferry" / "site-packages"
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert installed == {"jmespath", "pyyaml", "ferry_secrets"}
    for name in ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "awscrt"):
        assert not (site / name).exists(), name


def test_fetcher_image_holds_bytecode_only(fetcher_rootfs: Path) -> None:
    """Only what the pod runs: each module as its .pyc, no sources, no cached copies, no dependency scripts."""
    ferry = fetcher_rootfs / "opt" / "ferry"
    assert (ferry / "app" / "fetcher" / "__main__.pyc").is_file()
    assert not list(ferry.rglob("*.py"))
    assert not list(ferry.rglob("__pycache__"))
    assert not (ferry / "site-packages" / "bin").exists()
    assert not (ferry / "site-packages" / "_yaml").exists()  # a shim for the pruned libyaml binding


def test_fetcher_image_parses_yaml_without_libyaml(fetcher_image: BuiltImage, fetcher_rootfs: Path) -> None:
    """The libyaml binding is gone and PyYAML's own SafeLoader reads an SPC (the `once` test reads one too)."""
    site = fetcher_rootfs / "opt" / "ferry" / "site-packages"
    assert not list((site / "yaml").glob("_yaml*.so"))
    interpreter = dataclasses.replace(fetcher_image.config, entrypoint=["python3"])  # type: ignore[type-var]
    result = builder.run_in_image(
        fetcher_rootfs, interpreter, ["-c", "import yaml; print(yaml.__with_libyaml__, yaml.safe_load('a: [1]'))"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False {'a': [1]}"


def test_webhook_image_has_no_aws_sdk_and_no_asyncio_kubernetes_copy(webhook_rootfs: Path) -> None:
    site = webhook_rootfs / "opt" / "ferry" / "site-packages"
    assert (site / "kubernetes" / "client").is_dir()
    for name in ("boto3", "botocore", "s3transfer", "kubernetes/aio", "aiohttp"):
        assert not (site / name).exists(), name


def test_fetcher_image_stays_small(fetcher_rootfs: Path) -> None:
    """What Ferry adds on top of the runtime base (packages, code, bytecode): a budget against regressions.

    docs/benchmarks.md records the measured sizes; this only catches a change
    that brings back an AWS SDK (botocore alone is about 5 MB trimmed, 25 MB whole).
    """
    assert builder.du(fetcher_rootfs / "opt" / "ferry") < 4 * 1024 * 1024


def test_a_release_archive_loads_as_the_image_it_holds(
    fetcher_image: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release workflow tests its own OCI archive (a multi-platform index): loading gives that very image."""
    index = f"localhost/ferry-release-index:test-{os.getpid()}"
    builder.buildah("manifest", "create", index)
    try:
        builder.buildah("manifest", "add", index, fetcher_image.tag)
        builder.buildah("manifest", "push", "--all", "--quiet", index, f"oci-archive:{tmp_path / 'ferry-fetcher.tar'}")
    finally:
        builder.buildah("manifest", "rm", index)
    monkeypatch.setenv(builder.ARCHIVE_DIR_ENV, str(tmp_path))
    archive = builder.release_archive("fetcher")
    assert archive == tmp_path / "ferry-fetcher.tar"
    loaded = f"localhost/ferry-fetcher:loaded-{os.getpid()}"
    image_id = builder.load_archive(archive, loaded)
    try:
        built = json.loads(builder.buildah("inspect", "--type", "image", fetcher_image.tag))
        assert image_id == built["FromImageID"] and builder.image_config(loaded) == fetcher_image.config
    finally:
        builder.remove_image(loaded)
