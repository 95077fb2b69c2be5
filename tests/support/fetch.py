"""Running the real fetcher against moto through the fault proxy, for the reliability tests and bench scripts.

Why it exists: the fault tests must exercise the fetcher exactly as a pod
does (``python -m fetcher init|sidecar`` as a process, its env var spec,
boto3's default credential chain, ``AWS_ENDPOINT_URL``), and judge only what
a pod's owner can observe: the exit code, the termination message, stderr and
the files. This module builds that environment and the self-describing test
data; it does not import the fetcher's internals beyond the spec model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from fetcher.contract import FetchSpec, build_spec, spec_to_json
from tests.support.paths import REPO_ROOT

REGION = "us-east-1"
FETCHER = [sys.executable, "-m", "fetcher"]


def seed_client(moto_url: str, service: str = "secretsmanager") -> Any:
    """A boto3 client straight to moto (never through the proxy), for creating and rotating test data."""
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def fetcher_env(endpoint: str, spec: FetchSpec | None = None, **extra: str) -> dict[str, str]:
    """What a pod's fetcher container sees, with AWS at `endpoint`; nothing AWS_* leaks in from the parent."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "FERRY_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    if spec is not None:
        env["FERRY_SPEC"] = spec_to_json(spec)
    env.update(extra)
    return env


def app_spec(refresh_seconds: float = 0.0, with_parameter: bool = True) -> FetchSpec:
    """A JSON secret split into three files by jmesPath, plus (optionally) an SSM parameter."""
    objects: list[dict[str, Any]] = [
        {
            "objectName": "app/db",
            "objectType": "secretsmanager",
            "objectAlias": "db.json",
            "jmesPath": [
                {"path": "username", "objectAlias": "db-user"},
                {"path": "password", "objectAlias": "db-password"},
                {"path": "generation", "objectAlias": "db-generation"},
            ],
        }
    ]
    if with_parameter:
        objects.append({"objectName": "/app/flags", "objectType": "ssmparameter"})
    return build_spec(objects=objects, region=REGION, refresh_interval=refresh_seconds or None, min_refresh_seconds=0.0)


DB_FILES = ("db.json", "db-user", "db-password", "db-generation")


def db_value(generation: int, token: str) -> str:
    """A secret whose every rendered file names its generation, so a mixed set is detectable."""
    return json.dumps(
        {
            "username": f"user-g{generation}-{token}",
            "password": f"pw-g{generation}-{token}",
            "generation": f"g{generation}-{token}",
        }
    )


def read_db_generation(target: Path) -> int | None:
    """The generation of the db files, read the documented way (..data resolved once); None if mixed or torn."""
    try:
        base = target / os.readlink(target / "..data")
        texts = {name: (base / name).read_text() for name in DB_FILES}
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        document = json.loads(texts["db.json"])
    except ValueError:
        return None
    if texts["db-user"] != document["username"] or texts["db-password"] != document["password"]:
        return None
    if texts["db-generation"] != document["generation"]:
        return None
    return int(document["generation"].split("-")[0][1:])


@dataclass
class InitRun:
    returncode: int
    stderr: str
    termination: str
    elapsed: float


def timed_run(
    command: list[str], env: dict[str, str], timeout: float, preexec: Callable[[], None] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command from the repository root, output captured; (wall seconds, the finished process)."""
    began = time.perf_counter()
    done = subprocess.run(
        command,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec,
    )
    return time.perf_counter() - began, done


def run_init(env: dict[str, str], target: Path, termination_log: Path, timeout: float = 120) -> InitRun:
    command = [*FETCHER, "init", "--dir", str(target), "--termination-log", str(termination_log)]
    elapsed, done = timed_run(command, env, timeout)
    termination = termination_log.read_text() if termination_log.exists() else ""
    return InitRun(done.returncode, done.stderr + done.stdout, termination, elapsed)


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll until true or `timeout` seconds pass: a liveness bound, not a performance claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
