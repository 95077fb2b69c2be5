"""SIGINT and SIGTERM during an AWS call that hangs: the fetcher stops promptly, with an exit code and no traceback.

Why it exists: someone running `once` by hand presses Ctrl-C when AWS does not
answer, and the kubelet sends SIGTERM to a sidecar at every pod deletion.
Neither may wait for a network timeout, print a traceback, or leave files
behind. AWS here is a loopback socket that accepts connections and never
answers; the read timeout is set far beyond the test's hang guard, so a
fetcher that waits for the network fails the test instead of passing late.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetcher.contract import spec_to_json
from tests.support.aws import FETCHER_COMMAND, PRIMARY, REPO_ROOT, fetcher_env, make_spec

HANG_GUARD_SECONDS = 60

SPC_YAML = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: app
spec:
  provider: aws
  parameters:
    region: us-east-1
    objects: |
      - {objectName: "app/a", objectType: "secretsmanager", objectAlias: a}
      - {objectName: "app/b", objectType: "secretsmanager", objectAlias: b}
"""


class SilentEndpoint:
    """Accepts TCP connections on loopback and never answers; `connected` is set at the first one."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connected = threading.Event()
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)
            self.connected.set()

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentEndpoint]:
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


def hung_env(moto: Any, silent: SilentEndpoint, **extra: str) -> dict[str, str]:
    return fetcher_env(
        moto.url,
        FERRY_AWS_READ_TIMEOUT="3600",
        FERRY_AWS_CONNECT_TIMEOUT="3600",
        **{"FERRY_ENDPOINT_URL_" + PRIMARY.upper().replace("-", "_"): silent.url},
        **extra,
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FETCHER_COMMAND, *args], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop_and_collect(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the fetcher was still running {HANG_GUARD_SECONDS}s after {signal.Signals(signum).name}")
    return stderr


def messages(stderr: str) -> list[str]:
    return [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(("command", "signum", "code"), [("once", signal.SIGINT, 130), ("init", signal.SIGTERM, 143)])
def test_a_hung_fetch_is_interrupted_at_once_without_a_traceback(
    moto: Any, silent: SilentEndpoint, tmp_path: Path, command: str, signum: int, code: int
) -> None:
    out = tmp_path / "out"
    if command == "once":
        manifest = tmp_path / "spc.yaml"
        manifest.write_text(SPC_YAML)
        process = start(["once", "--secret-provider-class", str(manifest), "--dir", str(out)], hung_env(moto, silent))
    else:
        spec = make_spec(
            [
                {"objectName": "app/a", "objectType": "secretsmanager"},
                {"objectName": "app/b", "objectType": "secretsmanager"},
            ]
        )
        env = hung_env(moto, silent, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
        process = start(["init", "--dir", str(out)], env)
    try:
        assert silent.connected.wait(HANG_GUARD_SECONDS), "the fetcher never called AWS"
        stderr = stop_and_collect(process, signum)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert messages(stderr)[-1] == f"{command} interrupted"
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_the_sidecar_stops_during_a_hung_fetch(
    moto: Any, silent: SilentEndpoint, tmp_path: Path, signum: int, code: int
) -> None:
    spec = make_spec([{"objectName": "app/a", "objectType": "secretsmanager"}], refresh_interval=30)
    env = hung_env(moto, silent, FERRY_SPEC=spec_to_json(spec), FERRY_TERMINATION_LOG=str(tmp_path / "term"))
    process = start(["sidecar", "--dir", str(tmp_path / "out")], env)
    try:
        assert silent.connected.wait(HANG_GUARD_SECONDS), "the sidecar never called AWS"
        stderr = stop_and_collect(process, signum)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "keeping the last good files" not in stderr
    assert messages(stderr)[-1] == ("sidecar stopped" if signum == signal.SIGTERM else "sidecar interrupted")


def test_a_sidecar_without_files_never_claims_to_keep_them(moto: Any, tmp_path: Path) -> None:
    # Nothing listens on the primary's endpoint: every refresh fails fast, and no set was ever written.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    spec = make_spec([{"objectName": "app/a", "objectType": "secretsmanager"}], refresh_interval=30)
    env = fetcher_env(
        moto.url,
        FERRY_SPEC=spec_to_json(spec),
        FERRY_TERMINATION_LOG=str(tmp_path / "term"),
        FERRY_AWS_MAX_ATTEMPTS="1",
        **{"FERRY_ENDPOINT_URL_" + PRIMARY.upper().replace("-", "_"): closed},
    )
    process = start(["sidecar", "--dir", str(tmp_path / "out")], env)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stream = process.stderr
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=HANG_GUARD_SECONDS)
            if "refresh failed" in line:
                break
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=HANG_GUARD_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(timeout=HANG_GUARD_SECONDS)
        stream.close()
        if process.stdout is not None:
            process.stdout.close()
    assert json.loads(line)["msg"] == "refresh failed; no files written yet"
    assert process.returncode == 0
