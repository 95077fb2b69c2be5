"""The pod's hot path never imports boto3 or botocore (issue 16): `init` and `sidecar` run on the standard library.

Why it exists: boto3 stays installed in development (tests seed moto with it), so an
accidental `import boto3` in the fetcher would pass every functional test and quietly
bring back 30 MB and 200 ms per pod. This runs the real `python -m fetcher init`
against moto with `-X importtime` and reads what was imported.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from fetcher.contract import spec_to_json
from tests.support.aws import FETCHER_COMMAND, REPO_ROOT, Seeder, fetcher_env, make_spec

SDK_PACKAGES = ("boto3", "botocore", "s3transfer", "awscrt", "urllib3", "dateutil")


def imported_modules(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_init_fetches_without_importing_an_aws_sdk(moto: Any, seed: Seeder, tmp_path: Path) -> None:
    seed.secret("app/db", "s3cr3t")
    seed.parameter("/app/url", "https://example.internal")
    spec = make_spec(
        [
            {"objectName": "app/db", "objectType": "secretsmanager"},
            {"objectName": "/app/url", "objectType": "ssmparameter"},
        ]
    )
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
    result = subprocess.run(
        [FETCHER_COMMAND[0], "-X", "importtime", *FETCHER_COMMAND[1:], "init", "--dir", str(tmp_path / "out")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "app_db").read_text() == "s3cr3t"
    imported = imported_modules(result.stderr)
    assert {"fetcher.aws", "fetcher.transport", "fetcher.sigv4"} <= imported  # the import log was read
    sdk = sorted(name for name in imported if name.split(".")[0] in SDK_PACKAGES)
    assert sdk == [], f"the fetcher's hot path imported {sdk[:10]}"
