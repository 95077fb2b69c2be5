"""Change notification: a POST to a localhost URL and a signal to a named process; failures are logged, never raised."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fetcher.contract import Notify
from fetcher.logs import log
from fetcher.notify import find_processes, notify_app, post_reload, signal_processes
from tests.support.aws import LocalHttpStub, RecordedRequest, Reply

StubFactory = Callable[[Callable[[RecordedRequest], Reply]], LocalHttpStub]


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    stream = io.StringIO()
    previous = log.set_stream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    log.set_stream(previous)


def test_a_reload_post_reaches_the_app(http_stub: StubFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # must be ignored for a localhost call
    app = http_stub(lambda request: (204, {}, b""))
    assert post_reload(f"{app.url}/-/reload") is True
    (request,) = app.requests
    assert (request.method, request.path, request.body) == ("POST", "/-/reload", b"")


def test_a_refused_or_unreachable_reload_is_logged_not_raised(
    http_stub: StubFactory, log_lines: Callable[[], list[dict[str, object]]]
) -> None:
    app = http_stub(lambda request: (500, {}, b"nope"))
    assert post_reload(f"{app.url}/reload") is False
    assert post_reload("http://127.0.0.1:9/reload", timeout=1.0) is False
    messages = [(line["msg"], line.get("status"), line.get("error")) for line in log_lines()]
    assert messages[0] == ("reload notification refused", 500, None)
    assert messages[1][0] == "reload notification failed"


def test_processes_are_found_by_comm_or_argv0(tmp_path: Path) -> None:
    for pid, comm, cmdline in [
        (101, "nginx", b"nginx: master process\0"),
        (102, "python3", b"/usr/local/bin/gunicorn\0app:app\0"),
        (103, "bash", b"bash\0"),
    ]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (tmp_path / str(pid) / "cmdline").write_bytes(cmdline)
    (tmp_path / "self").mkdir()
    assert find_processes("nginx", proc_root=str(tmp_path)) == [101]
    assert find_processes("gunicorn", proc_root=str(tmp_path)) == [102]
    assert find_processes("java", proc_root=str(tmp_path)) == []


def test_a_signal_reaches_a_process_by_name(tmp_path: Path) -> None:
    name = f"ferry-test-app-{uuid.uuid4().hex[:8]}"  # unique, so no other process on the machine matches
    marker = tmp_path / "got-signal"
    ready = tmp_path / "ready"
    program = (
        "import pathlib, signal, time\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text('HUP'))\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "deadline = time.time() + 20\n"
        f"while time.time() < deadline and not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.02)\n"
    )
    app = subprocess.Popen(["bash", "-c", f'exec -a {name} "$0" -c "$1"', sys.executable, program])
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert signal_processes(name, "SIGHUP") == [app.pid]
        assert app.wait(timeout=15) == 0
        assert marker.read_text() == "HUP"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def test_no_matching_process_says_why(log_lines: Callable[[], list[dict[str, object]]]) -> None:
    assert signal_processes(f"absent-{uuid.uuid4().hex}", "SIGHUP") == []
    assert "shareProcessNamespace: true" in str(log_lines()[-1]["msg"])


def test_notify_app_does_both(
    http_stub: StubFactory, tmp_path: Path, log_lines: Callable[[], list[dict[str, object]]]
) -> None:
    app = http_stub(lambda request: (200, {}, b"ok"))
    (tmp_path / "1").mkdir()
    notify_app(Notify(url=f"{app.url}/reload", signal="SIGHUP", process="nothing-here"), proc_root=str(tmp_path))
    assert len(app.requests) == 1
    assert [line["msg"] for line in log_lines()] == [
        "reload notification sent",
        "no process to signal; the pod needs shareProcessNamespace: true",
    ]
