"""Ferry's whole job on one machine, for a newcomer: `make demo`.

Why it exists: the first command in the README is every newcomer's first
impression. In a minute, with nothing to set up, a reader should see what Ferry
does in a cluster, including what happens when it cannot do it, and every line
that looks like kubectl output must either be kubectl's own or say that it is
not. Every part is the real one:

1. a local AWS (moto's server mode over HTTP) seeded with example secrets;
2. Ferry's webhook (`python -m webhook serve`) over TLS. When
   ``KUBEBUILDER_ASSETS`` names the envtest binaries (etcd, kube-apiserver,
   kube-controller-manager), a real control plane is started (`devcluster`),
   Ferry is installed from `manifests/` and the webhook runs in cluster mode;
   otherwise it runs alone with the example SecretProviderClass file;
3. the example Deployment: created with a real `kubectl create` and its pods
   made by the real ReplicaSet controller, or, without a cluster, its pod
   posted to /mutate as the API server would post it;
4. the injected init container's command run as a local process (there is no
   kubelet here) against the local AWS, writing into a temporary directory;
5. the refresh sidecar picking up a rotated secret and swapping the files;
6. a pod whose secret does not exist: its init container fails, and its
   termination message is shown as `kubectl describe pod` shows it;
7. a bad pod and a bad Deployment denied at admission.

Temporary files (a CA, fake secrets, logs) are removed at the end unless
``--keep`` or ``FERRY_DEMO_KEEP=1`` asks to keep them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import jsonpatch
import kubernetes_validate
import yaml
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `devcluster`, when run as `python scripts/demo.py`

from devcluster.eksidentity import ROLE_ANNOTATION, IdentityWebhook, add_irsa, role_of  # noqa: E402
from devcluster.net import free_port  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

EXAMPLES = ROOT / "scripts" / "demo"
SPC_CRD = ROOT / "manifests" / "components" / "secretproviderclass-crd" / "secretproviderclass-crd.yaml"
REGION = "us-east-1"
NAMESPACE = "demo"
MISSING_SECRET = "prod/payments/stripe-key"
STEPS = 7
WIDTH = 100
KEEP_ENV_VAR = "FERRY_DEMO_KEEP"
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


class DemoError(Exception):
    """A step could not be shown; the message says which and why."""


# --- output -----------------------------------------------------------------------


def step(number: int, text: str) -> None:
    print(f"\n{BOLD}[{number}/{STEPS}] {text}{RESET}", flush=True)


def detail(text: str) -> None:
    print(f"      {text}", flush=True)


def shown(text: str) -> None:
    """Output of a command, verbatim and whole: every line as it came."""
    for line in text.rstrip("\n").splitlines():
        print(f"      {DIM}|{RESET} {line}", flush=True)


def log_lines(stderr: str) -> Iterator[str]:
    """The fetcher's JSON log lines as `level msg key=value ...`, wrapped between fields, never inside one."""
    for raw in stderr.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            yield raw
            continue
        tokens = [str(entry.pop("level", "")), str(entry.pop("msg", ""))]
        entry.pop("ts", None)
        tokens += [
            f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in entry.items()
        ]
        yield from wrap_tokens(tokens, WIDTH - 12)


def wrap_tokens(tokens: list[str], width: int) -> Iterator[str]:
    """Tokens joined by spaces into lines of about `width`; a token is never split, a long one gets its own line."""
    line = ""
    for token in tokens:
        if line and len(line) + 1 + len(token) > width:
            yield line
            line = "    " + token
        else:
            line = f"{line} {token}" if line else token
    if line:
        yield line


# --- the local AWS and local processes -------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def aws_session() -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)


def seed_aws(endpoint: str) -> None:
    sm = aws_session().client("secretsmanager", endpoint_url=endpoint)
    ssm = aws_session().client("ssm", endpoint_url=endpoint)
    sm.create_secret(Name="prod/db/credentials", SecretString=json.dumps({"username": "app", "password": "hunter2-v1"}))
    sm.create_secret(Name="prod/api-key", SecretString="ak-7f3e-demo")
    ssm.put_parameter(Name="/prod/app/feature-flags", Value="checkout=on,search=beta", Type="String")
    ssm.put_parameter(Name="/prod/app/db-host", Value="db.internal.example:5432", Type="SecureString")
    detail("Secrets Manager: prod/db/credentials (JSON), prod/api-key")
    detail("SSM Parameter Store: /prod/app/feature-flags, /prod/app/db-host (SecureString)")
    detail(f"not created, on purpose: {MISSING_SECRET} (step 6)")


def container_env(container: dict[str, Any], target: Path, endpoint: str) -> dict[str, str]:
    """The injected container's own env, as the kubelet would set it, pointed at the local AWS.

    No access keys are given: the fetcher authenticates the way it does in EKS,
    through IRSA. The webhook copied AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE
    from the app container; here the token file is a local stand-in for the
    projected service-account token, and moto's STS exchanges it for credentials.
    """
    env = {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    token = target.parent / "serviceaccount-token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVtbzphcGkifQ.c2lnbmF0dXJl")
    env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        FERRY_TERMINATION_LOG=str(target.parent / f"{container['name']}.termination-log"),
        PATH=os.environ.get("PATH", ""),
    )
    return env


def local_command(container: dict[str, Any], mount_path: str, target: Path) -> list[str]:
    command = [sys.executable if part == "python" else part for part in container["command"]]
    args = [str(target) if part == mount_path else part for part in container.get("args", [])]
    return command + args


def show_files(target: Path) -> None:
    for entry in sorted(target.iterdir()):
        if entry.name.startswith(".."):
            continue
        mode = oct(entry.stat().st_mode & 0o777)
        detail(f"{entry.name:<28} {mode}  {entry.read_text()}")


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- Ferry, alone or in a real control plane ----------------------------------------------


@dataclass
class Injected:
    """One admitted pod, as it would be stored: what steps 4 to 6 run."""

    pod: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.pod["spec"])

    def container(self, name: str) -> dict[str, Any]:
        for group in ("initContainers", "containers"):
            for container in self.spec.get(group) or []:
                if container["name"] == name:
                    return dict(container)
        raise DemoError(f"the pod has no container {name}")

    @property
    def mount_path(self) -> str:
        volume = next(v for v in self.spec["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
        mount = next(m for m in self.spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        return str(mount["mountPath"])


class LocalFerry:
    """No cluster: the webhook alone, fed AdmissionReviews as the API server would send them."""

    real = False

    def __init__(self, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.workdir = workdir
        self.stack = stack
        self.url = ""
        self.ca_file = workdir / "ca.pem"

    def start(self) -> None:
        port = free_port()
        log = (self.workdir / "webhook.log").open("wb")
        self.stack.callback(log.close)
        env = {
            **os.environ,
            "FERRY_DEFAULT_REGION": REGION,
            "FERRY_NATIVE_SIDECARS": "true",
            # No metrics listener: its default port (9090) is Prometheus's, often taken on a laptop.
            "FERRY_METRICS_PORT": "0",
            "KUBECONFIG": str(self.workdir / "no-kubeconfig"),
        }
        spc = EXAMPLES / "secretproviderclass.yaml"
        command = ["python", "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--secret-provider-class", str(spc), "--write-ca", str(self.ca_file)]
        process = subprocess.Popen(
            [sys.executable, *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.stack.callback(stop_process, process)
        self.url = f"https://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                raise DemoError("the webhook exited:\n" + (self.workdir / "webhook.log").read_text())
            if not self.ca_file.exists():
                return False
            try:
                return httpx.get(f"{self.url}/readyz", verify=str(self.ca_file), timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "the webhook to become ready")
        detail(f"$ {' '.join(command[:8])} --secret-provider-class scripts/demo/secretproviderclass.yaml")
        detail(f"serving {self.url}/mutate; TLS verified against the CA it wrote ({self.ca_file.name})")

    def review(self, pod: dict[str, Any]) -> dict[str, Any]:
        pod = with_eks_identity(pod)
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": False,
            },
        }
        reply = httpx.post(
            f"{self.url}/mutate?timeout=5s",
            json=review,
            verify=str(self.ca_file),
            headers={"User-Agent": "kube-apiserver-admission"},
            timeout=10,
        )
        reply.raise_for_status()
        response: dict[str, Any] = reply.json()["response"]
        return response

    def admit(self, pod: dict[str, Any]) -> Injected:
        pod = with_eks_identity(pod)
        response = self.review(pod)
        if not response.get("allowed"):
            raise DemoError(f"the webhook denied the pod: {response.get('status', {}).get('message')}")
        patch = json.loads(base64.b64decode(response["patch"]))
        mutated = jsonpatch.apply_patch(pod, patch)
        mutated["metadata"].setdefault("name", pod["metadata"].get("generateName", "pod-") + "x2x9q")
        mutated["metadata"]["namespace"] = NAMESPACE
        detail(f"{GREEN}allowed{RESET}, with a JSONPatch of {len(patch)} operations")
        return Injected(mutated)

    def create_deployment(self, deployment: dict[str, Any]) -> Injected:
        detail("no cluster here (KUBEBUILDER_ASSETS is unset): the ReplicaSet's pod goes straight to /mutate,")
        detail(f"after the demo adds what EKS's identity webhook adds for ServiceAccount api ({ROLE_ANNOTATION})")
        return self.admit(pod_from_template(deployment))

    def create_pod(self, pod: dict[str, Any]) -> Injected:
        return self.admit(pod)

    def report_failed_init(self, injected: Injected, message: str, exit_code: int) -> None:
        name = injected.pod["metadata"]["name"]
        init = injected.container("ferry-init")
        detail(f"{DIM}no kubelet or API server here: below is what kubectl would print for this pod{RESET}")
        detail(f"$ kubectl get pod {name} -n {NAMESPACE}")
        ready = f"0/{len(injected.spec['containers'])}"
        header = f"NAME{' ' * (len(name) - 1)}READY   STATUS       RESTARTS   AGE"
        shown(f"{header}\n{name}   {ready}     Init:Error   0          4s")
        detail(f"$ kubectl describe pod {name} -n {NAMESPACE}   (its init container's state, whole lines)")
        lines = ["Init Containers:", "  ferry-init:", f"    Image:           {init['image']}", "    Command:"]
        lines += [f"      {part}" for part in init["command"]] + ["    Args:"] + [f"      {a}" for a in init["args"]]
        lines += ["    State:          Terminated", "      Reason:       Error", f"      Message:      {message}"]
        lines += [f"      Exit Code:    {exit_code}", "    Ready:          False", "    Restart Count:  0"]
        shown("\n".join(lines))

    def deny_pod(self, pod: dict[str, Any], manifest: Path) -> None:
        response = self.review(pod)
        if response.get("allowed"):
            raise DemoError("the bad pod was allowed")
        detail(f"{DIM}no API server here: below is what kubectl would print, with the webhook's real message{RESET}")
        detail(f"$ kubectl create -f {manifest.name}")
        shown(
            f'Error from server (Forbidden): error when creating "{manifest.name}": '
            f'admission webhook "pods.ferry.dev" denied the request: {response.get("status", {}).get("message")}'
        )

    def deny_deployment(self, deployment: dict[str, Any], manifest: Path) -> None:
        response = self.review(pod_from_template(deployment))
        name = deployment["metadata"]["name"]
        detail(f"{DIM}no API server here: `kubectl create -f {manifest.name}` would succeed, and then:{RESET}")
        detail("A Deployment is not checked itself: its ReplicaSet's pods are, and each is denied.")
        detail(f"{DIM}this is what kubectl would list as the ReplicaSet's events:{RESET}")
        detail(
            f"$ kubectl get events -n {NAMESPACE} --field-selector reason=FailedCreate "
            f"-o custom-columns={EVENT_COLUMNS}"
        )
        shown(
            "TYPE      REASON         OBJECT       MESSAGE\n"
            'Warning   FailedCreate   ReplicaSet   Error creating: admission webhook "pods.ferry.dev" '
            f"denied the request: {response.get('status', {}).get('message')}"
        )
        detail(f"$ kubectl get deployment {name} -n {NAMESPACE}")
        header = f"NAME{' ' * (len(name) - 1)}READY   UP-TO-DATE   AVAILABLE   AGE"
        shown(f"{header}\n{name}   0/1     0            0           3s")


class ClusterFerry(LocalFerry):
    """A real control plane: Ferry installed from manifests/, pods created with kubectl."""

    real = True

    def __init__(self, workdir: Path, stack: contextlib.ExitStack, assets: str) -> None:
        super().__init__(workdir, stack)
        self.assets = assets
        self.plane: Any = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.plane.kubectl(*args, input=input, check=False, timeout=120)
        if check and result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def show(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl and print the command and its whole output, as a terminal would."""
        detail(f"$ kubectl {' '.join(args)}")
        result = self.kubectl(*args, input=input, check=check)
        shown(result.stdout + result.stderr)
        return result

    def start(self) -> None:
        from devcluster.controlplane import ControlPlaneError, start_control_plane

        venv_bin = str(Path(sys.executable).parent)
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("kubectl") is None:
            raise DemoError("kubectl is not on PATH; `make .venv/.installed` puts kubectl v1.36 into .venv/bin")
        detail(f"starting etcd, kube-apiserver and kube-controller-manager from KUBEBUILDER_ASSETS={self.assets}")
        try:
            self.plane = start_control_plane(self.assets, self.workdir / "cluster")
        except ControlPlaneError as exc:
            raise DemoError(str(exc)) from None
        self.stack.callback(self.plane.stop)
        version = json.loads(self.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        detail(f"{GREEN}API server {version}{RESET} at {self.plane.url}")
        detail("installing Ferry as docs/install.md does (the Deployment's pod runs here as a local process):")
        self.kubectl("apply", "-f", str(SPC_CRD))
        self.kubectl("wait", "--for=condition=Established", "crd/secretproviderclasses.secrets-store.csi.x-k8s.io")
        objects = [doc for doc in yaml.safe_load_all(self.kubectl("kustomize", str(ROOT / "manifests")).stdout) if doc]
        applied = [doc for doc in objects if doc["kind"] != "Deployment"]
        detail("$ kubectl kustomize manifests/ | kubectl apply -f -   (all but the Deployment)")
        shown(self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied)).stdout)
        deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
        namespace = deployment["metadata"]["namespace"]
        service = deployment["spec"]["template"]["spec"].get("serviceAccountName", "ferry-webhook")
        cluster_ip = json.loads(self.kubectl("get", "service", "ferry-webhook", "-n", namespace, "-o", "json").stdout)[
            "spec"
        ]["clusterIP"]
        token = wait_for(lambda: self._token(namespace, service), 60, "Ferry's ServiceAccount")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KUBERNETES_"))}
        for entry in deployment["spec"]["template"]["spec"]["containers"][0].get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[entry["name"]] = namespace
        env.update(
            FERRY_DEFAULT_REGION=REGION,
            FERRY_METRICS_PORT="0",
            KUBECONFIG=self.plane.kubeconfig_for_token(token, "ferry-webhook"),
        )
        port = free_port()
        log = (self.workdir / "webhook.log").open("wb")
        self.stack.callback(log.close)
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.stack.callback(stop_process, process)
        self.plane.proxy.route(cluster_ip, 443, [port])

        def ready() -> bool:
            if process.poll() is not None:
                raise DemoError("the webhook exited:\n" + (self.workdir / "webhook.log").read_text())
            bundle = self._ca_bundle()
            if bundle is None:
                return False
            context = ssl.create_default_context(cadata=bundle)
            context.check_hostname = False  # the certificate names the Service; this is loopback
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=context, timeout=2) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_for(ready, 90, "the webhook to serve and patch its caBundle")
        detail(
            f"webhook: python -m webhook serve, as ServiceAccount {namespace}/{service}; it made its own CA, "
            f"stored it in Secret {namespace}/ferry-webhook-tls and patched the MutatingWebhookConfiguration"
        )
        identity = IdentityWebhook(self._service_account)
        self.stack.callback(identity.close)
        self.kubectl("apply", "-f", "-", input=json.dumps(identity.configuration()))
        detail("EKS's pod identity webhook (a local stand-in, devcluster/eksidentity.py) is registered too: it")
        detail(f"adds the role named by a ServiceAccount's {ROLE_ANNOTATION} annotation to the pod, as on EKS")
        self.show("create", "namespace", NAMESPACE)
        self.show("apply", "-f", "scripts/demo/serviceaccount.yaml")
        self.show("apply", "-f", str(EXAMPLES / "secretproviderclass.yaml").replace(str(ROOT) + "/", ""))

    def _service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.kubectl("get", "serviceaccount", name, "-n", namespace, "-o", "json", check=False)
        return dict(json.loads(found.stdout)) if found.returncode == 0 else None

    def _token(self, namespace: str, service_account: str) -> str | None:
        try:
            return str(self.plane.token_for(namespace, service_account))
        except Exception:  # not there yet
            return None

    def _ca_bundle(self) -> str | None:
        config = json.loads(self.kubectl("get", "mutatingwebhookconfiguration", "ferry", "-o", "json").stdout)
        bundles = {(hook.get("clientConfig") or {}).get("caBundle") for hook in config["webhooks"]}
        if len(bundles) != 1 or None in bundles:
            return None
        return base64.b64decode(str(next(iter(bundles)))).decode()

    def create_deployment(self, deployment: dict[str, Any]) -> Injected:
        path = self.workdir / "deployment.yaml"
        path.write_text(yaml.safe_dump(deployment))
        detail("$ kubectl create -f scripts/demo/deployment.yaml")
        shown(self.kubectl("create", "-f", str(path)).stdout)
        name = deployment["metadata"]["name"]
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        want = int(deployment["spec"].get("replicas", 1))

        def pods() -> list[dict[str, Any]] | None:
            listed = json.loads(self.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)
            items: list[dict[str, Any]] = listed["items"]
            return items if len(items) >= want else None

        items = wait_for(pods, 90, f"the ReplicaSet of {name} to create its pods")
        detail(f"the ReplicaSet controller created {len(items)} pods; the API server called Ferry for each:")
        self.show("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "custom-columns=" + POD_COLUMNS)
        return Injected(items[0])

    def create_pod(self, pod: dict[str, Any]) -> Injected:
        path = self.workdir / f"{pod['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(pod))
        detail(f"$ kubectl create -f {path.name}")
        shown(self.kubectl("create", "-f", str(path), "-n", NAMESPACE).stdout)
        stored = json.loads(self.kubectl("get", "pod", pod["metadata"]["name"], "-n", NAMESPACE, "-o", "json").stdout)
        return Injected(stored)

    def report_failed_init(self, injected: Injected, message: str, exit_code: int) -> None:
        """Report the init container's end to the API server as the kubelet does, then ask kubectl."""
        name = injected.pod["metadata"]["name"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        spec = injected.spec
        waiting = {"waiting": {"reason": "PodInitializing"}}
        status = {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "startTime": now,
                "initContainerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": (
                            {
                                "terminated": {
                                    "exitCode": exit_code,
                                    "reason": "Error",
                                    "message": message,
                                    "startedAt": now,
                                    "finishedAt": now,
                                }
                            }
                            if c["name"] == "ferry-init"
                            else waiting
                        ),
                    }
                    for c in spec.get("initContainers") or []
                ],
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0}
                    | {"state": waiting}
                    for c in spec["containers"]
                ],
            }
        }
        self.kubectl(
            "patch", "pod", name, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )
        detail("no kubelet here: the demo ran the container and reported its end to the API server, as the")
        detail("kubelet does (pods/status). What follows is kubectl's own output:")
        self.show("get", "pod", name, "-n", NAMESPACE)
        described = self.kubectl("describe", "pod", name, "-n", NAMESPACE).stdout
        detail(f"$ kubectl describe pod {name} -n {NAMESPACE}   (its init container's state, whole lines)")
        shown("\n".join(init_container_section(described, "ferry-init")))

    def deny_pod(self, pod: dict[str, Any], manifest: Path) -> None:
        manifest.write_text(yaml.safe_dump(pod))
        detail(f"$ kubectl create -f {manifest.name}")
        result = self.kubectl("create", "-f", str(manifest), "-n", NAMESPACE, check=False)
        if result.returncode == 0:
            raise DemoError("the bad pod was allowed")
        shown(result.stderr.replace(str(manifest), manifest.name))

    def deny_deployment(self, deployment: dict[str, Any], manifest: Path) -> None:
        manifest.write_text(yaml.safe_dump(deployment))
        detail(f"$ kubectl create -f {manifest.name}")
        shown(self.kubectl("create", "-f", str(manifest)).stdout)
        name = deployment["metadata"]["name"]
        detail("A Deployment is not checked itself: its ReplicaSet's pods are, and each is denied:")

        def events() -> str | None:
            listed = self.kubectl(
                "get", "events", "-n", NAMESPACE, "--field-selector", "reason=FailedCreate", "-o", "name"
            ).stdout.strip()
            return listed or None

        wait_for(events, 90, f"the ReplicaSet of {name} to report FailedCreate")
        self.show(
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "reason=FailedCreate",
            "-o",
            "custom-columns=" + EVENT_COLUMNS,
        )
        self.show("get", "deployment", name, "-n", NAMESPACE)


EVENT_COLUMNS = "TYPE:.type,REASON:.reason,OBJECT:.involvedObject.kind,MESSAGE:.message"
POD_COLUMNS = "NAME:.metadata.name,INIT:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name"


def init_container_section(described: str, name: str) -> list[str]:
    """The lines of `kubectl describe pod` about init container `name`, from its header to the next container."""
    lines = described.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"{name}:"), None)
    if start is None:
        return lines
    indent = len(lines[start]) - len(lines[start].lstrip())
    section = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        section.append(line)
    until = next((i for i, line in enumerate(section) if line.strip().startswith(("Limits:", "Requests:"))), None)
    return ["Init Containers:", *section[:until]]


def with_eks_identity(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as EKS's identity webhook leaves it, for the demo's annotated ServiceAccount (no cluster here)."""
    account = yaml.safe_load((EXAMPLES / "serviceaccount.yaml").read_text())
    role = role_of(account)
    if role is None or pod["spec"].get("serviceAccountName") != account["metadata"]["name"]:
        return pod
    changed = json.loads(json.dumps(pod))
    add_irsa(changed, role)
    return changed


def pod_from_template(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "generateName": deployment["metadata"]["name"] + "-7d9f8c-"},
        "spec": template["spec"],
    }


# --- the story --------------------------------------------------------------------------


def run_init(ferry: LocalFerry, injected: Injected, target: Path, endpoint: str) -> subprocess.CompletedProcess[bytes]:
    init = injected.container("ferry-init")
    env = container_env(init, target, endpoint)
    return subprocess.run(
        local_command(init, injected.mount_path, target), env=env, capture_output=True, cwd=ferry.workdir
    )


def demo(ferry: LocalFerry, endpoint: str) -> None:
    workdir = ferry.workdir
    step(2, "Ferry's webhook, over TLS" + (" in a real control plane" if ferry.real else ""))
    ferry.start()

    step(3, "Admission: the example Deployment's pod goes through Ferry")
    deployment = yaml.safe_load((EXAMPLES / "deployment.yaml").read_text())
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    for key in sorted(annotations):
        detail(f"{DIM}{key}: {annotations[key]}{RESET}")
    injected = ferry.create_deployment(deployment)
    schema = "1.36"  # the Kubernetes version everything else here is built and tested against
    kubernetes_validate.validate(injected.pod, schema, strict=True)
    spec = injected.spec
    init, sidecar_spec = injected.container("ferry-init"), injected.container("ferry-sidecar")
    volume = next(v for v in spec["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
    detail(f"the injected pod validates (kubernetes-validate, strict, {schema}):")
    detail(f"+ volume {volume['name']}: emptyDir medium=Memory sizeLimit={volume['emptyDir'].get('sizeLimit')}")
    detail(f"+ init container {init['name']}: {' '.join(init['command'] + init['args'])}")
    detail(
        f"+ native sidecar {sidecar_spec['name']} (restartPolicy {sidecar_spec.get('restartPolicy')}): "
        f"{' '.join(sidecar_spec['command'] + sidecar_spec['args'])}"
    )
    probe = sidecar_spec.get("livenessProbe", {}).get("exec", {}).get("command")
    if probe:
        detail(f"  liveness probe: {' '.join(probe)}")
    mount_path = injected.mount_path
    for container in spec["containers"]:
        mounted = any(m["name"] == volume["name"] for m in container.get("volumeMounts", []))
        detail(f"  container {container['name']}: {'mounts ' + mount_path + ' read-only' if mounted else 'no mount'}")
    spec_env = next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC")
    detail(f"{DIM}FERRY_SPEC: {len(spec_env)} bytes of JSON, names only, no values{RESET}")

    step(4, "The init container's command, run as a local process against the local AWS")
    target = workdir / "mnt-secrets-store"
    target.mkdir()
    env = container_env(init, target, endpoint)
    detail(f"identity: IRSA, {env['AWS_ROLE_ARN']} (from ServiceAccount api's {ROLE_ANNOTATION}; Ferry copied it)")
    started = time.monotonic()
    result = run_init(ferry, injected, target, endpoint)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise DemoError(f"the init container failed (exit {result.returncode}):\n{result.stderr.decode()}")
    for line in log_lines(result.stderr.decode()):
        detail(f"{DIM}log: {line}{RESET}")
    detail(f"{GREEN}exit 0{RESET} in {elapsed:.2f} s; {mount_path} now holds:")
    show_files(target)

    step(5, "Rotation: the sidecar notices a new secret version and swaps the files atomically")
    sidecar = subprocess.Popen(
        local_command(sidecar_spec, mount_path, target),
        env=container_env(sidecar_spec, target, endpoint),
        stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        password = target / "db-password"
        before = os.readlink(target / "..data")
        aws_session().client("secretsmanager", endpoint_url=endpoint).put_secret_value(
            SecretId="prod/db/credentials", SecretString=json.dumps({"username": "app", "password": "hunter2-v2"})
        )
        detail("rotated prod/db/credentials in Secrets Manager (new AWSCURRENT version)")
        wait_for(lambda: password.read_text() == "hunter2-v2", 60, "the sidecar to pick up the rotated secret")
        after = os.readlink(target / "..data")
        detail(f"{GREEN}db-password now reads 'hunter2-v2'{RESET}; ..data moved from {before} to {after}")
        if probe:
            checked = subprocess.run(
                local_command({"command": probe[:4], "args": probe[4:]}, mount_path, target),
                capture_output=True,
                text=True,
                cwd=workdir,
            )
            detail(f"its liveness probe says: {checked.stdout.strip()} (exit {checked.returncode})")
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            code = sidecar.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            code = sidecar.wait()
        if sidecar.stderr is not None:
            sidecar.stderr.close()
    detail(f"sidecar stopped on SIGTERM with exit code {code}")

    step(6, f"The failure path: a pod whose secret does not exist ({MISSING_SECRET})")
    broken = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "payments",
            "namespace": NAMESPACE,
            "annotations": {
                "ferry.dev/inject": "true",
                "ferry.dev/objects": f"- objectName: {MISSING_SECRET}\n  objectType: secretsmanager\n",
            },
        },
        "spec": {**pod_from_template(deployment)["spec"]},
    }
    detail(f"{DIM}ferry.dev/objects: - objectName: {MISSING_SECRET}, objectType: secretsmanager{RESET}")
    injected_broken = ferry.create_pod(broken)
    failed_target = workdir / "payments-secrets"
    failed_target.mkdir()
    result = run_init(ferry, injected_broken, failed_target, endpoint)
    if result.returncode == 0:
        raise DemoError("the init container of the pod with a missing secret succeeded")
    message_file = failed_target.parent / "ferry-init.termination-log"
    message = message_file.read_text() if message_file.exists() else "(no termination message)"
    detail(f"{RED}exit {result.returncode}{RESET}; nothing written into the volume; the app containers never start")
    ferry.report_failed_init(injected_broken, message, result.returncode)

    step(7, "Bad requests are denied at admission, with a message that says what to fix")
    bad_annotations = {
        "ferry.dev/inject": "true",
        "ferry.dev/objects": (
            "- objectName: prod/api-key\n  objectType: secretsmanager\n  objectAlias: ../../etc/passwd\n"
        ),
    }
    bad_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": NAMESPACE, "annotations": bad_annotations},
        "spec": pod_from_template(deployment)["spec"],
    }
    ferry.deny_pod(bad_pod, workdir / "bad-pod.yaml")
    bad_deployment = json.loads(json.dumps(deployment))
    bad_deployment["metadata"]["name"] = "bad-api"
    bad_deployment["spec"]["replicas"] = 1
    bad_deployment["spec"]["selector"]["matchLabels"] = {"app": "bad-api"}
    bad_deployment["spec"]["template"]["metadata"] = {"labels": {"app": "bad-api"}, "annotations": bad_annotations}
    ferry.deny_deployment(bad_deployment, workdir / "bad-deployment.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        default=os.environ.get(KEEP_ENV_VAR, "").lower() in ("1", "true", "yes"),
        help=f"keep the temporary folder (CA, fake secrets, logs) and say where it is (or {KEEP_ENV_VAR}=1)",
    )
    args = parser.parse_args(argv)
    assets = os.environ.get("KUBEBUILDER_ASSETS", "").strip()
    workdir = Path(tempfile.mkdtemp(prefix="ferry-demo-"))
    print(f"{BOLD}Ferry demo{RESET}")
    if assets:
        print(f"{DIM}KUBEBUILDER_ASSETS is set: a real control plane; kubectl lines are kubectl's own output.{RESET}")
    else:
        print(
            f"{DIM}No cluster (KUBEBUILDER_ASSETS is unset): everything else is real, and lines shown as kubectl "
            f"output say that they are what kubectl would print.{RESET}"
        )
    code = 0
    with contextlib.ExitStack() as stack:
        try:
            step(1, "A local AWS (moto, real HTTP) with example secrets")
            moto_port = free_port()
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
            moto.start()
            stack.callback(moto.stop)
            endpoint = f"http://127.0.0.1:{moto_port}"
            seed_aws(endpoint)
            ferry = ClusterFerry(workdir, stack, assets) if assets else LocalFerry(workdir, stack)
            demo(ferry, endpoint)
            print(f"\n{GREEN}{BOLD}Done.{RESET} To install in a cluster: helm or kubectl apply -k (docs/install.md)")
        except DemoError as exc:
            print(f"\n{RED}demo failed: {exc}{RESET}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            code = 130
    if args.keep:
        print(f"{DIM}kept {workdir} (CA files, fake secrets, logs): remove it with rm -rf {workdir}{RESET}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"{DIM}removed {workdir} (CA files, fake secrets, logs); --keep keeps it{RESET}")
    return code


if __name__ == "__main__":
    sys.exit(main())
