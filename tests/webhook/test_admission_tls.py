"""Admission end to end: over real TLS (Ferry's own certificates), against a cluster served by the
recorded kube-apiserver responses, and `python -m webhook serve` as a subprocess."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devcluster.net import free_port
from tests.support.kubeapi import FakeKubeAPI
from tests.support.reviews import decode_patch
from tests.support.tlsserver import TLSServer
from webhook.cluster.kube import WatchCache
from webhook.edge.app import create_app, metrics_app
from webhook.settings import Settings
from webhook.tls.certs import generate_bundle, write_bundle

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "kube-apiserver-v1.28"
Review = Callable[[str], dict[str, Any]]
Validate = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]
HEADERS = {"Content-Type": "application/json", "User-Agent": "kube-apiserver-admission", "Accept-Encoding": "gzip"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    bundle = generate_bundle(["ferry-webhook.ferry-system.svc", "localhost"], ip_addresses=("127.0.0.1",))
    return write_bundle(bundle, tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files: tuple[Path, Path, Path], cluster: Any) -> Iterator[tuple[TLSServer, Path]]:
    cert, key, ca = tls_files
    app = create_app(Settings(), cluster, native_sidecars=True)
    with TLSServer(app, cert, key) as server:
        yield server, ca


def test_mutate_over_tls(tls_server: tuple[TLSServer, Path], review: Review, patched_pod: Validate) -> None:
    server, ca = tls_server
    with httpx.Client(verify=_trust(ca), timeout=10) as client:
        for name in ("review-1", "review-4"):
            body = review(name)
            response = client.post(f"{server.url}/mutate?timeout=5s", content=json.dumps(body), headers=HEADERS)
            assert response.status_code == 200
            answer = response.json()["response"]
            assert answer["uid"] == body["request"]["uid"] and answer["allowed"] is True
            pod = patched_pod(body["request"]["object"], decode_patch(answer))
            resend = dict(body, request=dict(body["request"], object=pod))
            again = client.post(f"{server.url}/mutate?timeout=5s", content=json.dumps(resend), headers=HEADERS)
            assert "patch" not in again.json()["response"]
        assert client.post(f"{server.url}/mutate", content=b"{", headers=HEADERS).status_code == 400
        assert client.get(f"{server.url}/healthz").status_code == 200


def test_tls_rejects_clients_that_do_not_trust_the_ca(tls_server: tuple[TLSServer, Path]) -> None:
    server, _ = tls_server
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{server.url}/healthz")


def test_no_kubernetes_api_calls_per_admission_after_warm_up(
    review: Review, tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = tls_files
    with FakeKubeAPI() as kube, kube.api_client() as api:
        cache = WatchCache(api)
        cache.start()
        try:
            assert cache.wait_ready(10)
            app = create_app(Settings(), cache, native_sidecars=True)
            scraped = metrics_app(app.state.metrics)
            with (
                TLSServer(app, cert, key, metrics_app=scraped) as server,
                httpx.Client(verify=_trust(ca), timeout=10) as client,
            ):
                assert client.get(f"{server.url}/readyz").status_code == 200
                before = kube.request_count()
                for _ in range(20):
                    body = review("review-1")
                    answer = client.post(f"{server.url}/mutate", content=json.dumps(body), headers=HEADERS).json()
                    assert decode_patch(answer["response"])
                assert kube.request_count() == before
                assert client.get(f"{server.url}/metrics").status_code == 404  # only on the metrics listener
                metrics = httpx.get(server.metrics_url, timeout=10).text
                assert 'ferry_cache_freshness_seconds{resource="namespaces"}' in metrics
        finally:
            cache.stop()


def _trust(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only Ferry's CA (as the API server does with caBundle)."""
    return ssl.create_default_context(cafile=str(ca))


def _serve(
    tmp_path: Path, env_updates: dict[str, str], *extra: str, sni: str | None = None
) -> tuple[subprocess.Popen[str], int, Path]:
    port = free_port()
    ca = tmp_path / "ca.crt"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    env["FERRY_METRICS_PORT"] = str(free_port())  # never the shared default 9090
    env.update(env_updates)
    command = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--write-ca", str(ca), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"serve exited {process.returncode}: {stderr}")
        if ca.exists():
            try:
                with httpx.Client(verify=_trust(ca), timeout=2) as client:
                    if client.get(f"https://127.0.0.1:{port}/readyz", extensions=_sni(sni)).status_code == 200:
                        return process, port, ca
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    _stop(process)
    raise AssertionError("the webhook did not become ready")


def _stop(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """SIGTERM, a clean exit, and the log lines it wrote: every line on stdout and stderr must be JSON."""
    process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in (stdout + stderr).splitlines()]
    for line in lines:
        assert isinstance(line, dict) and {"ts", "level", "msg"} <= line.keys(), line
        assert line["level"] in ("debug", "info", "warning", "error", "critical"), line
    return lines


def _start_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    (start,) = [line for line in lines if line["msg"] == "start"]
    return {key: start.get(key) for key in ("mode", "nativeSidecars")}


def _sni(name: str | None) -> dict[str, Any]:
    """Connect to 127.0.0.1 but verify the certificate for `name` (the Service's DNS name in a cluster)."""
    return {"sni_hostname": name} if name else {}


def _mutate(port: int, ca: Path, body: dict[str, Any], sni: str | None = None) -> dict[str, Any]:
    with httpx.Client(verify=_trust(ca), timeout=10) as client:
        response = client.post(
            f"https://127.0.0.1:{port}/mutate?timeout=5s",
            content=json.dumps(body),
            headers=HEADERS,
            extensions=_sni(sni),
        )
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()["response"]
    return answer


def test_serve_command_outside_a_cluster(tmp_path: Path, review: Review, patched_pod: Validate) -> None:
    process, port, ca = _serve(
        tmp_path,
        {"KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        "--secret-provider-class",
        str(FIXTURES / "secretproviderclasses.yaml"),
    )
    try:
        body = review("review-1")
        pod = patched_pod(body["request"]["object"], decode_patch(_mutate(port, ca, body)))
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["ferry-init", "ferry-sidecar", "migrate"]
    finally:
        lines = _stop(process)
    assert _start_line(lines) == {"mode": "static", "nativeSidecars": True}
    assert any(line.get("outcome") == "injected" and line.get("pod") == "api" for line in lines)


def test_serve_logs_json_only_and_serves_metrics_on_their_own_port(tmp_path: Path, review: Review) -> None:
    """uvicorn's lines, admissions and denials: one JSON shape; /metrics on plain HTTP, not the TLS port."""
    metrics_port = free_port()
    process, port, ca = _serve(
        tmp_path,
        {"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "FERRY_METRICS_PORT": str(metrics_port)},
        "--secret-provider-class",
        str(FIXTURES / "secretproviderclasses.yaml"),
    )
    try:
        body = review("review-1")
        annotations = body["request"]["object"]["metadata"]["annotations"]
        annotations["ferry.dev/mount-path"] = "/etc/" + "x" * 50_000  # denied; the message quotes it
        assert _mutate(port, ca, body)["allowed"] is False
        # A denial whose own message is long (many problems, cut at 4,096 characters): the log line cuts it
        # to 300, so only that bound keeps the line short.
        long_body = review("review-1")
        long_annotations = long_body["request"]["object"]["metadata"]["annotations"]
        long_annotations.pop("ferry.dev/secret-provider-class", None)
        long_annotations["ferry.dev/objects"] = "\n".join(
            f"- objectName: o{i}\n  objectType: secretsmanager\n  objectAlias: ../{'a' * 200}{i}" for i in range(30)
        )
        long_answer = _mutate(port, ca, long_body)
        assert long_answer["allowed"] is False and len(long_answer["status"]["message"]) > 2_000
        with httpx.Client(verify=_trust(ca), timeout=10) as client:
            assert client.get(f"https://127.0.0.1:{port}/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert 'ferry_admission_denials_total{reason="invalid-spec"} 2.0' in scraped.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10).status_code == 404
    finally:
        lines = _stop(process)
    assert any(line.get("logger") == "uvicorn.error" for line in lines)  # uvicorn's own lines, same shape
    denial, long_denial = [line for line in lines if line.get("outcome") == "denied"]
    assert denial["reason"] == "invalid-spec" and "mount-path" in denial["message"]
    assert len(json.dumps(denial)) < 2_000  # the 50 KB annotation is not echoed
    assert "objectAlias" in long_denial["message"] and len(long_denial["message"]) <= 300
    assert len(json.dumps(long_denial)) < 1_000


def test_serve_command_in_a_cluster(tmp_path: Path, review: Review, patched_pod: Validate) -> None:
    """Against the recorded v1.28 API server: watch cache, certificate Secret, caBundle, no native sidecars."""
    with FakeKubeAPI() as kube:
        kube.put_mutating_webhook_configuration(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "ferry"},
                "webhooks": [
                    {
                        "name": "pods.ferry.dev",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "clientConfig": {"service": {"name": "ferry-webhook", "namespace": "ferry-system"}},
                    }
                ],
            }
        )
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        service = "ferry-webhook.ferry-system.svc"
        process, port, ca = _serve(tmp_path, {"KUBECONFIG": str(kubeconfig)}, sni=service)
        try:
            body = review("review-1")
            pod = patched_pod(body["request"]["object"], decode_patch(_mutate(port, ca, body, service)))
            # Kubernetes 1.28 has no native sidecars (by default): the sidecar is a regular container.
            assert [c["name"] for c in pod["spec"]["initContainers"]] == ["ferry-init", "migrate"]
            assert [c["name"] for c in pod["spec"]["containers"]] == ["api", "metrics", "ferry-sidecar"]
            calls = kube.request_count()
            _mutate(port, ca, review("review-4"), service)
            assert kube.request_count() == calls
        finally:
            lines = _stop(process)
        secret = kube.get_secret("ferry-system", "ferry-webhook-tls")
        assert secret is not None
        webhook = kube.get_mutating_webhook_configuration("ferry")
        assert webhook is not None and webhook["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(webhook["webhooks"][0]["clientConfig"]["caBundle"]) == ca.read_bytes()
    assert _start_line(lines) == {"mode": "cluster", "nativeSidecars": False}


def test_certs_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            "--dns-name",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert len(written) == 3 and all(path.is_file() for path in written)
