"""What Google Cloud support costs a pod: init time, memory and imports, GCP beside AWS, and the refresh's calls.

Why it exists: issue 20 asks that one fetcher image serve both clouds without making either pod pay for the
other, and that the choice of the REST path be stated in MB and ms. This script runs, alternately (ABAB, so
neither always goes first), `python -m fetcher init` for 10 GCP secrets against the loopback Google fake
(tests.support.gcpfake: TLS, token exchange, 10 accesses) and for 10 Secrets Manager secrets against moto,
plus the floor (`import ssl, http.client, json` and one TLS context). It reports medians, each init's own
peak RSS (VmHWM), which top-level packages each init imported, the size of the GCP code, and the Google calls of
one init and one unchanged refresh (counted by the fake).

`--aws-tree LABEL=PATH` (repeatable) instead answers "an AWS pod's footprint is unchanged": the AWS pod of this
tree and of each other tree (e.g. a checkout from before GCP landed) side by side in one run, rounds alternating
and rotated: init wall time and peak RSS next to the stdlib-TLS floor, then the real sidecar's RSS and CPU per
unchanged refresh in `--sidecar-rounds` alternating rounds; and which modules each cloud's init loads.
docs/benchmarks.md section 9 has the commands and the recorded figures.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import benchlib
from fetcher.contract import spec_to_json
from tests.support.gcpfake import POOL, PROVIDER, GcpFake, ksa_token

ROOT = Path(__file__).resolve().parents[1]
SECRETS = 10
PROJECT = "ferry-test"
FLOOR_CODE = "import ssl, http.client, json; ssl.create_default_context()"
# One init in a child; prints the modules it loaded and its own peak RSS (VmHWM: this process, after exec).
MODULES_CODE = (
    "import json, sys; from fetcher.__main__ import main; code = main(['init', '--dir', sys.argv[1]]); "
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]; "
    "mods = {m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith('fetcher')}; "
    "print(json.dumps([int(hwm), sorted(mods)]))"
)


# In a child: the sidecar's unchanged refreshes, CPU per cycle (this process only; the fake runs in the parent).
REFRESH_CODE = r"""
import json, os, sys, time
from pathlib import Path
from fetcher.loop import RefreshState, refresh_once
from fetcher.providers import clients_from_env
from fetcher.contract import FetchSpec
spec = spec_from_json(os.environ["FERRY_SPEC"])
state = RefreshState(spec=spec, clients=clients_from_env(spec, os.environ), target_dir=Path(sys.argv[1]))
refresh_once(state)
refresh_once(state)  # connections warm
cpu = []
for _ in range(int(sys.argv[2])):
    began = time.process_time()
    outcome = refresh_once(state)
    cpu.append(time.process_time() - began)
    assert not outcome.swapped
print(json.dumps(sorted(cpu)))
"""


def gcp_spec_json() -> str:
    from fetcher.contract import build_spec

    secrets = [
        {"resourceName": f"projects/{PROJECT}/secrets/s{i}/versions/latest", "path": f"s{i}"} for i in range(SECRETS)
    ]
    identity = {"workloadPool": POOL, "identityProvider": PROVIDER}
    return spec_to_json(build_spec(objects=secrets, region=None, provider="gcp", gcp_identity=identity))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {done.stderr[-400:]}")
    return elapsed, done.returncode


def child_json(code: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Any:
    """Run `code` in a child Python and return the JSON of its last output line."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded(env: dict[str, str], target: str) -> tuple[float, list[str]]:
    """(peak RSS in MiB, modules) of one init in a child."""
    hwm_kib, modules = child_json(MODULES_CODE, [target], env, ROOT, 60)
    return round(hwm_kib / 1024, 1), list(modules)


def main() -> None:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--aws-tree", action="append", default=[], metavar="LABEL=PATH", help="compare AWS pods")
    parser.add_argument("--sidecar-rounds", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=250, help="unchanged refreshes per sidecar round")
    args = parser.parse_args()
    if args.aws_tree:
        trees = {"this tree": ROOT, **{k: Path(v).resolve() for k, v in (t.split("=", 1) for t in args.aws_tree)}}
        compare_aws(trees, args)
        return
    machine = benchlib.announce_machine()
    benchlib.compile_sources("fetcher")
    results: dict[str, Any] = {"machine": machine}
    with GcpFake() as fake, benchlib.CountingMotoServer() as moto, benchlib.memory_tmpdir("ferry-gcp-bench-") as tmp:
        for i in range(SECRETS):
            fake.add_version(PROJECT, f"s{i}", f"value-{i}")
        fake.grant("bench/app", f"projects/{PROJECT}/")
        token = Path(tmp) / "token"
        token.write_text(ksa_token("bench", "app"))
        objects = benchlib.seed_objects(moto.url, SECRETS, 0)
        gcp_env = benchlib.clean_env({**fake.env(token), "FERRY_SPEC": gcp_spec_json(), "PYTHONPATH": str(ROOT)})
        aws_env = benchlib.clean_env(
            {**benchlib.aws_env(moto.url), "FERRY_SPEC": benchlib.fetch_spec_json(objects), "PYTHONPATH": str(ROOT)}
        )
        floor_env = benchlib.clean_env()
        commands = {
            "gcp": ([sys.executable, "-m", "fetcher", "init", "--dir", f"{tmp}/gcp"], gcp_env),
            "aws": ([sys.executable, "-m", "fetcher", "init", "--dir", f"{tmp}/aws"], aws_env),
            "floor": ([sys.executable, "-c", FLOOR_CODE], floor_env),
        }
        for name in ("gcp", "aws"):
            Path(f"{tmp}/{name}").mkdir()
            timed(*commands[name])  # warm the page cache and the servers
        times: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(args.runs):
            order = list(commands) if run % 2 == 0 else list(reversed(commands))
            for name in order:
                times[name].append(timed(*commands[name])[0])
        fake.calls.clear()
        timed(*commands["gcp"])
        init_calls = dict(fake.calls)
        Path(f"{tmp}/refresh").mkdir()
        fake.calls.clear()
        cycles = 50
        cpu = child_json(REFRESH_CODE, [f"{tmp}/refresh", str(cycles)], gcp_env, ROOT, 300)
        results["unchanged_refresh_cpu_ms"] = {
            "median": round(statistics.median(cpu) * 1000, 2),
            "max": round(cpu[-1] * 1000, 2),
        }
        # The child made one full delivery (1 exchange, 10 accesses), then cycles + 1 unchanged refreshes.
        results["google_calls_per_unchanged_refresh"] = {
            "GetSecretVersion": fake.count("GetSecretVersion") / (cycles + 1),
            "AccessSecretVersion": (fake.count("AccessSecretVersion") - SECRETS) / (cycles + 1),
            "ExchangeToken": (fake.count("ExchangeToken") - 1) / (cycles + 1),
        }
        results["init_ms_median"] = {name: round(statistics.median(v) * 1000, 1) for name, v in times.items()}
        results["ratio_to_floor"] = {
            name: round(statistics.median(times[name]) / statistics.median(times["floor"]), 2)
            for name in ("gcp", "aws")
        }
        gcp_rss, gcp_mods = loaded(gcp_env, f"{tmp}/gcp")
        aws_rss, aws_mods = loaded(aws_env, f"{tmp}/aws")
        results["peak_rss_mib"] = {"gcp": gcp_rss, "aws": aws_rss}
        results["gcp_init_loads_boto"] = [m for m in gcp_mods if m in ("boto3", "botocore", "jmespath")]
        results["aws_init_loads_gcp"] = [m for m in aws_mods if "gcp" in m]
        results["top_level_modules"] = {
            name: len([m for m in mods if "." not in m]) for name, mods in (("gcp", gcp_mods), ("aws", aws_mods))
        }
        results["google_calls_per_init"] = init_calls
        results["gcp_code_kib"] = round(
            sum(
                (ROOT / p).stat().st_size
                for p in (
                    "fetcher/gcp.py",
                    "fetcher/gcp_source.py",
                    "fetcher/gcp_extract.py",
                    "fetcher/contract/gcp.py",
                )
            )
            / 1024,
            1,
        )
    results["load"] = os.getloadavg()
    results["children_cpu_s"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 1)
    print(json.dumps(results, indent=2))
    benchlib.write_results("gcp_footprint", results, args.out_dir)


def compare_aws(trees: dict[str, Path], args: Any) -> None:
    """The AWS pod of each tree, side by side: init, peak RSS, sidecar RSS and CPU per unchanged refresh."""
    from types import SimpleNamespace

    from bench.lean_fetcher import FLOORS, STDLIB, _run, _sidecars

    machine = benchlib.announce_machine()
    moto_cpus, child_cpus, pinned = benchlib.cpu_plan()
    if pinned:
        benchlib.pin_self(moto_cpus)
    prefix, preexec = benchlib.pinning(child_cpus if pinned else None)
    with benchlib.CountingMotoServer() as moto, benchlib.memory_tmpdir("ferry-gcp-aws-") as tmp:
        objects = benchlib.seed_objects(moto.url, 10, 10, pinned=3)
        aws = benchlib.aws_env(moto.url)
        spec = benchlib.fetch_spec_json(objects)
        commands: dict[str, tuple[list[str], dict[str, str], Path]] = {
            STDLIB: ([*prefix, sys.executable, "-c", FLOORS[STDLIB]], benchlib.clean_env(aws), ROOT)
        }
        for label, tree in trees.items():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "fetcher")], check=True)
            env = benchlib.clean_env({**aws, "FERRY_SPEC": spec, "PYTHONPATH": str(tree)})
            env["FERRY_TERMINATION_LOG"] = str(Path(tmp) / f"tl-{len(commands)}")
            commands[label] = ([*prefix, sys.executable, "-m", "fetcher", "init"], env, tree)
        load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "AWS pods with and without GCP")
        names = list(commands)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        # CPU time (user + system) of each process: far less disturbed by the other engineers' load than wall time.
        cpu_samples: dict[str, list[float]] = {}
        for number in range(args.runs + 1):  # round 0 warms the caches and is dropped
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                command, env, tree = commands[name]
                if name != STDLIB:
                    command = [*command, "--dir", f"{tmp}/out-{number}-{names.index(name)}"]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                wall, rss = _run(command, env, 120, preexec, tree)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                if number:
                    samples[name].append((wall, rss))
                    cpu_samples.setdefault(name, []).append(cpu)
        sidecar_runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
        options = SimpleNamespace(cycles=args.cycles, interval=0.02, windows=4, timeout=60.0)
        for number in range(args.sidecar_rounds):  # every tree's sidecar in turns, as bench.lean_fetcher runs them
            workdir = Path(tmp) / f"sidecars-{number}"
            workdir.mkdir()
            rounds = _sidecars(trees, {"moto": moto.url}, moto, objects, workdir, options, prefix, preexec)
            for label in trees:
                sidecar_runs[label].append(rounds[f"{label} (moto)"])
        load = benchlib.end_load(load)
        imports = {
            label: _aws_init_modules(tree, aws, spec, Path(tmp) / f"mods-{i}")
            for i, (label, tree) in enumerate(trees.items())
        }
    floor = statistics.median(t for t, _ in samples[STDLIB])
    rows, summary = [], {}
    for label in trees:
        ms = statistics.median(t for t, _ in samples[label]) * 1000
        rss = statistics.median(r for _, r in samples[label])
        runs = sidecar_runs[label]
        cpu = statistics.median(r["cpu_ms_per_refresh"] for r in runs)
        side_rss = statistics.median(r["rss_last_mb"] for r in runs)
        init_cpu = statistics.median(cpu_samples[label]) * 1000
        summary[label] = {
            "tree": str(trees[label]),
            "init_ms": round(ms, 1),
            "init_cpu_ms": round(init_cpu, 1),
            "init_x_floor": round(ms / (floor * 1000), 2),
            "init_peak_rss_mb": round(rss, 1),
            "sidecar_rss_mb": side_rss,
            "sidecar_cpu_ms_per_refresh": round(cpu, 2),
            "sidecar_rounds": runs,
            "gcp_modules_loaded_by_aws_init": imports[label],
        }
        rows.append([label, ms, ms / (floor * 1000), init_cpu, rss, side_rss, cpu])
    base = summary["this tree"]
    for label in trees:
        rows.append(
            [f"this tree / {label}"]
            + [
                round(base[k] / summary[label][k], 3)
                for k in (
                    "init_ms",
                    "init_x_floor",
                    "init_cpu_ms",
                    "init_peak_rss_mb",
                    "sidecar_rss_mb",
                    "sidecar_cpu_ms_per_refresh",
                )
            ]
        )
    print(
        benchlib.table(
            rows,
            ["AWS pod", "init ms", "x stdlib TLS", "init CPU ms", "init RSS MB", "sidecar RSS MB", "CPU ms/refresh"],
        )
    )
    print(f"stdlib TLS floor: {floor * 1000:.1f} ms; " + benchlib.describe_load(load))
    path = benchlib.write_results(
        "gcp_footprint_aws",
        {
            "machine": machine,
            "load": load,
            "floor_ms": round(floor * 1000, 1),
            "floor_cpu_ms": round(statistics.median(cpu_samples[STDLIB]) * 1000, 1),
            "trees": summary,
            "raw": {name: [[t * 1000, r] for t, r in values] for name, values in samples.items()},
        },
        args.out_dir,
    )
    print(f"results: {path}")


def _aws_init_modules(tree: Path, aws: dict[str, str], spec: str, target: Path) -> list[str]:
    """Ferry's GCP modules an AWS init of `tree` loaded (none, if the pod pays nothing for GCP)."""
    env = benchlib.clean_env({**aws, "FERRY_SPEC": spec, "PYTHONPATH": str(tree)})
    _, modules = child_json(MODULES_CODE, [str(target)], env, tree, 120)
    return [m for m in modules if "gcp" in m]


if __name__ == "__main__":
    main()
