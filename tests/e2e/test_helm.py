"""`helm install`, `helm upgrade` and `helm uninstall` of the chart against the real API server.

Why it exists: `helm template` proves the objects are valid one by one; only a
real install shows that Helm can create them in order in a fresh namespace,
that the webhook it installs admits pods through the API server, that an
upgrade changes what it should while keeping what the webhook wrote itself
(the caBundle), and that an uninstall leaves no webhook configuration behind to
block pods. The chart gets a control plane of its own: the session's Ferry is
installed from the same object names with kustomize, and Helm rightly refuses
to take over objects it did not create.

As in the rest of this suite, the Deployment's pods stay Pending (no kubelet):
its one replica runs as a local process with the Deployment's own env, and the
egress proxy routes the chart's Service to it, so the chart's production
`clientConfig.service` is what the API server calls.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devcluster.controlplane import ControlPlane, start_control_plane
from devcluster.net import free_port
from tests.chart.rendering import CHART, tool
from tests.support.ferrylib import Ferry, is_injected, new_workdir, opted_pod, wait_for

NAMESPACE = "ferry-system"
RELEASE = "ferry"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    assets = os.environ["KUBEBUILDER_ASSETS"]  # this module is only collected when it is set
    control_plane = start_control_plane(assets)
    try:
        yield control_plane
    finally:
        control_plane.stop()


def helm(plane: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool("helm"), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result


def released_objects(plane: ControlPlane) -> list[dict[str, Any]]:
    manifest = helm(plane, "get", "manifest", RELEASE, "--namespace", NAMESPACE).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def webhook_configuration(plane: ControlPlane) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", "mutatingwebhookconfiguration", "ferry", "-o", "json").stdout))


def serve_release(plane: ControlPlane) -> Ferry:
    """One replica of the released Deployment, as a local process behind the released Service."""
    ferry = Ferry(plane, new_workdir(), namespace=NAMESPACE)
    ferry.objects = released_objects(plane)
    service = json.loads(plane.kubectl("get", "service", "ferry-webhook", "-n", NAMESPACE, "-o", "json").stdout)
    ferry.cluster_ip = service["spec"]["clusterIP"]
    wait_for(
        lambda: plane.kubectl("get", "sa", "ferry-webhook", "-n", NAMESPACE, check=False).returncode == 0,
        what="the chart's ServiceAccount",
    )
    # One replica on this machine: its metrics listener must not collide with anything else here.
    ferry.extra_env = {"FERRY_METRICS_PORT": str(free_port())}
    ferry.refresh_token()
    ferry.start_replica()
    return ferry


def admitted(ferry: Ferry, namespace: str, name: str) -> dict[str, Any]:
    """Create an opted-in pod once the webhook's caches have seen the namespace (dry runs until then)."""
    from kubernetes.client.exceptions import ApiException

    def injected_dry_run() -> bool:
        try:
            return is_injected(ferry.create_pod(namespace, opted_pod(name), dry_run=True))
        except ApiException:
            return False

    wait_for(injected_dry_run, 60, what="the chart's webhook to inject a dry-run pod")
    return ferry.create_pod(namespace, opted_pod(name))


def test_install_admit_upgrade_uninstall(plane: ControlPlane) -> None:
    # --- install, exactly as docs/install.md says -----------------------------------------------------
    helm(
        plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--set", "secretProviderClassCRD.install=true",
    )  # fmt: skip
    # Helm 4 creates the namespace for the release, and the chart's Namespace object labels it.
    labels = json.loads(plane.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    status = json.loads(helm(plane, "status", RELEASE, "--namespace", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    plane.kubectl("wait", "--for=condition=Established", "crd/secretproviderclasses.secrets-store.csi.x-k8s.io")
    before = webhook_configuration(plane)
    assert [hook["name"] for hook in before["webhooks"]] == [
        "pods.ferry.dev",
        "warn.pods.ferry.dev",
        "ns.pods.ferry.dev",
    ]
    assert all(hook["timeoutSeconds"] == 5 for hook in before["webhooks"])

    ferry = serve_release(plane)
    try:
        # --- a pod admitted through the installed webhook -------------------------------------------
        namespace = ferry.create_namespace("helm-app")
        stored = admitted(ferry, namespace, "first")
        assert stored["metadata"]["annotations"]["ferry.dev/status"] == "injected"
        ca_bundle = {hook["clientConfig"].get("caBundle") for hook in webhook_configuration(plane)["webhooks"]}
        assert len(ca_bundle) == 1 and None not in ca_bundle, "the webhook patched its CA into every entry"

        # --- upgrade to a changed value -------------------------------------------------------------
        helm(
            plane, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
            "--set", "webhook.timeoutSeconds=7", "--set", "replicaCount=3",
        )  # fmt: skip
        after = webhook_configuration(plane)
        assert all(hook["timeoutSeconds"] == 7 for hook in after["webhooks"])
        assert {hook["clientConfig"].get("caBundle") for hook in after["webhooks"]} == ca_bundle, (
            "helm upgrade keeps the caBundle the webhook wrote (the chart never renders that field)"
        )
        deployment = json.loads(
            plane.kubectl("get", "deployment", "ferry-webhook", "-n", NAMESPACE, "-o", "json").stdout
        )
        assert deployment["spec"]["replicas"] == 3
        history = json.loads(helm(plane, "history", RELEASE, "--namespace", NAMESPACE, "-o", "json").stdout)
        assert [entry["revision"] for entry in history] == [1, 2]
        assert is_injected(admitted(ferry, namespace, "after-upgrade")), "still admitting after the upgrade"

        # A typo'd value is refused before anything changes.
        typo = helm(
            plane, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
            "--set", "webhook.timeoutSecond=9", check=False,
        )  # fmt: skip
        assert typo.returncode != 0 and "timeoutSecond" in typo.stderr
        assert len(json.loads(helm(plane, "history", RELEASE, "--namespace", NAMESPACE, "-o", "json").stdout)) == 2
    finally:
        ferry.stop_all()

    # --- uninstall: no webhook configuration is left to block pods ------------------------------------
    helm(plane, "uninstall", RELEASE, "--namespace", NAMESPACE)
    configurations = json.loads(plane.kubectl("get", "mutatingwebhookconfigurations", "-o", "json").stdout)
    assert [c["metadata"]["name"] for c in configurations["items"]] == []
    assert plane.kubectl("get", "clusterrole", "ferry-webhook", check=False).returncode != 0
    # The SecretProviderClass CRD stays (helm.sh/resource-policy: keep): deleting it would delete every SPC.
    plane.kubectl("get", "crd", "secretproviderclasses.secrets-store.csi.x-k8s.io")
    # With Ferry gone, an opted-in pod is created untouched instead of being refused.
    stored = ferry.create_pod(namespace, opted_pod("after-uninstall"))
    assert not is_injected(stored)

    # Helm's namespace goes with the release (and with it the webhook's own TLS Secret).
    wait_for(
        lambda: plane.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0,
        120,
        what="the release namespace to be deleted",
    )

    # --- the documented order (webhook configuration first) also uninstalls cleanly, after a reinstall ---
    helm(plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace")
    plane.kubectl("delete", "mutatingwebhookconfiguration", "ferry")
    helm(plane, "uninstall", RELEASE, "--namespace", NAMESPACE)
    assert helm(plane, "status", RELEASE, "--namespace", NAMESPACE, check=False).returncode != 0
    assert plane.kubectl("get", "clusterrolebinding", "ferry-webhook", check=False).returncode != 0
