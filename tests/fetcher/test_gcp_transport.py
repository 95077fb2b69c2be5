"""Google's calls on the shared transport and retry policy: proxies, the CA bundle, full-jitter retries.

Against the loopback Google fake over real TLS, reached by Google's own host names through a real CONNECT
proxy where the test needs it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.contract import FetchSpec, build_spec
from fetcher.gcp import BACKOFF, GcpClients, Https, http_settings
from fetcher.gcp_source import check_versions, fetch_all
from fetcher.retry import Backoff
from fetcher.transport import HttpClient, HttpSettings, Proxies, TransportError
from tests.support.connectproxy import ConnectProxy
from tests.support.gcpfake import POOL, PROVIDER, GcpFake
from tests.support.threads import run_bounded

PROJECT = "ferry-test"
NAME = f"projects/{PROJECT}/secrets/db/versions/latest"


@pytest.fixture
def fake() -> Iterator[GcpFake]:
    with GcpFake() as served:
        served.grant("apps/web", f"projects/{PROJECT}/")
        served.add_version(PROJECT, "db", "over-the-proxy")
        yield served


def gcp_spec() -> FetchSpec:
    identity = {"workloadPool": POOL, "identityProvider": PROVIDER}
    return build_spec(
        objects=[{"resourceName": NAME, "path": "db"}], region=None, provider="gcp", gcp_identity=identity
    )


def fetch_with(env: dict[str, str]) -> bytes:
    spec = gcp_spec()
    clients = GcpClients.from_env(spec, env)
    try:
        return fetch_all(spec, clients)[0].data
    finally:
        clients.close()


def test_https_proxy_carries_googles_own_names_and_the_metadata_server_is_never_asked(
    fake: GcpFake, token_file: Path
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    proxy = ConnectProxy({"sts.googleapis.com": port, "secretmanager.googleapis.com": port})
    try:
        env = {
            "HTTPS_PROXY": proxy.url,
            "NO_PROXY": "example.com",
            "SSL_CERT_FILE": str(fake.ca_file),
            "FERRY_GCP_TOKEN_FILE": str(token_file),
        }
        assert fetch_with(env) == b"over-the-proxy"
    finally:
        proxy.close()
    assert proxy.tunnels == ["CONNECT sts.googleapis.com:443", "CONNECT secretmanager.googleapis.com:443"]
    assert fake.count("ExchangeToken") == 1 and fake.count("AccessSecretVersion") == 1
    assert fake.count("Metadata") == 0


def test_no_proxy_bypasses_the_proxy_for_google_too(fake: GcpFake, token_file: Path) -> None:
    proxy = ConnectProxy({})
    try:
        env = {**fake.env(token_file), "HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
        assert fetch_with(env) == b"over-the-proxy"
    finally:
        proxy.close()
    assert proxy.tunnels == []


def test_a_ca_bundle_the_server_is_not_signed_by_fails_without_retries(fake: GcpFake, token_file: Path) -> None:
    other = GcpFake()  # a fresh CA that did not sign `fake`'s certificate
    spec = gcp_spec()
    assert spec.gcp is not None
    clients = GcpClients(spec.gcp, Https(fake.url, http_settings({"SSL_CERT_FILE": str(other.ca_file)})), "")
    clients.token_file = str(token_file)
    try:
        with pytest.raises(Exception, match="SSLError|TLS failed"):
            fetch_all(spec, clients)
    finally:
        clients.close()
    assert fake.count("ExchangeToken") == 0


def test_retries_follow_the_shared_full_jitter_policy(
    fake: GcpFake, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(BACKOFF, Backoff) and BACKOFF.max_attempts == 4
    spec = gcp_spec()
    assert spec.gcp is not None
    https = Https(fake.url, http_settings({"SSL_CERT_FILE": str(fake.ca_file)}))
    waits: list[float] = []
    monkeypatch.setattr(https, "sleep", waits.append)
    clients = GcpClients(spec.gcp, https, str(token_file))
    try:
        fetch_all(spec, clients)
        fake.failures[:] = [503, 503]
        assert check_versions(spec, clients)[0].version == "1"
        assert len(waits) == 2
        assert all(0 <= wait <= min(BACKOFF.cap, BACKOFF.base * 2**n) for n, wait in enumerate(waits))
        fake.failures[:] = [429] * BACKOFF.max_attempts  # the read quota exhausted: every try, then an access
        waits.clear()
        probe = check_versions(spec, clients)[0]
        assert probe.value is not None and probe.value.data == b"over-the-proxy"
        assert len(waits) == BACKOFF.max_attempts - 1
    finally:
        clients.close()


def test_a_proxy_that_trickles_its_connect_answer_is_cut_at_the_connect_timeout() -> None:
    """Each byte of the CONNECT answer arrived inside the connect timeout, so a proxy sending one at a time
    (up to the 16 KiB line bound) held the call for hours; the whole answer gets the connect timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n")
            while not done.wait(0.05):
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = HttpClient(HttpSettings(connect_timeout=0.5, proxies=Proxies.from_env({"HTTPS_PROXY": proxy})))
    ended = run_bounded(lambda: client.request("GET", "https://secretmanager.googleapis.com/v1/x", {}), 5)
    done.set()
    listener.close()
    assert not ended.running, "the CONNECT answer was still being read after 5 s (connect timeout 0.5 s)"
    client.close()
    assert isinstance(ended.error, TransportError), ended  # a connect timeout, as for a silent proxy
    assert "secretmanager.googleapis.com" in str(ended.error)
