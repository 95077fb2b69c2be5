"""A reply that runs past its Content-Length must never be read as the next call's answer."""

from __future__ import annotations

import socket
import threading

from fetcher.transport import HttpClient, HttpSettings

FIRST = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSTALE!"
SECOND = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"


def _serve(listener: socket.socket) -> None:
    first = True
    for _ in range(2):
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                conn.sendall(FIRST + SMUGGLED if first else SECOND)
                first = False


def test_bytes_past_a_reply_never_answer_the_next_call() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    threading.Thread(target=_serve, args=(listener,), daemon=True).start()
    client = HttpClient(HttpSettings())
    try:
        assert client.request("GET", f"http://127.0.0.1:{port}/a", {}).body == b"first"
        assert client.request("GET", f"http://127.0.0.1:{port}/b", {}).body == b"second"
    finally:
        client.close()
        listener.close()


def test_conflicting_content_lengths_are_refused() -> None:
    import io

    import pytest

    from fetcher.httpwire import ConnectionClosedError, read_reply

    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nfirst" + SMUGGLED
    with pytest.raises(ConnectionClosedError, match="conflicting Content-Length"):
        read_reply(io.BufferedReader(io.BytesIO(wire)), 1 << 20)


def test_chunked_with_content_length_is_never_reused() -> None:
    import io

    from fetcher.httpwire import read_reply

    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    reply, keep = read_reply(io.BufferedReader(io.BytesIO(wire)), 1 << 20)
    assert reply.body == b"ok" and keep is False
