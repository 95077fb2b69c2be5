"""Issue 16 in one run: the fetcher before and after the lean AWS client, next to every floor.

Why it exists: "cheaper" only means something next to what cannot be avoided,
measured side by side on the same busy machine. One run measures:

- floors, one process each, wall time from fork to exit and peak RSS:
  ``python -c pass``; the standard library's TLS + JSON + hmac (import ssl,
  http.client, json, hmac and make a TLS context); awscrt (SigV4 signer, the
  default credential chain, a TLS context); botocore's credential chain
  alone; boto3 with the Secrets Manager and SSM clients;
- ``python -m fetcher init`` (10 secrets + 10 parameters against moto) of the
  tree before (``--before``, a checkout of main with boto3) and of this tree;
  all seven commands alternate, rotating the order each round;
- the refresh sidecar of both trees over ``--cycles`` unchanged refreshes
  (7 DescribeSecret + 1 GetParameters each): RSS after the first refresh and
  at the end (flat?), and CPU time per unchanged refresh.

    python -m bench.lean_fetcher --before /tmp/lean-before
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import benchlib

FLOORS = {
    "python -c pass": "pass",
    "stdlib TLS + JSON + hmac": "import ssl, http.client, json, hmac, hashlib; ssl.create_default_context()",
    "awscrt: signer, chain, TLS": (
        "from awscrt import auth, io; elg = io.EventLoopGroup(1); "
        "bootstrap = io.ClientBootstrap(elg, io.DefaultHostResolver(elg)); "
        "auth.AwsCredentialsProvider.new_default_chain(bootstrap); io.ClientTlsContext(io.TlsContextOptions()); "
        "auth.AwsSigningConfig(auth.AwsSigningAlgorithm.V4, auth.AwsSignatureType.HTTP_REQUEST_HEADERS)"
    ),
    "botocore credential chain": "import botocore.session; botocore.session.Session().get_credentials()",
    "boto3 + 2 clients": "import boto3; s=boto3.session.Session(); s.client('secretsmanager'); s.client('ssm')",
}
STDLIB = "stdlib TLS + JSON + hmac"
GOALS = {"init_ratio_to_stdlib": 2.5, "sidecar_rss_mb": 25.0, "cpu_ms_per_refresh": 3.0}
PINNED = 3
# GNU time (Debian package "time") reports a child's peak RSS untainted by this process's size.
TIME = shutil.which("time") or "/usr/bin/time"


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=11, help="timed runs of each command (default 11)")
    parser.add_argument("--cycles", type=int, default=1000, help="sidecar refresh cycles per tree (default 1000)")
    parser.add_argument("--interval", type=float, default=0.02, help="sidecar refreshSeconds (default 0.02)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": benchlib.REPO_ROOT}
    machine = benchlib.announce_machine()
    moto_cpus, child_cpus, pinned = benchlib.cpu_plan()
    if pinned:
        benchlib.pin_self(moto_cpus)
    prefix, preexec = benchlib.pinning(child_cpus if pinned else None)

    with benchlib.CountingMotoServer() as moto, benchlib.memory_tmpdir("ferry-bench-lean-") as tmp:
        objects = benchlib.seed_objects(moto.url, 10, 10, pinned=PINNED)
        aws = benchlib.aws_env(moto.url)
        for tree in trees.values():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "fetcher")], check=True)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name, code in FLOORS.items():
            commands[name] = ([*prefix, sys.executable, "-c", code], benchlib.clean_env(aws))
        spec = benchlib.fetch_spec_json(objects)
        for label, tree in trees.items():
            env = benchlib.clean_env({**aws, "FERRY_SPEC": spec, "PYTHONPATH": str(tree)})
            env["FERRY_TERMINATION_LOG"] = str(Path(tmp) / f"tl-{label}")
            commands[f"fetcher init ({label})"] = ([*prefix, sys.executable, "-m", "fetcher", "init"], env)

        load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "lean fetcher")
        names = list(commands)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for round_number in range(args.rounds + 1):  # round 0 warms caches and is dropped
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                command, env = commands[name]
                if name.startswith("fetcher init"):
                    command = [*command, "--dir", str(Path(tmp) / f"out-{round_number}-{name[-6:-1]}")]
                result = _run(command, env, args.timeout, preexec, tree_of(name, trees))
                if round_number:
                    samples[name].append(result)
        sidecars = {
            label: _sidecar(tree, moto, objects, aws, Path(tmp) / f"sidecar-{label}", args, prefix, preexec)
            for label, tree in trees.items()
        }
        load = benchlib.end_load(load)

    rows = []
    summary: dict[str, Any] = {}
    stdlib_ms = statistics.median(s[0] for s in samples[STDLIB]) * 1000
    for name in names:
        ms = statistics.median(s[0] for s in samples[name]) * 1000
        rss = statistics.median(s[1] for s in samples[name])
        summary[name] = {"median_ms": ms, "peak_rss_mb": rss, "ratio_to_stdlib": ms / stdlib_ms}
        rows.append([name, round(ms, 1), round(ms / stdlib_ms, 2), round(rss, 1)])
    print()
    print(benchlib.table(rows, ["process (median of rounds)", "wall ms", "x stdlib TLS", "peak RSS MB"]))
    print()
    side_rows = [
        [label, s["rss_first_mb"], s["rss_last_mb"], s["cycles"], round(s["cpu_ms_per_refresh"], 2)]
        for label, s in sidecars.items()
    ]
    print(benchlib.table(side_rows, ["sidecar", "RSS first MB", f"RSS after {args.cycles} MB", "cycles", "CPU ms"]))
    after_init = summary["fetcher init (after)"]["ratio_to_stdlib"]
    met = {
        "init_ratio_to_stdlib": after_init <= GOALS["init_ratio_to_stdlib"],
        "sidecar_rss_mb": sidecars["after"]["rss_last_mb"] <= GOALS["sidecar_rss_mb"],
        "cpu_ms_per_refresh": sidecars["after"]["cpu_ms_per_refresh"] <= GOALS["cpu_ms_per_refresh"],
    }
    for goal, ok in met.items():
        print(f"goal {goal} <= {GOALS[goal]}: {benchlib.verdict(ok)}")
    print(benchlib.describe_load(load))
    path = benchlib.write_results(
        "lean_fetcher",
        {
            "machine": machine,
            "command": "python -m bench.lean_fetcher " + " ".join(argv if argv is not None else sys.argv[1:]),
            "load": load,
            "processes": summary,
            "sidecars": sidecars,
            "goals": GOALS,
            "goals_met": met,
            "raw": {name: [[t * 1000, r] for t, r in values] for name, values in samples.items()},
        },
        args.out_dir,
    )
    print(f"results: {path}")
    return 0


def tree_of(name: str, trees: dict[str, Path]) -> Path:
    return trees["before"] if name.endswith("(before)") else trees["after"]


def _run(command: list[str], env: dict[str, str], timeout: float, preexec: Any, cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process, from fork to exit.

    The peak comes from GNU time's wait4: a child forked from this process (moto inside, 200+ MB) would
    inherit this process's RSS high-water mark, while time's own child starts from time's 2 MB.
    """
    with tempfile.NamedTemporaryFile("r") as peak:
        began = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", peak.name, *command],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
            timeout=timeout,
            check=False,
        )
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"{command[-3:]} exited {done.returncode}: {done.stderr.decode()[-1500:]}")
        return elapsed, int(peak.read().split()[-1]) / 1024


def _sidecar(
    tree: Path,
    moto: Any,
    objects: list[dict[str, Any]],
    aws: dict[str, str],
    workdir: Path,
    args: Any,
    prefix: list[str],
    preexec: Any,
) -> dict[str, Any]:
    import psutil

    workdir.mkdir()
    spec = benchlib.fetch_spec_json(objects, refresh_seconds=args.interval)
    env = benchlib.clean_env({**aws, "FERRY_SPEC": spec, "PYTHONPATH": str(tree)})
    env["FERRY_TERMINATION_LOG"] = str(workdir / "tl")
    command = [*prefix, sys.executable, "-m", "fetcher", "sidecar", "--dir", str(workdir / "secrets")]
    base = moto.calls().get("ssm.GetParameters", 0)

    def cycles() -> int:
        return moto.calls().get("ssm.GetParameters", 0) - base - 1  # the first delivery makes one too

    with (workdir / "log").open("wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
        try:
            handle = psutil.Process(process.pid)
            deadline = time.monotonic() + 600
            while cycles() < 5:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar in {tree} did not start: {(workdir / 'log').read_text()[-1500:]}")
                time.sleep(0.02)
            start, rss_first = cycles(), handle.memory_info().rss / 2**20
            cpu = handle.cpu_times()
            cpu_start = cpu.user + cpu.system
            while cycles() < start + args.cycles:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar in {tree} stopped after {cycles() - start} cycles")
                time.sleep(0.05)
            cpu = handle.cpu_times()
            done = cycles() - start
            rss_last = handle.memory_info().rss / 2**20
            cpu_used = cpu.user + cpu.system - cpu_start
        finally:
            benchlib.stop_process(process)
    return {
        "rss_first_mb": round(rss_first, 1),
        "rss_last_mb": round(rss_last, 1),
        "cycles": done,
        "cpu_ms_per_refresh": cpu_used * 1000 / max(done, 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
