"""Webhook soak: a sustained admission rate over real TLS for minutes, with a mix of pods; errors, latency, RSS.

Why it exists: the webhook is on the path of every pod creation, so a leak
that costs a few KB per admission, or a latency tail that grows with uptime,
only shows after hours in production. This script runs the real
`python -m webhook serve` (its own process, so its RSS is its own) with a
static cluster view and self-signed TLS, and drives it open-loop at a fixed
rate (default 200 admissions/s for 300 s) with a mix of pods:

    50% inline objects, 3 containers, 10 objects, refresh on  -> injected
    15% a SecretProviderClass                                 -> injected
    15% no opt-in                                             -> skipped (allowed, no patch)
    10% a path-traversal alias                                -> denied
     5% already injected (reinvocation)                       -> allowed
     5% dry-run of an inline-objects pod                      -> injected

70% of the pods are replicas of these templates (identical but for the uid);
30% are one of a kind (a unique pod-template-hash and image tag), so the
webhook's answer memo keeps filling and evicting. Each answer is checked (HTTP 200, same uid, the
expected allowed/patch). It
reports errors, latency p50/p99/max (from the scheduled send time, so a stall
is not hidden by coordinated omission), the achieved rate, and the server's
RSS after warm-up and at the end.

Exit status: 1 if any admission failed, or if RSS grew by more than
--max-rss-growth-mb between the end of warm-up and the end (default 16 MB);
latency is reported, never judged here (bench/webhook_latency.py judges it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench import benchlib
from tests.support.reviews import pod_create_review

NAMESPACE = "apps"
OBJECTS = "\n".join(
    f"- objectName: soak/app/secret-{i}\n  objectType: {'secretsmanager' if i < 6 else 'ssmparameter'}\n"
    f"  objectAlias: file-{i}" + ("\n  jmesPath:\n    - {path: password, objectAlias: pw-0}" if i == 0 else "")
    for i in range(10)
)
SPC = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "db", "namespace": NAMESPACE},
    "spec": {"provider": "aws", "parameters": {"objects": OBJECTS, "region": "eu-west-1"}},
}


def pod(annotations: dict[str, str], name: str) -> dict[str, Any]:
    containers = [
        {
            "name": "app",
            "image": "registry.example.com/app:1",
            "env": [{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app"}],
        },
        {"name": "metrics", "image": "registry.example.com/exporter:1"},
        {"name": "proxy", "image": "registry.example.com/envoy:1", "ports": [{"containerPort": 8080}]},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "soak"}, "annotations": annotations},
        "spec": {"containers": containers, "securityContext": {"runAsUser": 1000, "fsGroup": 2000}},
    }


# (kind, weight, annotations, expect allowed, expect a patch)
MIX: list[tuple[str, int, dict[str, str], bool, bool]] = [
    (
        "inline",
        50,
        {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/refresh-interval": "5m"},
        True,
        True,
    ),
    ("spc", 15, {"ferry.dev/inject": "true", "ferry.dev/secret-provider-class": "db"}, True, True),
    ("skipped", 15, {}, True, False),
    (
        "denied",
        10,
        {
            "ferry.dev/inject": "true",
            "ferry.dev/objects": "- objectName: a\n  objectType: secretsmanager\n  objectAlias: ../x\n",
        },
        False,
        False,
    ),
    (
        "reinvoked",
        5,
        {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS, "ferry.dev/status": "injected"},
        True,
        False,
    ),
    ("dry-run", 5, {"ferry.dev/inject": "true", "ferry.dev/objects": OBJECTS}, True, True),
]


def review_bytes(kind: str, annotations: dict[str, str], serial: int) -> tuple[str, bytes]:
    body = pod_create_review(pod(annotations, f"soak-{serial}"), namespace=NAMESPACE, dryRun=kind == "dry-run")
    return body["request"]["uid"], json.dumps(body).encode()


class Server:
    """`python -m webhook serve` on loopback with a static cluster view and a self-signed pair."""

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        from webhook.tls.certs import generate_bundle, write_bundle

        self.cert, self.key, self.ca = write_bundle(
            generate_bundle(["localhost"], ip_addresses=("127.0.0.1",)), workdir / "tls"
        )
        spc_file = workdir / "spc.yaml"
        spc_file.write_text(json.dumps(SPC))
        ns_file = workdir / "namespaces.yaml"
        ns_file.write_text(json.dumps({NAMESPACE: {"ferry.dev/region": "us-east-1"}}))
        self.port = benchlib.free_port()
        self.log = workdir / "webhook.log"
        command = [
            *(benchlib.taskset_prefix(cpus) if cpus else []),
            sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--secret-provider-class", str(spc_file), "--namespace-annotations", str(ns_file),
            "--native-sidecars", "true",
        ]  # fmt: skip
        env = benchlib.clean_env(
            {"FERRY_DEFAULT_REGION": "us-east-1", "FERRY_LOG_LEVEL": "info", "FERRY_METRICS_PORT": "0"}
        )
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(command, cwd=benchlib.REPO_ROOT, env=env, stderr=self._log_handle)
        benchlib.wait_for_port(self.port, timeout=60, process=self.process)
        self.ps = psutil.Process(self.process.pid)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def stop(self) -> int | None:
        code = benchlib.stop_process(self.process)
        self._log_handle.close()
        return code


UID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


UNIQUE_PLACEHOLDER = "unique-00000000"


def templates() -> list[tuple[str, bytes, bool, bool]]:
    """(kind, body with placeholders for the uid and a pod label, expect allowed, expect a patch): built once,
    so the generator spends its CPU on sending, not on json.dumps."""
    built = []
    for kind, _, wanted, allowed, patched in MIX:
        _, body = review_bytes(kind, wanted, 0)
        document = json.loads(body)
        document["request"]["uid"] = UID_PLACEHOLDER
        # A one-of-a-kind pod differs as another Deployment's would: its pod-template-hash and its image.
        # (The memo key leaves labels out, so a label alone would make it a replica.)
        document["request"]["object"]["metadata"]["labels"]["pod-template-hash"] = UNIQUE_PLACEHOLDER
        document["request"]["object"]["spec"]["containers"][0]["image"] += f"-{UNIQUE_PLACEHOLDER}"
        built.append((kind, json.dumps(document).encode(), allowed, patched))
    return built


class Connection:
    """One keep-alive TLS connection speaking just enough HTTP/1.1 (httpx costs more CPU than the server)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        return cls(reader, writer)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        head = (
            "POST /mutate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


async def drive(
    server: Server, rate: float, duration: float, warmup: float, seed: int, connections: int, unique_fraction: float
) -> dict[str, Any]:
    rng = random.Random(seed)
    weights = [m[1] for m in MIX]
    bodies = templates()
    context = ssl.create_default_context(cafile=str(server.ca))
    latencies: list[float] = []
    by_kind: dict[str, int] = {}
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    queue: asyncio.Queue[tuple[float, int, bool, int] | None] = asyncio.Queue()

    async def worker() -> None:
        connection = await Connection.open(server.port, context)
        try:
            while (job := await queue.get()) is not None:
                scheduled, index, measured, serial = job
                kind, template, allowed, patched = bodies[index]
                uid = str(uuid.uuid4())
                try:
                    # Most pods are replicas of a few templates; --unique-fraction of them are one of a kind,
                    # so the webhook's answer memo keeps filling and evicting.
                    label = f"u{serial:014d}" if (serial % 1000) < unique_fraction * 1000 else "replica-0000000"
                    body = template.replace(UID_PLACEHOLDER.encode(), uid.encode())
                    status, payload = await connection.post(body.replace(UNIQUE_PLACEHOLDER.encode(), label.encode()))
                    latency = time.perf_counter() - scheduled
                    response = json.loads(payload)["response"] if status == 200 else None
                    if response is None:
                        errors.append(f"{kind}: HTTP {status}")
                    elif response["uid"] != uid or response["allowed"] != allowed or ("patch" in response) != patched:
                        errors.append(f"{kind}: unexpected answer {str(response)[:200]}")
                    elif measured:
                        latencies.append(latency)
                        by_kind[kind] = by_kind.get(kind, 0) + 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted; reconnect and go on
                    errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    await connection.close()
                    connection = await Connection.open(server.port, context)
        finally:
            await connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    began = time.perf_counter()
    total = int((warmup + duration) * rate)
    next_sample = began
    for serial in range(total):
        scheduled = began + serial / rate
        now = time.perf_counter()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        if now >= next_sample:
            rss.append((now - began, server.rss_mb()))
            next_sample += 1.0
        index = rng.choices(range(len(MIX)), weights)[0]
        queue.put_nowait((scheduled, index, serial / rate >= warmup, serial))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - began
    rss.append((elapsed, server.rss_mb()))
    after_warmup = next((mb for t, mb in rss if t >= warmup), rss[0][1])
    return {
        "requests": total,
        "measured": len(latencies),
        "achieved_rate": round(total / elapsed, 1),
        "errors": len(errors),
        "error_examples": errors[:10],
        "latency_ms": benchlib.summarize(latencies, 1000.0),
        "by_kind": by_kind,
        "rss_mb": {
            "after_warmup": round(after_warmup, 1),
            "end": round(rss[-1][1], 1),
            "max": round(max(mb for _, mb in rss), 1),
            "growth": round(rss[-1][1] - after_warmup, 1),
            "every_30s": [round(mb, 1) for t, mb in rss if int(t) % 30 == 0][:40],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__, quiet=False)
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds (default 300)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="admissions per second (default 200)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8, help="keep-alive TLS connections (default 8)")
    parser.add_argument(
        "--unique-fraction", type=float, default=0.3, help="share of pods that are one of a kind (default 0.3)"
    )
    args = parser.parse_args(argv)

    server_cpus, generator_cpus, pinned = benchlib.cpu_plan()
    machine = benchlib.announce_machine(f"; pinned: {pinned}")
    with tempfile.TemporaryDirectory(prefix="ferry-soak-webhook-") as tmp:
        server = Server(Path(tmp), server_cpus if pinned else None)
        if pinned:
            benchlib.pin_self(generator_cpus)
        try:
            result = asyncio.run(
                drive(server, args.rate, args.duration, args.warmup, args.seed, args.connections, args.unique_fraction)
            )
        finally:
            exit_code = server.stop()
            log_lines = sum(1 for _ in server.log.open("rb"))
    growth_ok = result["rss_mb"]["growth"] <= args.max_rss_growth_mb
    ok = result["errors"] == 0 and growth_ok and exit_code == 0
    payload = {
        "machine": machine,
        "parameters": vars(args) | {"out_dir": str(args.out_dir or "")},
        "server_exit_code": exit_code,
        "server_log_lines": log_lines,
        **result,
        "invariants": {"no_errors": result["errors"] == 0, "rss_flat": growth_ok, "clean_exit": exit_code == 0},
    }
    path = benchlib.write_results("soak_webhook", payload, args.out_dir)
    lat = result["latency_ms"] if result["latency_ms"].get("count") else {"p50": 0.0, "p99": 0.0, "max": 0.0}
    rss = result["rss_mb"]
    print(
        benchlib.table(
            [
                ["requests (measured)", f"{result['requests']} ({result['measured']})"],
                ["achieved rate /s", result["achieved_rate"]],
                ["errors", result["errors"]],
                ["latency p50 / p99 / max ms", f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.1f}"],
                ["RSS after warm-up / end / max MB", f"{rss['after_warmup']} / {rss['end']} / {rss['max']}"],
                ["RSS growth MB (limit)", f"{rss['growth']} ({args.max_rss_growth_mb})"],
                ["verdict", "ok" if ok else "INVARIANT BROKEN"],
            ],
            ["soak_webhook", "value"],
        )
    )  # fmt: skip
    print(f"results: {path}")
    for example in result["error_examples"]:
        print(f"  error: {example}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
