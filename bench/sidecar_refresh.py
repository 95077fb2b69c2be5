"""Refresh sidecar: AWS API calls per unchanged refresh, file rewrites, and RSS over 1,000 refresh cycles.

Why it exists: the sidecar lives as long as the pod, in every pod that asked
for rotation, and polls AWS forever. Ferry's budget for it:

- an unchanged refresh costs only version checks (DescribeSecret per secret
  that follows a label, nothing for a pinned version, GetParameters per 10 SSM
  parameters, which carries versions and values) and rewrites no file;
- steady RSS <= 25 MB, and flat over 1,000 refresh cycles (no leak);
- at most 3 ms of CPU per unchanged refresh (bench/lean_fetcher.py compares it with the tree before).

How: the real `python -m fetcher sidecar` runs as a subprocess against moto's
server mode on 127.0.0.1 (HTTP), seeded with 10 secrets (3 pinned to a
VersionId) and 10 SSM parameters. The spec travels in FERRY_SPEC as the
webhook writes it, with `refreshSeconds` set to a tiny interval (0.02 s by
default): `spec_from_json` applies no floor (the webhook enforces
FERRY_MIN_REFRESH_INTERVAL at admission), so 1,000 cycles take about a minute
instead of days. Cycles are counted on the moto side (one GetParameters per
cycle), so the sidecar runs uninstrumented; moto also counts calls per
SecretId, which shows that pinned secrets are never checked.

RSS (and USS) are sampled with psutil after the first refresh and then every
100 cycles. "Flat" here means the sample after 1,000 cycles is less than
FLAT_TOLERANCE_MB above the sample after the first refresh. Files: the
`..data` target, and each file's inode, size and mtime, must be identical
before and after the 1,000 cycles. Last, one secret is rotated to show the
same sidecar does pick up a change (one GetSecretValue, one swap).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import benchlib

RSS_BUDGET_MB = 25.0
# Issue 16: CPU time of the sidecar per unchanged refresh (7 DescribeSecret + 1 GetParameters).
CPU_BUDGET_MS = 3.0
FLAT_TOLERANCE_MB = 1.0
PINNED = 3


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__)
    parser.add_argument("--cycles", type=int, default=1000, help="refresh cycles to run (default 1000)")
    parser.add_argument("--interval", type=float, default=0.02, help="refreshSeconds in the spec (default 0.02)")
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument("--parameters", type=int, default=10)
    parser.add_argument("--sample-every", type=int, default=100, help="RSS sample every N cycles (default 100)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="give up after this long (default 300)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin moto and the sidecar to separate CPUs")
    args = parser.parse_args(argv)
    if args.cycles < 1 or args.interval < 0:
        parser.error("--cycles must be >= 1 and --interval >= 0")
    import psutil

    machine = benchlib.announce_machine()
    moto_cpus, child_cpus, pinned = benchlib.cpu_plan()
    pinned = pinned and not args.no_pin
    if pinned:
        benchlib.pin_self(moto_cpus)
    where = f"moto on CPU {sorted(moto_cpus)}, sidecar on CPU {sorted(child_cpus)}"
    print(f"pinning: {where if pinned else 'off'}")

    with benchlib.CountingMotoServer() as moto, benchlib.memory_tmpdir("ferry-bench-sidecar-") as tmp:
        pinned_count = min(PINNED, args.secrets)
        objects = benchlib.seed_objects(moto.url, args.secrets, args.parameters, pinned=pinned_count)
        spec_json = benchlib.fetch_spec_json(objects, refresh_seconds=args.interval)
        following = [
            o["objectName"] for o in objects if o["objectType"] == "secretsmanager" and "objectVersion" not in o
        ]
        pinned_names = [o["objectName"] for o in objects if "objectVersion" in o]
        ssm_calls_per_cycle: int = -(-args.parameters // 10)
        target = Path(tmp) / "secrets"
        log_path = Path(tmp) / "sidecar.log"
        env = benchlib.clean_env(
            {**benchlib.aws_env(moto.url), "FERRY_SPEC": spec_json, "FERRY_TERMINATION_LOG": str(Path(tmp) / "tl")}
        )
        prefix, preexec = benchlib.pinning(child_cpus if pinned else None)
        command = [*prefix, sys.executable, "-m", "fetcher", "sidecar", "--dir", str(target)]
        print(
            f"sidecar: {len(objects)} objects ({len(following)} secrets following a label, {len(pinned_names)} pinned, "
            f"{args.parameters} SSM parameters), refreshSeconds={args.interval:g}, {args.cycles} cycles"
        )

        def cycles() -> int:
            # The first delivery makes ceil(params/10) GetParameters calls too; each refresh makes as many.
            return moto.calls().get("ssm.GetParameters", 0) // ssm_calls_per_cycle - 1

        load = benchlib.wait_for_quiet(args.quiet_load, args.quiet_wait, "sidecar refresh")
        with log_path.open("wb") as log_handle:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=benchlib.REPO_ROOT,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
            try:
                handle = psutil.Process(process.pid)
                deadline = time.monotonic() + args.max_seconds
                _wait_until(lambda: cycles() >= 1, deadline, process, "the first refresh")
                start_cycle = cycles()
                files_before = _snapshot(target)
                calls_before = moto.calls()
                cpu_before = _cpu(handle)
                started = time.monotonic()
                samples = [_sample(handle, start_cycle, 0.0)]
                next_sample = start_cycle + args.sample_every
                while cycles() < start_cycle + args.cycles:
                    if process.poll() is not None:
                        raise RuntimeError(f"sidecar exited with {process.returncode}: {_tail(log_path)}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {cycles() - start_cycle} cycles in {args.max_seconds:g}s")
                    if cycles() >= next_sample:
                        samples.append(_sample(handle, cycles(), time.monotonic() - started))
                        next_sample += args.sample_every
                    time.sleep(0.02)
                end_cycle = cycles()
                elapsed = time.monotonic() - started
                calls_after = moto.calls()
                cpu_after = _cpu(handle)
                samples.append(_sample(handle, end_cycle, elapsed))
                files_after = _snapshot(target)
                by_secret = moto.calls_by_secret()
                swaps_before_rotation = _count(log_path, '"swapped files"')

                plain = next(o for o in objects if o["objectName"] in following and "jmesPath" not in o)
                rotation = _rotation_check(moto, plain, target, cycles, deadline, process, log_path)
                load = benchlib.end_load(load)
            finally:
                exit_code = benchlib.stop_process(process)
        # Whole life, after a clean exit (a cycle in progress at SIGTERM completes): exact, no window edges.
        lifetime = moto.calls()
        log_lines = len(log_path.read_text(errors="replace").splitlines())

    ran = end_cycle - start_cycle
    delta = benchlib.diff_counts(calls_after, calls_before)
    per_cycle = {op: n / ran for op, n in delta.items()}
    expected = {"secretsmanager.DescribeSecret": len(following), "ssm.GetParameters": ssm_calls_per_cycle}
    # The window's edges can cut through a cycle in flight (its calls run concurrently): allow one cycle each side.
    calls_ok = all(abs(delta.get(op, 0) - n * ran) <= 2 * n for op, n in expected.items()) and set(delta) <= set(
        expected
    )
    lifetime_cycles = lifetime.get("ssm.GetParameters", 0) // ssm_calls_per_cycle - 1
    lifetime_describe = lifetime.get("secretsmanager.DescribeSecret", 0)
    lifetime_exact = (
        lifetime_describe == len(following) * lifetime_cycles
        and lifetime.get("secretsmanager.GetSecretValue", 0) == args.secrets + rotation["get_secret_value"]
    )
    calls_ok = calls_ok and lifetime_exact
    pinned_checks = {name: by_secret.get(f"secretsmanager.DescribeSecret:{name}", 0) for name in pinned_names}
    unchanged = files_before == files_after
    rss_start, rss_end = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    rss_peak = max(s["rss_mb"] for s in samples)
    rss_ok = rss_peak <= RSS_BUDGET_MB
    flat = rss_end - rss_start < FLAT_TOLERANCE_MB
    cpu_ms_per_cycle = 1000 * (cpu_after - cpu_before) / ran if ran else float("nan")

    print()
    print(
        benchlib.table(
            [[op, delta.get(op, 0), per_cycle.get(op, 0.0), expected.get(op, 0)] for op in sorted({*delta, *expected})],
            ["operation", f"calls in {ran} cycles", "per cycle", "expected"],
        )
    )
    print(
        f"    whole sidecar life: {lifetime_cycles} refreshes, {lifetime_describe} DescribeSecret "
        f"(= {len(following)} x {lifetime_cycles}: {lifetime_describe == len(following) * lifetime_cycles}), "
        f"{lifetime.get('secretsmanager.GetSecretValue', 0)} GetSecretValue (first delivery + rotation check)"
    )
    print(f"    DescribeSecret calls for the {len(pinned_names)} pinned secrets: {sum(pinned_checks.values())}")
    print(f"    calls per unchanged refresh as expected -> {benchlib.verdict(calls_ok)}")
    print(
        f"    files: ..data target and every file's inode/size/mtime unchanged over {ran} cycles: {unchanged}; "
        f"swaps logged {swaps_before_rotation} (the first delivery) -> {benchlib.verdict(unchanged)}"
    )
    print()
    print(
        benchlib.table(
            [[s["cycle"], s["seconds"], s["rss_mb"], s["uss_mb"], s["threads"], s["fds"]] for s in samples],
            ["cycle", "seconds", "RSS MB", "USS MB", "threads", "fds"],
        )
    )
    print(
        f"    RSS after the first refresh {rss_start:.1f} MB, after {ran} more cycles {rss_end:.1f} MB "
        f"(delta {rss_end - rss_start:+.2f} MB), peak {rss_peak:.1f} MB"
    )
    print(f"    steady RSS <= {RSS_BUDGET_MB:g} MB -> {benchlib.verdict(rss_ok)}")
    print(f"    RSS flat (grows < {FLAT_TOLERANCE_MB:g} MB over {ran} cycles) -> {benchlib.verdict(flat)}")
    print(
        f"    {ran / elapsed:.1f} cycles/s; sidecar CPU {cpu_ms_per_cycle:.2f} ms per unchanged refresh; "
        f"{log_lines} log lines in total ({log_lines / max(1, end_cycle + 1):.1f} per cycle)"
    )
    print(f"    {benchlib.describe_load(load)}")
    print(
        f"    rotation check: {rotation['changed_secret']} rotated -> GetSecretValue +{rotation['get_secret_value']}, "
        f"swaps +{rotation['swaps']}, file content updated: {rotation['content_updated']}; "
        f"sidecar exit code {exit_code}"
    )

    budgets = {
        "unchanged refresh costs only version checks": calls_ok and not sum(pinned_checks.values()),
        "unchanged refresh rewrites no file": unchanged,
        f"steady RSS <= {RSS_BUDGET_MB:g} MB": rss_ok,
        "RSS flat over the cycles": flat,
        f"CPU <= {CPU_BUDGET_MS:g} ms per unchanged refresh": cpu_ms_per_cycle <= CPU_BUDGET_MS,
    }
    path = benchlib.write_results(
        "sidecar_refresh",
        {
            "machine": machine,
            "command": "python bench/sidecar_refresh.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": {
                "cycles": args.cycles,
                "interval_seconds": args.interval,
                "secrets_following_label": len(following),
                "secrets_pinned": len(pinned_names),
                "parameters": args.parameters,
                "pinned_cpus": pinned,
            },
            "load": load,
            "cycles_measured": ran,
            "seconds": elapsed,
            "calls": delta,
            "calls_per_cycle": per_cycle,
            "lifetime_calls": lifetime,
            "lifetime_refreshes": lifetime_cycles,
            "lifetime_exact": lifetime_exact,
            "expected_per_cycle": expected,
            "describe_secret_calls_for_pinned": pinned_checks,
            "files_unchanged": unchanged,
            "swaps_logged": swaps_before_rotation,
            "rss_samples": samples,
            "rss_start_mb": rss_start,
            "rss_end_mb": rss_end,
            "rss_delta_mb": rss_end - rss_start,
            "rss_peak_mb": rss_peak,
            "cpu_ms_per_refresh": cpu_ms_per_cycle,
            "log_lines": log_lines,
            "rotation_check": rotation,
            "sidecar_exit_code": exit_code,
            "budgets": budgets,
        },
        args.out_dir,
    )
    print("\nbudgets:")
    for name, met in budgets.items():
        print(f"    {benchlib.verdict(met):6s} {name}")
    print(f"results: {path}")
    return 0


def _wait_until(condition: Any, deadline: float, process: subprocess.Popen[bytes], what: str) -> None:
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"sidecar exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _snapshot(target: Path) -> dict[str, Any]:
    """What a rewrite would change: the ..data target, and each visible file's inode, size, mtime and mode."""
    state: dict[str, Any] = {"..data": os.readlink(target / "..data"), "entries": sorted(os.listdir(target))}
    for name in sorted(os.listdir(target)):
        if name.startswith(".."):
            continue
        path = target / name
        link = os.lstat(path)
        real = os.stat(path)
        state[name] = (link.st_ino, link.st_mtime_ns, real.st_ino, real.st_size, real.st_mtime_ns, real.st_mode)
    return state


def _sample(handle: Any, cycle: int, seconds: float) -> dict[str, Any]:
    with handle.oneshot():
        info = handle.memory_full_info()
        return {
            "cycle": cycle,
            "seconds": round(seconds, 2),
            "rss_mb": info.rss / 2**20,
            "uss_mb": info.uss / 2**20,
            "threads": handle.num_threads(),
            "fds": handle.num_fds(),
        }


def _cpu(handle: Any) -> float:
    times = handle.cpu_times()
    return float(times.user + times.system)


def _count(path: Path, needle: str) -> int:
    return sum(needle in line for line in path.read_text(errors="replace").splitlines())


def _tail(path: Path, lines: int = 10) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _rotation_check(
    moto: benchlib.CountingMotoServer,
    obj: dict[str, Any],
    target: Path,
    cycles: Any,
    deadline: float,
    process: subprocess.Popen[bytes],
    log_path: Path,
) -> dict[str, Any]:
    """Rotate one secret and wait 3 cycles: the sidecar must fetch it once and swap once."""
    import boto3

    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=benchlib.REGION
    ).client("secretsmanager", endpoint_url=moto.url)
    before_calls = moto.calls().get("secretsmanager.GetSecretValue", 0)
    before_swaps = _count(log_path, '"swapped files"')
    new_value = "rotated-" + "r" * 40
    client.put_secret_value(SecretId=obj["objectName"], SecretString=new_value)
    client.close()
    target_cycle = cycles() + 3
    _wait_until(lambda: cycles() >= target_cycle, deadline, process, "cycles after the rotation")
    return {
        "changed_secret": obj["objectName"],
        "get_secret_value": moto.calls().get("secretsmanager.GetSecretValue", 0) - before_calls,
        "swaps": _count(log_path, '"swapped files"') - before_swaps,
        "content_updated": (target / obj["objectAlias"]).read_text() == new_value,
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
