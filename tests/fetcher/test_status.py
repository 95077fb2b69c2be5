"""The sidecar's status entry and its liveness probe: pure judging, the file, the loop, the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fetcher.aws import AwsClients
from fetcher.loop import RefreshState, deliver, run_sidecar
from fetcher.status import (
    MAX_ERROR_CHARS,
    STATUS_NAME,
    SidecarStatus,
    bound_error,
    read_status,
    record_failure,
    record_success,
    verdict,
    write_status,
)
from fetcher.writer import swap_directory
from tests.support.aws import FETCHER_COMMAND, PRIMARY, REPO_ROOT, Seeder, make_clients, make_spec


def sm(name: str, **fields: Any) -> dict[str, Any]:
    return {"objectName": name, "objectType": "secretsmanager", **fields}


# --- judging (pure) ------------------------------------------------------------


def test_a_failure_run_starts_once_and_a_success_ends_it() -> None:
    first = record_failure(None, 100.0, "prod/db: ResourceNotFoundException in us-east-1")
    second = record_failure(first, 160.0, "prod/db: ThrottlingException in us-east-1")
    assert (second.ok, second.failures, second.failing_since) == (False, 2, 100.0)
    assert second.last_error == "prod/db: ThrottlingException in us-east-1"
    healed = record_success(second, 200.0)
    assert (healed.ok, healed.failures, healed.failing_since, healed.last_success) == (True, 0, None, 200.0)
    again = record_failure(healed, 300.0, "x")
    assert (again.failures, again.failing_since, again.last_success) == (1, 300.0, 200.0)


def test_the_probe_fails_only_after_the_allowed_time() -> None:
    status = record_failure(record_failure(None, 1000.0, "prod/db: AccessDeniedException in eu-west-1"), 1300.0, "e")
    healthy, line = verdict(status, 1000.0 + 599, 600)
    assert healthy and line.startswith("refresh failing for 9m59s (2 tries in a row)")
    healthy, line = verdict(status, 1000.0 + 600, 600)
    assert not healthy
    assert line == (
        "unhealthy: refresh failing for 10m (2 tries in a row); last good files kept; last error: e (allowed: 10m)"
    )
    assert verdict(status, 10**9, 0)[0] is True  # 0: the probe never fails


def test_no_entry_or_a_good_one_is_healthy() -> None:
    assert verdict(None, 5.0, 60) == (True, "no refresh has finished yet")
    assert verdict(record_success(None, 100.0), 190.0, 60) == (True, "last refresh succeeded 90s ago")


def test_the_error_kept_is_one_bounded_line_cut_between_words() -> None:
    long = "prod/db: AccessDeniedException in us-east-1\n" + " ".join(f"word{i}" for i in range(500))
    kept = bound_error(long)
    assert len(kept) <= MAX_ERROR_CHARS and "\n" not in kept and kept.endswith(" ...")
    assert kept[:-4].split(" ")[-1].startswith("word") and kept[:-4].split(" ")[-1] in long.split()


# --- the entry on disk ---------------------------------------------------------


def test_the_entry_round_trips_and_junk_reads_as_none(tmp_path: Path) -> None:
    status = record_failure(None, 1234.5, "prod/db: ResourceNotFoundException in us-east-1")
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status
    assert oct((tmp_path / STATUS_NAME).stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(tmp_path)) == [STATUS_NAME]  # no temporary file left behind
    for junk in (b"{", b"[]", b'{"ok": "yes"}', b'{"ok": false, "failing_since": "soon"}', b" " * 9000):
        (tmp_path / STATUS_NAME).write_bytes(junk)
        assert read_status(tmp_path) is None
    (tmp_path / STATUS_NAME).unlink()
    (tmp_path / "elsewhere").write_text(json.dumps({"ok": False, "failures": 9, "failing_since": 1.0}))
    (tmp_path / STATUS_NAME).symlink_to("elsewhere")
    assert read_status(tmp_path) is None  # never followed


def test_a_swap_keeps_the_entry(target: Path) -> None:
    spec = make_spec([sm("db")])
    swap_directory(target, {"db": (b"v1", 0o644)}, None, None)
    write_status(target, record_success(None, 1.0))
    swap_directory(target, {"db": (b"v2", 0o644)}, None, None)
    assert read_status(target) == record_success(None, 1.0)
    assert (target / "db").read_bytes() == b"v2"
    del spec


# --- the sidecar loop records each cycle -----------------------------------------


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 30.0  # every cycle "takes" 30 s, so minutes pass in a few real milliseconds
        return self.now


def run_until(state: RefreshState, clock: Clock, done: Callable[[], bool]) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=run_sidecar, args=(state, stop), kwargs={"max_backoff": 0.02, "clock": clock})
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        loop.join(timeout=10)
    assert done()


def test_the_loop_records_failures_keeps_them_across_a_restart_and_clears_them(
    seed: Seeder, clients: AwsClients, target: Path
) -> None:
    seed.secret("db", "v1-the-value")
    spec = make_spec([sm("db")], refresh_interval=0.01)
    deliver(spec, clients, target)  # what the init container did
    outage = make_clients(endpoint_overrides={PRIMARY: "http://127.0.0.1:9"})
    clock = Clock(1_000_000.0)
    try:
        run_until(RefreshState(spec, outage, target), clock, lambda: (read_status(target) or _ok()).failures >= 3)
        first = read_status(target)
        assert first is not None and first.failing_since == 1_000_030.0
        assert "EndpointConnectionError" in first.last_error or "could not" in first.last_error
        # A restarted sidecar (the liveness probe's doing) carries the same failure run on.
        run_until(RefreshState(spec, outage, target), clock, lambda: (read_status(target) or _ok()).failures >= 5)
        carried = read_status(target)
        assert carried is not None and carried.failing_since == 1_000_030.0
        assert not verdict(carried, clock.now, 120)[0]
    finally:
        outage.close()
    run_until(RefreshState(spec, clients, target), clock, lambda: (read_status(target) or _ok(False)).ok)
    assert verdict(read_status(target), clock.now, 120)[0]
    assert (target / "db").read_bytes() == b"v1-the-value"


def test_the_entry_never_holds_a_value(seed: Seeder, clients: AwsClients, target: Path) -> None:
    seed.secret("db", "not-json-the-secret-value-7731")
    spec = make_spec([sm("db", jmesPath=[{"path": "password", "objectAlias": "pw"}])], refresh_interval=0.01)
    target.mkdir()  # the pod's emptyDir exists before any container starts
    run_until(RefreshState(spec, clients, target), Clock(0.0), lambda: (read_status(target) or _ok()).failures >= 1)
    entry = (target / STATUS_NAME).read_text()
    assert "jmesPath" in entry or "JSON" in entry
    assert "the-secret-value-7731" not in entry


def _ok(ok: bool = True) -> SidecarStatus:
    return SidecarStatus(ok=ok)


# --- the command the kubelet runs --------------------------------------------------


def probe(target: Path, after: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FETCHER_COMMAND, "status", "--dir", str(target), "--unhealthy-after", after],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)},
    )


def test_the_probe_command_exits_1_with_one_line_once_unhealthy(tmp_path: Path) -> None:
    fresh = probe(tmp_path, "600")
    assert (fresh.returncode, fresh.stdout) == (0, "no refresh has finished yet\n")
    write_status(tmp_path, record_failure(None, time.time() - 700, "prod/db: ResourceNotFoundException in us-east-1"))
    failing = probe(tmp_path, "600")
    assert failing.returncode == 1 and failing.stdout.count("\n") == 1
    assert failing.stdout.startswith("unhealthy: refresh failing for 11m")
    assert "prod/db: ResourceNotFoundException in us-east-1 (allowed: 10m)" in failing.stdout
    assert probe(tmp_path, "900").returncode == 0
    bad = probe(tmp_path, "ten")
    assert bad.returncode == 2 and "--unhealthy-after" in bad.stderr and "Traceback" not in bad.stderr


def test_the_probe_imports_no_aws_code(tmp_path: Path) -> None:
    """It runs every minute in every pod: a Python start plus one small file read, no AWS client.

    (`fetcher.errors` imports the AWS client's error classes only when it translates an AWS error.)
    """
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "fetcher",
            "status",
            "--dir",
            str(tmp_path),
            "--unhealthy-after",
            "60",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "fetcher.status" in imported
    heavy = ("boto3", "botocore", "ssl", "http.client", "fetcher.aws", "fetcher.transport", "fetcher.sources")
    assert not imported.intersection(heavy)
