"""The fetcher under AWS faults: init fails loudly and writes nothing; the sidecar keeps the last good files.

Why it exists: these are the promises an app team relies on when AWS has a bad
minute. Every fault is produced on the wire by `FaultProxy` in front of moto,
and the fetcher runs as it does in a pod (``python -m fetcher``), so retries,
timeouts and error translation are the real ones:

- init, for every fault class (500, 503, ThrottlingException,
  TooManyRequestsException, connection reset, read timeout, AccessDenied):
  non-zero exit, a termination message naming object, region and error code,
  no file written, and exactly the configured number of attempts;
- init, one transient fault then success: exit 0 with the files, after one retry;
- sidecar: through a fault window the files stay whole and unchanged, the next
  refresh after the window delivers the rotated value, SIGTERM still stops it;
- sidecar back-off, measured from the proxy's request timestamps: each wait is
  at least the jittered lower bound, never above the cap, and really jittered.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fetcher.aws import AwsClients, AwsSettings
from fetcher.loop import JITTER_FRACTION, RefreshState, run_sidecar
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fetch import (
    DB_FILES,
    FETCHER,
    REGION,
    REPO_ROOT,
    InitRun,
    app_spec,
    db_value,
    fetcher_env,
    read_db_generation,
    run_init,
    seed_client,
    wait_until,
)
from tests.support.leakscan import SecretLedger, new_secret_value

from .conftest import record_result

GET = "secretsmanager.GetSecretValue"
DESCRIBE = "secretsmanager.DescribeSecret"
SSM_GET = "AmazonSSM.GetParameters"
# Fast settings for the fault matrix: two attempts per call, short timeouts. The start-up deadline
# (the whole delivery retried on top, tests/fetcher/test_startup.py) is off: these count one call's tries.
FAST = {
    "FERRY_AWS_MAX_ATTEMPTS": "2",
    "FERRY_AWS_READ_TIMEOUT": "0.5",
    "FERRY_AWS_CONNECT_TIMEOUT": "0.5",
    "FERRY_STARTUP_DEADLINE": "0",
}


class Seeded:
    def __init__(self, moto_url: str, ledger: SecretLedger) -> None:
        self.sm = seed_client(moto_url)
        self.ssm = seed_client(moto_url, "ssm")
        self.ledger = ledger
        self.token = new_secret_value().split("-")[1]
        self.generation = 1
        self.flags = ledger.remember(new_secret_value())
        ledger.remember(self.token)
        for part in ("user", "pw"):
            ledger.remember(f"{part}-g1-{self.token}")
        self.sm.create_secret(Name="app/db", SecretString=ledger.remember(db_value(1, self.token)))
        self.ssm.put_parameter(Name="/app/flags", Value=self.flags, Type="SecureString")

    def rotate(self) -> int:
        self.generation += 1
        value = self.ledger.remember(db_value(self.generation, self.token))
        self.sm.put_secret_value(SecretId="app/db", SecretString=value)
        return self.generation


@pytest.fixture
def seeded(moto: Any, ledger: SecretLedger) -> Seeded:
    return Seeded(moto.url, ledger)


def _nothing_written(target: Path) -> bool:
    return not target.exists() or not any(target.iterdir())


# (id, fault, error code in the message, transient: retried by botocore)
INIT_FAULTS = [
    ("500", lambda: Fault.error(500), "InternalServiceError", True),
    ("503", lambda: Fault.error(503), "ServiceUnavailable", True),
    ("throttling", lambda: Fault.throttle(), "ThrottlingException", True),
    ("too-many-requests", lambda: Fault.throttle("TooManyRequestsException"), "TooManyRequestsException", True),
    ("connection-reset", lambda: Fault.reset(), "ConnectionClosedError", True),
    ("read-timeout", lambda: Fault.timeout(hold=5), "ReadTimeoutError", True),
    ("access-denied", lambda: Fault.error(400, "AccessDeniedException"), "AccessDeniedException", False),
]
TRANSIENT = [case for case in INIT_FAULTS if case[3]]


@dataclass
class CaseOutcome:
    label: str
    run: InitRun
    target: Path
    attempts: int
    outcomes: list[str]


def _run_cases(moto_url: str, tmp_path: Path, cases: list[tuple[str, Fault, dict[str, str]]]) -> list[CaseOutcome]:
    """Each case gets its own proxy and init process; they run 4 at a time (the processes mostly wait)."""

    def one(index: int, label: str, fault: Fault, env_extra: dict[str, str]) -> CaseOutcome:
        with FaultProxy(moto_url) as proxy:
            proxy.add(fault)
            case_dir = tmp_path / f"case{index}"
            case_dir.mkdir()
            run = run_init(fetcher_env(proxy.url, app_spec(), **env_extra), case_dir / "s", case_dir / "termination")
            target = fault.target or ""
            return CaseOutcome(
                label, run, case_dir / "s", proxy.count(target), [r.outcome for r in proxy.select(target)]
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(one, index, *case) for index, case in enumerate(cases)]
        return [future.result() for future in futures]


def _init_fault_matrix(moto_url: str, ledger: SecretLedger, tmp_path: Path, operations: list[str]) -> None:
    cases = []
    expected = {}
    for operation in operations:
        for name, make_fault, code, transient in INIT_FAULTS:
            fault = make_fault()
            fault.target = operation
            label = f"{operation} {name}"
            cases.append((label, fault, FAST))
            expected[label] = ("app/db" if operation == GET else "/app/flags", code, 2 if transient else 1)
    problems = []
    for case in _run_cases(moto_url, tmp_path, cases):
        ledger.expose(f"fetcher-stderr:init:{case.label}", case.run.stderr)
        ledger.expose(f"termination-message:init:{case.label}", case.run.termination)
        failed_object, code, attempts = expected[case.label]
        if case.run.returncode != 1:
            problems.append(f"{case.label}: exit {case.run.returncode}")
        for needle in (failed_object, REGION, code):
            if needle not in case.run.termination:
                problems.append(f"{case.label}: {needle!r} missing from {case.run.termination!r}")
        if not _nothing_written(case.target):
            problems.append(f"{case.label}: files written: {sorted(p.name for p in case.target.iterdir())}")
        # Retried exactly as configured (2 attempts) when transient, never when AWS said no.
        if case.attempts != attempts:
            problems.append(f"{case.label}: {case.attempts} attempts, expected {attempts}")
        if case.run.elapsed > 60:  # liveness: a dead endpoint costs seconds, not minutes
            problems.append(f"{case.label}: took {case.run.elapsed:.0f}s")
        record_result(
            "init_faults",
            case.label,
            {"exit": case.run.returncode, "attempts": case.attempts, "nothing written": _nothing_written(case.target)},
        )
    assert problems == []


def test_init_fails_precisely_and_writes_nothing_for_every_fault_class(
    moto: Any, seeded: Seeded, ledger: SecretLedger, tmp_path: Path
) -> None:
    """Every class on GetSecretValue (the SSM object succeeds, and still nothing may be written)."""
    _init_fault_matrix(moto.url, ledger, tmp_path, [GET])


@pytest.mark.slow
def test_init_fault_matrix_on_ssm(moto: Any, seeded: Seeded, ledger: SecretLedger, tmp_path: Path) -> None:
    _init_fault_matrix(moto.url, ledger, tmp_path, [SSM_GET])


def test_init_retries_one_transient_fault_then_succeeds(
    moto: Any, seeded: Seeded, ledger: SecretLedger, tmp_path: Path
) -> None:
    cases = []
    for name, make_fault, _, _ in TRANSIENT:
        fault = make_fault()
        fault.target, fault.times = (SSM_GET if name == "throttling" else GET), 1
        # Default retry settings (5 attempts); a shorter read timeout only so the timeout case is quick.
        cases.append((f"one {name} on {fault.target}", fault, {"FERRY_AWS_READ_TIMEOUT": "1"}))
    problems = []
    for case, (_, fault, _) in zip(_run_cases(moto.url, tmp_path, cases), cases, strict=True):
        ledger.expose(f"fetcher-stderr:init-retry:{case.label}", case.run.stderr)
        if case.run.returncode != 0:
            problems.append(f"{case.label}: exit {case.run.returncode}: {case.run.termination}")
            continue
        if read_db_generation(case.target) != 1 or (case.target / "_app_flags").read_text() != seeded.flags:
            problems.append(f"{case.label}: wrong files")
        if [o.split(":")[0] for o in case.outcomes] != [fault.label().split(":")[0], "forwarded"]:
            problems.append(f"{case.label}: requests {case.outcomes}")
        record_result("init_faults", f"{case.label}, then success", {"exit": 0, "attempts": case.attempts})
    assert problems == []


def test_init_with_default_settings_gives_up_after_bounded_attempts(
    fault_proxy: FaultProxy, seeded: Seeded, ledger: SecretLedger, tmp_path: Path
) -> None:
    fault_proxy.add(Fault.error(503, target=GET))
    env = fetcher_env(fault_proxy.url, app_spec(), FERRY_STARTUP_DEADLINE="0")
    run = run_init(env, tmp_path / "s", tmp_path / "termination")
    ledger.expose("fetcher-stderr:init-default", run.stderr)
    assert run.returncode == 1
    # AwsSettings.max_attempts per call; the start-up deadline's retries of the whole delivery are off here.
    assert fault_proxy.count(GET) == 5
    assert run.elapsed < 60
    record_result("init_faults", "persistent 503, default settings", {"exit": 1, "attempts": 5})


def test_server_side_failure_hint_does_not_blame_the_users_iam(
    fault_proxy: FaultProxy, seeded: Seeded, ledger: SecretLedger, tmp_path: Path
) -> None:
    """A 5xx is AWS's problem: the hint must not send the app team to fix IAM permissions or the object."""
    fault_proxy.add(Fault.error(500, target=GET))
    run = run_init(fetcher_env(fault_proxy.url, app_spec(), **FAST), tmp_path / "s", tmp_path / "termination")
    ledger.expose("termination-message:init-5xx", run.termination)
    assert run.returncode == 1
    assert "IAM" not in run.termination, run.termination


# --- Sidecar. -------------------------------------------------------------------


def test_sidecar_process_keeps_last_good_files_through_a_fault_window_then_refreshes(
    fault_proxy: FaultProxy, seeded: Seeded, ledger: SecretLedger, tmp_path: Path
) -> None:
    target = tmp_path / "secrets"
    env = fetcher_env(
        fault_proxy.url, app_spec(refresh_seconds=0.2), FERRY_AWS_MAX_ATTEMPTS="1", FERRY_AWS_READ_TIMEOUT="0.5"
    )
    sidecar = subprocess.Popen(
        [*FETCHER, "sidecar", "--dir", str(target)], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: read_db_generation(target) == 1, timeout=30), "first delivery never came"
        # Every fault class on every operation, one after another, for as long as the window lasts.
        rng = random.Random(4)
        window = 2.0
        kinds = [Fault.error(500), Fault.error(503), Fault.throttle(), Fault.reset(), Fault.timeout(hold=1)]
        for fault in kinds:
            fault.probability = 0.5
            fault_proxy.add_window(fault, duration=window)
        fault_proxy.add_window(Fault.error(503), duration=window)
        window_began = time.monotonic()
        seeded.rotate()
        reads = 0
        while time.monotonic() - window_began < window - 0.1:
            assert read_db_generation(target) == 1, "the last good files changed or broke during the fault window"
            reads += 1
            time.sleep(rng.uniform(0, 0.01))
        failed = [r for r in fault_proxy.snapshot() if not r.outcome.startswith("forwarded")]
        assert failed, "no request hit a fault: the window proved nothing"
        # After the window, the next refresh delivers the rotated value (liveness: back-off is at most a few s).
        assert wait_until(lambda: read_db_generation(target) == 2, timeout=30), "no refresh after the fault ended"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            _, stderr = sidecar.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            _, stderr = sidecar.communicate()
    ledger.expose("fetcher-stderr:sidecar-window", stderr)
    assert sidecar.returncode == 0, stderr
    assert "keeping the last good files" in stderr
    record_result(
        "sidecar_faults",
        "fault window, process (500/503/throttle/reset/timeout)",
        {"failed requests": len(failed), "reads during window": reads, "files intact": True, "recovered": True},
    )


def _in_process_sidecar(
    proxy: FaultProxy, target: Path, interval: float, max_backoff: float, read_timeout: float = 2.0
) -> tuple[threading.Event, threading.Thread, AwsClients]:
    # The read timeout stays well below the timeout fault's hold (5 s), and well above what a loaded 2-core
    # machine can add to a healthy reply: a spurious timeout would count as one more failure.
    spec = app_spec(refresh_seconds=interval, with_parameter=False)
    clients = AwsClients(AwsSettings(max_attempts=1, connect_timeout=0.3, read_timeout=read_timeout))
    state = RefreshState(spec=spec, clients=clients, target_dir=target)
    stop = threading.Event()
    thread = threading.Thread(
        target=run_sidecar, args=(state, stop), kwargs={"max_backoff": max_backoff}, daemon=True, name="sidecar"
    )
    thread.start()
    return stop, thread, clients


def test_sidecar_survives_each_fault_class_in_turn(
    fault_proxy: FaultProxy, seeded: Seeded, ledger: SecretLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (so the back-off cap can be small): every class once, files intact throughout, then recovery."""
    target = tmp_path / "secrets"
    stop, thread, clients = _in_process_sidecar(fault_proxy, target, interval=0.05, max_backoff=0.2)
    try:
        assert wait_until(lambda: read_db_generation(target) == 1, timeout=20)
        # Transient classes on whatever comes first (the DescribeSecret version checks). AccessDenied goes
        # on GetSecretValue: a denied DescribeSecret is not a failure, the fetcher falls back to
        # GetSecretValue for the version check (sources.py).
        faults = [make() for _, make, _, _ in TRANSIENT] + [Fault.error(400, "AccessDeniedException", target=GET)]
        for fault in faults:
            fault.times = 1
            fault_proxy.add(fault)
        seeded.rotate()
        seen_during_faults: set[int | None] = set()
        while any(fault.hits == 0 for fault in faults):
            seen_during_faults.add(read_db_generation(target))
            time.sleep(0.005)
            assert thread.is_alive()
        assert seen_during_faults == {1}, seen_during_faults
        assert wait_until(lambda: read_db_generation(target) == 2, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)
        clients.close()
    assert not thread.is_alive()
    captured = capsys.readouterr()
    ledger.expose("fetcher-stderr:sidecar-in-process", captured.err + captured.out)
    failures = [line for line in captured.err.splitlines() if "refresh failed; keeping the last good files" in line]
    outcomes = [r.outcome for r in fault_proxy.snapshot()]
    assert len(failures) == len(faults), (outcomes, failures)
    record_result("sidecar_faults", "each fault class once, in process", {"faults": len(faults), "recovered": True})


def test_sidecar_backoff_is_bounded_and_jittered(
    fault_proxy: FaultProxy, seeded: Seeded, ledger: SecretLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The back-off the sidecar chose after each failure (its log line), checked exactly; and what it did.

    Nothing here depends on how fast the machine is: the chosen waits are checked against the rule
    (doubling from the interval, capped, +-10% jitter) with no slack; the waits measured at the proxy
    only against a floor, since a loaded machine can only make a wait longer, never shorter.
    """
    interval, cap, samples = 0.025, 0.2, 20
    target = tmp_path / "secrets"
    stop, thread, clients = _in_process_sidecar(fault_proxy, target, interval=interval, max_backoff=cap)
    try:
        assert wait_until(lambda: read_db_generation(target) == 1, timeout=20)
        fault_proxy.add(Fault.error(503, target=DESCRIBE))
        assert fault_proxy.wait_for(lambda p: p.count(DESCRIBE, "error") >= samples + 1, timeout=120)
    finally:
        stop.set()
        thread.join(timeout=10)
        clients.close()
    stderr = capsys.readouterr().err
    ledger.expose("fetcher-stderr:sidecar-backoff", stderr)
    chosen = _chosen_backoffs(stderr)[:samples]
    assert [failures for failures, _ in chosen] == list(range(1, samples + 1)), chosen
    low, high = 1 - JITTER_FRACTION, 1 + JITTER_FRACTION
    rounding = 0.0005  # the log line rounds the wait to milliseconds
    for failures, wait in chosen:
        nominal = min(interval * 2**failures, cap)
        assert nominal * low - rounding <= wait <= nominal * high + rounding, (
            f"after failure {failures} the sidecar chose {wait}s, outside [{nominal * low:.4f}, {nominal * high:.4f}]"
        )
    plateau = [wait for _, wait in chosen[3:]]  # after 0.05, 0.1, the cap of 0.2 holds
    # Jitter: 17 draws spread over +-10% of the cap (0.04 s wide); all within 0.012 s would be a broken rng.
    assert max(plateau) - min(plateau) > 0.012, f"capped waits all alike, no jitter? {plateau}"
    # And the sidecar really waited that long before asking again (scheduling only adds to a wait).
    measured = _client_waits([r for r in fault_proxy.select(DESCRIBE) if r.outcome.startswith("error")][: samples + 1])
    for (failures, wait), waited in zip(chosen, measured, strict=False):
        assert waited >= wait - rounding - 0.002, f"after failure {failures}: waited {waited:.4f}s of {wait}s"
    record_result(
        "sidecar_faults",
        "back-off (interval 25 ms, cap 200 ms, 20 failures)",
        {
            "min capped wait s": round(min(plateau), 4),
            "max capped wait s": round(max(plateau), 4),
            "allowed": f"[{cap * low:.3f}, {cap * high:.3f}]",
        },
    )


def _chosen_backoffs(stderr: str) -> list[tuple[int, float]]:
    """(failures, retry_in_seconds) of each "refresh failed" line the sidecar logged, in order."""
    chosen = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("msg", "")).startswith("refresh failed"):
            chosen.append((int(record["failures"]), float(record["retry_in_seconds"])))
    return chosen


# Time the OS may add to a wait on a loaded 2-core machine; it only ever adds, so lower bounds stay tight.
SCHEDULING_SLACK = 0.3


def _client_waits(records: list[Any]) -> list[float]:
    """How long the client waited between requests: from one answer leaving the proxy to the next arrival."""
    return [later.at - earlier.finished for earlier, later in zip(records, records[1:], strict=False)]


def test_sidecar_healthy_waits_are_jittered_around_the_interval(
    fault_proxy: FaultProxy, seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    interval, samples = 0.2, 12
    target = tmp_path / "secrets"
    stop, thread, clients = _in_process_sidecar(fault_proxy, target, interval=interval, max_backoff=1)
    try:
        assert fault_proxy.wait_for(lambda p: p.count(DESCRIBE) >= samples + 1, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=10)
        clients.close()
    capsys.readouterr()
    waits = _client_waits(fault_proxy.select(DESCRIBE)[: samples + 1])
    assert all(wait >= interval * (1 - JITTER_FRACTION) - 0.002 for wait in waits), waits
    assert all(wait <= interval * (1 + JITTER_FRACTION) + SCHEDULING_SLACK for wait in waits), waits
    assert max(waits) - min(waits) > 0.012, f"waits all alike, no jitter? {waits}"
    # An unchanged refresh is only a version check: no GetSecretValue after the first delivery.
    assert fault_proxy.count(GET) == 1
    assert not any(name for name in DB_FILES if not (target / name).exists())
    record_result(
        "sidecar_faults",
        "healthy waits (interval 200 ms)",
        {"min wait s": round(min(waits), 4), "max wait s": round(max(waits), 4), "GetSecretValue after first": 0},
    )
