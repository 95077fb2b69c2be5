"""The TLS server: protocol floor, certificate hot reload, quiet access log, graceful SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from devcluster.net import free_port
from tests.support.paths import REPO_ROOT
from tests.support.tlsserver import TLSServer
from webhook.tls.certs import CertBundle, generate_bundle, write_bundle

NAMES = ["localhost"]


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def eventually(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll until `predicate()` is truthy; a bounded wait, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def bundle() -> CertBundle:
    return generate_bundle(NAMES, ip_addresses=["127.0.0.1"])


@pytest.fixture
def tls_dir(tmp_path: Path, bundle: CertBundle) -> Path:
    write_bundle(bundle, tmp_path / "tls")
    return tmp_path / "tls"


@pytest.fixture
def server(tls_dir: Path) -> Iterator[TLSServer]:
    with TLSServer(hello_app, tls_dir / "tls.crt", tls_dir / "tls.key") as running:
        yield running


def client_context(
    ca_pem: bytes, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, *, legacy: bool = False
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem.decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated; that is the point
        context.minimum_version = minimum
        context.maximum_version = maximum
    if legacy:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.0/1.1
    return context


def connect(port: int, context: ssl.SSLContext) -> tuple[str | None, bytes]:
    """Handshake with 127.0.0.1:port; returns (protocol version, served certificate DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return tls.version(), der


def served_serial(port: int, ca_pem: bytes) -> int:
    _, der = connect(port, client_context(ca_pem, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED))
    return x509.load_der_x509_certificate(der).serial_number


def serial(bundle: CertBundle) -> int:
    return x509.load_pem_x509_certificate(bundle.cert_pem).serial_number


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_accepted(server: TLSServer, bundle: CertBundle, version: ssl.TLSVersion) -> None:
    negotiated, _ = connect(server.port, client_context(bundle.ca_pem, version, version))
    assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def legacy_server(cert_file: Path, key_file: Path) -> tuple[socket.socket, threading.Thread, list[str]]:
    """A bare TLS server that does accept TLS 1.0/1.1, to prove the legacy client can speak them here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    versions: list[str] = []

    def accept_one() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    versions.append(str(tls.version()))
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=accept_one)
    thread.start()
    return listener, thread, versions


def test_tls_1_0_and_1_1_are_refused(server: TLSServer, tls_dir: Path, bundle: CertBundle) -> None:
    legacy = client_context(bundle.ca_pem, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, legacy=True)

    # Control: the same client completes a TLS 1.1 handshake with a server that allows it ...
    listener, thread, versions = legacy_server(tls_dir / "tls.crt", tls_dir / "tls.key")
    with listener:
        negotiated, _ = connect(listener.getsockname()[1], legacy)
        thread.join(10)
    assert negotiated == "TLSv1.1" and versions == ["TLSv1.1"]

    # ... but not with Ferry's server.
    with pytest.raises(ssl.SSLError):
        connect(server.port, legacy)
    # And the server is still fine afterwards.
    assert served_serial(server.port, bundle.ca_pem) == serial(bundle)


def test_certificate_files_are_reloaded_without_restart(tls_dir: Path, bundle: CertBundle) -> None:
    with TLSServer(hello_app, tls_dir / "tls.crt", tls_dir / "tls.key", reload_interval=0.05) as server:
        assert served_serial(server.port, bundle.ca_pem) == serial(bundle)
        with httpx.Client(verify=client_context(bundle.ca_pem, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)) as c:
            assert c.get(server.url).text == "hello"

        renewed = generate_bundle(NAMES, ip_addresses=["127.0.0.1"])
        write_bundle(renewed, tls_dir)

        both = bundle.ca_pem + renewed.ca_pem  # trust both, so polling sees either certificate
        assert eventually(lambda: served_serial(server.port, both) == serial(renewed))
        assert server.reloads == 1
        with httpx.Client(verify=client_context(renewed.ca_pem, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)) as c:
            assert c.get(server.url).text == "hello"


def test_half_written_pair_is_not_installed(server: TLSServer, tls_dir: Path, bundle: CertBundle) -> None:
    renewed = generate_bundle(NAMES, ip_addresses=["127.0.0.1"])
    (tls_dir / "tls.crt").write_bytes(renewed.cert_pem)  # the new cert, but still the old key

    assert server.reload_now() is False
    assert served_serial(server.port, bundle.ca_pem) == serial(bundle)  # still serving, the old pair

    (tls_dir / "tls.key").write_bytes(renewed.key_pem)
    assert server.reload_now() is True
    assert served_serial(server.port, renewed.ca_pem) == serial(renewed)
    assert server.reload_now() is False  # unchanged files: nothing to do


def test_access_log_is_off_by_default(
    tls_dir: Path, bundle: CertBundle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "propagate", True)  # undo what any earlier server did to it
    monkeypatch.setattr(access, "handlers", [])
    caplog.set_level(logging.INFO)
    verify = client_context(bundle.ca_pem, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    with TLSServer(hello_app, tls_dir / "tls.crt", tls_dir / "tls.key", log_level="info") as server:
        with httpx.Client(verify=verify) as client:
            assert client.get(server.url + "/mutate?timeout=5s").status_code == 200
    assert not [r for r in caplog.records if r.name == "uvicorn.access"]

    monkeypatch.setattr(access, "propagate", True)
    with TLSServer(hello_app, tls_dir / "tls.crt", tls_dir / "tls.key", log_level="info", access_log=True) as server:
        with httpx.Client(verify=verify) as client:
            assert client.get(server.url + "/mutate?timeout=5s").status_code == 200
    assert [r for r in caplog.records if r.name == "uvicorn.access"]  # the switch works


SERVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from webhook.edge.server import serve

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            print("in-flight", flush=True)
            await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    tls = Path(sys.argv[1])
    serve(app, host="127.0.0.1", port=int(sys.argv[2]), cert_file=tls / "tls.crt", key_file=tls / "tls.key",
          log_level="warning")
    print("exited cleanly", flush=True)
    """
)


def test_serve_finishes_in_flight_requests_on_sigterm(tls_dir: Path, bundle: CertBundle) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(tls_dir), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        verify = client_context(bundle.ca_pem, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)

        def accepting() -> bool:
            try:
                connect(port, verify)
                return True
            except OSError:
                return proc.poll() is not None  # stop waiting if it died

        assert eventually(accepting, timeout=30)
        assert proc.poll() is None, proc.communicate()
        result: list[httpx.Response | BaseException] = []

        def slow_request() -> None:
            try:
                with httpx.Client(verify=verify, timeout=20) as client:
                    result.append(client.get(f"https://127.0.0.1:{port}/slow"))
            except BaseException as exc:
                result.append(exc)

        request = threading.Thread(target=slow_request)
        request.start()
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "in-flight"
        proc.send_signal(signal.SIGTERM)
        request.join(30)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "exited cleanly" in stdout
    assert "Traceback" not in stderr
    (response,) = result
    assert isinstance(response, httpx.Response) and response.status_code == 200 and response.text == "done"
