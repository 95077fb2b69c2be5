"""The GCP client against hostile answers over real loopback TLS: slow bodies, deep JSON, odd YAML scalars."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fetcher.gcp
from fetcher.contract import FetchSpec, spec_from_secret_provider_class
from fetcher.errors import ObjectErrors
from fetcher.gcp import GcpClients, GcpIdentityError, Https, http_settings
from fetcher.gcp_source import crc32c, fetch_all
from fetcher.transport import HttpClient, TransportError, _Cutoff
from tests.support.gcpfake import POOL, PROVIDER, ksa_token
from tests.support.threads import run_bounded
from webhook.tls.certs import generate_bundle

NAME = "projects/ferry-test/secrets/db/versions/1"
Answer = Callable[[ssl.SSLSocket, bytes], None]


class HostileServer:
    """One TLS listener on 127.0.0.1 that answers every request with `answer(connection, request head)`."""

    def __init__(self, answer: Answer) -> None:
        bundle = generate_bundle(["localhost"], ip_addresses=["127.0.0.1"])
        self._dir = Path(tempfile.mkdtemp(prefix="gcphostile-"))
        (self._dir / "chain.pem").write_bytes(bundle.cert_pem + bundle.ca_pem)
        (self._dir / "key.pem").write_bytes(bundle.key_pem)
        self.ca_file = self._dir / "ca.pem"
        self.ca_file.write_bytes(bundle.ca_pem)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self._dir / "chain.pem", self._dir / "key.pem")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(30)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                rest = head.split(b"\r\n\r\n", 1)[1]
                while len(rest) < length:
                    rest += conn.recv(65536)
                if not self._stop.is_set():
                    self._answer(conn, head)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


def reply(conn: ssl.SSLSocket, body: bytes, status: str = "200 OK") -> None:
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )


def token_or(body_for_secrets: Callable[[ssl.SSLSocket], None]) -> Answer:
    """STS answers with a token; every other request gets `body_for_secrets`."""

    def answer(conn: ssl.SSLSocket, head: bytes) -> None:
        if b"/sts.googleapis.com/" in head.split(b"\r\n", 1)[0]:
            reply(conn, json.dumps({"access_token": "t0ken", "expires_in": 3600}).encode())
        else:
            body_for_secrets(conn)

    return answer


def access_reply(value: bytes) -> bytes:
    payload = {"data": base64.b64encode(value).decode(), "dataCrc32c": str(crc32c(value))}
    return json.dumps({"name": "projects/123/secrets/db/versions/1", "payload": payload}).encode()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Answer], GcpClients]]:
    servers: list[HostileServer] = []
    clients: list[GcpClients] = []
    token = tmp_path / "token"
    token.write_text(ksa_token("apps", "web"))

    def start(answer: Answer) -> GcpClients:
        server = HostileServer(answer)
        servers.append(server)
        https = Https(server.url, http_settings({"SSL_CERT_FILE": str(server.ca_file)}))
        made = GcpClients(spec().gcp or pytest.fail("no identity"), https, str(token))
        clients.append(made)
        return made

    yield start
    for made in clients:
        made.close()
    for server in servers:
        server.close()


def spec(**entry: str) -> FetchSpec:
    manifest = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "c"},
        "spec": {"provider": "gcp", "parameters": {"secrets": [{"resourceName": NAME, "path": "db", **entry}]}},
    }
    return spec_from_secret_provider_class(manifest, gcp_identity={"workloadPool": POOL, "identityProvider": PROVIDER})


def test_a_body_that_trickles_in_is_cut_at_the_request_deadline(
    serve: Callable[[Answer], GcpClients], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte every 0.2 s never trips the 5 s read timeout; only an overall deadline ends the request."""
    done = threading.Event()

    def trickle(conn: ssl.SSLSocket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while not done.wait(0.2):
            conn.sendall(b" ")

    monkeypatch.setattr(fetcher.gcp, "REQUEST_DEADLINE", 1.0, raising=False)
    clients = serve(token_or(trickle))
    began = time.monotonic()
    ended = run_bounded(lambda: fetch_all(spec(), clients), 20)
    done.set()
    assert not ended.running, "the fetch was still reading a trickling body after 20 s"
    assert isinstance(ended.error, ObjectErrors), ended
    message = str(ended.error)
    assert "UNAVAILABLE" in message and "secretmanager.googleapis.com" in message
    assert time.monotonic() - began < 15


def test_a_reply_of_deeply_nested_json_is_no_json_never_a_crash(serve: Callable[[Answer], GcpClients]) -> None:
    clients = serve(token_or(lambda conn: reply(conn, b"[" * 200_000)))
    with pytest.raises(ObjectErrors, match="NO_PAYLOAD"):
        fetch_all(spec(), clients)


def test_an_sts_reply_of_deeply_nested_json_is_a_refusal_never_a_crash(serve: Callable[[Answer], GcpClients]) -> None:
    clients = serve(lambda conn, _: reply(conn, b'{"a":' * 100_000))
    with pytest.raises(GcpIdentityError, match="refused the pod's Workload Identity token"):
        fetch_all(spec(), clients)


@pytest.mark.parametrize("value", [b"[" * 60_000, b'{"user":' * 30_000])
def test_extract_json_key_on_deeply_nested_json_is_a_clear_error(
    serve: Callable[[Answer], GcpClients], value: bytes
) -> None:
    clients = serve(token_or(lambda conn: reply(conn, access_reply(value))))
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(spec(extractJSONKey="user"), clients)
    assert "is not JSON, so extractJSONKey cannot apply" in str(caught.value)
    assert len(str(caught.value)) < 2000


@pytest.mark.parametrize(
    "value",  # each within Secret Manager's 64 KiB; the first crashed libyaml's composer (SIGSEGV)
    [b"[" * 32_000 + b"]" * 32_000, b"k: " + b"{a: " * 12_000 + b"}" * 12_000, b"k:\n" + b"- \n" * 20_000],
)
def test_extract_yaml_key_on_deeply_nested_yaml_is_a_clear_error(
    serve: Callable[[Answer], GcpClients], value: bytes
) -> None:
    clients = serve(token_or(lambda conn: reply(conn, access_reply(value))))
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(spec(extractYAMLKey="k"), clients)
    assert "extractYAMLKey" in str(caught.value) and len(str(caught.value)) < 2000


@pytest.mark.parametrize(
    ("document", "written"),
    [
        # YAML 1.1 booleans and timestamps are plain strings to the provider's YAML 1.2 parser (go-yaml v3).
        (b"k: yes", b"yes"),
        (b"k: off", b"off"),
        (b"k: Y", b"Y"),
        (b"k: 2026-12-06", b"2026-12-06"),
        (b"k: 2026-12-06T12:00:00Z", b"2026-12-06T12:00:00Z"),
        (b"k: 1:20", b"1:20"),
        (b"k: plain text", b"plain text"),
        (b"k: '123'", b"123"),
    ],
)
def test_extract_yaml_key_reads_scalars_as_the_provider_does(
    serve: Callable[[Answer], GcpClients], document: bytes, written: bytes
) -> None:
    clients = serve(token_or(lambda conn: reply(conn, access_reply(document))))
    assert fetch_all(spec(extractYAMLKey="k"), clients)[0].data == written


@pytest.mark.parametrize("document", [b"k: true", b"k: False", b"k: 123", b"k: 0o17", b"k: 1e3", b"k: ~", b"k: [a]"])
def test_extract_yaml_key_refuses_what_the_provider_reads_as_no_string(
    serve: Callable[[Answer], GcpClients], document: bytes
) -> None:
    clients = serve(token_or(lambda conn: reply(conn, access_reply(document))))
    with pytest.raises(ObjectErrors, match="'k' is not a string"):
        fetch_all(spec(extractYAMLKey="k"), clients)


@pytest.mark.parametrize("field", ["error", "status"])
def test_an_sts_error_reply_cannot_write_lines_or_escapes_into_the_message(
    serve: Callable[[Answer], GcpClients], field: str
) -> None:
    """The message becomes the termination message and a log line: Google's text is untrusted there too."""
    forged = 'invalid_grant\n{"level":"info","msg":"fetched"}\x1b[2K\r'
    body = {"error": forged} if field == "error" else {"error": {"status": forged, "message": "x"}}
    clients = serve(lambda conn, _: reply(conn, json.dumps(body).encode(), "400 Bad Request"))
    with pytest.raises(GcpIdentityError) as caught:
        fetch_all(spec(), clients)
    message = str(caught.value)
    assert "HTTP 400 invalid_grant" in message
    assert all(ch.isprintable() for ch in message), repr(message)


def test_a_tls_handshake_that_trickles_in_is_cut_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any certificate is checked, an on-path host can feed the handshake a byte at a time.

    This held before the request deadline: CPython bounds a whole handshake by the socket's timeout
    (CONNECT_TIMEOUT), so four tries end in about ten seconds. Kept so that it stays so."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def trickle() -> None:
        while not done.is_set():
            listener.settimeout(0.2)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16 KiB, its bytes to follow slowly
            while not done.wait(0.3):
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    break
            conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    monkeypatch.setattr(fetcher.gcp, "REQUEST_DEADLINE", 1.0)
    https = Https(f"https://127.0.0.1:{listener.getsockname()[1]}")
    began = time.monotonic()
    ended = run_bounded(lambda: https.request("POST", "sts.googleapis.com", "/v1/token", {}), 20)
    done.set()
    listener.close()
    assert not ended.running, "the request was still in a trickling TLS handshake after 20 s"
    assert isinstance(ended.error, fetcher.gcp.TransportError), ended
    assert time.monotonic() - began < 15


def test_extract_json_key_writes_a_lone_surrogate_escape_as_the_provider_does(
    serve: Callable[[Answer], GcpClients],
) -> None:
    """JSON may escape half a surrogate pair; Python keeps it and then cannot encode it (a crash that quoted the
    character). Go's decoder, the provider's, makes it U+FFFD."""
    value = b'{"user": "\\ud800pass\\udc00word"}'
    clients = serve(token_or(lambda conn: reply(conn, access_reply(value))))
    assert fetch_all(spec(extractJSONKey="user"), clients)[0].data == "\ufffdpass\ufffdword".encode()


def test_a_redirect_is_never_followed(serve: Callable[[Answer], GcpClients]) -> None:
    """A 3xx is an answer, not an instruction: the token must never be sent where a reply points."""
    heads: list[bytes] = []

    def answer(conn: ssl.SSLSocket, head: bytes) -> None:
        heads.append(head.split(b"\r\n", 1)[0])
        if b"/sts.googleapis.com/" in heads[-1]:
            reply(conn, json.dumps({"access_token": "t0ken", "expires_in": 3600}).encode())
        else:
            reply(conn, b"{}", "302 Found\r\nLocation: https://127.0.0.1:9/elsewhere")

    clients = serve(answer)
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(spec(), clients)
    assert "HTTP 302" in str(caught.value)
    assert all(b"elsewhere" not in head for head in heads) and len(heads) == 2


def test_a_reply_over_the_size_bound_is_refused_at_once(serve: Callable[[Answer], GcpClients]) -> None:
    asked: list[int] = []

    def huge(conn: ssl.SSLSocket) -> None:
        asked.append(1)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n" + b" " * 65536)

    clients = serve(token_or(huge))
    with pytest.raises(ObjectErrors) as caught:
        fetch_all(spec(), clients)
    message = str(caught.value)
    assert "UNAVAILABLE" in message and "ReplyTooLargeError: reply of 5000000 bytes exceeds 1048576" in message
    assert "over the size bound" in message and len(message) < 1000
    assert asked == [1]  # not retried: a broken or hostile endpoint, not a passing fault


@pytest.mark.parametrize("endless", ["interim replies", "trailers"])
def test_endless_interim_replies_or_trailers_are_refused_without_a_deadline(endless: str) -> None:
    """A reply is bounded in bytes: 100 Continue after 100 Continue, or trailer after trailer, never ends a
    read and never trips the read timeout, so without a deadline (AWS's calls have none) the shared transport
    read them for ever."""
    done = threading.Event()

    def flood(conn: ssl.SSLSocket, head: bytes) -> None:
        if endless == "trailers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n")
        while not done.is_set():
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 64 if endless != "trailers" else b"X-T: 1\r\n" * 64)

    server = HostileServer(flood)
    client = HttpClient(http_settings({"SSL_CERT_FILE": str(server.ca_file)}))
    ended = run_bounded(lambda: client.request("GET", f"{server.url}/x", {}), 10)
    done.set()
    try:
        assert not ended.running, f"the request was still reading {endless} after 10 s"
        assert isinstance(ended.error, TransportError), ended
        assert len(str(ended.error)) < 200
    finally:
        client.close()
        server.close()


def test_a_deadline_firing_as_the_reply_ends_never_shuts_a_pooled_connection() -> None:
    """The timer thread can pass its own check just before `cancel()` and shut the socket just after: the
    connection was judged unspent and pooled, and the next call on it failed. Here that interleaving is made
    certain (cancel, then the timer's action): the socket must stay open, or `cancel()` must say it is spent."""
    left, right = socket.socketpair()
    try:
        cutoff = _Cutoff(left, 60.0)
        spent = cutoff.cancel()
        cutoff._shut(left)  # the timer thread, already past its check, runs now
        if not spent:
            right.sendall(b"x")
            assert left.recv(1) == b"x", "a connection judged unspent was shut down"
            left.sendall(b"y")
            assert right.recv(1) == b"y"
    finally:
        left.close()
        right.close()
