"""Webhook admission cost: /mutate latency at 200 req/s, maximum throughput, and Kubernetes API calls per admission.

Why it exists: every pod creation in scope waits for Ferry's answer (the API
server's webhook timeout is seconds, but pod start latency and API server
concurrency are spent on it), so Ferry's budget judges /mutate on this 2-core
machine, with a realistic pod (3 containers, 10 objects) over TLS:

- (a) p99 latency <= 5 ms at a fixed 200 requests/s;
- (b) throughput >= 70% of a no-op endpoint in the same server;
- (c) zero Kubernetes API calls per admission after warm-up.

Machines here are shared and noisy, so /mutate is always measured next to the
server's own `POST /noop` (parse the JSON, answer "allowed") in the same run,
alternating in blocks, and reported side by side with the ratio.

/mutate is measured in two cases, side by side in the same run, because the
webhook remembers its answer for identical pods (webhook/policy/memo.py):

- "replicas": every request carries the same pod (a Deployment's replicas)
  with a fresh uid and, as the API server writes it, the current second in
  `managedFields[].time`, so after the first one every admission is answered
  from the memo;
- "unique pods": every request's pod differs as another Deployment's or a new
  rollout's would (a distinct `pod-template-hash` label and image tag), so
  every admission misses the memo and does the full resolve + build + diff.
  The bodies are built before timing, a pool of 4x the memo's capacity used
  in rotation: an LRU that saw 2,047 other pods since a body's last use no
  longer holds it. The rotation is checked against the memo itself (every
  request a miss) before timing.

The three endpoints ("replicas", "unique", "noop") alternate in ABCCBA order,
so each sees the same machine on average.

How:
- The server is the real `python -m webhook serve` (uvicorn with Ferry's guarded
  h11 protocol on asyncio, TLS with a self-generated certificate, one JSON log line per admission as in
  production) in a subprocess pinned to one CPU with `taskset`; this script,
  the load generator, pins itself to the other CPU.
- Before timing the script waits (up to --quiet-wait seconds) for the 1-minute
  load average to drop below --quiet-load, and records the load average at the
  start and end of each stage.
- (a) is open-loop: requests are sent at fixed scheduled times over a pool of
  keep-alive TLS connections and latency is measured from the *scheduled* send
  time, so a stalled server cannot hide its stall by delaying our next send
  (coordinated omission). The generator's own send delay is reported too.
- (b) is closed-loop: C keep-alive connections each send the next request as
  soon as the previous answer arrives. `wrk` (C, one thread) is used when it is
  installed (``apt-get install -y wrk``), since a Python client can run out of
  CPU before the server does; otherwise a Python asyncio client is used, and
  the report says whether the generator or the server was the bottleneck.
- (c) runs the app in this process with the real `WatchCache` and the real
  `kubernetes` client against tests/support/kubeapi.py's FakeKubeAPI (recorded
  kube-apiserver v1.28 JSON), warms up, sends 1,000 admissions of the recorded
  pod that names SecretProviderClass team-a/db-credentials (memo hits), then
  1,000 admissions of distinct variants of it (memo misses, each looking the
  SecretProviderClass up), and counts the requests the fake API server
  received meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import benchlib
from bench.webhook_inprocess import admission_breakdown, kube_calls, profile_unique
from bench.webhook_loops import run_latency, run_throughput, write_wrk_bodies
from bench.webhook_requests import (
    CASES,
    HASH_LABEL,
    KUBE_CALLS_BUDGET,
    LABELS,
    SEQUENCE,
    STAGES,
    Payloads,
    memo_rotation_check,
    realistic_review,
    request_bodies,
    unique_pool_default,
)
from bench.webhook_target import WebhookServer, check_answers

# --- Main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk: wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
        if generator == "python" and "throughput" in stages:
            print("note: wrk not found (apt-get install -y wrk); using the Python load generator for (b)")
    unique_pool = args.unique_pool or unique_pool_default()

    machine = benchlib.announce_machine()
    server_cpus, generator_cpus, pinned = benchlib.cpu_plan()
    pinned = pinned and not args.no_pin
    if pinned:
        benchlib.pin_self(generator_cpus)
        how = "taskset" if benchlib.taskset_prefix(server_cpus) else "sched_setaffinity"
        print(f"pinning: server on CPU {sorted(server_cpus)} ({how}), load generator on CPU {sorted(generator_cpus)}")
    else:
        print("pinning: off")

    results: dict[str, Any] = {
        "machine": machine,
        "command": "python bench/webhook_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            **vars(args),
            "out_dir": str(args.out_dir),
            "generator": generator,
            "pinned": pinned,
            "unique_pool": unique_pool,
            "sequence": list(SEQUENCE),
        },
        "load": {},
    }
    budgets: list[tuple[str, bool]] = []
    review = realistic_review(args.source)
    bodies = request_bodies(review, unique_pool)

    results["memo_rotation_check"] = _memo_check(bodies, unique_pool)

    # One wait for a quiet machine, before the first timed stage; each stage records the load around it.
    quiet = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "webhook benchmark")
    results["quiet_wait"] = quiet

    def stage_start() -> dict[str, Any]:
        """The load at a stage's start; the wait above counts for the first stage only."""
        first = not results["load"]
        return {
            "waited_seconds": quiet["waited_seconds"] if first else 0.0,
            "quiet_at_start": os.getloadavg()[0] < args.quiet_load,
            "loadavg_start": list(os.getloadavg()),
        }

    if "breakdown" in stages:
        load = stage_start()
        results["breakdown_us"], results["profile_unique"] = _breakdown(bodies, args)
        results["load"]["breakdown"] = benchlib.end_load(load)

    if "latency" in stages or "throughput" in stages:
        plan = (server_cpus if pinned else None, generator_cpus if pinned else None, generator, unique_pool)
        budgets += _over_tls(stages, bodies, args, plan, stage_start, results)
    if "kube-calls" in stages:
        load = stage_start()
        results["kube_calls"] = calls = _kube_calls(args)
        results["load"]["kube-calls"] = calls["load"] = benchlib.end_load(load)
        budgets.append(("(c) zero Kubernetes API calls per admission", calls["budget_met"]))

    results["budgets"] = dict(budgets)
    path = benchlib.write_results("webhook_latency", results, args.out_dir)
    print("\nbudgets:")
    for name, met in budgets:
        print(f"    {benchlib.verdict(met):6s} {name}")
    print(f"results: {path}")
    return 0


def _over_tls(
    stages: list[str],
    bodies: dict[str, list[bytes]],
    args: argparse.Namespace,
    plan: tuple[Any, Any, str, int],
    stage_start: Callable[[], dict[str, Any]],
    results: dict[str, Any],
) -> list[tuple[str, bool]]:
    """(a) and (b) against the real server, started once; their results go into `results`, their budgets back."""
    server_cpus, generator_cpus, generator, unique_pool = plan
    budgets: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="ferry-bench-webhook-") as tmp:
        server = WebhookServer(Path(tmp), server_cpus, args.server_log_level).start()
        try:
            shape = check_answers(server, bodies)
            results["request"] = shape
            print(
                f"\nrequest: {shape['request_bytes']} bytes, containers {shape['app_containers']}, "
                f"{shape['objects_in_spec']} objects ({args.source}); /mutate answers with {shape['patch_ops']} "
                f"patch ops ({shape['mutate_response_bytes']} bytes); unique pods: {unique_pool} bodies "
                f"differing in label {HASH_LABEL} and image tag, in rotation; "
                "replicas' managedFields stamped per request"
            )
            payloads = Payloads(bodies, server.port)
            if "latency" in stages:
                load = stage_start()
                results["latency"] = run_latency(server, payloads, args)
                results["load"]["latency"] = results["latency"]["load"] = benchlib.end_load(load)
                print(f"    {benchlib.describe_load(results['latency']['load'])}")
                for case in CASES:
                    budgets.append(
                        (
                            f"(a) /mutate p99 <= 5 ms at 200 req/s, {LABELS[case].split(' ', 1)[1]}",
                            results["latency"]["budget_met_by_case"][case],
                        )
                    )
            if "throughput" in stages:
                load = stage_start()
                wrk_files = write_wrk_bodies(bodies, Path(tmp), max(unique_pool, 1024)) if generator == "wrk" else {}
                results["throughput"] = run_throughput(server, payloads, wrk_files, args, generator, generator_cpus)
                results["load"]["throughput"] = results["throughput"]["load"] = benchlib.end_load(load)
                print(f"    {benchlib.describe_load(results['throughput']['load'])}")
                for case in CASES:
                    budgets.append(
                        (
                            f"(b) /mutate >= 70% of /noop throughput, {LABELS[case].split(' ', 1)[1]}",
                            results["throughput"]["budget_met_by_case"][case],
                        )
                    )
            results["server_rss_mb_after"] = server.rss_mb()
        finally:
            server.stop()
    return budgets


def _parser() -> argparse.ArgumentParser:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--source", choices=("inline", "spc"), default="inline", help="objects inline or via an SPC")
    parser.add_argument("--rate", type=float, default=200.0, help="(a) requests/s to each endpoint (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="(a) seconds per endpoint (default 20)")
    parser.add_argument("--segment", type=float, default=2.0, help="(a) seconds per ABCCBA segment (default 2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="(a) untimed seconds first (default 3)")
    parser.add_argument("--open-connections", type=int, default=8, help="(a) keep-alive connections (default 8)")
    parser.add_argument("--throughput-duration", type=float, default=10.0, help="(b) seconds per endpoint")
    parser.add_argument("--concurrency", type=int, default=16, help="(b) concurrent keep-alive connections")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="(b) load generator: wrk if installed (auto), or the Python one",
    )
    parser.add_argument("--admissions", type=int, default=1000, help="(c) admissions counted per case (default 1000)")
    parser.add_argument(
        "--unique-pool",
        type=int,
        default=None,
        help="distinct pods used in rotation for the unique-pod case (default 4x the memo's capacity)",
    )
    parser.add_argument("--profile-admissions", type=int, default=400, help="memo misses profiled (default 400)")
    parser.add_argument("--server-log-level", default="info", help="FERRY_LOG_LEVEL of the server (default info)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one request may take")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator to separate CPUs")
    return parser


def _memo_check(bodies: dict[str, list[bytes]], unique_pool: int) -> dict[str, Any]:
    """The webhook's own memo over the request rotation: replicas must hit, unique pods must miss."""
    rotation = memo_rotation_check(bodies, 2 * unique_pool)
    if rotation.get("available"):
        print(
            f"memo check (the webhook's own AdmissionMemo, {rotation['requests']} requests each): replicas "
            f"{rotation['replicas']['hits']} hits / {rotation['replicas']['misses']} miss; unique pods (pool of "
            f"{unique_pool}) {rotation['unique']['hits']} hits / {rotation['unique']['misses']} misses"
        )
        if not rotation["ok"]:
            raise RuntimeError(f"the request rotation does not give the intended memo hits and misses: {rotation}")
    else:
        print(f"memo check: webhook.policy.memo unavailable ({rotation['error']}); every admission does the full work")
    return rotation


def _breakdown(bodies: dict[str, list[bytes]], args: argparse.Namespace) -> tuple[dict[str, float], dict[str, Any]]:
    """Where /mutate's time goes in-process: the median of each step, and a cProfile of memo misses."""
    print("\nwhere /mutate's time goes, in-process (median us per call, warm-up first):")
    try:
        steps = admission_breakdown(bodies, 300)
    except (ImportError, TypeError, AttributeError) as exc:  # a moved internal: report, do not fail the run
        steps = {}
        print(f"    unavailable: {type(exc).__name__}: {exc}")
    for name, value in steps.items():
        print(f"    {name:36s} {value:10.1f}")
    try:
        profile = profile_unique(bodies, args.profile_admissions)
    except (ImportError, TypeError, AttributeError, StopIteration) as exc:
        profile = {}
        print(f"    profile unavailable: {type(exc).__name__}: {exc}")
    if profile:
        print(
            f"  cProfile of the handler over {profile['admissions']} memo misses (unique pods; "
            f"{profile['memo_misses']} misses, {profile['memo_hits']} hits): "
            f"{profile['handler_us_per_admission_profiled']:.0f} us/admission under the profiler"
        )
        print(
            benchlib.table(
                [
                    [
                        row["function"],
                        row["calls_per_admission"],
                        row["cumulative_us_per_admission"],
                        row["self_us_per_admission"],
                        f"{row['cumulative_share']:.0%}",
                    ]
                    for row in profile["top_by_cumulative"]
                ],
                ["function", "calls/adm", "cum us/adm", "self us/adm", "share of handler"],
            )
        )
    return steps, profile


def _kube_calls(args: argparse.Namespace) -> dict[str, Any]:
    """(c): Kubernetes API requests made while admitting, through the real watch cache and client."""
    print(
        f"\n(c) Kubernetes API calls per admission: {args.admissions} admissions of the recorded pod, then "
        f"{args.admissions} of distinct variants (memo misses), after warm-up"
    )
    calls = kube_calls(args.admissions, warmup=50)
    calls["budget_met"] = (
        calls["api_requests_during_admissions"] == KUBE_CALLS_BUDGET
        and calls["api_requests_during_unique_pod_admissions"] == KUBE_CALLS_BUDGET
    )
    print(
        f"    API requests during {calls['admissions']} admissions of the same pod: "
        f"{calls['api_requests_during_admissions']}; during {calls['unique_pod_admissions']} admissions of "
        f"distinct pods: {calls['api_requests_during_unique_pod_admissions']} (memo {calls['unique_pod_memo']}); "
        f"budget 0 -> {benchlib.verdict(calls['budget_met'])}"
    )
    print(
        f"    outcomes {calls['outcomes']} / {calls['unique_pod_outcomes']}; after "
        f"{calls['watch_events_played']} watch events and 100 more admissions: "
        f"{calls['api_requests_after_watch_events_and_100_more_admissions']} requests"
    )
    print(f"    paths ever requested (list + watch at start-up): {calls['paths_ever_requested']}")
    return calls


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.SubprocessError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
