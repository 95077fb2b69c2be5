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
import asyncio
import base64
import copy
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import benchlib

LATENCY_BUDGET_P99_MS = 5.0
THROUGHPUT_BUDGET_RATIO = 0.70
KUBE_CALLS_BUDGET = 0
UID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
STAGES = ("breakdown", "latency", "throughput", "kube-calls")
# What is timed, side by side: /mutate with identical pods, /mutate with a different pod each time, /noop.
ENDPOINTS = ("replicas", "unique", "noop")
CASES = ("replicas", "unique")  # the /mutate cases, each compared with /noop
SEQUENCE = ("replicas", "unique", "noop", "noop", "unique", "replicas")  # ABCCBA
PATHS = {"replicas": "/mutate?timeout=5s", "unique": "/mutate?timeout=5s", "noop": "/noop?timeout=5s"}
LABELS = {"replicas": "/mutate replicas", "unique": "/mutate unique pods", "noop": "/noop"}
HASH_LABEL = "pod-template-hash"
HASH_PLACEHOLDER = "hhhhhhhhhh"  # 10 characters, like a real pod-template-hash; every body has the same length
REPLICA_HASH = "5d8f7c9b6a"
# managedFields[].time: the API server stamps each replica with the second it was created.
TIME_PLACEHOLDER = "0000-00-00T00:00:00Z"
RECORDED_AT = 1795420939  # 2026-11-23T08:02:19Z, the fixture's managedFields time
SPC_NAME = "bench-app"
NAMESPACE = "team-a"

# Ten objects, as a team migrating from the CSI driver would list them: secrets
# (two read through jmesPath), a pinned version, and SSM parameters.
OBJECTS: list[dict[str, Any]] = [
    {
        "objectName": "prod/api/db",
        "objectType": "secretsmanager",
        "jmesPath": [
            {"path": "username", "objectAlias": "db-user"},
            {"path": "password", "objectAlias": "db-password"},
        ],
    },
    {"objectName": "prod/api/stripe-key", "objectType": "secretsmanager", "objectAlias": "stripe-key"},
    {"objectName": "prod/api/jwt-signing", "objectType": "secretsmanager", "objectVersionLabel": "AWSCURRENT"},
    {
        "objectName": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api/oauth-AbCdEf",
        "objectAlias": "oauth",
        "jmesPath": [
            {"path": "client_id", "objectAlias": "oauth-client-id"},
            {"path": "client_secret", "objectAlias": "oauth-client-secret", "filePermission": "0400"},
        ],
    },
    {
        "objectName": "prod/api/tls",
        "objectType": "secretsmanager",
        "objectAlias": "tls.pem",
        "objectVersion": "EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE",
    },
    {"objectName": "prod/shared/sentry-dsn", "objectType": "secretsmanager", "objectAlias": "sentry-dsn"},
    {"objectName": "/prod/api/feature-flags", "objectType": "ssmparameter"},
    {"objectName": "/prod/api/rate-limits", "objectType": "ssmparameter", "objectAlias": "rate-limits.json"},
    {"objectName": "/prod/shared/endpoints", "objectType": "ssmparameter", "objectAlias": "endpoints"},
    {"objectName": "/prod/api/log-level", "objectType": "ssmparameter", "objectAlias": "log-level"},
]


# --- The request --------------------------------------------------------------------


def realistic_review(source: str) -> dict[str, Any]:
    """The AdmissionReview a real v1.28 API server sent for an annotated pod, grown to 3 containers, 10 objects."""
    review = json.loads((benchlib.FIXTURES / "admission" / "review-1-ferry-first-call.json").read_text())
    request = review["request"]
    request["uid"] = UID_PLACEHOLDER
    pod = request["object"]
    third = copy.deepcopy(pod["spec"]["containers"][1])
    third.update(
        name="proxy", image="registry.example.com/envoy:1.30", ports=[{"containerPort": 9901, "protocol": "TCP"}]
    )
    pod["spec"]["containers"].append(third)
    # A different pod is another Deployment or a rollout: a new pod-template-hash and a new image.
    pod["metadata"].setdefault("labels", {})[HASH_LABEL] = HASH_PLACEHOLDER
    pod["spec"]["containers"][0]["image"] += f"-{HASH_PLACEHOLDER}"
    for entry in pod["metadata"].get("managedFields") or []:
        entry["time"] = TIME_PLACEHOLDER
    annotations = pod["metadata"]["annotations"]
    annotations.pop("ferry.dev/secret-provider-class", None)
    annotations.update(
        {"ferry.dev/inject": "true", "ferry.dev/refresh-interval": "5m", "ferry.dev/region": "us-east-1"}
    )
    if source == "inline":
        annotations["ferry.dev/objects"] = yaml.safe_dump(OBJECTS, sort_keys=False)
    else:
        annotations["ferry.dev/secret-provider-class"] = SPC_NAME
    return review


def bench_spc() -> dict[str, Any]:
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": SPC_NAME, "namespace": NAMESPACE},
        "spec": {"provider": "aws", "parameters": {"objects": yaml.safe_dump(OBJECTS, sort_keys=False)}},
    }


def request_head(path: str, port: int, length: int) -> bytes:
    """Headers as the API server sends them (admission/request-headers.txt)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-apiserver-admission\r\n"
        f"Content-Length: {length}\r\nAccept: application/json, */*\r\nContent-Type: application/json\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    ).encode()


def unique_pool_default() -> int:
    """4x the memo's capacity: with LRU eviction and the bodies used in rotation, every request is a miss."""
    try:
        from webhook.policy.memo import MAX_ENTRIES
    except ImportError:  # no memo: any pool size gives misses
        return 2048
    return 4 * int(MAX_ENTRIES)


def request_bodies(review: dict[str, Any], unique_pool: int) -> dict[str, list[bytes]]:
    """The bodies of each endpoint, built before timing, all of the same length (uid still the placeholder).

    "replicas" and "noop": one body, the same pod every time. "unique": `unique_pool` bodies whose pods
    differ in their pod-template-hash label and their first container's image (the admission work is the
    same; the memo key is not). `instance` fills in each request's uid and managedFields time.
    """
    template = json.dumps(review, separators=(",", ":"))
    if template.count(HASH_PLACEHOLDER) != 2 or TIME_PLACEHOLDER not in template:
        raise RuntimeError("the request template must carry the hash placeholder twice and the time placeholder")
    replica = template.replace(HASH_PLACEHOLDER, REPLICA_HASH).encode()
    unique = [template.replace(HASH_PLACEHOLDER, f"{i:010x}").encode() for i in range(unique_pool)]
    return {"replicas": [replica], "unique": unique, "noop": [replica]}


def instance(template: bytes, second: int | None = None) -> bytes:
    """One request from a body template: a fresh uid, and managedFields stamped with a time.

    The time is now (to the second, as the API server writes it), or `second` seconds after the fixture's
    recording, for bodies written ahead of time; either way replicas' bodies differ as they do in a cluster.
    """
    stamp = time.gmtime(time.time() if second is None else RECORDED_AT + second)
    return template.replace(UID_PLACEHOLDER.encode(), str(uuid.uuid4()).encode(), 1).replace(
        TIME_PLACEHOLDER.encode(), time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp).encode()
    )


class Payloads:
    """Pre-encoded requests: each endpoint's bodies in rotation, a fresh uid each (one length, so one head)."""

    def __init__(self, bodies: dict[str, list[bytes]], port: int) -> None:
        self.bodies = bodies
        self.next = dict.fromkeys(bodies, 0)
        self.heads = {name: request_head(PATHS[name], port, len(pool[0])) for name, pool in bodies.items()}

    def make(self, endpoint: str) -> bytes:
        pool = self.bodies[endpoint]
        index = self.next[endpoint]
        self.next[endpoint] = (index + 1) % len(pool)
        return self.heads[endpoint] + instance(pool[index])


def memo_rotation_check(bodies: dict[str, list[bytes]], requests: int) -> dict[str, Any]:
    """Feed each case's rotation, with fresh uids, through the webhook's own memo: replicas hit, unique pods miss."""
    try:
        from webhook.policy.memo import MAX_ENTRIES, AdmissionMemo, pod_key
        from webhook.policy.request import PodRequest
    except ImportError as exc:
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"available": True, "memo_max_entries": MAX_ENTRIES, "requests": requests}
    for case in CASES:
        memo = AdmissionMemo()
        pool = bodies[case]
        for i in range(requests):
            request = json.loads(instance(pool[i % len(pool)], second=i))["request"]
            key = pod_key(PodRequest.read(request["object"], request["namespace"], None))
            if memo.recall(key, None, lambda namespace, name: None) is None:
                memo.remember(key, True, None, {})
        result[case] = {"pool": len(pool), "hits": memo.hits, "misses": memo.misses}
    result["ok"] = result["replicas"]["misses"] == 1 and result["unique"]["hits"] == 0
    return result


# --- The server under test ----------------------------------------------------------


class WebhookServer:
    """`python -m webhook serve` in a subprocess, pinned, static cluster view from files, logs to a file."""

    def __init__(self, workdir: Path, cpus: set[int] | None, log_level: str) -> None:
        self.workdir = workdir
        self.port = benchlib.free_port()
        self.ca_file = workdir / "ca.crt"
        self.log_file = workdir / "webhook.log"
        spc_file = workdir / "spc.yaml"
        spc_file.write_text(yaml.safe_dump(bench_spc()))
        ns_file = workdir / "namespaces.yaml"
        namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
        ns_file.write_text(
            yaml.safe_dump_all(
                [{"apiVersion": "v1", "kind": "Namespace", "metadata": ns["metadata"]} for ns in namespaces]
            )
        )
        prefix, self.preexec = benchlib.pinning(cpus)
        self.command = [
            *prefix,
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--host",
            benchlib.LOOPBACK,
            "--port",
            str(self.port),
            "--secret-provider-class",
            str(spc_file),
            "--namespace-annotations",
            str(ns_file),
            "--write-ca",
            str(self.ca_file),
            "--noop-endpoint",  # the baseline this benchmark compares /mutate with
        ]
        self.env = benchlib.clean_env({"FERRY_LOG_LEVEL": log_level, "KUBECONFIG": str(workdir / "no-kubeconfig")})
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    def start(self, timeout: float = 60.0) -> WebhookServer:
        self._log_handle = self.log_file.open("wb")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=benchlib.REPO_ROOT,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        try:
            benchlib.wait_for_port(self.port, timeout, self.process)
            deadline = time.monotonic() + timeout
            while not self.ca_file.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the webhook did not write its CA")
                time.sleep(0.02)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"webhook server failed to start: {exc}\n{self.log_tail()}") from exc
        return self

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False  # the certificate names 127.0.0.1 and localhost; we connect by IP
        return context

    def cpu_seconds(self) -> float:
        import psutil

        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        import psutil

        assert self.process is not None
        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            benchlib.stop_process(self.process)
        if self._log_handle is not None:
            self._log_handle.close()


def check_answers(server: WebhookServer, bodies: dict[str, list[bytes]]) -> dict[str, Any]:
    """Requests to each endpoint, checked in full: /mutate must inject (a patch that adds our containers) for the
    replicas' pod and for a unique pod alike, so both cases time the same kind of answer."""
    import httpx
    import jsonpatch

    headers = {"Content-Type": "application/json"}
    shape: dict[str, Any] = {}
    with httpx.Client(verify=server.ssl_context(), timeout=10) as client:
        url = f"https://{benchlib.LOOPBACK}:{server.port}"
        noop = client.post(url + PATHS["noop"], content=bodies["noop"][0], headers=headers)
        if noop.status_code != 200 or not answer_ok("noop", noop.status_code, noop.content):
            raise RuntimeError(f"/noop answered {noop.status_code}: {noop.text[:300]}")
        for case in CASES:
            body = bodies[case][-1]
            mutate = client.post(url + PATHS[case], content=body, headers=headers)
            if mutate.status_code != 200:
                raise RuntimeError(f"unexpected status from /mutate ({case}): {mutate.status_code}")
            answer = mutate.json()["response"]
            if not answer.get("allowed") or answer.get("patchType") != "JSONPatch":
                raise RuntimeError(f"/mutate did not inject the {case} pod: {json.dumps(answer)[:500]}")
            ops = json.loads(base64.b64decode(answer["patch"]))
            pod = json.loads(body)["request"]["object"]
            patched = jsonpatch.apply_patch(pod, ops)
            inits = [c["name"] for c in patched["spec"].get("initContainers", [])]
            env = next(
                (
                    e["value"]
                    for c in patched["spec"]["initContainers"]
                    for e in c.get("env", [])
                    if e["name"] == "FERRY_SPEC"
                ),
                None,
            )
            objects = len(json.loads(env)["objects"]) if env else 0
            if objects != len(OBJECTS):
                raise RuntimeError(f"the injected spec ({case}) carries {objects} objects, expected {len(OBJECTS)}")
            if case == "replicas":
                shape = {
                    "request_bytes": len(body),
                    "mutate_response_bytes": len(mutate.content),
                    "noop_response_bytes": len(noop.content),
                    "patch_ops": len(ops),
                    "init_containers_after": inits,
                    "app_containers": [c["name"] for c in patched["spec"]["containers"]],
                    "objects_in_spec": objects,
                }
            else:
                shape["unique_patch_ops"] = len(ops)
    return shape


# --- A minimal HTTP/1.1 keep-alive client ---------------------------------------------


class Connection:
    """One keep-alive TLS connection; one request at a time (no pipelining), like the API server's client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection(
            benchlib.LOOPBACK, port, ssl=context, server_hostname="localhost"
        )
        return cls(reader, writer)

    async def send(self, payload: bytes) -> tuple[int, bytes]:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError("response without Content-Length")
        end = lower.find(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            raise ConnectionResetError("server closed the connection")
        return status, body

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def answer_ok(endpoint: str, status: int, body: bytes) -> bool:
    if status != 200 or b'"allowed":true' not in body:
        return False
    return endpoint == "noop" or b'"patchType":"JSONPatch"' in body


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


# --- (c) Kubernetes API calls per admission -------------------------------------------------


def kube_calls(admissions: int, warmup: int) -> dict[str, Any]:
    """The app in-process with the real WatchCache against the fake API server; count requests per admission."""
    import httpx

    from tests.support.kubeapi import FakeKubeAPI
    from tests.support.tlsserver import TLSServer
    from webhook.cluster.kube import WatchCache
    from webhook.edge.app import create_app
    from webhook.settings import Settings
    from webhook.tls.certs import generate_bundle, write_bundle

    template = (benchlib.FIXTURES / "admission" / "review-1-ferry-first-call.json").read_text()
    original_uid = json.loads(template)["request"]["uid"]
    outcomes: dict[str, int] = {}
    # Distinct variants of the recorded pod (a pod-template-hash label and an image tag each): memo misses,
    # each of which looks the SecretProviderClass up in the cache again.
    variant = json.loads(template)
    variant["request"]["object"]["metadata"].setdefault("labels", {})[HASH_LABEL] = HASH_PLACEHOLDER
    variant["request"]["object"]["spec"]["containers"][0]["image"] += f"-{HASH_PLACEHOLDER}"
    variant_text = json.dumps(variant)
    unique_bodies = [variant_text.replace(HASH_PLACEHOLDER, f"{i:010x}") for i in range(warmup + admissions)]

    with tempfile.TemporaryDirectory(prefix="ferry-bench-kube-") as tmp, FakeKubeAPI() as kube:
        cert, key, ca = write_bundle(generate_bundle(["localhost"], ip_addresses=("127.0.0.1",)), Path(tmp))
        api = kube.api_client()
        cache = WatchCache(api)
        cache.start()
        try:
            if not cache.wait_ready(30):
                raise RuntimeError("WatchCache did not sync with the fake API server")
            if not kube.wait_for_watches("namespaces") or not kube.wait_for_watches("secretproviderclasses"):
                raise RuntimeError("WatchCache did not open its watches")
            app = create_app(Settings(), cache, native_sidecars=True)
            with TLSServer(app, cert, key) as server, httpx.Client(verify=str(ca), timeout=10) as client:

                def admit(count: int, pods: list[str] | None = None) -> None:
                    for i in range(count):
                        body = (pods[i] if pods else template).replace(original_uid, str(uuid.uuid4()))
                        reply = client.post(
                            f"{server.url}/mutate?timeout=5s",
                            content=body,
                            headers={"Content-Type": "application/json"},
                        )
                        answer = reply.json()["response"]
                        outcome = (
                            "injected" if answer.get("patchType") else ("allowed" if answer["allowed"] else "denied")
                        )
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1

                admit(warmup)
                outcomes.clear()
                before = kube.request_count()
                started = time.perf_counter()
                admit(admissions)
                elapsed = time.perf_counter() - started
                during = kube.request_count() - before
                counted = dict(outcomes)
                outcomes.clear()
                memo = getattr(app.state, "memo", None)
                memo_before = (memo.hits, memo.misses) if memo is not None else (0, 0)
                before_unique = kube.request_count()
                admit(admissions, unique_bodies[warmup:])
                during_unique = kube.request_count() - before_unique
                counted_unique = dict(outcomes)
                memo_unique = (
                    {"hits": memo.hits - memo_before[0], "misses": memo.misses - memo_before[1]}
                    if memo is not None
                    else None
                )
                mark = kube.request_count()
                # The watch keeps the cache current without new requests either: release the recorded events.
                versions_before = cache.resource_versions()
                events = kube.play_events("namespaces") + kube.play_events("secretproviderclasses")
                deadline = time.monotonic() + 10
                while cache.resource_versions() == versions_before and time.monotonic() < deadline:
                    time.sleep(0.05)
                admit(100)
                after_events = kube.request_count() - mark
                paths = sorted({r.path for r in kube.requests})
        finally:
            cache.stop()
            api.close()
    return {
        "admissions": admissions,
        "warmup_admissions": warmup,
        "outcomes": counted,
        "api_requests_during_admissions": during,
        "api_requests_per_admission": during / admissions,
        "unique_pod_admissions": admissions,
        "unique_pod_outcomes": counted_unique,
        "unique_pod_memo": memo_unique,
        "api_requests_during_unique_pod_admissions": during_unique,
        "watch_events_played": len(events),
        "api_requests_after_watch_events_and_100_more_admissions": after_events,
        "paths_ever_requested": paths,
        "seconds": elapsed,
    }


# --- Where /mutate's time goes (in-process) ---------------------------------------------


def admission_breakdown(bodies: dict[str, list[bytes]], iterations: int) -> dict[str, float]:
    """Median microseconds of each step /mutate runs, called directly (no server, no TLS), warm spec cache.

    Also the whole handler (parse, memo, admit, patch, response; no log line, since logging is not configured
    in this process) for a memo hit (replicas) and a memo miss (unique pods). Diagnostic only: the budgets are
    judged on the server above. Steps that moved or changed signature are reported as missing rather than
    failing.
    """
    body = instance(bodies["replicas"][0])
    from webhook.policy.memo import clear_caches
    from webhook.policy.patch import make_pod_patch
    from webhook.policy.pipeline import admit_pod
    from webhook.policy.request import PodRequest
    from webhook.policy.review import build_response, parse_review
    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
    view = StaticView([bench_spc()], namespaces)
    settings = Settings()

    def admit(request: dict[str, Any]) -> Any:
        return admit_pod(
            PodRequest.read(request["object"], NAMESPACE, view.namespace(NAMESPACE)),
            spc_lookup=view.secret_provider_class,
            settings=settings,
            native_sidecars=True,
        )

    request = parse_review(body)
    admission = admit(request)
    patch = admission.patch
    response = build_response(request["uid"], patch=patch)

    def cold_admit() -> Any:
        clear_caches()
        return admit(parse_review(body))

    handler = _handler(view, settings)
    replica = bodies["replicas"][0]
    unique = iter(bodies["unique"] * 2)

    def with_uid(template: bytes) -> bytes:
        return instance(template)

    steps: dict[str, Callable[[], Any]] = {
        "json.loads (what /noop does too)": lambda: json.loads(body),
        "parse_review": lambda: parse_review(body),
        "admit_pod (spec cache warm)": lambda: admit(parse_review(body)),
        "admit_pod (spec cache cold)": cold_admit,
        "make_pod_patch (the diff, for pods whose ops are not recorded)": lambda: make_pod_patch(
            request["object"], admission.pod
        ),
        "build_response + dumps": lambda: json.dumps(
            build_response(request["uid"], patch=patch), separators=(",", ":")
        ).encode(),
        "handler, memo hit (replicas)": lambda: handler.handle(with_uid(replica)),
        "handler, memo miss (unique pod)": lambda: handler.handle(with_uid(next(unique))),
    }
    results: dict[str, float] = {}
    for name, step in steps.items():
        for _ in range(max(10, iterations // 10)):
            step()
        samples = []
        for _ in range(iterations):
            started = time.perf_counter()
            step()
            samples.append(time.perf_counter() - started)
        results[name] = benchlib.percentile(sorted(samples), 50) * 1e6
    clear_caches()
    # Subtract the parse that the admit_pod steps include, so the rows add up.
    for key in ("admit_pod (spec cache warm)", "admit_pod (spec cache cold)"):
        results[key] = max(0.0, results[key] - results["parse_review"])
    results["patch ops"] = float(len(patch))
    results["response bytes"] = float(len(json.dumps(response)))
    return results


def _handler(view: Any, settings: Any) -> Any:
    """The app's own admission handler (bytes in, status and bytes out), with its memo, outside any server."""
    from webhook.edge.app import AdmissionHandler
    from webhook.edge.metrics import AdmissionMetrics

    return AdmissionHandler(settings, view, True, AdmissionMetrics())


def profile_unique(bodies: dict[str, list[bytes]], admissions: int, top: int = 14) -> dict[str, Any]:
    """cProfile of the handler over `admissions` memo misses (unique pods): where a miss spends its CPU.

    Shares are of the handler's profiled total; cProfile inflates many small calls, so they are indicative.
    """
    import cProfile
    import pstats

    from webhook.policy.view import StaticView
    from webhook.settings import Settings

    namespaces = json.loads((benchlib.FIXTURES / "namespaces-list.json").read_text())["items"]
    handler = _handler(StaticView([bench_spc()], namespaces), Settings())
    pool = bodies["unique"]
    requests = [instance(pool[i % len(pool)], second=i) for i in range(admissions + 20)]
    for body in requests[:20]:  # warm the spec cache and the imports
        handler.handle(body)
    profiler = cProfile.Profile()
    profiler.enable()
    for body in requests[20:]:
        handler.handle(body)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    handle_key = next(k for k in entries if k[2] == "handle" and k[0].endswith("app.py"))
    total = entries[handle_key][3]
    rows: list[dict[str, Any]] = []
    for (filename, _line, function), (_cc, calls, tottime, cumtime, _callers) in entries.items():
        module = Path(filename).name if filename != "~" else "builtin"
        rows.append(
            {
                "function": f"{module}:{function}" if filename != "~" else function,
                "calls_per_admission": calls / admissions,
                "cumulative_us_per_admission": 1e6 * cumtime / admissions,
                "self_us_per_admission": 1e6 * tottime / admissions,
                "cumulative_share": cumtime / total if total else 0.0,
            }
        )
    rows.sort(key=lambda row: row["cumulative_us_per_admission"], reverse=True)
    memo = handler.memo
    return {
        "admissions": admissions,
        "memo_hits": memo.hits,
        "memo_misses": memo.misses,
        "handler_us_per_admission_profiled": 1e6 * total / admissions,
        "top_by_cumulative": rows[:top],
    }


# --- Main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
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

    rotation = memo_rotation_check(bodies, 2 * unique_pool)
    results["memo_rotation_check"] = rotation
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
        print("\nwhere /mutate's time goes, in-process (median us per call, warm-up first):")
        try:
            steps = admission_breakdown(bodies, 300)
        except (ImportError, TypeError, AttributeError) as exc:  # a moved internal: report, do not fail the run
            steps = {}
            print(f"    unavailable: {type(exc).__name__}: {exc}")
        for name, value in steps.items():
            print(f"    {name:36s} {value:10.1f}")
        results["breakdown_us"] = steps
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
        results["profile_unique"] = profile
        results["load"]["breakdown"] = benchlib.end_load(load)

    if "latency" in stages or "throughput" in stages:
        with tempfile.TemporaryDirectory(prefix="ferry-bench-webhook-") as tmp:
            server = WebhookServer(Path(tmp), server_cpus if pinned else None, args.server_log_level).start()
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
                    wrk_files = (
                        write_wrk_bodies(bodies, Path(tmp), max(unique_pool, 1024)) if generator == "wrk" else {}
                    )
                    results["throughput"] = run_throughput(
                        server, payloads, wrk_files, args, generator, generator_cpus if pinned else None
                    )
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
    if "kube-calls" in stages:
        load = stage_start()
        print(
            f"\n(c) Kubernetes API calls per admission: {args.admissions} admissions of the recorded pod, then "
            f"{args.admissions} of distinct variants (memo misses), after warm-up"
        )
        calls = kube_calls(args.admissions, warmup=50)
        calls["budget_met"] = (
            calls["api_requests_during_admissions"] == KUBE_CALLS_BUDGET
            and calls["api_requests_during_unique_pod_admissions"] == KUBE_CALLS_BUDGET
        )
        results["kube_calls"] = calls
        results["load"]["kube-calls"] = calls["load"] = benchlib.end_load(load)
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
        budgets.append(("(c) zero Kubernetes API calls per admission", calls["budget_met"]))

    results["budgets"] = dict(budgets)
    path = benchlib.write_results("webhook_latency", results, args.out_dir)
    print("\nbudgets:")
    for name, met in budgets:
        print(f"    {benchlib.verdict(met):6s} {name}")
    print(f"results: {path}")
    return 0


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


def _run_fast(factory: Callable[[], Any]) -> Any:
    """Run a coroutine on uvloop when available (a faster generator), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError, subprocess.SubprocessError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
