"""images/stage.py, the build-stage steps: what the botocore trim keeps, and the version metadata.

Why it exists: the trim decides whether the fetcher image can talk to AWS at
all, so what it keeps is checked against the fetcher's own code and against
the botocore the project pins; tests/images/ then runs the trimmed image.
"""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path

import botocore
import pytest

from fetcher import aws
from tests.support.paths import REPO_ROOT, load_script

stage = load_script("images/stage.py", "image_stage")


def _site(tmp_path: Path, services: tuple[str, ...] = ("secretsmanager", "ssm", "sts", "s3", "ec2")) -> Path:
    site = tmp_path / "site-packages"
    data = site / "botocore" / "data"
    for name in stage.BOTOCORE_SHARED_FILES:
        (data).mkdir(parents=True, exist_ok=True)
        (data / name).write_text("{}")
    for service in services:
        version = data / service / "2020-01-01"
        version.mkdir(parents=True)
        (version / "service-2.json.gz").write_bytes(b"x" * 100)
        (version / "examples-1.json").write_bytes(b"e" * 10)
    (site / "boto3" / "data" / "s3" / "2006-03-01").mkdir(parents=True)
    (site / "boto3" / "data" / "s3" / "2006-03-01" / "resources-1.json").write_text("{}")
    (site / "bin").mkdir()
    (site / "bin" / "jp.py").write_text("#!/usr/bin/env python\n")
    return site


def test_prune_keeps_the_shared_files_and_the_fetcher_services_only(tmp_path: Path) -> None:
    site = _site(tmp_path)
    removed = stage.prune_botocore(site)
    data = site / "botocore" / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(stage.BOTOCORE_SHARED_FILES | stage.FETCHER_SERVICES)
    assert (data / "ssm" / "2020-01-01" / "service-2.json.gz").is_file()
    assert not list(data.rglob("examples-1.json"))
    assert not (site / "boto3" / "data").exists() and not (site / "bin").exists()
    assert removed >= 2 * 110 + 3 * 10  # s3 and ec2 models, three examples files


def test_prune_refuses_botocore_data_without_a_needed_file(tmp_path: Path) -> None:
    site = _site(tmp_path, services=("secretsmanager", "sts"))
    with pytest.raises(SystemExit, match="ssm"):
        stage.prune_botocore(site)
    assert (site / "botocore" / "data" / "secretsmanager").is_dir(), "nothing removed on refusal"


def test_kept_services_are_the_ones_the_fetcher_calls_plus_sts() -> None:
    called = set(typing.get_args(aws.Service))
    assert stage.FETCHER_SERVICES == called | {"sts"}  # sts: IRSA's AssumeRoleWithWebIdentity


def test_the_pinned_botocore_has_everything_the_trim_keeps() -> None:
    data = Path(botocore.__file__).parent / "data"
    present = {p.name for p in data.iterdir()}
    assert stage.BOTOCORE_SHARED_FILES | stage.FETCHER_SERVICES <= present


def test_prune_kubernetes_aio_drops_the_asyncio_client_and_aiohttp(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    for path in ("kubernetes/client", "kubernetes/aio/client", "aiohttp", "yarl", "yaml"):
        (site / path).mkdir(parents=True)
        (site / path / "__init__.py").write_text("x = 1\n")
    (site / "aiohttp-3.0.dist-info").mkdir()
    (site / "yaml-6.0.dist-info").mkdir()
    assert stage.prune_kubernetes_aio(site) > 0
    left = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_dir())
    assert left == ["kubernetes", "kubernetes/client", "yaml", "yaml-6.0.dist-info"]


def test_webhook_never_imports_the_asyncio_kubernetes_client() -> None:
    sources = "\n".join(p.read_text() for p in (REPO_ROOT / "webhook").glob("*.py"))
    assert "kubernetes.aio" not in sources and "aiohttp" not in sources


def test_write_metadata_makes_the_version_findable(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    stage.write_metadata(REPO_ROOT / "pyproject.toml", site)
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    from importlib.metadata import PathDistribution

    (dist_info,) = site.glob("ferry_secrets-*.dist-info")
    assert PathDistribution(dist_info).version == version
    assert PathDistribution(dist_info).metadata["Name"] == "ferry-secrets"
    # What `--version` does in the image: find the distribution by its name (only this folder is searched).
    from importlib.metadata import distributions

    (found,) = distributions(name="ferry-secrets", path=[str(site)])
    assert found.version == version


def test_prune_libyaml_leaves_the_pure_python_loader(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "yaml"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "loader.py").write_text("")
    (package / "_yaml.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0" * 64)
    assert stage.prune_libyaml(tmp_path / "site-packages") == 64
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "loader.py"]
