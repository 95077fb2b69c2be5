"""The webhook under test, started as `python -m webhook serve`, and a minimal keep-alive HTTP/1.1 client for it."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import benchlib
from bench.webhook_requests import CASES, OBJECTS, PATHS, bench_spc

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
        self.env = benchlib.clean_env(
            # No metrics listener: the shared default 9090 would collide with tests and other benches.
            {"FERRY_LOG_LEVEL": log_level, "KUBECONFIG": str(workdir / "no-kubeconfig"), "FERRY_METRICS_PORT": "0"}
        )
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
