"""Run every performance benchmark in sequence (what `make bench` runs) and print one summary.

Why it exists: Ferry's performance budgets are judged by benchmark scripts, never
by timed tests, and a reviewer should be able to re-measure all of them with
one command in well under ten minutes on the 2-core reference machine. Each
benchmark runs as its own process (so one cannot skew the next through a warm
interpreter or a pinned CPU) with moderate defaults, writes its JSON into
bench/results/, and this script writes bench/results/summary.json.

Exit status: non-zero only if a benchmark failed to run. A missed budget is a
result, printed as MISSED, not an error.

The load generator for the webhook's throughput stage is `wrk` when it is
installed (``apt-get install -y wrk``), else a Python client; the webhook
benchmark says which it used.

The machine is shared: each benchmark first waits (up to --quiet-wait seconds,
60 here so the whole run stays under ten minutes; the scripts alone wait up to
300) for the 1-minute load average to fall below --quiet-load, and records the
load average at the start and end of each stage. `--repeat N` runs the whole
sequence N times (into DIR/runs/1..N/), copies each benchmark's median run
(by its key metric, see KEY_METRIC) to DIR/<benchmark>.json, and puts every
run's key numbers with their median, minimum and maximum in summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import benchlib

# name -> (script, arguments with moderate defaults, "quick" arguments for a smoke run)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "webhook_latency": (
        "webhook_latency.py",
        ["--duration", "20", "--throughput-duration", "10", "--admissions", "1000"],
        ["--duration", "3", "--warmup", "1", "--throughput-duration", "2", "--admissions", "100"],
    ),
    "fetcher_init": ("fetcher_init.py", ["--runs", "21", "--warmup", "2"], ["--runs", "3", "--warmup", "1"]),
    "sidecar_refresh": ("sidecar_refresh.py", ["--cycles", "1000"], ["--cycles", "100", "--sample-every", "50"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny runs: check the scripts work, numbers meaningless")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole sequence N times (default 1)")
    parser.add_argument(
        "--quiet-load", type=float, default=benchlib.QUIET_LOAD, help="wait for a 1-minute load average below this"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="... for at most this many seconds before each benchmark (default 60; 0 = do not wait)",
    )
    parser.add_argument(
        "--timeout", type=float, default=480.0, help="seconds one benchmark may take, plus --quiet-wait (default 480)"
    )
    parser.add_argument("--out-dir", type=Path, default=benchlib.RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    machine = benchlib.announce_machine()
    failures: list[str] = []
    durations: dict[str, float] = {}
    run_dirs = (
        [args.out_dir] if args.repeat == 1 else [args.out_dir / "runs" / str(k) for k in range(1, 1 + args.repeat)]
    )
    started_all = time.monotonic()
    for k, run_dir in enumerate(run_dirs, 1):
        for name in chosen:
            script, normal, quick = BENCHMARKS[name]
            command = [sys.executable, "-m", f"bench.{script.removesuffix('.py')}", *(quick if args.quick else normal)]
            command += ["--out-dir", str(run_dir), "--quiet-load", f"{args.quiet_load:g}"]
            command += ["--quiet-wait", f"{args.quiet_wait:g}"]
            label = f"{name} (run {k} of {args.repeat})" if args.repeat > 1 else name
            print(f"\n=== {label}: {' '.join(command[1:])}", flush=True)
            started = time.monotonic()
            try:
                timeout = args.timeout + args.quiet_wait
                completed = subprocess.run(command, cwd=benchlib.REPO_ROOT, timeout=timeout, check=False)
                code = completed.returncode
            except subprocess.TimeoutExpired:
                code = -1
                print(f"error: {name} took longer than {timeout:g}s", file=sys.stderr)
            durations[name] = durations.get(name, 0.0) + time.monotonic() - started
            if code != 0 and name not in failures:
                failures.append(name)

    repeats: dict[str, Any] = {}
    if args.repeat > 1:
        for name in chosen:
            if name not in failures:
                repeats[name] = _repeat_summary(name, run_dirs, args.out_dir)
    rows, summary = _summarize(chosen, args.out_dir, failures, durations, run_dirs if args.repeat > 1 else None)
    print("\n=== summary" + (f" (median run of {args.repeat} for each benchmark)" if args.repeat > 1 else ""))
    headers = ["benchmark", "budget", "measured", "verdict"]
    print(benchlib.table(rows, [*headers, "runs met"] if args.repeat > 1 else headers))
    if repeats:
        print(f"\n=== spread over {args.repeat} runs: median [min - max]")
        spread_rows = [
            [
                name,
                metric,
                f"{v['median']:.3f} [{v['min']:.3f} - {v['max']:.3f}]",
                " / ".join(_fmt(x) for x in v["runs"]),
            ]
            for name, data in repeats.items()
            for metric, v in data["metrics"].items()
        ]
        print(benchlib.table(spread_rows, ["benchmark", "metric", "median [min - max]", "runs 1..N"]))
    summary_path = args.out_dir / "summary.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(
        json.dumps(
            {
                "machine": machine,
                "quick": args.quick,
                "repeat": args.repeat,
                "quiet_load": args.quiet_load,
                "quiet_wait_seconds": args.quiet_wait,
                "seconds": round(time.monotonic() - started_all, 1),
                "failed": failures,
                "results": summary,
                "repeats": repeats,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {args.out_dir}/*.json (summary: {summary_path})")
    if failures:
        print(f"FAILED to run: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _get(data: dict[str, Any], *path: str) -> float:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _metric(*path: str) -> Callable[[dict[str, Any]], float]:
    return lambda data: _get(data, *path)


# The numbers compared across repeated runs; the first one picks the median run.
METRICS: dict[str, dict[str, Callable[[dict[str, Any]], float]]] = {
    "webhook_latency": {
        "unique p99 ms @200/s": _metric("latency", "latency_ms", "unique", "p99"),
        "unique p50 ms @200/s": _metric("latency", "latency_ms", "unique", "p50"),
        "replicas p99 ms @200/s": _metric("latency", "latency_ms", "replicas", "p99"),
        "replicas p50 ms @200/s": _metric("latency", "latency_ms", "replicas", "p50"),
        "noop p99 ms @200/s": _metric("latency", "latency_ms", "noop", "p99"),
        "noop p50 ms @200/s": _metric("latency", "latency_ms", "noop", "p50"),
        "unique CPU ms/req @200/s": _metric("latency", "server_cpu_ms_per_request", "unique"),
        "replicas CPU ms/req @200/s": _metric("latency", "server_cpu_ms_per_request", "replicas"),
        "noop CPU ms/req @200/s": _metric("latency", "server_cpu_ms_per_request", "noop"),
        "unique throughput ratio": _metric("throughput", "ratio", "unique"),
        "replicas throughput ratio": _metric("throughput", "ratio", "replicas"),
        "unique req/s": _metric("throughput", "unique", "rps"),
        "replicas req/s": _metric("throughput", "replicas", "rps"),
        "noop req/s": _metric("throughput", "noop", "rps"),
        "noop server CPU use (throughput)": _metric("throughput", "noop", "server_cpu_utilisation"),
        "kube API calls (same pod)": _metric("kube_calls", "api_requests_during_admissions"),
        "kube API calls (unique pods)": _metric("kube_calls", "api_requests_during_unique_pod_admissions"),
        "waited for quiet, s": _metric("quiet_wait", "waited_seconds"),
        "load at start (latency)": lambda d: _first(d, "load", "latency", "loadavg_start"),
        "load at end (latency)": lambda d: _first(d, "load", "latency", "loadavg_end"),
        "load at start (throughput)": lambda d: _first(d, "load", "throughput", "loadavg_start"),
        "load at end (throughput)": lambda d: _first(d, "load", "throughput", "loadavg_end"),
    },
    "fetcher_init": {
        "ratio of medians": _metric("ratio_of_medians"),
        "fetcher median ms": _metric("fetcher_ms", "p50"),
        "floor median ms": _metric("floor_ms", "p50"),
        "waited for quiet, s": _metric("load", "waited_seconds"),
        "load at start": lambda d: _first(d, "load", "loadavg_start"),
        "load at end": lambda d: _first(d, "load", "loadavg_end"),
    },
    "sidecar_refresh": {
        "RSS peak MB": _metric("rss_peak_mb"),
        "RSS delta MB": _metric("rss_delta_mb"),
        "DescribeSecret per cycle": _metric("calls_per_cycle", "secretsmanager.DescribeSecret"),
        "GetParameters per cycle": _metric("calls_per_cycle", "ssm.GetParameters"),
        "files unchanged (1 = yes)": _metric("files_unchanged"),
        "CPU ms per refresh": _metric("cpu_ms_per_refresh"),
        "log lines": _metric("log_lines"),
        "waited for quiet, s": _metric("load", "waited_seconds"),
        "load at start": lambda d: _first(d, "load", "loadavg_start"),
        "load at end": lambda d: _first(d, "load", "loadavg_end"),
    },
}


def _first(data: dict[str, Any], *path: str) -> float:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value[0]) if isinstance(value, list) and value else float("nan")


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _repeat_summary(name: str, run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Each metric over the runs (median, min, max); the median run by the first metric is copied to out_dir."""
    runs = [_load(run_dir, name) for run_dir in run_dirs]
    present = [(k, data) for k, data in enumerate(runs, 1) if data is not None]
    metrics: dict[str, Any] = {}
    for metric, extract in METRICS[name].items():
        values = [extract(data) for _, data in present]
        finite = [v for v in values if v == v]
        if not finite:
            continue
        metrics[metric] = {"runs": values, "median": statistics.median(finite), "min": min(finite), "max": max(finite)}
    key = next(iter(METRICS[name]))
    ranked = sorted(present, key=lambda item: METRICS[name][key](item[1]))
    median_run, _ = ranked[(len(ranked) - 1) // 2]
    shutil.copyfile(run_dirs[median_run - 1] / f"{name}.json", out_dir / f"{name}.json")
    return {"median_run_by": key, "median_run": median_run, "runs": len(run_dirs), "metrics": metrics}


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        value = json.loads((out_dir / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _summarize(
    chosen: list[str],
    out_dir: Path,
    failures: list[str],
    durations: dict[str, float],
    run_dirs: list[Path] | None = None,
) -> tuple[list[list[str]], dict[str, Any]]:
    """One row per budget line, from out_dir's (median) run; with run_dirs, also in how many runs it was met.

    The median run is picked by one metric, so another budget line in it need not be that line's median:
    "runs met" says how the line fared in every run.
    """
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for name in chosen:
        data = _load(out_dir, name) if name not in failures else None
        summary[name] = {"seconds": round(durations.get(name, 0.0), 1), "ran": data is not None}
        if data is None:
            rows.append([name, "-", "did not run", "ERROR"])
            continue
        per_run: dict[str, list[bool]] = {}
        for run_dir in run_dirs or []:
            run = _load(run_dir, name)
            for budget, _, met in _lines(name, run) if run else []:
                per_run.setdefault(budget, []).append(met)
        for budget, measured, met in _lines(name, data):
            row = [name, budget, measured, benchlib.verdict(met)]
            summary[name][budget] = {"measured": measured, "met": met}
            if run_dirs:
                runs = per_run.get(budget, [])
                row.append(f"{sum(runs)} of {len(runs)}")
                summary[name][budget]["runs_met"] = [sum(runs), len(runs)]
            rows.append(row)
    return rows, summary


def _lines(name: str, data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    lines: list[tuple[str, str, bool]] = []
    if name == "webhook_latency":
        cases = {"replicas": "replicas", "unique": "unique pods"}
        latency = data.get("latency")
        if latency:
            n = latency["latency_ms"]["noop"]
            for case, label in cases.items():
                m = latency["latency_ms"][case]
                lines.append(
                    (
                        f"/mutate p99 <= 5 ms at 200 req/s ({label})",
                        f"p99 {m.get('p99', float('nan')):.2f} ms (p50 {m.get('p50', float('nan')):.2f}); "
                        f"/noop p99 {n.get('p99', float('nan')):.2f} ms",
                        bool(latency["budget_met_by_case"][case]),
                    )
                )
        throughput = data.get("throughput")
        if throughput:
            for case, label in cases.items():
                lines.append(
                    (
                        f"/mutate >= 70% of /noop req/s ({label})",
                        f"{throughput['ratio'][case]:.3f} ({throughput[case]['rps']:.0f} vs "
                        f"{throughput['noop']['rps']:.0f} req/s, {throughput['generator']})",
                        bool(throughput["budget_met_by_case"][case]),
                    )
                )
        calls = data.get("kube_calls")
        if calls:
            lines.append(
                (
                    "0 Kubernetes API calls per admission",
                    f"{calls['api_requests_during_admissions']} in {calls['admissions']} admissions (same pod), "
                    f"{calls['api_requests_during_unique_pod_admissions']} in {calls['unique_pod_admissions']} "
                    "(unique pods)",
                    bool(calls["budget_met"]),
                )
            )
    elif name == "fetcher_init":
        lines.append(
            (
                "init <= 2.5x stdlib TLS floor",
                f"{data['ratio_of_medians']:.2f}x ({data['fetcher_ms']['p50']:.0f} vs {data['floor_ms']['p50']:.0f} "
                f"ms medians); calls {data['api_calls_per_init']}",
                bool(data["budget_met"]),
            )
        )
    elif name == "sidecar_refresh":
        budgets = data.get("budgets", {})
        per_cycle = ", ".join(f"{op.split('.')[-1]} {n:.2f}" for op, n in data["calls_per_cycle"].items())
        measured = {
            "unchanged refresh costs only version checks": f"per cycle: {per_cycle}",
            "unchanged refresh rewrites no file": f"files unchanged: {data['files_unchanged']}",
            "steady RSS <= 25 MB": f"peak {data['rss_peak_mb']:.1f} MB",
            "RSS flat over the cycles": f"{data['rss_delta_mb']:+.2f} MB over {data['cycles_measured']} cycles",
        }
        for budget, met in budgets.items():
            lines.append((budget, measured.get(budget, ""), bool(met)))
    return lines


if __name__ == "__main__":
    sys.exit(main())
