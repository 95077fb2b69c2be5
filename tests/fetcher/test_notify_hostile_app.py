"""A reload endpoint that redirects or does not speak HTTP: logged, never followed, never fatal (issue 10, item 10)."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from fetcher.contract import Notify
from fetcher.logs import log
from fetcher.notify import notify_app, post_reload
from tests.support.aws import LocalHttpStub, RecordedRequest, Reply

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    stream = io.StringIO()
    previous = log.set_stream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    log.set_stream(previous)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(
    http_stub: StubFactory, log_lines: Callable[[], list[dict[str, object]]], status: int
) -> None:
    elsewhere = http_stub(lambda request: (204, {}, b""))
    app = http_stub(lambda request: (status, {"Location": f"{elsewhere.url}/stolen"}, b""))
    assert post_reload(f"{app.url}/reload") is False
    assert len(app.requests) == 1
    assert elsewhere.requests == []
    assert [(line["msg"], line.get("status")) for line in log_lines()] == [("reload notification refused", status)]


class NotHttp:
    """Answers every connection with bytes that are not an HTTP status line, then closes it."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/reload"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(self.reply)

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.server.close()
        self._thread.join(timeout=5)


@pytest.mark.parametrize(
    "reply", [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70000]
)
def test_an_answer_that_is_not_http_is_logged_not_raised(
    log_lines: Callable[[], list[dict[str, object]]], reply: bytes
) -> None:
    app = NotHttp(reply)
    try:
        notify_app(Notify(url=app.url, signal=None, process=None), timeout=5.0)
        assert post_reload(app.url, timeout=5.0) is False
    finally:
        app.close()
    lines = log_lines()
    assert [line["msg"] for line in lines] == ["reload notification failed"] * 2
    assert all(len(str(line.get("reason", ""))) <= 200 for line in lines)
