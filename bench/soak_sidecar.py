"""Sidecar soak: 10,000 refresh cycles of the real sidecar against moto; RSS and open fds must stay flat.

Why it exists: a refresh sidecar lives as long as its pod, often weeks, doing
the same cycle every few minutes. A leak of one socket or a few KB per cycle
is invisible in a test and fatal in production (the pod is OOM-killed or runs
out of descriptors, and with it the app). This script runs the real
`python -m fetcher sidecar` with a tiny refresh interval (FERRY_SPEC carries
`refreshSeconds` directly; the floor is the webhook's, not the fetcher's), so
10,000 cycles take minutes, against moto on loopback with 5 secrets and 5 SSM
parameters, and rotates one secret every few seconds so the swap path runs too.

Measured on the sidecar process (psutil): RSS and open file descriptors after
a warm-up of --warmup cycles and at the end; cycles are counted on the moto
side (one GetParameters per cycle). At the end the files must hold the last
rotated value, and the sidecar's stderr must not contain any stored value.

Exit status: 1 if RSS grew by more than --max-rss-growth-mb, open fds by more
than --max-fd-growth, a rotation was not delivered, a value leaked into the
log, or the sidecar died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import psutil

from bench import benchlib


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__, quiet=False)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500, help="cycles before the first measurement")
    parser.add_argument("--interval", type=float, default=0.005, help="refreshSeconds in FERRY_SPEC")
    parser.add_argument("--rotate-every", type=float, default=3.0, help="seconds between rotations of one secret")
    parser.add_argument("--sample-every", type=int, default=500, help="cycles between RSS/fd samples")
    parser.add_argument("--max-rss-growth-mb", type=float, default=4.0)
    parser.add_argument("--max-fd-growth", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)

    sidecar_cpus, own_cpus, pinned = benchlib.cpu_plan()
    machine = benchlib.announce_machine(f"; pinned: {pinned}")
    if pinned:
        benchlib.pin_self(own_cpus)
    stored: set[str] = set()
    with benchlib.CountingMotoServer() as moto, tempfile.TemporaryDirectory(prefix="ferry-soak-sidecar-") as tmp:
        objects = benchlib.seed_objects(moto.url, secrets=5, parameters=5)
        sm = boto3.client(
            "secretsmanager",
            region_name=benchlib.REGION,
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for obj in objects:
            if obj["objectType"] == "secretsmanager":
                stored.add(sm.get_secret_value(SecretId=obj["objectName"])["SecretString"])
        target = Path(tmp) / "secrets"
        log_path = Path(tmp) / "sidecar.log"
        env = benchlib.clean_env(
            {
                **benchlib.aws_env(moto.url),
                "FERRY_SPEC": benchlib.fetch_spec_json(objects, refresh_seconds=args.interval),
                "FERRY_LOG_LEVEL": "info",
                "PYTHONPATH": str(benchlib.REPO_ROOT),
            }
        )
        command = [*(benchlib.taskset_prefix(sidecar_cpus) if pinned else []), sys.executable, "-m", "fetcher"]
        log = log_path.open("wb")
        sidecar = subprocess.Popen(
            [*command, "sidecar", "--dir", str(target)], env=env, cwd=benchlib.REPO_ROOT, stderr=log
        )
        process = psutil.Process(sidecar.pid)
        rotated_name = "bench/app/secret-01"  # a plain-text secret, written whole to secret-01
        rotations: list[str] = []
        stop = threading.Event()

        def rotate() -> None:
            while not stop.wait(args.rotate_every):
                value = f"rotated-{len(rotations)}-" + "r" * 32
                sm.put_secret_value(SecretId=rotated_name, SecretString=value)
                rotations.append(value)
                stored.add(value)

        def cycles() -> int:
            return moto.calls().get("ssm.GetParameters", 0) - 1  # the first delivery made one too

        samples: list[dict[str, float]] = []
        began = time.monotonic()
        failure = ""
        rotator = threading.Thread(target=rotate, daemon=True)
        try:
            while cycles() < args.warmup:
                if sidecar.poll() is not None or time.monotonic() - began > args.max_seconds:
                    raise RuntimeError("the sidecar did not reach the warm-up")
                time.sleep(0.05)
            rotator.start()
            start_cycle = cycles()
            next_sample = start_cycle
            while cycles() < start_cycle + args.cycles:
                if sidecar.poll() is not None:
                    raise RuntimeError(f"the sidecar exited with {sidecar.returncode}")
                if time.monotonic() - began > args.max_seconds:
                    raise RuntimeError(f"only {cycles() - start_cycle} cycles in {args.max_seconds:g}s")
                if cycles() >= next_sample:
                    samples.append(
                        {
                            "cycle": cycles() - start_cycle,
                            "rss_mb": round(process.memory_info().rss / 2**20, 2),
                            "fds": process.num_fds(),
                            "seconds": round(time.monotonic() - began, 1),
                        }
                    )
                    next_sample += args.sample_every
                time.sleep(0.02)
            samples.append(
                {
                    "cycle": cycles() - start_cycle,
                    "rss_mb": round(process.memory_info().rss / 2**20, 2),
                    "fds": process.num_fds(),
                    "seconds": round(time.monotonic() - began, 1),
                }
            )
            stop.set()
            rotator.join(10)
            # The last rotation must reach the file (liveness: a few cycles).
            deadline = time.monotonic() + 30
            delivered = False
            while time.monotonic() < deadline and rotations:
                try:
                    delivered = (target / "secret-01").read_text() == rotations[-1]
                except OSError:
                    delivered = False
                if delivered:
                    break
                time.sleep(0.05)
        except RuntimeError as exc:
            failure = str(exc)
            delivered = False
        finally:
            stop.set()
            sidecar.send_signal(signal.SIGTERM)
            try:
                exit_code = sidecar.wait(15)
            except subprocess.TimeoutExpired:
                sidecar.kill()
                exit_code = sidecar.wait(15)
            log.close()
        calls = moto.calls()
        log_text = log_path.read_text(errors="replace")
        leaked = sorted(value[:12] + "..." for value in stored if value in log_text)
        errors_logged = log_text.count('"level":"error"')

    first, last = (samples[0], samples[-1]) if samples else ({"rss_mb": 0.0, "fds": 0}, {"rss_mb": 0.0, "fds": 0})
    rss_growth = round(last["rss_mb"] - first["rss_mb"], 2)
    fd_growth = int(last["fds"] - first["fds"])
    measured = int(last.get("cycle", 0))
    invariants = {
        "ran_all_cycles": not failure and measured >= args.cycles,
        "rss_flat": rss_growth <= args.max_rss_growth_mb,
        "fds_flat": fd_growth <= args.max_fd_growth,
        "last_rotation_delivered": delivered,
        "no_value_in_log": not leaked,
        "clean_exit": exit_code == 0,
    }
    ok = all(invariants.values())
    payload: dict[str, Any] = {
        "machine": machine,
        "parameters": vars(args) | {"out_dir": str(args.out_dir or "")},
        "failure": failure,
        "cycles_measured": measured,
        "rotations": len(rotations),
        "api_calls": calls,
        "errors_logged": errors_logged,
        "samples": samples,
        "rss_mb": {"after_warmup": first["rss_mb"], "end": last["rss_mb"], "growth": rss_growth},
        "fds": {"after_warmup": first["fds"], "end": last["fds"], "growth": fd_growth},
        "leaked": leaked,
        "sidecar_exit_code": exit_code,
        "invariants": invariants,
    }
    path = benchlib.write_results("soak_sidecar", payload, args.out_dir)
    seconds = samples[-1]["seconds"] if samples else 0
    print(
        benchlib.table(
            [
                ["cycles (after warm-up)", measured],
                ["wall seconds", seconds],
                ["rotations delivered", f"{len(rotations)} (last one on disk: {delivered})"],
                ["RSS after warm-up / end MB", f"{first['rss_mb']} / {last['rss_mb']} (growth {rss_growth})"],
                ["open fds after warm-up / end", f"{first['fds']} / {last['fds']} (growth {fd_growth})"],
                ["API calls", json.dumps(calls)],
                ["errors logged / values leaked", f"{errors_logged} / {len(leaked)}"],
                [
                    "verdict",
                    "ok" if ok else "INVARIANT BROKEN: " + ", ".join(k for k, v in invariants.items() if not v),
                ],
            ],
            ["soak_sidecar", "value"],
        )
    )
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
