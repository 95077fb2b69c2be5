"""`python -m fetcher` as the pod runs it: a real subprocess, the spec in FERRY_SPEC, AWS at moto over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fetcher.__main__ import main, write_termination_message
from fetcher.contract import spec_to_json
from fetcher.writer import DATA_LINK
from tests.support.aws import FETCHER_COMMAND, REPO_ROOT, Seeder, fetcher_env, make_spec

SPC_YAML = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: shop
  namespace: shop
spec:
  provider: aws
  parameters:
    objects: |
      - objectName: "shop/db"
        objectType: "secretsmanager"
        jmesPath:
          - path: username
            objectAlias: db-user
      - objectName: "/shop/url"
        objectType: "ssmparameter"
"""


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FETCHER_COMMAND, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def seed_shop(seed: Seeder) -> None:
    seed.secret("shop/db", json.dumps({"username": "shop_app", "password": "x"}))
    seed.parameter("/shop/url", "postgres://db.shop:5432/shop")


def test_init_writes_the_files_and_exits_zero(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed_shop(seed)
    spec = make_spec(
        [
            {
                "objectName": "shop/db",
                "objectType": "secretsmanager",
                "filePermission": "0640",
                "jmesPath": [{"path": "username", "objectAlias": "db-user"}],
            },
            {"objectName": "/shop/url", "objectType": "ssmparameter"},
        ]
    )
    termination = tmp_path / "termination-log"
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(termination))
    result = run(["init", "--dir", str(tmp_path / "out")], env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert (out / "db-user").read_bytes() == b"shop_app"
    assert (out / "_shop_url").read_bytes() == b"postgres://db.shop:5432/shop"
    assert json.loads((out / "shop_db").read_text())["username"] == "shop_app"
    assert oct((out / "shop_db").stat().st_mode & 0o777) == oct(0o640)
    assert not termination.exists()
    lines = json_lines(result.stderr)
    assert all({"ts", "level", "msg"} <= set(line) for line in lines)
    assert lines[-1]["msg"] == "files written" and lines[-1]["api_calls"] == 2


def test_init_failure_writes_nothing_and_says_why(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed_shop(seed)
    spec = make_spec(
        [
            {"objectName": "shop/db", "objectType": "secretsmanager"},
            {"objectName": "shop/missing", "objectType": "secretsmanager"},
        ]
    )
    termination = tmp_path / "termination-log"
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(termination))
    result = run(["init", "--dir", str(tmp_path / "out")], env)
    assert result.returncode == 1
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    message = termination.read_text()
    assert message.startswith("secret 'shop/missing' in us-east-1: ResourceNotFoundException from GetSecretValue")
    assert "Hint: " in message
    assert json_lines(result.stderr)[-1] == {
        **json_lines(result.stderr)[-1],
        "level": "error",
        "msg": "init failed",
        "error": message,
        "exit_code": 1,
    }


# The cases below run `main()` in-process (the same code path without a new interpreter), to keep the suite fast.


def test_init_without_a_spec_is_a_configuration_error(moto: Any, tmp_path: Path) -> None:
    termination = tmp_path / "term"
    code = main(["init", "--dir", str(tmp_path / "out"), "--termination-log", str(termination)], fetcher_env(moto.url))
    assert code == 2
    assert "FERRY_SPEC is not set" in termination.read_text()


def test_init_with_a_tampered_spec_is_rejected_before_any_call(moto: Any, tmp_path: Path) -> None:
    wire = json.loads(spec_to_json(make_spec([{"objectName": "db", "objectType": "secretsmanager"}])))
    wire["objects"][0]["objectAlias"] = "/etc/passwd"
    termination = tmp_path / "term"
    env = fetcher_env(moto.url, FERRY_SPEC=json.dumps(wire), FERRY_TERMINATION_LOG=str(termination))
    assert main(["init", "--dir", str(tmp_path / "out")], env) == 2
    assert "objects[0].objectAlias: '/etc/passwd' is an absolute path" in termination.read_text()


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"refreshSeconds": "x"}, "FERRY_SPEC.refreshSeconds", "must be a number of seconds"),
        ({"refreshSeconds": 8 * 24 * 3600}, "FERRY_SPEC.refreshSeconds", "over 7 days"),
        ({"refreshSeconds": -5}, "FERRY_SPEC.refreshSeconds", "non-negative"),
        ({"notify": [1]}, "FERRY_SPEC.notify", "must be a JSON object"),
        ({"notify": {"signal": "SIGHUP"}}, "FERRY_SPEC.notify.process", "is missing"),
        ({"notify": {"process": "nginx"}}, "FERRY_SPEC.notify.signal", "is missing"),
        ({"notify": {"url": 7}}, "FERRY_SPEC.notify.url", "must be a string"),
        ({"notify": {"signal": "SIGKILL", "process": "app"}}, "FERRY_SPEC.notify", "must be SIGNAL:process-name"),
        ({"fileUid": "0"}, "FERRY_SPEC.fileUid", "non-negative integer"),
        ({"region": 5}, "FERRY_SPEC.region", "is not an AWS region"),
    ],
)
def test_a_hand_edited_spec_exits_2_naming_the_field(
    moto: Any, tmp_path: Path, change: dict[str, Any], field: str, reason: str
) -> None:
    wire = json.loads(spec_to_json(make_spec([{"objectName": "db", "objectType": "secretsmanager"}]))) | change
    termination = tmp_path / "term"
    env = fetcher_env(moto.url, FERRY_SPEC=json.dumps(wire), FERRY_TERMINATION_LOG=str(termination))
    assert main(["init", "--dir", str(tmp_path / "out")], env) == 2
    message = termination.read_text()
    assert f"{field}: " in message and reason in message, message
    assert "internal error" not in message
    assert not (tmp_path / "out").exists()


def test_the_target_dir_can_come_from_the_environment(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed_shop(seed)
    spec = make_spec([{"objectName": "/shop/url", "objectType": "ssmparameter", "objectAlias": "url"}])
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TARGET_DIR=str(tmp_path / "from-env"))
    assert main(["init"], env) == 0
    assert (tmp_path / "from-env" / "url").read_bytes() == b"postgres://db.shop:5432/shop"


def test_once_reads_a_secret_provider_class_file(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed_shop(seed)
    manifest = tmp_path / "spc.yaml"
    manifest.write_text(SPC_YAML)
    out = tmp_path / "out"
    result = run(
        ["once", "--secret-provider-class", str(manifest), "--dir", str(out), "--region", "us-east-1"],
        fetcher_env(moto.url),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith("..")) == [
        "_shop_url",
        "db-user",
        "shop_db",
    ]
    # The region may also come from AWS_REGION, as for any AWS tool.
    again = run(
        ["once", "--secret-provider-class", str(manifest), "--dir", str(out)],
        fetcher_env(moto.url, AWS_REGION="us-east-1"),
    )
    assert again.returncode == 0 and json_lines(again.stderr)[-1]["msg"] == "files already current"


def test_once_reports_failures_on_stderr(moto: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "spc.yaml"
    manifest.write_text(SPC_YAML)
    result = run(
        ["once", "--secret-provider-class", str(manifest), "--dir", str(tmp_path / "out"), "--region", "eu-west-1"],
        fetcher_env(moto.url),
    )
    assert result.returncode == 1
    error = json_lines(result.stderr)[-1]["error"]
    assert "secret 'shop/db' in eu-west-1: ResourceNotFoundException" in error
    assert "SSM parameter '/shop/url' in eu-west-1: InvalidParameters" in error
    bad = run(
        ["once", "--secret-provider-class", str(tmp_path / "absent.yaml"), "--dir", str(tmp_path / "o")],
        fetcher_env(moto.url),
    )
    assert bad.returncode == 2 and "cannot read" in json_lines(bad.stderr)[-1]["error"]


def test_the_sidecar_rotates_files_and_exits_zero_on_sigterm(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed.secret("shop/db", "password-one")
    spec = make_spec(
        [{"objectName": "shop/db", "objectType": "secretsmanager", "objectAlias": "db"}], refresh_interval=0.2
    )
    out = tmp_path / "out"
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
    sidecar = subprocess.Popen(
        [*FETCHER_COMMAND, "sidecar", "--dir", str(out)], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _wait_for_content(out / "db", b"password-one")
        first_generation = (out / DATA_LINK).readlink()
        seed.sm().put_secret_value(SecretId="shop/db", SecretString="password-two")
        assert _wait_for_content(out / "db", b"password-two")
        assert (out / DATA_LINK).readlink() != first_generation
        sidecar.send_signal(signal.SIGTERM)
        _, stderr = sidecar.communicate(timeout=30)
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.communicate()
    assert sidecar.returncode == 0
    messages = [line["msg"] for line in json_lines(stderr)]
    assert messages[0] == "sidecar started" and messages[-1] == "sidecar stopped"


def test_the_sidecar_refuses_a_spec_without_an_interval(moto: Any, tmp_path: Path) -> None:
    spec = make_spec([{"objectName": "db", "objectType": "secretsmanager"}])
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
    assert main(["sidecar", "--dir", str(tmp_path / "out")], env) == 2
    assert "has no refresh interval" in (tmp_path / "term").read_text()


def test_the_default_termination_log_is_written_only_where_the_kubelet_made_it(tmp_path: Path) -> None:
    absent = tmp_path / "dev-termination-log"
    assert write_termination_message(str(absent), "boom", create=False) is False
    assert not absent.exists()
    absent.write_text("")
    assert write_termination_message(str(absent), "boom", create=False) is True
    assert absent.read_text() == "boom"
    assert write_termination_message(str(tmp_path / "no-dir" / "x"), "boom", create=True) is False
    long = "é" * 5000
    write_termination_message(str(absent), long, create=True)
    assert len(absent.read_bytes()) <= 4096 and absent.read_text().endswith("...")


def _wait_for_content(path: Path, expected: bytes, timeout: float = 30.0) -> bool:
    """Poll a file; the deadline is for a busy machine, not a performance check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.read_bytes() == expected:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
