"""The pod's own identity, or nothing: never the node's instance role through IMDS (issue 10, item 7).

Why it exists: "fetched with each pod's own IAM identity" is only true if a pod
without IRSA or Pod Identity fails instead of falling through boto3's
credential chain to the node's role. Here an IMDS stand-in on loopback
(AWS_EC2_METADATA_SERVICE_ENDPOINT) hands out credentials moto would accept;
the fetcher must never ask it, both with the env the webhook injects and
without it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fetcher.contract import spec_to_json
from tests.support.aws import FETCHER_COMMAND, REPO_ROOT, Seeder, fetcher_env, make_spec
from webhook.policy.containers import build_init_container, build_sidecar
from webhook.settings import Settings

NODE_ROLE_KEY = "ASIANODEROLE0000000"


class ImdsStandIn:
    """Answers IMDSv2 the way EC2 does: a token, then a role name, then that role's credentials."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: bytes) -> None:
                outer.paths.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:  # noqa: N802
                self._reply(b"imds-token")

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("security-credentials"):
                    self._reply(b"node-role")
                    return
                credentials = {
                    "Code": "Success",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": NODE_ROLE_KEY,
                    "SecretAccessKey": "node-secret",
                    "Token": "node-token",
                    "Expiration": "2099-01-01T00:00:00Z",
                    "LastUpdated": "2026-01-01T00:00:00Z",
                }
                self._reply(json.dumps(credentials).encode())

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def imds() -> Iterator[ImdsStandIn]:
    stand_in = ImdsStandIn()
    yield stand_in
    stand_in.close()


def injected_env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container["env"] if "value" in entry}


@pytest.mark.parametrize("with_injected_env", [True, False], ids=["injected-env", "bare-fetcher"])
def test_a_pod_without_its_own_identity_fails_and_never_asks_imds(
    moto: Any, seed: Seeder, imds: ImdsStandIn, tmp_path: Path, with_injected_env: bool
) -> None:
    seed.secret("app/db", "value-only-the-pod-role-may-read")
    spec = make_spec([{"objectName": "app/db", "objectType": "secretsmanager"}])
    env = fetcher_env(moto.url, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
        env.pop(key)
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
    if with_injected_env:
        container = build_init_container(spec, Settings(), mount_path="/mnt/secrets", run_as_user=1000)
        env.update({key: value for key, value in injected_env(container).items() if key.startswith("AWS_")})
    result = subprocess.run(
        [*FETCHER_COMMAND, "init", "--dir", str(tmp_path / "out")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "the pod has no usable AWS identity" in (tmp_path / "term").read_text()
    assert imds.paths == []
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_injected_containers_turn_imds_off() -> None:
    spec = make_spec([{"objectName": "app/db", "objectType": "secretsmanager"}], refresh_interval="1m")
    for container in (
        build_init_container(spec, Settings(), mount_path="/mnt/secrets", run_as_user=1000),
        build_sidecar(spec, Settings(), mount_path="/mnt/secrets", run_as_user=1000, native=True),
    ):
        assert injected_env(container)["AWS_EC2_METADATA_DISABLED"] == "true"
