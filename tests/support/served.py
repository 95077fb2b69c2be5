"""`python -m webhook serve` as a real process on loopback, and clients that misbehave against it.

Why it exists: the slow-client tests and `bench/hostile_tenant.py` need the
webhook exactly as it runs in production (its own process, so its RSS can be
measured and a crash seen as a restart), plus the attacks of issue 10: TLS
connections that announce a large body and stall, and connections that never
finish their headers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devcluster.net import LOOPBACK, free_port
from tests.support.paths import REPO_ROOT

FIXTURE_SPCS = REPO_ROOT / "tests" / "fixtures" / "kube-apiserver-v1.28" / "secretproviderclasses.yaml"


@dataclass
class ServedWebhook:
    """`python -m webhook serve` in static mode (SecretProviderClass fixtures, namespaces from a file)."""

    workdir: Path
    namespaces: tuple[str, ...] = ("team-a",)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    @property
    def log_file(self) -> Path:
        return self.workdir / "webhook.log"

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60.0) -> ServedWebhook:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.metrics_port = free_port(), free_port()
        namespaces = self.workdir / "namespaces.yaml"
        namespaces.write_text(
            "".join(
                f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n"
                f"    ferry.dev/inject: enabled\n"
                for name in self.namespaces
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBERNETES_", "FERRY_"))}
        env.update({"KUBECONFIG": str(self.workdir / "no-kubeconfig"), "FERRY_METRICS_PORT": str(self.metrics_port)})
        env.update(self.env)
        command = [sys.executable, "-m", "webhook", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        command += ["--write-ca", str(self.ca_file), "--secret-provider-class", str(FIXTURE_SPCS)]
        command += ["--namespace-annotations", str(namespaces)]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"webhook exited {self.process.returncode}: {self.log_file.read_text()[-2000:]}")
            if self.ca_file.exists():
                try:
                    with httpx.Client(verify=self.client_context(), timeout=2) as client:
                        if client.get(f"{self.url}/readyz").status_code == 200:
                            return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the webhook did not become ready")

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def __enter__(self) -> ServedWebhook:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stalled_request(
    port: int,
    context: ssl.SSLContext,
    *,
    announce: int,
    send: int,
    headers_complete: bool = True,
    source: str = LOOPBACK,
) -> ssl.SSLSocket | None:
    """A TLS connection to /mutate that announces `announce` body bytes, sends `send` of them and stalls.

    With `headers_complete=False` it stops in the middle of the headers instead. None if the server
    dropped the connection before everything was sent (it may, under its own limits).
    """
    raw = socket.create_connection((LOOPBACK, port), timeout=30, source_address=(source, 0))
    try:
        sock = context.wrap_socket(raw, server_hostname="localhost")
    except (OSError, ssl.SSLError):
        raw.close()
        return None
    head = (
        f"POST /mutate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {announce}\r\n"
    ).encode()
    try:
        if not headers_complete:
            sock.sendall(head)
            return sock
        sock.sendall(head + b"\r\n")
        chunk = b"[" * 65536
        left = send
        while left > 0:
            sent = sock.send(chunk[: min(left, len(chunk))])
            left -= sent
    except (OSError, ssl.SSLError):
        sock.close()
        return None
    return sock


def closed_by_server(sock: ssl.SSLSocket, timeout: float) -> bool:
    """Whether the server closes `sock` within `timeout` seconds (a response, then EOF, counts as closed)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except (OSError, ssl.SSLError):
            return True  # reset or aborted mid-record: closed
