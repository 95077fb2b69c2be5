"""Run every performance benchmark in sequence (what `make bench` runs) and print one summary.

Why it exists: the budgets in DESIGN.md are judged by benchmark scripts, never
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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

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
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds one benchmark may take (default 480)")
    parser.add_argument("--out-dir", type=Path, default=benchlib.RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    machine = benchlib.machine_info()
    print(f"machine: {benchlib.describe_machine(machine)}")
    failures: list[str] = []
    durations: dict[str, float] = {}
    for name in chosen:
        script, normal, quick = BENCHMARKS[name]
        command = [sys.executable, str(benchlib.BENCH_DIR / script), *(quick if args.quick else normal)]
        command += ["--out-dir", str(args.out_dir)]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        try:
            completed = subprocess.run(command, cwd=benchlib.REPO_ROOT, timeout=args.timeout, check=False)
            code = completed.returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"error: {name} took longer than {args.timeout:g}s", file=sys.stderr)
        durations[name] = time.monotonic() - started
        if code != 0:
            failures.append(name)

    rows, summary = _summarize(chosen, args.out_dir, failures, durations)
    print("\n=== summary")
    print(benchlib.table(rows, ["benchmark", "budget", "measured", "verdict"]))
    summary_path = args.out_dir / "summary.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(
        json.dumps({"machine": machine, "quick": args.quick, "failed": failures, "results": summary}, indent=2) + "\n"
    )
    print(f"\nresults: {args.out_dir}/*.json (summary: {summary_path})")
    if failures:
        print(f"FAILED to run: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        value = json.loads((out_dir / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _summarize(
    chosen: list[str], out_dir: Path, failures: list[str], durations: dict[str, float]
) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for name in chosen:
        data = _load(out_dir, name) if name not in failures else None
        summary[name] = {"seconds": round(durations.get(name, 0.0), 1), "ran": data is not None}
        if data is None:
            rows.append([name, "-", "did not run", "ERROR"])
            continue
        for budget, measured, met in _lines(name, data):
            rows.append([name, budget, measured, benchlib.verdict(met)])
            summary[name][budget] = {"measured": measured, "met": met}
    return rows, summary


def _lines(name: str, data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    lines: list[tuple[str, str, bool]] = []
    if name == "webhook_latency":
        latency = data.get("latency")
        if latency:
            m, n = latency["latency_ms"]["mutate"], latency["latency_ms"]["noop"]
            lines.append(
                (
                    "/mutate p99 <= 5 ms at 200 req/s",
                    f"p99 {m.get('p99', float('nan')):.2f} ms (p50 {m.get('p50', float('nan')):.2f}); "
                    f"/noop p99 {n.get('p99', float('nan')):.2f} ms",
                    bool(latency["budget_met"]),
                )
            )
        throughput = data.get("throughput")
        if throughput:
            lines.append(
                (
                    "/mutate >= 70% of /noop req/s",
                    f"{throughput['ratio']:.0%} ({throughput['mutate']['rps']:.0f} vs "
                    f"{throughput['noop']['rps']:.0f} req/s, {throughput['generator']})",
                    bool(throughput["budget_met"]),
                )
            )
        calls = data.get("kube_calls")
        if calls:
            lines.append(
                (
                    "0 Kubernetes API calls per admission",
                    f"{calls['api_requests_during_admissions']} in {calls['admissions']} admissions",
                    bool(calls["budget_met"]),
                )
            )
    elif name == "fetcher_init":
        lines.append(
            (
                "init <= 1.3x boto3 floor",
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
            "steady RSS <= 60 MB": f"peak {data['rss_peak_mb']:.1f} MB",
            "RSS flat over the cycles": f"{data['rss_delta_mb']:+.2f} MB over {data['cycles_measured']} cycles",
        }
        for budget, met in budgets.items():
            lines.append((budget, measured.get(budget, ""), bool(met)))
    return lines


if __name__ == "__main__":
    sys.exit(main())
