"""kill -9 during atomic swaps, hundreds of times: the volume is always one whole set, and restart cleans up.

Why it exists: the test suite kills a swapping writer 30 times (300 under
``-m slow``); this runs the long version and also kills the *real sidecar*:

- part A (writer): a process forked from a forkserver runs the real
  `fetcher.writer.swap_directory` back to back on self-checking file sets and
  is SIGKILLed at a random moment; the directory must hold one complete set of
  one generation (every file whole, reachable through its link), and the next
  start (a swap, which cleans first) must leave no leftover but the one
  retired generation the writer keeps on purpose. Default 500 kills.
- part B (sidecar): the real `python -m fetcher sidecar` against moto, with a
  JSON secret rotated every few milliseconds and split into files by jmesPath
  (so a mixed set is detectable), is SIGKILLed after its first delivery, at a
  random moment or (every other kill) the instant a swap is seen under way;
  the set must be whole and of one generation, and the next
  `python -m fetcher init` must succeed and clean up. Default 200 kills.

Both report how many kills left traces of an unfinished swap (proof that the
kills landed inside swaps). Exit status: 1 if any check failed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from bench import benchlib
from fetcher.contract import spec_to_json
from tests.support import swap as swaplib
from tests.support.fetch import DB_FILES, app_spec, db_value, read_db_generation


def writer_kills(iterations: int, seed: int) -> dict[str, Any]:
    from fetcher.logs import log

    log.set_level("error")  # the restart swaps run in this process; one line each is noise here
    with tempfile.TemporaryDirectory(prefix="ferry-kill-writer-") as tmp:
        began = time.monotonic()
        report = swaplib.kill_loop(Path(tmp) / "vol", iterations, seed=seed)
        return {
            "kills": report.iterations,
            "landed_mid_swap": report.mid_swap,
            "inconsistent": report.inconsistent[:10],
            "not_cleaned": report.not_cleaned[:10],
            "distinct_generations_seen": len(report.generations_seen),
            "seconds": round(time.monotonic() - began, 1),
            "ok": not report.inconsistent and not report.not_cleaned,
        }


def sidecar_kills(iterations: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    problems: list[str] = []
    mid_swap = 0
    generations: set[int] = set()
    began = time.monotonic()
    with benchlib.CountingMotoServer() as moto, tempfile.TemporaryDirectory(prefix="ferry-kill-sidecar-") as tmp:
        sm = boto3.client(
            "secretsmanager",
            region_name=benchlib.REGION,
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        token = "killswap"
        sm.create_secret(Name="app/db", SecretString=db_value(1, token))
        ssm = boto3.client(
            "ssm",
            region_name=benchlib.REGION,
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ssm.put_parameter(Name="/app/flags", Value="flags", Type="String")
        generation = [1]
        stop = threading.Event()

        def rotate() -> None:
            while not stop.wait(0.005):
                generation[0] += 1
                sm.put_secret_value(SecretId="app/db", SecretString=db_value(generation[0], token))

        rotator = threading.Thread(target=rotate, daemon=True)
        rotator.start()
        target = Path(tmp) / "secrets"
        env = benchlib.clean_env(
            {
                **benchlib.aws_env(moto.url),
                "FERRY_SPEC": spec_to_json(app_spec(refresh_seconds=0.01)),
                "PYTHONPATH": str(benchlib.REPO_ROOT),
                "FERRY_LOG_LEVEL": "error",
            }
        )
        command = [sys.executable, "-m", "fetcher"]
        try:
            for iteration in range(iterations):
                sidecar = subprocess.Popen(
                    [*command, "sidecar", "--dir", str(target)],
                    env=env,
                    cwd=benchlib.REPO_ROOT,
                    stderr=subprocess.DEVNULL,
                )
                start = read_db_generation(target) if target.exists() else None
                deadline = time.monotonic() + 60
                # Wait for this sidecar's own first delivery (the generation moves past what was on disk).
                while time.monotonic() < deadline:
                    now = read_db_generation(target) if target.exists() else None
                    if now is not None and now != start:
                        break
                    time.sleep(0.01)
                if iteration % 2:
                    _wait_for_swap_in_progress(target, deadline=time.monotonic() + 5)
                else:
                    time.sleep(rng.uniform(0, 0.25))
                sidecar.send_signal(signal.SIGKILL)
                sidecar.wait(10)
                found, current_problems, traces = inspect_sidecar_dir(target)
                if current_problems:
                    problems.append(f"iteration {iteration}: {current_problems}")
                if found is not None:
                    generations.add(found)
                mid_swap += bool(traces)
                restarted = subprocess.run(
                    [*command, "init", "--dir", str(target), "--termination-log", str(Path(tmp) / "term")],
                    env=env,
                    cwd=benchlib.REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if restarted.returncode != 0:
                    problems.append(f"iteration {iteration}: init after the kill failed: {restarted.stderr[-300:]}")
                else:
                    _, after_problems, after_traces = inspect_sidecar_dir(target)
                    if after_problems or after_traces:
                        problems.append(f"iteration {iteration}: after restart {after_problems} {after_traces}")
        finally:
            stop.set()
            rotator.join(5)
    return {
        "kills": iterations,
        "landed_mid_swap": mid_swap,
        "problems": problems[:10],
        "distinct_generations_seen": len(generations),
        "rotations": generation[0],
        "seconds": round(time.monotonic() - began, 1),
        "ok": not problems,
    }


SIDECAR_FILES = (*DB_FILES, "_app_flags")


def _wait_for_swap_in_progress(target: Path, deadline: float) -> None:
    """Spin until a swap is visibly under way (a newer generation directory or ..data_tmp), then return.

    Random delays mostly land between swaps (a swap takes about a millisecond of a cycle); every other kill
    aims at the inside of one instead.
    """
    while time.monotonic() < deadline:
        try:
            current = os.readlink(target / "..data")
            names = os.listdir(target)
        except OSError:
            continue
        # Generation names are timestamps: one newer than ..data's is being written right now.
        if "..data_tmp" in names or any(n > current for n in names if n.startswith("..") and n[2:3].isdigit()):
            return


def inspect_sidecar_dir(target: Path) -> tuple[int | None, list[str], list[str]]:
    """(generation, problems, traces): the current set must be whole and of one generation, every top-level
    link must reach it; traces are what only an interrupted swap leaves (harmless, but cleaned on restart)."""
    problems: list[str] = []
    try:
        current = os.readlink(target / "..data")
    except OSError as exc:
        return None, [f"..data unreadable: {exc}"], []
    files = {str(p.relative_to(target / current)) for p in (target / current).rglob("*") if p.is_file()}
    if files != set(SIDECAR_FILES):
        problems.append(f"the current set holds {sorted(files)}")
    found = read_db_generation(target)
    if found is None:
        problems.append("the current set is not one whole generation")
    for name in SIDECAR_FILES:
        link = target / name
        if not link.is_symlink() or os.readlink(link) != f"..data/{name}" or not link.is_file():
            problems.append(f"top-level {name} is not a working link into ..data")
    traces = [entry.name for entry in os.scandir(target) if entry.name.startswith("..data_tmp")]
    retired = [
        entry.name
        for entry in os.scandir(target)
        if entry.name.startswith("..") and not entry.name.startswith("..data") and entry.name != current
    ]
    partial = [
        name
        for name in retired
        if {str(p.relative_to(target / name)) for p in (target / name).rglob("*") if p.is_file()} != set(SIDECAR_FILES)
    ]
    if len(retired) > 1 or partial:
        traces.extend(retired)
    return found, problems, traces


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__, quiet=False)
    parser.add_argument("--writer-kills", type=int, default=500)
    parser.add_argument("--sidecar-kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    machine = benchlib.announce_machine()
    writer = writer_kills(args.writer_kills, args.seed) if args.writer_kills else {"kills": 0, "ok": True}
    print(f"writer: {json.dumps(writer)}", flush=True)
    sidecar = sidecar_kills(args.sidecar_kills, args.seed) if args.sidecar_kills else {"kills": 0, "ok": True}
    print(f"sidecar: {json.dumps(sidecar)}", flush=True)
    ok = bool(writer["ok"] and sidecar["ok"])
    path = benchlib.write_results(
        "kill_swap",
        {
            "machine": machine,
            "parameters": vars(args) | {"out_dir": str(args.out_dir or "")},
            "writer": writer,
            "sidecar": sidecar,
            "ok": ok,
        },  # fmt: skip
        args.out_dir,
    )
    print(
        benchlib.table(
            [
                ["writer (swap_directory)", writer.get("kills"), writer.get("landed_mid_swap"), writer["ok"]],
                ["python -m fetcher sidecar", sidecar.get("kills"), sidecar.get("landed_mid_swap"), sidecar["ok"]],
            ],
            ["kill -9 target", "kills", "landed mid-swap", "all consistent and cleaned"],
        )
    )
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
