"""Ferry installed in the real control plane as in production, and helpers to drive it.

Why it exists: a test of the API server's view of Ferry is only worth something
if Ferry runs the way it runs in a cluster: the objects that
``kubectl kustomize manifests/`` renders (namespace, ServiceAccount, RBAC,
Service, MutatingWebhookConfiguration), the real ``python -m webhook serve`` in
cluster mode, authenticated with a TokenRequest token of its own
ServiceAccount (so RBAC is the project's), managing its own TLS Secret and
caBundle. Only the Deployment is not applied: there is no kubelet, so each
replica is a local process, and the egress proxy maps the Service's ClusterIP
to the replicas' loopback ports.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster.controlplane import ControlPlane
from devcluster.net import free_port
from tests.support.pods import make_pod

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "tests" / "fixtures" / "kube-apiserver-v1.28" / "secretproviderclass-crd.yaml"
FERRY_NAMESPACE = "ferry-system"
SERVICE_ACCOUNT = "ferry-webhook"
WEBHOOK_CONFIG = "ferry"


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def render_manifests(plane: ControlPlane) -> list[dict[str, Any]]:
    """The project's objects, exactly as `kubectl kustomize manifests/` renders them."""
    result = plane.kubectl("kustomize", str(REPO_ROOT / "manifests"))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class Replica:
    """One `python -m webhook serve` process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def admission_entries(self) -> list[dict[str, Any]]:
        """The webhook's one-JSON-line-per-admission log entries."""
        entries = []
        for line in self.log_lines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and "outcome" in entry:
                    entries.append(entry)
        return entries


@dataclass
class Ferry:
    """Ferry's webhook, as installed in `plane`."""

    plane: ControlPlane
    workdir: Path
    namespace: str = FERRY_NAMESPACE
    objects: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    cluster_ip: str = ""
    kubeconfig: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    # --- install -----------------------------------------------------------------

    def install(self) -> None:
        plane = self.plane
        plane.kubectl("apply", "-f", str(CRD_FILE))
        plane.kubectl("wait", "--for=condition=Established", "crd/secretproviderclasses.secrets-store.csi.x-k8s.io")
        self.objects = render_manifests(plane)
        applied = [doc for doc in self.objects if doc["kind"] != "Deployment"]
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied))
        service = json.loads(
            plane.kubectl("get", "service", SERVICE_ACCOUNT, "-n", self.namespace, "-o", "json").stdout
        )
        self.cluster_ip = service["spec"]["clusterIP"]
        wait_for(
            lambda: plane.kubectl("get", "sa", "default", "-n", self.namespace, check=False).returncode == 0,
            what="the default ServiceAccount in ferry-system",
        )
        self.refresh_token()

    def refresh_token(self) -> None:
        """A fresh kubeconfig holding a TokenRequest token of Ferry's own ServiceAccount."""
        token = self.plane.token_for(self.namespace, SERVICE_ACCOUNT)
        self.kubeconfig = self.plane.kubeconfig_for_token(token, "ferry-webhook")

    def deployment_env(self) -> dict[str, str]:
        """The env the manifests' Deployment gives the webhook container (fieldRefs resolved)."""
        deployment = next(doc for doc in self.objects if doc["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[entry["name"]] = self.namespace
        return env

    def start_replica(self, *, wait: bool = True) -> Replica:
        port = free_port()
        log_path = self.workdir / f"webhook-{port}.log"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KUBERNETES_"))}
        env.update(self.deployment_env())
        env.update(self.extra_env)
        env["KUBECONFIG"] = self.kubeconfig
        # Each local replica needs its own metrics port (in a cluster every pod has its own 9090).
        metrics_port = free_port()
        env["FERRY_METRICS_PORT"] = str(metrics_port)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        replica = Replica(port, process, log_path, metrics_port)
        self.replicas.append(replica)
        self._route()
        if wait:
            self.wait_serving(replica)
        return replica

    def _route(self) -> None:
        assert self.plane.proxy is not None
        self.plane.proxy.route(self.cluster_ip, 443, [r.port for r in self.replicas if r.process.poll() is None])

    def stop_replica(self, replica: Replica) -> None:
        if replica.process.poll() is None:
            replica.process.terminate()
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        self.replicas.remove(replica)
        self._route()

    def stop_all(self) -> None:
        for replica in list(self.replicas):
            self.stop_replica(replica)

    def ca_bundle(self) -> bytes | None:
        config = json.loads(
            self.plane.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK_CONFIG, "-o", "json").stdout
        )
        bundles = {(hook.get("clientConfig") or {}).get("caBundle") for hook in config["webhooks"]}
        if len(bundles) != 1 or None in bundles:
            return None
        import base64

        return base64.b64decode(next(iter(bundles)))

    def _ssl_context(self) -> ssl.SSLContext:
        bundle = self.ca_bundle()
        assert bundle is not None, "caBundle not patched"
        context = ssl.create_default_context(cadata=bundle.decode())
        context.check_hostname = False  # the serving cert names the Service, we dial loopback
        return context

    def get(self, replica: Replica, path: str) -> tuple[int, str]:
        request = urllib.request.Request(f"https://127.0.0.1:{replica.port}{path}")
        try:
            with urllib.request.urlopen(request, context=self._ssl_context(), timeout=10) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def _ready(self, replica: Replica) -> bool:
        if replica.process.poll() is not None:
            raise AssertionError(
                f"webhook exited with {replica.process.returncode}:\n" + "\n".join(replica.log_lines()[-30:])
            )
        if self.ca_bundle() is None:
            return False
        try:
            return self.get(replica, "/readyz")[0] == 200
        except OSError:
            return False

    def wait_serving(self, replica: Replica, timeout: float = 90) -> None:
        wait_for(lambda: self._ready(replica), timeout, what=f"webhook replica on port {replica.port} to be ready")

    def metrics(self, replica: Replica) -> str:
        """GET /metrics from the replica's plain-HTTP metrics listener."""
        url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def admission_entries(self) -> list[dict[str, Any]]:
        return [entry for replica in self.replicas for entry in replica.admission_entries()]

    # --- helpers for tests ---------------------------------------------------------

    def api(self) -> Any:
        return self.plane.api_client()

    def create_namespace(
        self,
        prefix: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        opted_in: bool = False,
    ) -> str:
        """A new namespace with a unique name; waits for its default ServiceAccount."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        all_labels = dict(labels or {})
        all_annotations = dict(annotations or {})
        if opted_in:
            all_labels["ferry.dev/inject"] = "enabled"
            all_annotations["ferry.dev/inject"] = "true"
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": all_labels, "annotations": all_annotations},
        }
        self.plane.kubectl("create", "-f", "-", input=json.dumps(body))
        wait_for(
            lambda: self.plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            what=f"the default ServiceAccount in {name}",
        )
        return name

    def create_pod(self, namespace: str, pod: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Create through the kubernetes client; returns the stored pod (raises ApiException on denial)."""
        import kubernetes.client

        with self.api() as api:
            kwargs = {"dry_run": "All"} if dry_run else {}
            response = kubernetes.client.CoreV1Api(api).create_namespaced_pod(
                namespace, dict(pod), _preload_content=False, **kwargs
            )
            return dict(json.loads(response.data))

    def apply(
        self, namespace: str, objects: Iterable[Mapping[str, Any]], *args: str, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` of these objects in `namespace` (check=False: the test reads the result)."""
        return self.plane.kubectl(
            "apply", "-n", namespace, *args, "-f", "-", input=yaml.safe_dump_all(list(objects)), check=check
        )


def pod(
    name: str,
    *,
    annotations: Mapping[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A minimal pod that passes Pod Security "restricted" by itself."""
    restricted = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
    return make_pod(
        annotations or {}, containers or [app_container()], name=name, **{"securityContext": restricted, **spec}
    )


def app_container(name: str = "app", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example/app:1",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        **extra,
    }


def inline_objects(*names: str) -> str:
    """A `ferry.dev/objects` value for these Secrets Manager secret names."""
    return yaml.safe_dump([{"objectName": name, "objectType": "secretsmanager"} for name in names])


def opted_pod(
    name: str, *names: str, region: str = "us-east-1", extra: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A pod that asks for these secrets inline (`ferry.dev/inject: "true"`)."""
    values = {
        "ferry.dev/inject": "true",
        "ferry.dev/region": region,
        "ferry.dev/objects": inline_objects(*names or ("db",)),
    }
    values.update(extra or {})
    return pod(name, annotations=values, **spec)


def spc(name: str, *names: str, region: str = "us-east-1") -> dict[str, Any]:
    """A SecretProviderClass (provider aws) naming these Secrets Manager secrets."""
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name},
        "spec": {"provider": "aws", "parameters": {"region": region, "objects": inline_objects(*names)}},
    }


def container_names(stored: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    spec = stored["spec"]
    return [c["name"] for c in spec.get("initContainers") or []], [c["name"] for c in spec["containers"]]


def is_injected(stored: Mapping[str, Any]) -> bool:
    return "ferry-init" in container_names(stored)[0]


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ferry-e2e-webhook-"))
