"""Server settings from the hardening issue: AEAD-only TLS 1.2 ciphers, and no /noop in `serve`.

Why it exists: both are properties of the running server, so both are checked
on real handshakes and a real `python -m webhook serve` process, not by
reading the code.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devcluster.net import free_port
from tests.support.paths import REPO_ROOT
from tests.support.tlsserver import TLSServer
from webhook.edge.server import TLS12_CIPHERS
from webhook.tls.certs import generate_bundle, write_bundle

# TLS 1.2 suites without AEAD (CBC with HMAC) or without forward secrecy (static RSA key exchange).
LEGACY_TLS12 = (
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "AES128-SHA:AES256-SHA:AES128-GCM-SHA256:AES256-GCM-SHA384:DHE-RSA-AES128-SHA"
)


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[TLSServer, bytes]]:
    bundle = generate_bundle(["localhost"], ip_addresses=["127.0.0.1"])
    cert, key, _ = write_bundle(bundle, tmp_path / "tls")
    with TLSServer(hello_app, cert, key) as server:
        yield server, bundle.ca_pem


def _tls12_client(ca_pem: bytes, ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem.decode())
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def _handshake(port: int, context: ssl.SSLContext) -> tuple[str, str | None]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            cipher = tls.cipher()
            assert cipher is not None
            return cipher[0], tls.version()


def test_server_context_offers_only_aead_with_forward_secrecy_on_tls12(tls_server: tuple[TLSServer, bytes]) -> None:
    """Every suite TLS 1.2 can negotiate: OpenSSL labels CBC suites SSLv3 or TLSv1.0, not TLSv1.2."""
    server, _ = tls_server
    below13 = [c for c in server.ssl_context.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert any(c["protocol"] == "TLSv1.2" for c in below13), (
        "no TLS 1.2 suite at all: old API servers could not connect"
    )
    for cipher in below13:
        assert cipher["aead"] is True, cipher["name"]
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert "CBC" not in cipher["description"] and "SHA1" not in cipher["description"], cipher["description"]


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256"])
def test_tls12_handshake_with_one_cbc_suite_is_refused(tls_server: tuple[TLSServer, bytes], suite: str) -> None:
    """One CBC suite at a time (OpenSSL labels the first two TLSv1.0); the served key is ECDSA."""
    server, ca_pem = tls_server
    with pytest.raises(ssl.SSLError):
        _handshake(server.port, _tls12_client(ca_pem, suite))


def test_tls12_handshake_with_an_aead_suite_succeeds(tls_server: tuple[TLSServer, bytes]) -> None:
    server, ca_pem = tls_server
    name, version = _handshake(server.port, _tls12_client(ca_pem, TLS12_CIPHERS))
    assert version == "TLSv1.2"
    assert "GCM" in name or "CHACHA20" in name


def test_tls12_handshake_with_only_legacy_suites_is_refused(tls_server: tuple[TLSServer, bytes]) -> None:
    server, ca_pem = tls_server
    with pytest.raises(ssl.SSLError):
        _handshake(server.port, _tls12_client(ca_pem, LEGACY_TLS12))


def test_tls13_still_negotiates(tls_server: tuple[TLSServer, bytes]) -> None:
    server, ca_pem = tls_server
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem.decode())
    _, version = _handshake(server.port, context)
    assert version == "TLSv1.3"


# --- /noop is off in `serve` ------------------------------------------------------------------


REVIEW = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-1"}}'


def _noop_status(tmp_path: Path, *extra: str) -> int:
    """Start `python -m webhook serve` from files, POST /noop once it is ready, stop it; the status."""
    port = free_port()
    ca = tmp_path / "ca.crt"
    spc = tmp_path / "spcs.yaml"
    spc.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    env["FERRY_METRICS_PORT"] = str(free_port())  # never the shared default 9090
    command = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--write-ca", str(ca), "--secret-provider-class", str(spc), *extra]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {process.communicate()[1][-2000:]!r}")
            if ca.exists():
                try:
                    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=5) as client:
                        if client.get(f"https://127.0.0.1:{port}/readyz").status_code == 200:
                            return client.post(f"https://127.0.0.1:{port}/noop", content=REVIEW).status_code
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise AssertionError("the webhook did not become ready")
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_serve_has_no_noop_endpoint_by_default(tmp_path: Path) -> None:
    assert _noop_status(tmp_path) in (404, 405)


def test_serve_noop_endpoint_only_when_asked(tmp_path: Path) -> None:
    assert _noop_status(tmp_path, "--noop-endpoint") == 200
