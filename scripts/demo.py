"""Ferry's whole job on one machine, for a newcomer: `make demo`.

Why it exists: a reader should see, in under a minute and with nothing to set
up, what Ferry does in a cluster. Every part is the real one except the cluster
itself (no kube-apiserver or kubelet can run here):

1. a local AWS (moto's server mode over HTTP) seeded with example secrets;
2. the webhook (`python -m webhook serve`) over TLS with a self-signed cert;
3. an example Deployment's pod posted to /mutate as the API server posts it;
4. the injected init container's command run as a local process against the
   local AWS, writing into a temporary directory;
5. the refresh sidecar picking up a rotated secret and swapping the files;
6. a bad request denied with the message kubectl would show.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import jsonpatch
import kubernetes_validate
import yaml
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scripts" / "demo"
REGION = "us-east-1"
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5
)


def step(number: int, text: str) -> None:
    print(f"\n{BOLD}[{number}/6] {text}{RESET}", flush=True)


def detail(text: str) -> None:
    print(f"      {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed_aws(endpoint: str) -> None:
    session = boto3.session.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    ssm = session.client("ssm", endpoint_url=endpoint)
    sm.create_secret(Name="prod/db/credentials", SecretString=json.dumps({"username": "app", "password": "hunter2-v1"}))
    sm.create_secret(Name="prod/api-key", SecretString="ak-7f3e-demo")
    ssm.put_parameter(Name="/prod/app/feature-flags", Value="checkout=on,search=beta", Type="String")
    ssm.put_parameter(Name="/prod/app/db-host", Value="db.internal.example:5432", Type="SecureString")
    detail("Secrets Manager: prod/db/credentials (JSON), prod/api-key")
    detail("SSM Parameter Store: /prod/app/feature-flags, /prod/app/db-host (SecureString)")


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"{RED}timed out waiting for {what}{RESET}")


def start_webhook(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    ca_file = workdir / "ca.pem"
    env = {
        **os.environ,
        "FERRY_DEFAULT_REGION": REGION,
        "FERRY_MIN_REFRESH_INTERVAL": "1s",
        "FERRY_NATIVE_SIDECARS": "true",
        "KUBECONFIG": str(workdir / "no-kubeconfig"),
    }
    log = (workdir / "webhook.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--secret-provider-class",
            str(EXAMPLES / "secretproviderclass.yaml"),
            "--write-ca",
            str(ca_file),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{RED}webhook exited:{RESET}\n" + (workdir / "webhook.log").read_text())
        if not ca_file.exists():
            return False
        try:
            return httpx.get(f"https://127.0.0.1:{port}/readyz", verify=str(ca_file), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 30, "the webhook to become ready")
    return process, ca_file


def admission_review(pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }


def pod_from_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "generateName": deployment["metadata"]["name"] + "-7d9f8c-"},
        "spec": template["spec"],
    }


def post_review(url: str, ca_file: Path, review: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(
        f"{url}/mutate?timeout=5s",
        json=review,
        verify=str(ca_file),
        headers={"User-Agent": "kube-apiserver-admission"},
        timeout=5,
    )
    reply.raise_for_status()
    response: dict[str, Any] = reply.json()["response"]
    return response


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
        content = entry.read_text()
        detail(f"{entry.name:<28} {mode}  {content}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ferry-demo-"))
    print(f"{BOLD}Ferry demo{RESET} {DIM}(work directory: {workdir}){RESET}")

    step(1, "Starting a local AWS (moto, real HTTP) with example secrets")
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto_port}"
    webhook: subprocess.Popen[bytes] | None = None
    sidecar: subprocess.Popen[bytes] | None = None
    try:
        seed_aws(endpoint)

        step(2, "Starting the webhook over TLS (self-signed CA generated by Ferry)")
        port = free_port()
        webhook, ca_file = start_webhook(workdir, port)
        url = f"https://127.0.0.1:{port}"
        detail(f"python -m webhook serve --port {port}  ->  {url}/mutate (TLS verified against {ca_file.name})")

        step(3, "Admission: the API server sends the example Deployment's pod to /mutate")
        deployment = yaml.safe_load((EXAMPLES / "deployment.yaml").read_text())
        pod = pod_from_deployment(deployment)
        annotations = pod["metadata"]["annotations"]
        for key in sorted(annotations):
            detail(f"{DIM}{key}: {annotations[key].strip()}{RESET}".replace("\n", " | "))
        response = post_review(url, ca_file, admission_review(pod, "demo"))
        patch = json.loads(base64.b64decode(response["patch"]))
        mutated = jsonpatch.apply_patch(pod, patch)
        mutated["metadata"].setdefault("name", "api-7d9f8c-x2x9q")
        mutated["metadata"]["namespace"] = "demo"
        schema = kubernetes_validate.latest_version()
        kubernetes_validate.validate(mutated, schema, strict=True)
        detail(f"{GREEN}allowed{RESET}, JSONPatch of {len(patch)} ops; the patched pod validates (strict, {schema})")
        spec = mutated["spec"]
        init, sidecar_spec = spec["initContainers"][0], spec["initContainers"][1]
        volume = next(v for v in spec["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
        detail(f"+ volume {volume['name']}: emptyDir medium=Memory sizeLimit={volume['emptyDir'].get('sizeLimit')}")
        detail(f"+ init container {init['name']}: {' '.join(init['command'] + init['args'])}")
        detail(
            f"+ native sidecar {sidecar_spec['name']} (restartPolicy {sidecar_spec.get('restartPolicy')}): "
            f"{' '.join(sidecar_spec['command'] + sidecar_spec['args'])}"
        )
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        mount_path = mount["mountPath"]
        for container in spec["containers"]:
            mounted = any(m["name"] == volume["name"] for m in container.get("volumeMounts", []))
            detail(
                f"  container {container['name']}: {'mounts ' + mount_path + ' read-only' if mounted else 'no mount'}"
            )
        spec_env = next(e["value"] for e in init["env"] if e["name"] == "FERRY_SPEC")
        detail(f"{DIM}FERRY_SPEC ({len(spec_env)} bytes of JSON, names only, no values){RESET}")

        step(4, "The init container's command, run locally against the local AWS")
        target = workdir / "mnt-secrets-store"
        target.mkdir()
        env = container_env(init, target, endpoint)
        detail(f"identity: IRSA, {env['AWS_ROLE_ARN']} (copied by the webhook from container api)")
        started = time.monotonic()
        result = subprocess.run(local_command(init, mount_path, target), env=env, capture_output=True, cwd=workdir)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            print(result.stderr.decode(), file=sys.stderr)
            raise SystemExit(f"{RED}init container failed (exit {result.returncode}){RESET}")
        for line in result.stderr.decode().splitlines()[-2:]:
            detail(f"{DIM}log: {line[:150]}{RESET}")
        detail(f"{GREEN}exit 0{RESET} in {elapsed:.2f} s; {mount_path} now holds:")
        show_files(target)

        step(5, "Rotation: the sidecar notices a new secret version and swaps the files atomically")
        env = container_env(sidecar_spec, target, endpoint)
        sidecar = subprocess.Popen(
            local_command(sidecar_spec, mount_path, target), env=env, stderr=subprocess.PIPE, cwd=workdir
        )
        password = target / "db-password"
        before = os.readlink(target / "..data")
        session = boto3.session.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)
        session.client("secretsmanager", endpoint_url=endpoint).put_secret_value(
            SecretId="prod/db/credentials", SecretString=json.dumps({"username": "app", "password": "hunter2-v2"})
        )
        detail("rotated prod/db/credentials in Secrets Manager (new AWSCURRENT version)")
        wait_for(lambda: password.read_text() == "hunter2-v2", 30, "the sidecar to pick up the rotated secret")
        after = os.readlink(target / "..data")
        detail(f"{GREEN}db-password now reads 'hunter2-v2'{RESET}; ..data moved from {before} to {after}")
        sidecar.send_signal(signal.SIGTERM)
        detail(f"sidecar stopped on SIGTERM with exit code {sidecar.wait(timeout=10)}")
        sidecar = None

        step(6, "A bad request is denied at admission, with a message that says what to fix")
        bad = json.loads(json.dumps(pod))
        bad["metadata"]["annotations"] = {
            "ferry.dev/inject": "true",
            "ferry.dev/objects": (
                "- objectName: prod/api-key\n  objectType: secretsmanager\n  objectAlias: ../../etc/passwd\n"
            ),
        }
        denied = post_review(url, ca_file, admission_review(bad, "demo"))
        detail(f"{DIM}$ kubectl apply -f bad-pod.yaml{RESET}")
        detail(
            'Error from server: admission webhook "pods.ferry.dev" denied the request: '
            f"{denied.get('status', {}).get('message')}"
        )
        print(f"\n{GREEN}{BOLD}Done.{RESET} Install in a cluster with: kubectl apply -k manifests/ (docs/install.md)")
        return 0
    finally:
        for process in (sidecar, webhook):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
