"""Shared plumbing for Ferry's benchmark scripts: machine facts, statistics, a counting moto server, results.

Why it exists: every benchmark must record the machine it ran on, compute
percentiles the same way, count AWS API calls by operation on the server side
(so a subprocess fetcher needs no instrumentation), and write its results as
JSON next to the others in bench/results/. Keeping that here keeps each
benchmark script about what it measures.

Not a test helper: nothing here asserts; benchmarks report and compare.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.net import free_port as free_port  # re-exported for the scripts
from fetcher.contract import spec_to_json
from tests.support.paths import FIXTURES as FIXTURES  # re-exported: the scripts read the recorded fixtures
from tests.support.paths import REPO_ROOT as REPO_ROOT  # re-exported: the scripts run the repository's code

if TYPE_CHECKING:  # for the annotation: CountingMotoServer imports werkzeug when it starts
    from werkzeug.serving import BaseWSGIServer

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOOPBACK = "127.0.0.1"
REGION = "us-east-1"

# Libraries whose versions decide the numbers (recorded with every result).
LIBRARIES = (
    "boto3",
    "botocore",
    "moto",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "kubernetes",
    "jsonpatch",
    "cryptography",
    "prometheus-client",
    "PyYAML",
    "jmespath",
    "httpx",
    "psutil",
    "Werkzeug",
)


# --- Machine ---------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, CPU model, memory, Python and library versions, current load."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_mb = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (probe.stdout or probe.stderr).splitlines()[0].strip() if (probe.stdout or probe.stderr) else "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_mb": mem_total_mb,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
        "libraries": versions,
        "wrk": wrk_version,
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    return (
        f"{info['nproc']} CPU(s) {info['cpu_model']}, {info['mem_total_mb']} MB RAM, "
        f"Python {info['python']}, load avg {info['loadavg_at_start'][0]:.2f}"
    )


# --- Load: wait for a quieter machine, record the load around each stage ------------

QUIET_LOAD = 1.5  # 1-minute load average below which a stage starts at once
QUIET_WAIT_SECONDS = 300.0  # the longest a stage waits for that


def argument_parser(doc: str | None, *, quiet: bool = True) -> argparse.ArgumentParser:
    """Every script's start: the docstring's first paragraph as description, --out-dir, and the quiet wait."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=None, help="results directory (default bench/results)")
    if quiet:
        add_quiet_arguments(parser)
    return parser


def announce_machine(note: str = "") -> dict[str, Any]:
    """Print what the numbers depend on (cores, CPU, memory, load) and return it for the results file."""
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}{note}", flush=True)
    return machine


def add_quiet_arguments(parser: Any) -> None:
    """--quiet-load / --quiet-wait on an argparse parser (every benchmark script has them)."""
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=QUIET_LOAD,
        help=f"before each timed stage, wait until the 1-minute load average is below this (default {QUIET_LOAD:g})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_SECONDS,
        help=f"... but at most this many seconds; 0 = do not wait (default {QUIET_WAIT_SECONDS:g})",
    )


def wait_for_quiet(threshold: float, max_wait: float, what: str, poll: float = 5.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below `threshold`, for at most `max_wait` seconds.

    The machine is shared: other engineers' test runs come and go. Starting a
    stage in a quiet moment makes the absolute numbers less noisy; the ratios
    are measured side by side either way. Returns what to record with the stage.
    """
    started = time.monotonic()
    first = os.getloadavg()[0]
    load = first
    if load >= threshold and max_wait > 0:
        print(f"{what}: load average {load:.2f} >= {threshold:g}; waiting up to {max_wait:g} s", flush=True)
    while load >= threshold and time.monotonic() - started < max_wait:
        time.sleep(min(poll, max(0.0, max_wait - (time.monotonic() - started))))
        load = os.getloadavg()[0]
    waited = time.monotonic() - started
    quiet = load < threshold
    if waited >= 1 or not quiet:
        state = "quiet" if quiet else "NOT quiet (gave up waiting)"
        print(f"{what}: starting after {waited:.0f} s, load average {load:.2f}: {state}", flush=True)
    return {
        "threshold": threshold,
        "max_wait_seconds": max_wait,
        "load_when_asked": first,
        "waited_seconds": round(waited, 1),
        "quiet_at_start": quiet,
        "loadavg_start": list(os.getloadavg()),
    }


def end_load(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (from wait_for_quiet) with the load average at the end of the stage added."""
    return {**record, "loadavg_end": list(os.getloadavg())}


def describe_load(record: Mapping[str, Any]) -> str:
    start, end = record["loadavg_start"][0], record.get("loadavg_end", [float("nan")])[0]
    return f"load average {start:.2f} at start, {end:.2f} at end (waited {record['waited_seconds']:.0f} s)"


# --- CPU pinning -----------------------------------------------------------------


def cpu_plan() -> tuple[set[int], set[int], bool]:
    """(server CPUs, generator CPUs, pinned?): one core each when at least two are available to us."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        return {available[0]}, {available[1]}, True
    return set(available), set(available), False


def pin_self(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


def taskset_prefix(cpus: set[int]) -> list[str]:
    """`taskset -c N` if taskset exists (the child is pinned from birth), else nothing (use preexec)."""
    tool = shutil.which("taskset")
    return [tool, "-c", ",".join(str(c) for c in sorted(cpus))] if tool else []


def preexec_pin(cpus: set[int]) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def pinning(cpus: set[int] | None) -> tuple[list[str], Callable[[], None] | None]:
    """(command prefix, preexec_fn) that start a child on `cpus`: `taskset` if installed, else sched_setaffinity.

    None or an empty set means no pinning.
    """
    if not cpus:
        return [], None
    prefix = taskset_prefix(cpus)
    return (prefix, None) if prefix else ([], preexec_pin(cpus))


# --- Statistics ------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low))


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """count, p50, p90, p99, max and mean of `values` multiplied by `scale` (e.g. 1000 for ms)."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "min": ordered[0],
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# --- Results ---------------------------------------------------------------------


def write_results(name: str, payload: Mapping[str, Any], out_dir: Path | None = None) -> Path:
    directory = out_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {"benchmark": name, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    return path


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A fixed-width text table."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


# --- Network helpers -------------------------------------------------------------


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL: only the process we started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


# --- AWS on loopback: moto's server mode, counting calls by operation --------------


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment a pod's fetcher would see, pointed at moto, with no way to reach real AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without any AWS_*/FERRY_* or cluster variables, plus `extra`.

    PYTHONDONTWRITEBYTECODE is dropped too: the images ship byte-compiled code,
    so a benchmark must not recompile changed sources in every timed run.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "FERRY_", "KUBERNETES_"))
        and key not in ("KUBECONFIG", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(extra or {})
    return env


class CountingMotoServer:
    """moto's server mode on 127.0.0.1 in a thread, counting requests by ``X-Amz-Target`` operation.

    The count happens in a WSGI wrapper around moto's own app, so a fetcher in
    another process is counted without any instrumentation of its own. For SSM
    GetParameters the number of names per call is recorded as well.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._names_per_call: Counter[str] = Counter()
        self._by_secret: Counter[str] = Counter()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> CountingMotoServer:
        import logging

        # moto.server imports these without re-exporting them; their home module is typed.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

        moto_app = DomainDispatcherApplication(create_backend_app)

        def counting_app(environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET")
            if target:
                operation = target.replace("AmazonSSM.", "ssm.")
                body = _peek_json(environ) if operation.startswith(("ssm.", "secretsmanager.")) else {}
                names = body.get("Names")
                secret_id = body.get("SecretId")
                with self._lock:
                    self._calls[operation] += 1
                    if isinstance(names, list):
                        self._names_per_call[f"{operation}:{len(names)}"] += 1
                    if isinstance(secret_id, str):
                        self._by_secret[f"{operation}:{secret_id}"] += 1
            return moto_app(environ, start_response)

        self._server = make_server(LOOPBACK, 0, counting_app, threaded=True, request_handler=MotoRequestHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        wait_for_port(self.port, 10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> CountingMotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._calls.items()))

    def names_per_call(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._names_per_call.items()))

    def calls_by_secret(self) -> dict[str, int]:
        """{"secretsmanager.DescribeSecret:<SecretId>": n, ...}"""
        with self._lock:
            return dict(sorted(self._by_secret.items()))

    def reset_counts(self) -> None:
        with self._lock:
            self._calls.clear()
            self._names_per_call.clear()
            self._by_secret.clear()


def _peek_json(environ: dict[str, Any]) -> dict[str, Any]:
    """A JSON request body, read without consuming it for moto."""
    import io

    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        value = json.loads(body or b"{}")
    except (ValueError, KeyError, OSError):
        return {}
    return value if isinstance(value, dict) else {}


def diff_counts(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {key: after.get(key, 0) - before.get(key, 0) for key in keys if after.get(key, 0) - before.get(key, 0)}


# --- Seed data shared by the fetcher benchmarks -------------------------------------------


def seed_objects(endpoint: str, secrets: int, parameters: int, pinned: int = 0) -> list[dict[str, Any]]:
    """Create `secrets` secrets and `parameters` SSM parameters in moto; return ASCP objects naming them.

    Every third secret is JSON read through two jmesPath entries (as apps do
    with database credentials); the first `pinned` secrets are pinned to their
    VersionId (the sidecar must not check those); the rest follow AWSCURRENT.
    Parameters alternate String and SecureString.
    """
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    ssm = session.client("ssm", endpoint_url=endpoint)
    objects: list[dict[str, Any]] = []
    for i in range(secrets):
        name = f"bench/app/secret-{i:02d}"
        if i % 3 == 0:
            value = json.dumps({"username": f"user{i}", "password": f"pw-{i}-" + "x" * 24, "port": 5432})
        else:
            value = f"value-{i}-" + "s" * 40
        created = sm.create_secret(Name=name, SecretString=value)
        obj: dict[str, Any] = {"objectName": name, "objectType": "secretsmanager", "objectAlias": f"secret-{i:02d}"}
        if i < pinned:
            obj["objectVersion"] = created["VersionId"]
        if i % 3 == 0:
            obj["jmesPath"] = [
                {"path": "username", "objectAlias": f"secret-{i:02d}-user"},
                {"path": "password", "objectAlias": f"secret-{i:02d}-password"},
            ]
        objects.append(obj)
    for i in range(parameters):
        name = f"/bench/app/param-{i:02d}"
        kind = "SecureString" if i % 2 else "String"
        ssm.put_parameter(Name=name, Value=f"param-{i}-" + "p" * 20, Type=kind)
        objects.append({"objectName": name, "objectType": "ssmparameter", "objectAlias": f"param-{i:02d}"})
    sm.close()
    ssm.close()
    return objects


def fetch_spec_json(objects: list[dict[str, Any]], refresh_seconds: float = 0.0) -> str:
    """Canonical FERRY_SPEC JSON through the one spec model (the floor is lowered only for benchmarks)."""
    from fetcher.contract import build_spec

    spec = build_spec(
        objects=objects,
        region=REGION,
        refresh_interval=refresh_seconds,
        min_refresh_seconds=0.0,
    )
    return spec_to_json(spec)


def memory_tmpdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory on tmpfs when there is one: pods write into an emptyDir with medium Memory."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix=prefix, dir=where)


def compile_sources(*packages: str) -> None:
    """Byte-compile the repo's packages now, as the images do at build time (so no timed run compiles)."""
    import compileall

    for package in packages:
        compileall.compile_dir(str(REPO_ROOT / package), quiet=1)
