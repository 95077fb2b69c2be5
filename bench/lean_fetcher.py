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
  at the end (flat?), and CPU time per unchanged refresh; next to the floor,
  bare http.client sending the same 8 requests (bench/http_floor.py). All
  three run twice: against moto, which closes every connection (each call a
  new TCP connect), and through a keep-alive loopback proxy in front of moto
  (bench/keepalive_proxy.py), as AWS answers. The six processes take turns
  (SIGSTOP/SIGCONT) in ``--windows`` windows, the order rotated each window,
  so the machine's load falls on all of them alike.

    python -m bench.lean_fetcher --before /tmp/lean-before
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import benchlib
from bench.keepalive_proxy import KeepAliveProxy

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
    parser.add_argument("--windows", type=int, default=10, help="turns each sidecar gets (default 10)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": benchlib.REPO_ROOT}
    machine = benchlib.announce_machine()
    moto_cpus, child_cpus, pinned = benchlib.cpu_plan()
    if pinned:
        benchlib.pin_self(moto_cpus)
    prefix, preexec = benchlib.pinning(child_cpus if pinned else None)

    with (
        benchlib.CountingMotoServer() as moto,
        KeepAliveProxy(moto.port) as proxy,
        benchlib.memory_tmpdir("ferry-bench-lean-") as tmp,
    ):
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
        servers = {"moto": moto.url, "keep-alive": proxy.url}
        sidecars = _sidecars(trees, servers, moto, objects, Path(tmp), args, prefix, preexec)
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
        [
            label,
            s["rss_first_mb"],
            s["rss_last_mb"],
            s["cycles"],
            round(s["user_ms_per_refresh"], 2),
            round(s["system_ms_per_refresh"], 2),
            round(s["cpu_ms_per_refresh"], 2),
        ]
        for label, s in sidecars.items()
    ]
    headers = ["sidecar (server)", "RSS first MB", "RSS last MB", "cycles", "user ms~", "sys ms~", "CPU ms"]
    print(benchlib.table(side_rows, headers))
    print("CPU ms: the process's CPU-time clock per refresh; ~ user/sys: clock ticks of 10 ms, indicative only")
    after_init = summary["fetcher init (after)"]["ratio_to_stdlib"]
    met = {
        "init_ratio_to_stdlib": after_init <= GOALS["init_ratio_to_stdlib"],
        "sidecar_rss_mb": sidecars["after (moto)"]["rss_last_mb"] <= GOALS["sidecar_rss_mb"],
        "cpu_ms_per_refresh": sidecars["after (moto)"]["cpu_ms_per_refresh"] <= GOALS["cpu_ms_per_refresh"],
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


def _sidecars(
    trees: dict[str, Path],
    servers: dict[str, str],
    moto: Any,
    objects: list[dict[str, Any]],
    workdir: Path,
    args: Any,
    prefix: list[str],
    preexec: Any,
) -> dict[str, dict[str, Any]]:
    """Each tree's sidecar and the floor, against each server, taking turns; CPU per unchanged refresh."""
    import psutil

    spec = benchlib.fetch_spec_json(objects, refresh_seconds=args.interval)
    commands: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    for server, url in servers.items():
        aws = benchlib.aws_env(url)
        for label, tree in trees.items():
            run = workdir / f"sidecar-{label}-{server}"
            run.mkdir()
            env = benchlib.clean_env({**aws, "FERRY_SPEC": spec, "PYTHONPATH": str(tree)})
            env["FERRY_TERMINATION_LOG"] = str(run / "tl")
            command = [*prefix, sys.executable, "-m", "fetcher", "sidecar", "--dir", str(run / "secrets")]
            commands[f"{label} ({server})"] = (command, env, tree)
        plan = workdir / f"floor-{server}.json"
        plan.write_text(json.dumps(_floor_plan(url, objects)))
        keep = "1" if server == "keep-alive" else "0"
        command = [*prefix, sys.executable, "-m", "bench.http_floor", str(plan), str(args.interval), keep]
        commands[f"floor: bare http.client ({server})"] = (command, benchlib.clean_env(), benchlib.REPO_ROOT)

    def cycles() -> int:
        return int(moto.calls().get("ssm.GetParameters", 0))

    processes: dict[str, subprocess.Popen[bytes]] = {}
    handles: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    per_window = max(1, args.cycles // args.windows)
    logs = []
    try:
        for name, (command, env, cwd) in commands.items():  # start one at a time, then hold it
            logs.append((workdir / f"log-{len(processes)}").open("wb"))
            processes[name] = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=logs[-1], stderr=subprocess.STDOUT, preexec_fn=preexec
            )
            handles[name] = psutil.Process(processes[name].pid)
            _turn(name, processes[name], cycles, 6, args.timeout * 10)
            handles[name].suspend()
            results[name] = {"rss_first_mb": round(handles[name].memory_info().rss / 2**20, 1)}
            results[name].update(cycles=0, cpu=0.0, user=0.0, system=0.0)
        names = list(commands)
        for window in range(args.windows):
            shift = window % len(names)
            for name in names[shift:] + names[:shift]:
                handle = handles[name]
                before, cpu_before = handle.cpu_times(), _cpu_clock(handle.pid)
                handle.resume()
                done = _turn(name, processes[name], cycles, per_window, args.timeout * 10)
                handle.suspend()
                after, cpu_after = handle.cpu_times(), _cpu_clock(handle.pid)
                results[name]["cycles"] += done
                results[name]["cpu"] += cpu_after - cpu_before
                results[name]["user"] += after.user - before.user
                results[name]["system"] += after.system - before.system
        for name, handle in handles.items():
            entry = results[name]
            entry["rss_last_mb"] = round(handle.memory_info().rss / 2**20, 1)
            count = max(entry["cycles"], 1)
            entry["user_ms_per_refresh"] = entry.pop("user") * 1000 / count
            entry["system_ms_per_refresh"] = entry.pop("system") * 1000 / count
            entry["cpu_ms_per_refresh"] = entry.pop("cpu") * 1000 / count
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                benchlib.stop_process(process)
        for log in logs:
            log.close()
    return results


def _cpu_clock(pid: int) -> float:
    """The process's CPU time (user + system) in seconds, to the nanosecond: its CPU-time clock.

    psutil's user and system times count clock ticks (10 ms), too coarse for a few ms per refresh;
    Linux names another process's clock ((~pid) << 3) | CPUCLOCK_SCHED, as clock_getcpuclockid does.
    """
    return time.clock_gettime(((~pid) << 3) | 2)


def _turn(name: str, process: subprocess.Popen[bytes], cycles: Any, count: int, timeout: float) -> int:
    """Let the one running process make `count` refreshes (counted by moto); return how many it made."""
    start = cycles()
    deadline = time.monotonic() + timeout
    while cycles() < start + count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} stopped after {cycles() - start} refreshes (exit {process.poll()})")
        time.sleep(0.01)
    return int(cycles() - start)


def _floor_plan(url: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The 8 requests of an unchanged refresh, signed once (moto does not check signatures)."""
    from datetime import UTC, datetime

    from fetcher.sigv4 import Credentials, sign

    host = url.split("://", 1)[1]
    unpinned = [obj["objectName"] for obj in objects if obj["objectType"] == "secretsmanager"][PINNED:]
    parameters = [obj["objectName"] for obj in objects if obj["objectType"] == "ssmparameter"]
    calls = [("secretsmanager", "secretsmanager.DescribeSecret", {"SecretId": name}) for name in unpinned]
    calls.append(("ssm", "AmazonSSM.GetParameters", {"Names": parameters, "WithDecryption": True}))
    requests = []
    for service, target, params in calls:
        body = json.dumps(params, separators=(",", ":"))
        headers = sign(
            method="POST",
            host=host,
            path="/",
            headers={"content-type": "application/x-amz-json-1.1", "x-amz-target": target},
            body=body.encode(),
            credentials=Credentials("testing", "testing"),
            region=benchlib.REGION,
            service=service,
            now=datetime.now(UTC),
        )
        requests.append({"headers": headers, "body": body})
    return {"url": url, "requests": requests}


if __name__ == "__main__":
    raise SystemExit(main())
