"""`python -m devcluster up` (or `make cluster`): a local control plane with Ferry installed by its Helm chart.

Why it exists: a newcomer wants to try Ferry with kubectl and helm before any
cloud account is involved. This starts etcd, kube-apiserver and
kube-controller-manager on loopback (devcluster.controlplane), runs
`helm install` of charts/ferry exactly as docs/install.md says, serves the
chart's webhook as a local process behind the chart's Service (there is no
kubelet, as in tests/e2e/test_helm.py), registers a stand-in for EKS's identity
webhook (devcluster.eksidentity), prints a KUBECONFIG, and waits for Ctrl-C.
Pods are created and injected, and stay Pending: nothing runs them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.controlplane import ControlPlane, ControlPlaneError, start_control_plane
from devcluster.eksidentity import IdentityWebhook
from devcluster.kubeletless import WebhookReplica

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "ferry"
NAMESPACE = "ferry-system"
RELEASE = "ferry"
BINARIES_HINT = (
    "KUBEBUILDER_ASSETS must name a folder holding etcd, kube-apiserver and kube-controller-manager "
    "(docs/local-cluster.md says how to get them: setup-envtest gives etcd and kube-apiserver, the Kubernetes "
    "release's server binaries give kube-controller-manager). For a cluster that runs pods, use kind or minikube "
    "and docs/install.md."
)


class UpError(Exception):
    """A step failed; the message says which and how to fix it."""


def tool(name: str) -> str:
    """The venv's copy first (make puts helm and kubectl beside python), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UpError(f"{name} is not installed: `make .venv/.installed` puts helm v4 and kubectl v1.36 in .venv/bin")
    return found


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise UpError(f"timed out after {timeout:.0f}s waiting for {what}")


def helm(plane: ControlPlane, *args: str) -> str:
    result = subprocess.run(
        [tool("helm"), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise UpError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def install_chart(plane: ControlPlane, extra: list[str]) -> None:
    """`helm install` as docs/install.md says, with the SecretProviderClass CRD."""
    helm(
        plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--set", "secretProviderClassCRD.install=true", *extra,
    )  # fmt: skip


def up(assets: str, workdir: Path, helm_args: list[str], ready_file: Path | None) -> int:
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    tool("kubectl")
    with contextlib.ExitStack() as stack:
        print(f"starting etcd, kube-apiserver and kube-controller-manager from {assets} ...", flush=True)
        plane = start_control_plane(assets, workdir)
        stack.callback(plane.stop)
        print(f"$ helm install {RELEASE} charts/ferry --namespace {NAMESPACE} --create-namespace "
              "--set secretProviderClassCRD.install=true", flush=True)  # fmt: skip
        replica = WebhookReplica(plane, NAMESPACE)
        replica.start()
        stack.callback(replica.stop)
        install_chart(plane, helm_args)
        if not replica.wait_serving(120):
            raise UpError(f"the webhook did not start serving; its log: {replica.log_path}")
        log_path = replica.log_path
        identity = IdentityWebhook(
            lambda ns, name: _get_json(plane, "serviceaccount", name, ns),
        )
        stack.callback(identity.close)
        plane.kubectl("apply", "-f", "-", input=json.dumps(identity.configuration()))
        print(
            f"\nFerry is installed (Helm release {RELEASE} in {NAMESPACE}); its webhook runs here as a local process\n"
            f"(log: {log_path}). A stand-in for EKS's identity webhook adds the role named by a ServiceAccount's\n"
            "eks.amazonaws.com/role-arn annotation. There is no kubelet: pods are admitted and injected, then\n"
            "stay Pending.\n\n"
            f"    export KUBECONFIG={plane.kubeconfig}\n\n"
            "then follow docs/local-cluster.md. Ctrl-C stops everything.",
            flush=True,
        )
        if ready_file is not None:
            ready_file.write_text(plane.kubeconfig)
        _wait_for_signal()
    return 0


def _get_json(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    found = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(found.stdout)) if found.returncode == 0 else None


def _wait_for_signal() -> None:
    stopped: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: stopped.append(number))
    while not stopped:
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a control plane with Ferry's chart installed; print a KUBECONFIG")
    start.add_argument(
        "--assets",
        default=os.environ.get("KUBEBUILDER_ASSETS", ""),
        help="folder of the binaries ($KUBEBUILDER_ASSETS)",
    )
    start.add_argument("--workdir", default="", help="where the cluster's files go (default: a new temporary folder)")
    start.add_argument("--ready-file", default="", help="write the KUBECONFIG path here once everything is up")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a chart value (repeatable)")
    args = parser.parse_args(argv)
    if not args.assets:
        print(f"error: {BINARIES_HINT}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ferry-devcluster-"))
    helm_args = [part for value in args.set for part in ("--set", value)]
    try:
        return up(args.assets, workdir, helm_args, Path(args.ready_file) if args.ready_file else None)
    except (UpError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
