"""Admission cost of two checkouts of Ferry, side by side: the webhook's ASGI app called in-process.

Why it exists: a refactoring of the admission path must not make admission
slower, and two runs on a shared machine minutes apart differ more than the
code does. This script times the same requests against two source trees in one
session, alternating which tree goes first each round, so machine drift lands
on both sides alike; the ratio of their medians is the answer.

Each measurement is a fresh interpreter started in one tree (its own `webhook`
package on sys.path) that builds the app with `create_app` (webhook/edge/app.py;
webhook/app.py in a tree from before the sub-packages), the public entry point
both trees have, and calls it as an ASGI server would (POST /mutate, no
sockets, no TLS), after a warm-up. Three cases, as in
`bench.webhook_latency`: "replicas" (the same pod again, a fresh uid each time:
the memo answers), "unique" (a different pod each time, from a pool larger
than the memo: the full admission) and "noop" (POST /noop with the replicas'
body: parse the JSON, answer "allowed"), so each tree's admissions are also
compared with its own /noop (noop p50 / case p50 is the throughput ratio
without HTTP and TLS, which /mutate and /noop share). The bodies, the cluster
view and the settings are made here once and handed to both trees. Before
timing, the worker freezes what start-up made and collects as the server does
(`settle_interpreter`), so old-generation collections of the start-up heap,
which the server never runs, are not timed. Logging is not set up unless
`--log-lines` asks for the server's set-up (one JSON line per admission, to
/dev/null), so the log line's cost is left out by default.

    python -m bench.admission_compare --before ../ferry-before            # this tree is "after"
    python -m bench.admission_compare --before ../ferry-before --log-lines --rounds 5
    python -m bench.admission_compare --before A --after B --rounds 7 --calls 2000
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import benchlib
from bench.webhook_requests import (
    RECORDED_AT,
    TIME_PLACEHOLDER,
    UID_PLACEHOLDER,
    bench_spc,
    realistic_review,
    request_bodies,
)

CASES = ("replicas", "unique", "noop")
# The /mutate cases, each also compared with /noop.
MUTATE_CASES = ("replicas", "unique")

# Runs inside the tree under test. It reads the job (bodies, view, settings) from argv[1] and prints
# microseconds per call for each case. Only public names that both trees export are used.
WORKER = r"""
import asyncio, gc, json, sys, time, uuid
job = json.loads(open(sys.argv[1]).read())
try:  # the layout since the webhook was grouped into sub-packages
    from webhook.edge.app import create_app
    from webhook.policy.view import StaticView
except ImportError:  # a tree from before
    from webhook.app import create_app
    from webhook.kube import StaticView
from webhook.settings import Settings

if job.get("log_lines"):  # logging as the server sets it up (webhook/__main__.py), the lines to /dev/null
    import logging, os
    from fetcher.contract.logline import JsonFormatter
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel("INFO")
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
app = create_app(Settings(), StaticView(job["spcs"], job["namespaces"]), native_sidecars=True, noop_endpoint=True)
bodies = {case: [body.encode() for body in pool] for case, pool in job["bodies"].items()}
placeholder = job["uid_placeholder"].encode()
try:  # as the server does once started: start-up's objects frozen out of the collector, gen0 threshold raised
    from webhook.edge.gatedserver import settle_interpreter
except ImportError:
    settle_interpreter = lambda: (gc.collect(), gc.freeze())
settle_interpreter()

async def call(body, path):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8443)}
    sent = []
    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}
    status = []
    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
    await app(scope, receive, send)
    assert status == [200], status

async def run(case, calls):
    pool = bodies[case]
    path = "/noop" if case == "noop" else "/mutate"
    requests = [pool[i % len(pool)].replace(placeholder, str(uuid.uuid4()).encode(), 1) for i in range(calls)]
    samples = []
    for body in requests:
        started = time.perf_counter()
        await call(body, path)
        samples.append(time.perf_counter() - started)
    return samples

async def main():
    out = {}
    for case in job["cases"]:
        await run(case, job["warmup"])
        samples = sorted(await run(case, job["calls"]))
        out[case] = {"p50_us": samples[len(samples) // 2] * 1e6, "mean_us": sum(samples) / len(samples) * 1e6}
    print(json.dumps(out))

asyncio.run(main())
"""


def make_job(calls: int, warmup: int, pool: int, source: str, log_lines: bool = False) -> dict[str, Any]:
    bodies = request_bodies(realistic_review(source), pool)
    bodies["noop"] = bodies["replicas"]
    namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
    return {
        "cases": list(CASES),
        "log_lines": log_lines,
        "calls": calls,
        "warmup": warmup,
        # Each body's managedFields time differs, as replicas' do; the worker fills in a fresh uid per call.
        "bodies": {case: [_stamped(body, i) for i, body in enumerate(bodies[case])] for case in CASES},
        "uid_placeholder": UID_PLACEHOLDER,
        "spcs": [bench_spc()],
        "namespaces": namespaces,
    }


def _stamped(body: bytes, second: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(RECORDED_AT + second))
    return body.decode().replace(TIME_PLACEHOLDER, stamp)


def measure(tree: Path, job_file: Path) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "FERRY_LOG_LEVEL": "warning"}
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(job_file)], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{result.stderr[-3000:]}")
    measured: dict[str, dict[str, float]] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__, quiet=False)
    parser.add_argument("--before", type=Path, required=True, help="the source tree to compare against")
    parser.add_argument("--after", type=Path, default=benchlib.REPO_ROOT, help="the new tree (default: this one)")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per tree, alternating (default 7)")
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case per measurement")
    parser.add_argument("--warmup", type=int, default=300, help="untimed calls per case first")
    parser.add_argument("--pool", type=int, default=2048, help="distinct pods in the unique case (> memo size)")
    parser.add_argument("--source", choices=("inline", "spc"), default="inline", help="objects inline or via an SPC")
    parser.add_argument(
        "--log-lines", action="store_true", help="log as the server does (JSON lines to /dev/null); default: no logging"
    )
    args = parser.parse_args(argv)
    machine = benchlib.announce_machine()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="ferry-compare-") as workdir:
        job_file = Path(workdir) / "job.json"
        job_file.write_text(json.dumps(make_job(args.calls, args.warmup, args.pool, args.source, args.log_lines)))
        for round_number in range(args.rounds):
            order = ("before", "after") if round_number % 2 == 0 else ("after", "before")
            for name in order:
                runs[name].append(measure(trees[name], job_file))
            print(
                f"round {round_number + 1}/{args.rounds}: "
                + ", ".join(
                    f"{name} {case} {runs[name][-1][case]['p50_us']:.0f} us" for name in order for case in CASES
                )
            )
    summary: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
    for case in CASES:
        medians = {name: statistics.median(run[case]["p50_us"] for run in runs[name]) for name in runs}
        spread = {
            name: (min(r[case]["p50_us"] for r in runs[name]), max(r[case]["p50_us"] for r in runs[name]))
            for name in runs
        }
        summary[case] = {
            "median_p50_us": medians,
            "range_p50_us": spread,
            "ratio_after_before": medians["after"] / medians["before"],
        }
        print(
            f"{case:9s} p50 per admission: before {medians['before']:.1f} us "
            f"({spread['before'][0]:.0f}-{spread['before'][1]:.0f}), after {medians['after']:.1f} us "
            f"({spread['after'][0]:.0f}-{spread['after'][1]:.0f}); "
            f"after/before = {summary[case]['ratio_after_before']:.3f}"
        )
    # Each measurement's /noop p50 over its /mutate p50 (same process, same minute): in-process throughput ratios.
    for case in MUTATE_CASES:
        ratios = {
            name: [run["noop"]["p50_us"] / run[case]["p50_us"] for run in runs[name]] for name in ("before", "after")
        }
        summary[case]["noop_ratio_median"] = {name: statistics.median(values) for name, values in ratios.items()}
        summary[case]["noop_ratios"] = ratios
        print(
            f"{case:9s} noop/{case} p50 (in-process throughput ratio, median of rounds): "
            + ", ".join(
                f"{name} {statistics.median(values):.3f} ({' '.join(f'{v:.2f}' for v in values)})"
                for name, values in ratios.items()
            )
        )
    summary["runs"] = runs
    path = benchlib.write_results(f"admission_compare_{args.source}", summary, args.out_dir)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
