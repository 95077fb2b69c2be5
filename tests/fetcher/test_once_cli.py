"""`python -m fetcher once`: a failed run leaves the target as it was; help and region messages that do not mislead.

Why it exists: `once` is what a team runs by hand to check a migration from
the CSI driver, often into a directory that already holds something. A failure
must not leave half a set behind, `--help` must not promise a default for a
flag it requires, and a missing region must say where a region can come from.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from fetcher import writer
from fetcher.__main__ import main
from fetcher.errors import WriteError
from fetcher.writer import swap_directory
from tests.support.aws import REPO_ROOT, Seeder, fetcher_env

SPC_YAML = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app
spec:
  provider: aws
  parameters:
    objects: |
      - objectName: "app/a"
        objectType: "secretsmanager"
        objectAlias: a
      - objectName: "app/b"
        objectType: "secretsmanager"
        objectAlias: b
"""


def snapshot(root: Path) -> dict[str, tuple[str, str | bytes]]:
    """Every entry below `root`: symlinks by target, files by content, directories by presence."""
    found: dict[str, tuple[str, str | bytes]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_dir():
                found[relative] = ("dir", "")
            else:
                found[relative] = ("file", path.read_bytes())
    return found


def test_a_failed_once_leaves_the_target_exactly_as_it_was(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed.secret("app/a", "new-a")
    seed.secret("app/b", "new-b")
    out = tmp_path / "out"
    swap_directory(out, {"a": (b"old-a", 0o644)})
    (out / "b").write_bytes(b"someone's own file")  # in the way of the second link only
    before = snapshot(out)
    manifest = tmp_path / "spc.yaml"
    manifest.write_text(SPC_YAML)
    env = fetcher_env(moto.url)
    code = main(["once", "--secret-provider-class", str(manifest), "--dir", str(out), "--region", "us-east-1"], env)
    assert code == 1
    assert snapshot(out) == before
    assert (out / "a").read_bytes() == b"old-a"


def test_a_swap_failing_half_way_through_the_links_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    swap_directory(out, {"a": (b"old-a", 0o644), "b": (b"old-b", 0o644)})
    (out / "c").symlink_to("somewhere-of-its-own")  # a foreign symlink Ferry would replace, and must restore
    before = snapshot(out)
    real_symlink = os.symlink

    def symlink_failing_for_c(src: str, dst: str, *args: Any, **kwargs: Any) -> None:
        if src == "..data/c":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_symlink(src, dst, *args, **kwargs)

    monkeypatch.setattr(writer.os, "symlink", symlink_failing_for_c)
    with pytest.raises(WriteError):
        swap_directory(out, {"a": (b"new-a", 0o644), "b": (b"new-b", 0o644), "c": (b"new-c", 0o644)})
    assert snapshot(out) == before
    assert (out / "a").read_bytes() == b"old-a"


def test_once_help_names_no_default_for_its_required_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["once", "--help"], {})
    text = " ".join(capsys.readouterr().out.split())
    assert "--dir DIR" in text
    assert "default" not in text.split("--dir DIR", 2)[-1].split("--", 1)[0]
    assert "/var/run" not in text


def test_once_without_a_region_says_where_one_can_come_from(tmp_path: Path) -> None:
    manifest = tmp_path / "spc.yaml"
    manifest.write_text(SPC_YAML)
    termination = tmp_path / "term"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}
    code = main(
        [
            "once",
            "--secret-provider-class",
            str(manifest),
            "--dir",
            str(tmp_path / "out"),
            "--termination-log",
            str(termination),
        ],
        env,
    )
    assert code == 2
    message = termination.read_text()
    assert "--region" in message and "AWS_REGION" in message
    assert not (tmp_path / "out").exists()


def test_a_path_that_is_not_utf8_is_reported_not_crashed_on(tmp_path: Path) -> None:
    termination = tmp_path / "term"
    strange = os.fsdecode(os.fsencode(str(tmp_path)) + b"/spc-\xff.yaml")  # a lone surrogate once decoded
    code = main(
        [
            "once",
            "--secret-provider-class",
            strange,
            "--dir",
            str(tmp_path / "out"),
            "--termination-log",
            str(termination),
        ],
        {},
    )
    assert code == 2
    assert "cannot read" in termination.read_text()
    assert "spc-\\udcff.yaml" in termination.read_text()


DEPLOYMENT_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec: {template: {spec: {containers: [{name: a, image: i}]}}}
"""


def _once(tmp_path: Path, manifest_text: str, *extra: str) -> tuple[int, str]:
    manifest = tmp_path / "input.yaml"
    manifest.write_text(manifest_text)
    termination = tmp_path / "term"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)}
    args = ["once", "--secret-provider-class", str(manifest), "--dir", str(tmp_path / "out")]
    code = main([*args, "--termination-log", str(termination), *extra], env)
    return code, termination.read_text()


def test_a_deployment_passed_as_the_class_gets_the_kind_error_before_the_region_error(tmp_path: Path) -> None:
    code, message = _once(tmp_path, DEPLOYMENT_YAML)  # no region anywhere either
    assert code == 2
    assert "holds a Deployment, not a SecretProviderClass" in message
    assert "region" not in message


def test_missing_credentials_get_laptop_advice_once_not_pod_advice_per_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, message = _once(tmp_path, SPC_YAML, "--region", "us-east-1")
    assert code == 2
    assert "aws sso login" in message and "AWS_ACCESS_KEY_ID" in message
    assert "service account" not in message and "eks.amazonaws.com" not in message  # not in-pod advice
    err = capsys.readouterr().err
    assert err.count("no AWS credentials") == 1  # once, not once per object (the class has two)
    assert "app/a" not in message


def test_once_on_a_laptop_reads_a_profile_through_botocore(
    moto: Any, seed: Seeder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No keys in the environment, only AWS_PROFILE: `once` signs with the profile's keys (botocore's chain)."""
    seed.secret("app/a", "from the profile")
    seed.secret("app/b", "b")
    credentials = tmp_path / "credentials"
    credentials.write_text("[workload]\naws_access_key_id = AKIAPROFILE0000000\naws_secret_access_key = s\n")
    env = {key: value for key, value in fetcher_env(moto.url).items() if not key.startswith("AWS_ACCESS_KEY_ID")}
    env.pop("AWS_SECRET_ACCESS_KEY")
    env.update({"AWS_PROFILE": "workload", "AWS_SHARED_CREDENTIALS_FILE": str(credentials)})
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)  # botocore reads the process environment
    manifest = tmp_path / "spc.yaml"
    manifest.write_text(SPC_YAML)
    out = tmp_path / "out"
    code = main(["once", "--secret-provider-class", str(manifest), "--dir", str(out), "--region", "us-east-1"], env)
    assert code == 0
    assert (out / "a").read_bytes() == b"from the profile"
    monkeypatch.setenv("AWS_PROFILE", "nobody")  # a profile that does not exist: a clear identity error
    env["AWS_PROFILE"] = "nobody"
    capsys.readouterr()
    assert (
        main(["once", "--secret-provider-class", str(manifest), "--dir", str(out), "--region", "us-east-1"], env) == 1
    )
    stderr = capsys.readouterr().err
    assert "ProfileNotFound" in stderr and "the pod has no usable AWS identity" in stderr
    assert "Traceback" not in stderr
