"""How long `python -m fetcher` takes to stop on SIGINT / SIGTERM while an AWS call hangs.

Why it exists: issue 10 asks that Ctrl-C during a hung fetch stops `once` and
the sidecar "within a second", and the kubelet's SIGTERM must stop the
sidecar as quickly. Tests prove the exit code and the absence of a traceback
with a generous hang guard; the time itself is measured here, never in a test.

Each run starts the real fetcher against a loopback socket that accepts
connections and never answers (read timeout set to an hour), waits until the
fetcher has connected, sends the signal, and times signal -> process exit.
Budget: p99 <= 1 s for every case.

    python -m bench.stop_on_signal [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import benchlib

BUDGET_SECONDS = 1.0
SPC_YAML = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: app}
spec:
  provider: aws
  parameters:
    region: us-east-1
    objects: |
      - {objectName: "app/a", objectType: "secretsmanager"}
      - {objectName: "app/b", objectType: "secretsmanager"}
"""
# (command, signal, expected exit code)
CASES = (
    ("once", signal.SIGINT, 130),
    ("init", signal.SIGTERM, 143),
    ("sidecar", signal.SIGINT, 130),
    ("sidecar", signal.SIGTERM, 0),
)


class SilentEndpoint:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server((benchlib.LOOPBACK, 0))
        self.url = f"http://{benchlib.LOOPBACK}:{self.server.getsockname()[1]}"
        self.accepted = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)
            self.accepted += 1


def one_run(command: str, signum: int, endpoint: SilentEndpoint, work: Path) -> tuple[float, int]:
    spec = benchlib.fetch_spec_json(
        [
            {"objectName": "app/a", "objectType": "secretsmanager"},
            {"objectName": "app/b", "objectType": "secretsmanager"},
        ],
        refresh_seconds=30.0 if command == "sidecar" else 0.0,
    )
    env = benchlib.clean_env(
        {
            **benchlib.aws_env(endpoint.url),
            "FERRY_AWS_READ_TIMEOUT": "3600",
            "FERRY_SPEC": spec,
            "FERRY_TERMINATION_LOG": str(work / "term"),
            "PYTHONPATH": str(benchlib.REPO_ROOT),
        }
    )
    manifest = work / "spc.yaml"
    manifest.write_text(SPC_YAML)
    args = [command, "--dir", str(work / "out")]
    if command == "once":
        args += ["--secret-provider-class", str(manifest)]
    before = endpoint.accepted
    process = subprocess.Popen(
        [sys.executable, "-m", "fetcher", *args],
        env=env,
        cwd=benchlib.REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while endpoint.accepted == before and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # let the request be sent and the read begin
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return float("inf"), -1
    return time.monotonic() - sent, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per case (default 10)")
    benchlib.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "stop_on_signal")
    endpoint = SilentEndpoint()
    results: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferry-stop-") as scratch:
        for command, signum, expected in CASES:
            name = f"{command} {signal.Signals(signum).name}"
            seconds: list[float] = []
            codes: list[int] = []
            for run in range(args.runs):
                work = Path(scratch, f"{command}-{signum}-{run}")
                work.mkdir()
                elapsed, code = one_run(command, signum, endpoint, work)
                seconds.append(elapsed)
                codes.append(code)
            stats = benchlib.summarize(seconds, scale=1000.0)
            met = stats["p99"] <= BUDGET_SECONDS * 1000 and all(code == expected for code in codes)
            results[name] = {"stop_ms": stats, "exit_codes": sorted(set(codes)), "expected_exit_code": expected}
            rows.append(
                [
                    name,
                    f"{stats['p50']:.0f}",
                    f"{stats['p99']:.0f}",
                    f"{stats['max']:.0f}",
                    sorted(set(codes)),
                    benchlib.verdict(met),
                ]
            )
    print(benchlib.table(rows, ["case", "p50 ms", "p99 ms", "max ms", "exit codes", f"budget {BUDGET_SECONDS:g} s"]))
    budget_met = all(
        case["stop_ms"]["p99"] <= BUDGET_SECONDS * 1000 and case["exit_codes"] == [case["expected_exit_code"]]
        for case in results.values()
    )
    path = benchlib.write_results(
        "stop_on_signal",
        {
            "machine": benchlib.machine_info(),
            "runs_per_case": args.runs,
            "budget_seconds": BUDGET_SECONDS,
            "budget_met": budget_met,
            "load": benchlib.end_load(load),
            "cases": results,
        },
    )
    print(json.dumps({"budget_met": budget_met, "results": str(path.relative_to(benchlib.REPO_ROOT))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
