"""Ferry's webhook Deployment, run as a local process in a control plane that has no kubelet.

Why it exists: the local try-out cluster and the docs' tests install Ferry
with the documented commands (`helm install`, `kubectl apply -k`), then run
`kubectl rollout status` and create pods. With no kubelet nothing would run
the webhook's pods. `WebhookReplica` stands in for one: while the Deployment
`ferry-webhook` exists, it runs its container's command here with the
Deployment's env, authenticated as its ServiceAccount, behind its Service
(the control plane's egress proxy routes the ClusterIP here), and once it
serves it reports the Deployment's pods Running and Ready through pods/status,
as a kubelet would. When the Deployment goes away, so does the process.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devcluster.controlplane import ControlPlane
from devcluster.net import free_port

ROOT = Path(__file__).resolve().parent.parent
NAME = "ferry-webhook"


class WebhookReplica:
    """A background thread that keeps one local webhook process for the Deployment, while it exists."""

    def __init__(self, plane: ControlPlane, namespace: str = "ferry-system") -> None:
        self.plane = plane
        self.namespace = namespace
        self.log_path = plane.workdir / "ferry-webhook.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.serving = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-replica", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._end_process()

    def wait_serving(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serving:
                return True
            time.sleep(0.2)
        return False

    # --- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._step()
            except Exception as exc:  # keep trying: a step can race an install or uninstall
                with self.log_path.open("a") as log:
                    log.write(f"webhook-replica: {type(exc).__name__}: {exc}\n")

    def _step(self) -> None:
        deployment = self._get("deployment", NAME)
        if deployment is None:
            self._end_process()
            return
        if self.process is None or self.process.poll() is not None:
            self._start_process(deployment)
            return
        if not self.serving:
            self.serving = self._ready()
        if self.serving:
            self._report_pods_ready(deployment)

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.plane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        return dict(json.loads(found.stdout)) if found.returncode == 0 else None

    def _start_process(self, deployment: dict[str, Any]) -> None:
        spec = deployment["spec"]["template"]["spec"]
        account = spec.get("serviceAccountName", NAME)
        service = self._get("service", NAME)
        if service is None or self._get("serviceaccount", account) is None:
            return  # not created yet
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KUBERNETES_"))}
        for entry in spec["containers"][0].get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[entry["name"]] = self.namespace
        token = self.plane.token_for(self.namespace, account)
        env["KUBECONFIG"] = self.plane.kubeconfig_for_token(token, account)
        env["FERRY_METRICS_PORT"] = "0"  # one replica here; a laptop's 9090 is often Prometheus's
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        assert self.plane.proxy is not None
        self.plane.proxy.route(service["spec"]["clusterIP"], 443, [self.port])
        self.serving = False

    def _end_process(self) -> None:
        process, self.process = self.process, None
        self.serving = False
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _ready(self) -> bool:
        config = self.plane.kubectl("get", "mutatingwebhookconfiguration", "ferry", "-o", "json", check=False)
        if config.returncode != 0:
            return False
        bundles = {(hook.get("clientConfig") or {}).get("caBundle") for hook in json.loads(config.stdout)["webhooks"]}
        if len(bundles) != 1 or None in bundles:
            return False
        context = ssl.create_default_context(cadata=base64.b64decode(str(next(iter(bundles)))).decode())
        context.check_hostname = False  # the certificate names the Service; this is loopback
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=context, timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def _report_pods_ready(self, deployment: dict[str, Any]) -> None:
        labels = deployment["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        listed = self.plane.kubectl("get", "pods", "-n", self.namespace, "-l", selector, "-o", "json")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod in json.loads(listed.stdout)["items"]:
            if pod.get("status", {}).get("phase") == "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            status = {
                "status": {
                    "phase": "Running",
                    "startTime": now,
                    "conditions": [
                        {"type": kind, "status": "True", "lastTransitionTime": now}
                        for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                        for container in pod["spec"]["containers"]
                    ],
                }
            }
            self.plane.kubectl(
                "patch", "pod", pod["metadata"]["name"], "-n", self.namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps(status), check=False,
            )  # fmt: skip
