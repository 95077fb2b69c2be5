"""The load generators: (a) an open loop at a fixed rate, (b) a closed loop at maximum throughput."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import benchlib
from bench.webhook_requests import (
    CASES,
    ENDPOINTS,
    LABELS,
    LATENCY_BUDGET_P99_MS,
    PATHS,
    SEQUENCE,
    THROUGHPUT_BUDGET_RATIO,
    Payloads,
    instance,
)
from bench.webhook_target import Connection, WebhookServer, answer_ok

# --- (a) open loop at a fixed rate -----------------------------------------------------


@dataclass
class OpenLoopResult:
    latency: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in ENDPOINTS})
    service: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in ENDPOINTS})
    send_delay: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    cpu_by_endpoint: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0.0))


async def open_loop(
    server: WebhookServer,
    payloads: Payloads,
    *,
    rate: float,
    duration: float,
    warmup: float,
    segment: float,
    connections: int,
    timeout: float,
) -> OpenLoopResult:
    """Each endpoint gets `duration` seconds at `rate`, in ABCCBA segments; latency from the scheduled send time."""
    context = server.ssl_context()
    pool = [await Connection.open(server.port, context) for _ in range(connections)]
    queue: asyncio.Queue[tuple[float, str, bool] | None] = asyncio.Queue()
    result = OpenLoopResult()
    give_up_at = float("inf")  # set once the schedule is over: a backlog is drained for a bounded time only

    async def worker(index: int) -> None:
        conn = pool[index]
        while True:
            item = await queue.get()
            if item is None:
                return
            scheduled, endpoint, record = item
            if time.perf_counter() > give_up_at:
                if record:
                    result.dropped[endpoint] += 1
                continue
            payload = payloads.make(endpoint)
            sent = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.send(payload), timeout)
                ok = answer_ok(endpoint, status, body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, RuntimeError, ssl.SSLError):
                ok = False
                await conn.close()
                conn = pool[index] = await Connection.open(server.port, context)
            done = time.perf_counter()
            if not record:
                continue
            if not ok:
                result.errors[endpoint] += 1
                continue
            result.latency[endpoint].append(done - scheduled)
            result.service[endpoint].append(done - sent)
            result.send_delay.append(sent - scheduled)

    workers = [asyncio.create_task(worker(i)) for i in range(connections)]
    total = warmup + len(ENDPOINTS) * duration
    slots = int(total * rate)
    start = time.perf_counter() + 0.05
    current: str | None = None  # endpoint of the segment being sent, for server CPU attribution
    cpu_mark = 0.0
    for i in range(slots):
        offset = i / rate
        scheduled = start + offset
        record = offset >= warmup
        position = offset - warmup if record else offset
        endpoint = SEQUENCE[int(position // segment) % len(SEQUENCE)]
        # Coarse sleep, then yield until the exact time: timers are only ms-precise.
        delay = scheduled - time.perf_counter() - 0.0015
        if delay > 0:
            await asyncio.sleep(delay)
        while time.perf_counter() < scheduled:
            await asyncio.sleep(0)
        if record and endpoint != current:
            now_cpu = server.cpu_seconds()
            if current is not None:
                result.cpu_by_endpoint[current] += now_cpu - cpu_mark
            current, cpu_mark = endpoint, now_cpu
        queue.put_nowait((scheduled, endpoint, record))
    for _ in workers:
        queue.put_nowait(None)
    give_up_at = time.perf_counter() + max(5.0, duration / 2)
    await asyncio.wait_for(asyncio.gather(*workers), max(5.0, duration / 2) + timeout + 5)
    if current is not None:
        result.cpu_by_endpoint[current] += server.cpu_seconds() - cpu_mark
    for conn in pool:
        await conn.close()
    return result


# --- (b) closed loop, maximum throughput ----------------------------------------------------


@dataclass
class Block:
    endpoint: str
    requests: int
    errors: int
    seconds: float
    server_cpu: float
    generator_cpu: float
    latency_ms: dict[str, float] = field(default_factory=dict)


async def closed_loop_python(
    server: WebhookServer, payloads: Payloads, endpoint: str, seconds: float, pool: list[Connection], timeout: float
) -> Block:
    latencies: list[float] = []
    errors = 0
    context = server.ssl_context()
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            payload = payloads.make(endpoint)
            sent = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(pool[index].send(payload), timeout)
                ok = answer_ok(endpoint, status, body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, RuntimeError, ssl.SSLError):
                ok = False
                await pool[index].close()
                pool[index] = await Connection.open(server.port, context)
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    cpu0, gen0, wall0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(pool))))
    wall = time.perf_counter() - wall0
    return Block(
        endpoint,
        len(latencies),
        errors,
        wall,
        server.cpu_seconds() - cpu0,
        time.process_time() - gen0,
        _ms_summary(latencies),
    )


# wrk sends pre-formatted requests in rotation: `init` reads one body per line from a file (compact JSON has no
# newline) and formats every request once, so per request the generator only hands over the next string.
WRK_SCRIPT = """
local requests = {}
local count = 0
local index = 0
function init(args)
  local headers = {}
  headers["Host"] = "{host}"
  headers["Content-Type"] = "application/json"
  headers["Accept"] = "application/json, */*"
  headers["User-Agent"] = "kube-apiserver-admission"
  headers["Accept-Encoding"] = "gzip"
  for line in io.lines("{bodies}") do
    count = count + 1
    requests[count] = wrk.format("POST", "{path}", headers, line)
  end
  assert(count > 0, "no request bodies in {bodies}")
end
function request()
  index = index % count + 1
  return requests[index]
end
done = function(summary, latency, requests)
  io.write(string.format("FERRY_WRK %d %d %d %d %d %d %d %f %f %f %f\\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def write_wrk_bodies(bodies: dict[str, list[bytes]], directory: Path, per_endpoint: int) -> dict[str, Path]:
    """One file per endpoint, one request body per line, a fresh uid each (as the Python generator sends).

    "replicas" and "noop" files repeat the same pod; the "unique" file holds the whole pool, in rotation order.
    """
    files: dict[str, Path] = {}
    for endpoint, pool in bodies.items():
        count = max(per_endpoint, len(pool))
        path = directory / f"wrk-{endpoint}.jsonl"
        with path.open("wb") as handle:
            for i in range(count):
                body = instance(pool[i % len(pool)], second=i)
                if b"\n" in body:
                    raise RuntimeError("a request body contains a newline; wrk's body file is one body per line")
                handle.write(body + b"\n")
        files[endpoint] = path
    return files


def closed_loop_wrk(
    server: WebhookServer, body_file: Path, endpoint: str, seconds: float, connections: int, cpus: set[int] | None
) -> Block:
    script = body_file.parent / f"wrk-{endpoint}.lua"
    script.write_text(
        WRK_SCRIPT.replace("{bodies}", str(body_file))
        .replace("{path}", PATHS[endpoint])
        .replace("{host}", f"{benchlib.LOOPBACK}:{server.port}")
    )
    wrk = shutil.which("wrk")
    assert wrk
    prefix, preexec = benchlib.pinning(cpus)
    command = [
        *prefix,
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"https://{benchlib.LOOPBACK}:{server.port}{PATHS[endpoint]}",
    ]
    import psutil

    cpu0 = server.cpu_seconds()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    handle = psutil.Process(proc.pid)
    gen_cpu = 0.0
    try:
        while proc.poll() is None:
            try:
                times = handle.cpu_times()
                gen_cpu = times.user + times.system
            except psutil.Error:
                pass
            time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
    finally:
        benchlib.stop_process(proc)
    line = next((ln for ln in out.splitlines() if ln.startswith("FERRY_WRK ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()[-1000:]} {out.strip()[-1000:]}")
    fields = line.split()[1:]
    requests, duration_us = int(fields[0]), int(fields[1])
    errors = sum(int(v) for v in fields[2:7])
    p50, p90, p99, max_us = (float(v) / 1000 for v in fields[7:11])
    return Block(
        endpoint,
        requests - int(fields[5]),
        errors,
        duration_us / 1e6,
        server.cpu_seconds() - cpu0,
        gen_cpu,
        {"p50": p50, "p90": p90, "p99": p99, "max": max_us},
    )


def _ms_summary(seconds: list[float]) -> dict[str, float]:
    stats = benchlib.summarize(seconds, 1000)
    return {k: stats[k] for k in ("p50", "p90", "p99", "max") if k in stats}


def run_latency(server: WebhookServer, payloads: Payloads, args: argparse.Namespace) -> dict[str, Any]:
    print(
        f"\n(a) open loop: {args.rate:g} req/s for {args.duration:g} s per endpoint ({', '.join(ENDPOINTS)}), "
        f"ABCCBA segments of {args.segment:g} s, {args.open_connections} keep-alive TLS connections, after "
        f"{args.warmup:g} s warm-up"
    )
    outcome = asyncio.run(
        open_loop(
            server,
            payloads,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            segment=args.segment,
            connections=args.open_connections,
            timeout=args.timeout,
        )
    )
    stats = {name: benchlib.summarize(values, 1000) for name, values in outcome.latency.items()}
    service = {name: benchlib.summarize(values, 1000) for name, values in outcome.service.items()}
    send_delay = benchlib.summarize(outcome.send_delay, 1000)
    keys = ("p50", "p90", "p99", "max")
    cpu_ms = {
        name: 1000 * outcome.cpu_by_endpoint[name] / len(outcome.latency[name]) if outcome.latency[name] else 0.0
        for name in ENDPOINTS
    }
    rows: list[list[Any]] = [
        [LABELS[name], *(stats[name].get(k, float("nan")) for k in keys), stats[name].get("count", 0), cpu_ms[name]]
        for name in ENDPOINTS
    ]
    for case in CASES:
        rows.append(
            [
                f"ratio {case}/noop",
                *(benchlib.ratio(stats[case].get(k, 0), stats["noop"].get(k, 0)) for k in keys),
                "",
                benchlib.ratio(cpu_ms[case], cpu_ms["noop"]),
            ]
        )
    print(benchlib.table(rows, ["latency (ms)", "p50", "p90", "p99", "max", "n", "server CPU ms/req"]))
    print(
        f"    send delay (generator lateness + wait for a free connection) p50/p99/max "
        f"{send_delay.get('p50', 0):.3f}/{send_delay.get('p99', 0):.3f}/{send_delay.get('max', 0):.3f} ms; "
        f"errors {outcome.errors}; not sent (backlog) {outcome.dropped}"
    )
    met_by_case: dict[str, bool] = {}
    for case in CASES:
        p99 = stats[case].get("p99", float("inf"))
        failed = outcome.errors[case] + outcome.dropped[case]
        met_by_case[case] = p99 <= LATENCY_BUDGET_P99_MS and not failed
        if cpu_ms[case] * args.rate / 1000 > 0.8:
            print(
                f"    note: {LABELS[case]} needs {cpu_ms[case]:.2f} ms of server CPU per request, so {args.rate:g} "
                f"req/s keeps the server's core {cpu_ms[case] * args.rate / 10:.0f}% busy: latency is mostly queueing"
            )
        print(
            f"    {LABELS[case]}: p99 {p99:.2f} ms (budget <= {LATENCY_BUDGET_P99_MS} ms) -> "
            f"{benchlib.verdict(met_by_case[case])}"
        )
    return {
        "latency_ms": stats,
        "service_time_ms": service,
        "send_delay_ms": send_delay,
        "server_cpu_ms_per_request": cpu_ms,
        "errors": outcome.errors,
        "not_sent": outcome.dropped,
        "ratio_p50": {case: benchlib.ratio(stats[case].get("p50", 0), stats["noop"].get("p50", 0)) for case in CASES},
        "ratio_p99": {case: benchlib.ratio(stats[case].get("p99", 0), stats["noop"].get("p99", 0)) for case in CASES},
        "budget_p99_ms": LATENCY_BUDGET_P99_MS,
        "budget_met_by_case": met_by_case,
        "budget_met": all(met_by_case.values()),
    }


def run_throughput(
    server: WebhookServer,
    payloads: Payloads,
    wrk_files: dict[str, Path],
    args: argparse.Namespace,
    generator: str,
    generator_cpus: set[int] | None,
) -> dict[str, Any]:
    block_seconds = args.throughput_duration / 2
    print(
        f"\n(b) closed loop ({generator}): {args.concurrency} keep-alive TLS connections, ABCCBA blocks of "
        f"{block_seconds:g} s, {args.throughput_duration:g} s per endpoint, after 1 s warm-up each"
    )
    blocks: list[Block] = []
    if generator == "wrk":

        def run(endpoint: str, seconds: float) -> Block:
            return closed_loop_wrk(server, wrk_files[endpoint], endpoint, seconds, args.concurrency, generator_cpus)

        for endpoint in ENDPOINTS:
            run(endpoint, 1)
        blocks = [run(endpoint, block_seconds) for endpoint in SEQUENCE]
    else:

        async def python_blocks() -> list[Block]:
            context = server.ssl_context()
            pool = [await Connection.open(server.port, context) for _ in range(args.concurrency)]
            for endpoint in ENDPOINTS:
                await closed_loop_python(server, payloads, endpoint, 1.0, pool, args.timeout)
            done = [
                await closed_loop_python(server, payloads, endpoint, block_seconds, pool, args.timeout)
                for endpoint in SEQUENCE
            ]
            for conn in pool:
                await conn.close()
            return done

        blocks = _run_fast(python_blocks)
    summary: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        mine = [b for b in blocks if b.endpoint == endpoint]
        seconds = sum(b.seconds for b in mine)
        requests = sum(b.requests for b in mine)
        summary[endpoint] = {
            "requests": requests,
            "errors": sum(b.errors for b in mine),
            "seconds": seconds,
            "rps": requests / seconds if seconds else 0.0,
            "server_cpu_utilisation": sum(b.server_cpu for b in mine) / seconds if seconds else 0.0,
            "generator_cpu_utilisation": sum(b.generator_cpu for b in mine) / seconds if seconds else 0.0,
            "server_cpu_ms_per_request": 1000 * sum(b.server_cpu for b in mine) / requests if requests else 0.0,
            "latency_ms_by_block": [b.latency_ms for b in mine],
            "rps_by_block": [b.requests / b.seconds if b.seconds else 0.0 for b in mine],
        }
    ratios = {case: benchlib.ratio(summary[case]["rps"], summary["noop"]["rps"]) for case in CASES}
    cpu_ratios = {
        case: benchlib.ratio(summary["noop"]["server_cpu_ms_per_request"], summary[case]["server_cpu_ms_per_request"])
        for case in CASES
    }
    rows = [
        [
            LABELS[endpoint],
            summary[endpoint]["rps"],
            summary[endpoint]["server_cpu_ms_per_request"],
            f"{summary[endpoint]['server_cpu_utilisation']:.0%}",
            f"{summary[endpoint]['generator_cpu_utilisation']:.0%}",
            summary[endpoint]["errors"],
            " / ".join(f"{r:.0f}" for r in summary[endpoint]["rps_by_block"]),
        ]
        for endpoint in ENDPOINTS
    ]
    print(
        benchlib.table(
            rows, ["endpoint", "req/s", "server CPU ms/req", "server CPU", "generator CPU", "errors", "req/s by block"]
        )
    )
    generator_bound = summary["noop"]["generator_cpu_utilisation"] >= 0.85
    contended = summary["noop"]["server_cpu_utilisation"] < 0.85 and not generator_bound
    if generator_bound:
        print(
            "    WARNING: the load generator used most of its core during /noop, so it may have limited the "
            "baseline and the ratio overstates /mutate; install wrk (apt-get install -y wrk)"
        )
    elif contended:
        print(
            f"    note: the server got only {summary['noop']['server_cpu_utilisation']:.0%} of its core during /noop "
            "while the generator was not saturated: other processes share the machine. Absolute req/s are low; "
            "the side-by-side ratios and the CPU-per-request ratios still compare like with like"
        )
    met_by_case: dict[str, bool] = {}
    for case in CASES:
        met_by_case[case] = ratios[case] >= THROUGHPUT_BUDGET_RATIO and not summary[case]["errors"]
        print(
            f"    {LABELS[case]}: throughput ratio to /noop {ratios[case]:.3f} (budget >= {THROUGHPUT_BUDGET_RATIO}) "
            f"-> {benchlib.verdict(met_by_case[case])}; CPU-per-request ratio noop/{case} {cpu_ratios[case]:.3f}"
        )
    summary.update(
        {
            "generator": generator,
            "concurrency": args.concurrency,
            "ratio": ratios,
            "cpu_per_request_ratio": cpu_ratios,
            "generator_bound": generator_bound,
            "server_contended": contended,
            "budget_ratio": THROUGHPUT_BUDGET_RATIO,
            "budget_met_by_case": met_by_case,
            "budget_met": all(met_by_case.values()),
        }
    )
    return summary


T = TypeVar("T")


def _run_fast(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available (a faster generator), else on asyncio's loop."""
    try:
        # Optional, not a dependency (and not in the dev venv): mypy knows it only where it is installed.
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())
