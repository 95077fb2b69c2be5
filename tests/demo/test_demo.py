"""`make demo` without a cluster: a bare copy of the repository, KUBEBUILDER_ASSETS unset.

The demo must say plainly which lines are what kubectl would print, show the
failure path as `kubectl describe pod` would, never cut a log value, and remove
its temporary folder (a CA, fake secrets) unless asked to keep it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demo.run import bare_copy, run_demo, workdir_of


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_copy(tmp_path_factory.mktemp("clone"))


def bare_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("KUBEBUILDER_ASSETS", "FERRY_DEMO_KEEP")}


@contextlib.contextmanager
def port_9090_taken() -> Iterator[None]:
    """Something listening on 127.0.0.1:9090 (Prometheus's default port), as on many laptops."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 9090))
            sock.listen(1)
        except OSError:
            pass  # already taken by something else: the condition under test holds anyway
        yield


def test_the_demo_runs_without_a_cluster_and_cleans_up(clone: Path, tmp_path: Path) -> None:
    with port_9090_taken():
        result = run_demo(clone, tmp_path / "tmp", env=bare_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # The example works as shown on a default install: no lowered refresh floor, and the identity
    # comes from the ServiceAccount's role annotation, added as EKS's identity webhook adds it.
    assert "FERRY_MIN_REFRESH_INTERVAL" not in (clone / "scripts" / "demo.py").read_text()
    assert "ferry.dev/refresh-interval: 10s" in out
    assert "eks.amazonaws.com/role-arn" in out
    deployment = (clone / "scripts" / "demo" / "deployment.yaml").read_text()
    assert "AWS_ROLE_ARN" not in deployment and "AWS_WEB_IDENTITY_TOKEN_FILE" not in deployment
    assert "No cluster (KUBEBUILDER_ASSETS is unset)" in out
    assert "what kubectl would print" in out
    # The failure path, as kubectl describe pod shows it: status, object, AWS error code, region.
    assert re.search(r"\| payments +0/2 +Init:Error", out)
    message = next(line for line in out.splitlines() if "Message:" in line)
    for needle in ("prod/payments/stripe-key", "ResourceNotFoundException", "us-east-1"):
        assert needle in message
    assert "Exit Code:    1" in out
    # The denials, the pod's and the Deployment's ReplicaSet's.
    assert 'Error from server (Forbidden): error when creating "bad-pod.yaml"' in out
    assert re.search(r"Warning +FailedCreate +ReplicaSet +Error creating: admission webhook", out)
    assert "climbs out of the volume" in out
    # Log lines: every value whole (a version id is a full UUID, a path ends where the field ends).
    logs = [line for line in out.splitlines() if "log:" in line]
    versions = re.findall(r"version=(\S+)", "\n".join(logs))
    assert versions and all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", v) for v in versions)
    assert not any(line.rstrip().endswith("...") for line in logs)
    assert "Done." in out
    workdir = workdir_of(out)
    assert f"removed {workdir}" in out
    assert not workdir.exists()
    assert not any((tmp_path / "tmp").iterdir()), "the demo left temporary files behind"


def test_keep_keeps_the_folder_and_says_where(clone: Path, tmp_path: Path) -> None:
    result = run_demo(clone, tmp_path / "tmp", env={**bare_env(), "FERRY_DEMO_KEEP": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workdir = workdir_of(result.stdout)
    assert f"kept {workdir}" in result.stdout
    assert (workdir / "ca.pem").is_file() and (workdir / "mnt-secrets-store" / "..data").is_symlink()
    assert workdir.parent == tmp_path / "tmp"
