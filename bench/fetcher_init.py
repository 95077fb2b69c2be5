"""Fetcher init time: process start to files on disk, as a ratio to the standard library's TLS floor.

Why it exists: the init container runs before every injected pod's app starts,
so its wall time is added to every pod start. Its budget (issue 16) is 2.5x
the unavoidable floor of a Python process that imports the standard library's
ssl, http.client, json and hmac and makes a TLS context. Measured on one busy machine the
absolute numbers drift from run to run, so the two commands are run
alternately in the same run (ABBA order, so neither always goes first) and
compared as a ratio of medians.

What is timed: `python -m fetcher init` from fork to exit (exit 0 means every
file was written; the script also checks the files are there), against moto's
server mode on 127.0.0.1 over real HTTP, seeded with 10 secrets and 10 SSM
parameters. moto runs in this process on one CPU; the timed children run
pinned to the other CPU (when there are two), so the fetcher's threads and
moto's do not fight for one core. Sources are byte-compiled first and the
children may write .pyc files, as in the image (Dockerfile.fetcher runs
compileall at build time), so no timed run pays for compiling. Files are
written to tmpfs (/dev/shm), like the pod's emptyDir with medium Memory.

It also reports the AWS API calls per init by operation (counted by the moto
server, so the fetcher runs uninstrumented), a phase breakdown from one
instrumented subprocess, and the heaviest imports from ``-X importtime``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import benchlib
from fetcher.contract import spec_from_json
from tests.support.fetch import timed_run

BUDGET_RATIO = 2.5
FLOOR_CODE = "import ssl, http.client, json, hmac, hashlib; ssl.create_default_context()"

# Runs in a child: where the fetcher's time goes, phase by phase (in one process).
PHASES_CODE = r"""
import json, os, sys, tempfile, time
t0 = time.perf_counter()
import ssl, json, hmac
t1 = time.perf_counter()
from fetcher.aws import AwsClients
from fetcher.loop import deliver
from fetcher.contract import FetchSpec
t2 = time.perf_counter()
spec = spec_from_json(os.environ["FERRY_SPEC"])
t3 = time.perf_counter()
clients = AwsClients.from_env(os.environ)
clients.client("secretsmanager", spec.region); clients.client("ssm", spec.region)
t4 = time.perf_counter()
d = tempfile.mkdtemp(dir=sys.argv[1])
deliver(spec, clients, d)
t5 = time.perf_counter()
warm = []
for _ in range(5):
    d = tempfile.mkdtemp(dir=sys.argv[1])
    s = time.perf_counter(); deliver(spec, clients, d); warm.append(time.perf_counter() - s)
print(json.dumps({"import_stdlib": t1 - t0, "import_fetcher": t2 - t1, "parse_spec": t3 - t2,
                  "create_clients": t4 - t3, "first_deliver": t5 - t4, "warm_deliver_median": sorted(warm)[2]}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=21, help="timed runs of each command (default 21)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each first (default 2)")
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument("--parameters", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one run may take before it is an error")
    parser.add_argument("--no-pin", action="store_true", help="do not pin moto and the children to separate CPUs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")

    machine = benchlib.announce_machine()
    server_cpus, child_cpus, pinned = benchlib.cpu_plan()
    pinned = pinned and not args.no_pin
    if pinned:
        benchlib.pin_self(server_cpus)
    where = f"moto on CPU {sorted(server_cpus)}, timed children on CPU {sorted(child_cpus)}"
    print(f"pinning: {where if pinned else 'off'}")

    with benchlib.CountingMotoServer() as moto, benchlib.memory_tmpdir("ferry-bench-init-") as tmp:
        objects = benchlib.seed_objects(moto.url, args.secrets, args.parameters)
        spec_json = benchlib.fetch_spec_json(objects)

        expected_files = sorted(f.name for f in spec_from_json(spec_json).output_files())
        env = benchlib.clean_env(
            {
                **benchlib.aws_env(moto.url),
                "FERRY_SPEC": spec_json,
                "FERRY_TERMINATION_LOG": str(Path(tmp) / "termination-log"),
            }
        )
        benchlib.compile_sources("fetcher")  # Dockerfile.fetcher runs compileall at build time too
        prefix, preexec = benchlib.pinning(child_cpus if pinned else None)
        fetcher_cmd = [*prefix, sys.executable, "-m", "fetcher", "init"]
        floor_cmd = [*prefix, sys.executable, "-c", FLOOR_CODE]
        counter = iter(range(10**6))

        def run_fetcher() -> tuple[float, dict[str, int]]:
            target = Path(tmp) / f"run-{next(counter)}"
            before = moto.calls()
            elapsed, _ = _timed(
                [*fetcher_cmd, "--dir", str(target)], env, args.timeout, "python -m fetcher init", preexec
            )
            calls = benchlib.diff_counts(moto.calls(), before)
            written = sorted(p.name for p in target.iterdir() if not p.name.startswith(".."))
            if written != expected_files:
                raise RuntimeError(f"fetcher init wrote {written}, expected {expected_files}")
            return elapsed, calls

        def run_floor() -> float:
            return _timed(floor_cmd, env, args.timeout, "floor", preexec)[0]

        load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "fetcher init")
        print(f"warm-up: {args.warmup} run(s) of each")
        for _ in range(args.warmup):
            run_floor()
            run_fetcher()
        fetcher_times: list[float] = []
        floor_times: list[float] = []
        per_init_calls: list[dict[str, int]] = []
        moto.reset_counts()
        print(f"timed: {args.runs} run(s) of each, alternating (ABBA)")
        for i in range(args.runs):
            order = ("floor", "fetcher") if i % 2 == 0 else ("fetcher", "floor")
            for which in order:
                if which == "floor":
                    floor_times.append(run_floor())
                else:
                    elapsed, calls = run_fetcher()
                    fetcher_times.append(elapsed)
                    per_init_calls.append(calls)
        names_per_call = moto.names_per_call()

        phases = _phases(sys.executable, env, prefix, preexec, Path(tmp), args.timeout)
        imports = _heaviest_imports(sys.executable, env, prefix, preexec, Path(tmp), args.timeout)
        load = benchlib.end_load(load)

    fetcher_stats = benchlib.summarize(fetcher_times, 1000)
    floor_stats = benchlib.summarize(floor_times, 1000)
    median_ratio = benchlib.ratio(fetcher_stats["p50"], floor_stats["p50"])
    pair_ratios = sorted(f / b for f, b in zip(fetcher_times, floor_times, strict=True))
    distinct_calls = {json.dumps(c, sort_keys=True) for c in per_init_calls}
    calls_per_init = per_init_calls[0] if len(distinct_calls) == 1 else {"varies": per_init_calls}
    met = median_ratio <= BUDGET_RATIO

    print()
    print(
        benchlib.table(
            [
                ["python -m fetcher init", *(fetcher_stats[k] for k in ("p50", "p90", "min", "max"))],
                ["floor: stdlib TLS + JSON + hmac", *(floor_stats[k] for k in ("p50", "p90", "min", "max"))],
            ],
            ["command (ms)", "median", "p90", "min", "max"],
        )
    )
    print(
        f"\nratio of medians: {median_ratio:.3f} (budget <= {BUDGET_RATIO}) -> {benchlib.verdict(met)}; "
        f"per-pair ratio median {statistics.median(pair_ratios):.3f}"
    )
    print(f"{benchlib.describe_load(load)}")
    print(f"AWS API calls per init: {calls_per_init}; SSM names per GetParameters call: {names_per_call}")
    if phases:
        print("phases in one process (ms): " + ", ".join(f"{k}={v * 1000:.1f}" for k, v in phases.items()))
    if imports:
        print("heaviest imports, cumulative (ms): " + ", ".join(f"{m}={us / 1000:.1f}" for m, us in imports[:8]))

    path = benchlib.write_results(
        "fetcher_init",
        {
            "machine": machine,
            "command": "python bench/fetcher_init.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": {
                "runs": args.runs,
                "warmup": args.warmup,
                "secrets": args.secrets,
                "parameters": args.parameters,
                "pinned": pinned,
                "moto_cpus": sorted(server_cpus) if pinned else None,
                "child_cpus": sorted(child_cpus) if pinned else None,
                "files_per_init": len(expected_files),
            },
            "load": load,
            "fetcher_ms": fetcher_stats,
            "floor_ms": floor_stats,
            "ratio_of_medians": median_ratio,
            "pair_ratio_median": statistics.median(pair_ratios),
            "budget_ratio": BUDGET_RATIO,
            "budget_met": met,
            "api_calls_per_init": calls_per_init,
            "ssm_names_per_get_parameters": names_per_call,
            "phases_seconds": phases,
            "heaviest_imports_us": imports[:15],
            "raw_ms": {"fetcher": [t * 1000 for t in fetcher_times], "floor": [t * 1000 for t in floor_times]},
        },
        args.out_dir,
    )
    print(f"results: {path}")
    return 0


def _timed(
    cmd: list[str], env: dict[str, str], timeout: float, label: str, preexec: Callable[[], None] | None
) -> tuple[float, str]:
    elapsed, proc = timed_run(cmd, env, timeout, preexec)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return elapsed, proc.stderr


def _phases(
    python: str,
    env: dict[str, str],
    prefix: list[str],
    preexec: Callable[[], None] | None,
    tmp: Path,
    timeout: float,
) -> dict[str, float]:
    runs = []
    for _ in range(3):
        proc = subprocess.run(
            [*prefix, python, "-c", PHASES_CODE, str(tmp)],
            preexec_fn=preexec,
            env=env,
            cwd=benchlib.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            print(f"phase breakdown failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
            return {}
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _heaviest_imports(
    python: str,
    env: dict[str, str],
    prefix: list[str],
    preexec: Callable[[], None] | None,
    tmp: Path,
    timeout: float,
) -> list[tuple[str, int]]:
    """Top-level-ish modules by cumulative import time (microseconds) in one `-X importtime` init run."""
    target = tmp / "importtime"
    proc = subprocess.run(
        [*prefix, python, "-X", "importtime", "-m", "fetcher", "init", "--dir", str(target)],
        preexec_fn=preexec,
        env=env,
        cwd=benchlib.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    rows: list[tuple[str, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        name = parts[2]
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth == 0:
            rows.append((name.strip(), int(parts[1])))
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
