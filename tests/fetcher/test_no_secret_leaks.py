"""No secret value ever appears in logs, stderr or the termination message, on success or failure paths.

Every value below is a unique canary. The test drives the fetcher through
success, rotation, render errors (whose messages are the likeliest to quote a
value) and AWS errors, at debug log level, then searches everything it printed.
It also checks the canaries did reach the files, so a silent no-op cannot pass.
"""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from fetcher.__main__ import main
from fetcher.contract import spec_to_json
from fetcher.errors import FerryError
from fetcher.logs import log
from fetcher.loop import RefreshState, refresh_once
from tests.support.aws import FETCHER_COMMAND, PRIMARY, REPO_ROOT, Seeder, fetcher_env, make_clients, make_spec

CANARY = f"canary{uuid.uuid4().hex[:12]}"
USER = f"{CANARY}-user"
PASSWORD = f"{CANARY}-password"
PIN = 86753094242
PLAIN = f"{CANARY}-plain-text"
BINARY = f"{CANARY}-binary".encode() + b"\x00\xff"
PARAMETER = f"{CANARY}-parameter"
ROTATED = f"{CANARY}-rotated"


def secrets_in(text: str) -> list[str]:
    needles = [CANARY, USER, PASSWORD, str(PIN), PLAIN, PARAMETER, ROTATED, BINARY.decode(errors="ignore")]
    return [needle for needle in needles if needle in text]


def seed_canaries(seed: Seeder) -> None:
    seed.secret("app/json", json.dumps({"username": USER, "password": PASSWORD, "pin": PIN}))
    seed.secret("app/plain", PLAIN)
    seed.secret("app/binary", BINARY)
    seed.parameter("/app/param", PARAMETER)


GOOD_OBJECTS: list[dict[str, Any]] = [
    {"objectName": "app/json", "objectType": "secretsmanager", "jmesPath": [{"path": "password", "objectAlias": "pw"}]},
    {"objectName": "app/plain", "objectType": "secretsmanager"},
    {"objectName": "app/binary", "objectType": "secretsmanager"},
    {"objectName": "/app/param", "objectType": "ssmparameter"},
]
BAD_OBJECTS: list[dict[str, Any]] = [
    # A number where a string is needed, a path that misses, jmesPath on plain text and on binary.
    {
        "objectName": "app/json",
        "objectType": "secretsmanager",
        "jmesPath": [{"path": "pin", "objectAlias": "pin"}, {"path": "nothing", "objectAlias": "nothing"}],
    },
    {"objectName": "app/plain", "objectType": "secretsmanager", "jmesPath": [{"path": "a", "objectAlias": "a"}]},
    {"objectName": "app/binary", "objectType": "secretsmanager", "jmesPath": [{"path": "a", "objectAlias": "b"}]},
    {"objectName": "/app/param", "objectType": "ssmparameter", "jmesPath": [{"path": "x", "objectAlias": "x"}]},
]
MISSING_OBJECTS: list[dict[str, Any]] = [*GOOD_OBJECTS, {"objectName": "app/absent", "objectType": "secretsmanager"}]


def test_the_cli_never_prints_a_value(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed_canaries(seed)
    printed: list[str] = []
    runs = (("good", GOOD_OBJECTS, 0), ("bad", BAD_OBJECTS, 1), ("missing", MISSING_OBJECTS, 1))
    for name, objects, expected_code in runs:
        termination = tmp_path / f"{name}-termination"
        env = fetcher_env(
            moto.url,
            FERRY_SPEC=spec_to_json(make_spec(objects)),
            FERRY_TERMINATION_LOG=str(termination),
            FERRY_LOG_LEVEL="debug",
        )
        result = subprocess.run(
            [*FETCHER_COMMAND, "init", "--dir", str(tmp_path / name)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == expected_code, result.stderr
        printed += [result.stdout, result.stderr, termination.read_text() if termination.exists() else ""]
    assert (tmp_path / "good" / "pw").read_text() == PASSWORD  # the values did flow through
    assert (tmp_path / "good" / "app_binary").read_bytes() == BINARY
    render_failure, fetch_failure = printed[5], printed[8]
    for reason in ("selects a number", "matched nothing", "is not JSON", "holds SecretBinary"):
        assert reason in render_failure
    assert "ResourceNotFoundException" in fetch_failure
    assert secrets_in("\n".join(printed)) == []


def test_refresh_and_error_paths_never_log_a_value(
    seed: Seeder, target: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_canaries(seed)
    stream = io.StringIO()
    previous = log.set_stream(stream)
    log.set_level("debug")
    clients = make_clients()
    try:
        state = RefreshState(spec=make_spec(GOOD_OBJECTS), clients=clients, target_dir=target)
        refresh_once(state)
        seed.sm().put_secret_value(
            SecretId="app/json", SecretString=json.dumps({"username": USER, "password": ROTATED, "pin": PIN})
        )
        refresh_once(state)
        assert (target / "pw").read_text() == ROTATED
        seed.sm().put_secret_value(SecretId="app/json", SecretString=f"{CANARY} broken json {PASSWORD}")
        with pytest.raises(FerryError) as caught:
            refresh_once(state)
        errors = [str(caught.value)]
        state.clients = make_clients(endpoint_overrides={PRIMARY: "http://127.0.0.1:9"})
        with pytest.raises(FerryError) as caught:
            refresh_once(state)
        errors.append(str(caught.value))
        state.clients.close()
        # `once` in-process, with a SecretProviderClass that asks for a non-string key.
        manifest = target.parent / "spc.yaml"
        manifest.write_text(
            json.dumps(
                {
                    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                    "kind": "SecretProviderClass",
                    "metadata": {"name": "x"},
                    "spec": {
                        "provider": "aws",
                        "parameters": {
                            "objects": "- {objectName: app/plain, objectType: secretsmanager, "
                            'jmesPath: [{path: "k", objectAlias: "k"}]}'
                        },
                    },
                }
            )
        )
        monkeypatch.setenv("FERRY_LOG_LEVEL", "debug")
        code = main(["once", "--secret-provider-class", str(manifest), "--dir", str(target.parent / "once")])
        assert code == 1
    finally:
        clients.close()
        log.set_level("info")
        log.set_stream(previous)
    captured = capsys.readouterr()
    everything = "\n".join([stream.getvalue(), captured.out, captured.err, *errors])
    assert "refresh" in stream.getvalue() or "fetched secret" in stream.getvalue()
    assert secrets_in(everything) == []


def test_discovery_expand_json_and_role_paths_never_print_a_value(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    """Issue 18's paths at debug level: a discovery, expandJson (good, not an object, colliding keys), a role."""
    seed_canaries(seed)
    seed.parameter("/found/one", PARAMETER)
    seed.secret("app/clash", json.dumps({"a/b": USER, "a_b": PASSWORD}))
    seed.secret("app/list", json.dumps([PASSWORD]))
    role = "arn:aws:iam::222233334444:role/reader"
    runs = (
        (
            "good",
            [
                {"objectName": "/found", "objectType": "ssmparameter", "discover": True, "objectAlias": "found"},
                {"objectName": "app/json", "objectType": "secretsmanager", "expandJson": True},
                {"objectName": "app/plain", "objectType": "secretsmanager", "roleArn": role, "externalId": "x-1"},
            ],
            0,
        ),
        ("clash", [{"objectName": "app/clash", "objectType": "secretsmanager", "expandJson": True}], 1),
        ("list", [{"objectName": "app/list", "objectType": "secretsmanager", "expandJson": True}], 1),
    )
    from tests.support.aws import seed_in_account

    seed_in_account(moto.url, role, "app/plain", PLAIN)
    printed: list[str] = []
    for name, objects, expected_code in runs:
        termination = tmp_path / f"{name}-termination"
        env = fetcher_env(
            moto.url,
            FERRY_SPEC=spec_to_json(make_spec(objects)),
            FERRY_TERMINATION_LOG=str(termination),
            FERRY_LOG_LEVEL="debug",
            FERRY_STARTUP_DEADLINE="0",
        )
        code = main(["init", "--dir", str(tmp_path / name)], env)
        assert code == expected_code, termination.read_text() if termination.exists() else ""
        printed.append(termination.read_text() if termination.exists() else "")
    assert (tmp_path / "good" / "found" / "one").read_text() == PARAMETER
    assert (tmp_path / "good" / "app_json" / "password").read_text() == PASSWORD
    assert (tmp_path / "good" / "app_plain").read_text() == PLAIN
    assert "a_b" in printed[1] and "a list" in printed[2]
    assert secrets_in("\n".join(printed)) == []
