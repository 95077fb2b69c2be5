"""What only a real API server shows (issue 8, part 3): one test per bug.

Why it exists: each of these pods passed every test that Ferry had before the
API-server suite, and each failed in a real cluster: rejected by the API server
with a message that does not name Ferry, started without its secrets, or never
started. Each is fixed now, and its test keeps it fixed; the unit tests beside
the fixes (tests/webhook) check the same rules without a control plane.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.conftest import MotoEndpoint
from tests.e2e.kubelet import make_empty_dir, run_container
from tests.support.ferrylib import (
    REPO_ROOT,
    Ferry,
    container_names,
    inline_objects,
    is_injected,
    opted_pod,
    pod,
    wait_for,
)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


def _create(ferry: Ferry, ns: str, manifest: dict[str, Any]) -> dict[str, Any] | str:
    """The stored pod, or the API server's refusal message."""
    try:
        return ferry.create_pod(ns, manifest)
    except ApiException as exc:
        return _message(exc)


# --- container-level runAsUser/runAsGroup, no pod-level securityContext ------------------


def test_container_level_identity_without_pod_security_context_can_write_its_files(
    serving_ferry: Ferry, moto_server: MotoEndpoint
) -> None:
    moto_server.reset()
    env = moto_server.env()
    moto_server.client().create_secret(Name="db", SecretString="s3cr3t-value")
    ns = serving_ferry.create_namespace("container-level")
    manifest = opted_pod("app", "db")
    del manifest["spec"]["securityContext"]
    manifest["spec"]["containers"][0]["securityContext"].update(
        {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 3000, "seccompProfile": {"type": "RuntimeDefault"}}
    )
    stored = serving_ferry.create_pod(ns, manifest)
    folder = Path(tempfile.mkdtemp(prefix="ferry-e2e-node-"))
    os.chmod(folder, 0o755)
    try:
        volume = make_empty_dir(folder / "ferry-secrets", stored)
        node_env = {**env, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        result = run_container(stored, "ferry-init", {"ferry-secrets": volume}, node_env, folder)
        assert result.returncode == 0, (folder / "ferry-init.termination-log").read_text() or result.stderr
        info = (volume / "db").stat()
        assert (info.st_uid, info.st_gid) == (1000, 3000)  # the app (uid 1000, gid 3000) can read it
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- Windows pods ----------------------------------------------------------------------


def test_windows_pod_is_denied_by_ferry_saying_its_image_is_linux(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("windows")
    manifest = opted_pod("win", "db", os={"name": "windows"})
    manifest["spec"]["securityContext"] = {}
    manifest["spec"]["containers"][0]["securityContext"] = {}
    outcome = _create(serving_ferry, ns, manifest)
    assert isinstance(outcome, str), "a Windows pod must not be injected with Linux containers"
    assert 'admission webhook "pods.ferry.dev" denied the request' in outcome
    assert "Linux" in outcome and "windows" in outcome.lower()


# --- pod-level resources -------------------------------------------------------------------


def test_pod_level_resources_account_for_ferrys_containers(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("pod-resources")
    manifest = opted_pod("sized", "db", extra={"ferry.dev/refresh-interval": "5m"})
    manifest["spec"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"},
    }
    manifest["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m", "memory": "128Mi"}}
    outcome = _create(serving_ferry, ns, manifest)
    assert not isinstance(outcome, str), outcome
    assert is_injected(outcome)


# --- LimitRange ------------------------------------------------------------------------------


def test_limit_range_is_respected_or_named(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("limitrange")
    limit_range = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "small"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "64Mi", "cpu": "250m"}}]},
    }
    serving_ferry.apply(ns, [limit_range], check=True)
    manifest = opted_pod("limited", "db")
    manifest["spec"]["containers"][0]["resources"] = {"limits": {"memory": "64Mi", "cpu": "250m"}}
    outcome = _create(serving_ferry, ns, manifest)
    if isinstance(outcome, str):
        assert 'admission webhook "pods.ferry.dev" denied the request' in outcome, outcome
        assert "LimitRange" in outcome and "small" in outcome
    else:
        assert is_injected(outcome)


# --- the ServiceAccount plugin's token mount ------------------------------------------------


def test_one_webhook_call_per_pod_and_no_api_token_in_ferrys_containers(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("sa-token")
    stored = serving_ferry.create_pod(ns, opted_pod("app", "db"))
    init = next(c for c in stored["spec"]["initContainers"] if c["name"] == "ferry-init")
    calls = [e for e in serving_ferry.admission_entries() if e.get("namespace") == ns]
    assert len(calls) == 1, [e.get("outcome") for e in calls]
    assert not [m for m in init["volumeMounts"] if m["mountPath"].startswith("/var/run/secrets/kubernetes.io")]


# --- what opts in: the webhook, its routing and the offline preview agree -------------------

# (case, namespace labels, namespace annotations, pod annotations)
OPT_IN_CASES = [
    ("pod-True", {}, {}, {"ferry.dev/inject": "True"}),
    ("pod-TRUE", {}, {}, {"ferry.dev/inject": "TRUE"}),
    ("pod-true", {}, {}, {"ferry.dev/inject": "true"}),
    ("pod-yes", {}, {}, {"ferry.dev/inject": "yes"}),
    ("ns-annotated-not-labelled", {}, {"ferry.dev/inject": "true"}, {}),
    ("ns-labelled-and-annotated", {"ferry.dev/inject": "enabled"}, {"ferry.dev/inject": "true"}, {}),
    (
        "ns-opted-pod-False",
        {"ferry.dev/inject": "enabled"},
        {"ferry.dev/inject": "true"},
        {"ferry.dev/inject": "False"},
    ),
]


def _preview(
    namespace: dict[str, Any], manifest: dict[str, Any], workdir: Path
) -> tuple[int, dict[str, Any] | None, str]:
    (workdir / "ns.yaml").write_text(yaml.safe_dump(namespace))
    (workdir / "pod.yaml").write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "AWS_"))}
    env["KUBECONFIG"] = str(workdir / "none")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "inject",
            "-f",
            str(workdir / "pod.yaml"),
            "--namespace",
            namespace["metadata"]["name"],
            "--namespace-annotations",
            str(workdir / "ns.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    return result.returncode, (yaml.safe_load(result.stdout) if result.returncode == 0 else None), result.stderr


@pytest.mark.parametrize(
    ("case", "labels", "ns_annotations", "pod_annotations"), OPT_IN_CASES, ids=[c[0] for c in OPT_IN_CASES]
)
def test_cluster_and_preview_agree_on_what_opts_in(
    serving_ferry: Ferry,
    tmp_path: Path,
    case: str,
    labels: dict[str, str],
    ns_annotations: dict[str, str],
    pod_annotations: dict[str, str],
) -> None:
    all_ns_annotations = {"ferry.dev/region": "us-east-1", **ns_annotations}
    ns = serving_ferry.create_namespace("optin", labels=labels, annotations=all_ns_annotations)
    manifest = pod(
        "app", annotations={"ferry.dev/objects": "- objectName: db\n  objectType: secretsmanager\n", **pod_annotations}
    )

    def cluster_outcome(candidate: dict[str, Any]) -> Any:
        try:
            return is_injected(serving_ferry.create_pod(ns, candidate, dry_run=True))
        except ApiException as exc:
            return _message(exc)

    # Wait until Ferry's watch cache has the namespace: this probe names no region, so only the
    # namespace's ferry.dev/region annotation lets it be injected.
    probe = pod("probe", annotations={"ferry.dev/inject": "true", "ferry.dev/objects": inline_objects("p")})
    wait_for(lambda: cluster_outcome(probe) is True, 30, what="Ferry to see the new namespace")
    in_cluster = cluster_outcome(manifest)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels, "annotations": all_ns_annotations},
    }
    code, previewed, stderr = _preview(namespace, manifest, tmp_path)
    if isinstance(in_cluster, str):  # refused by Ferry in the cluster: the preview refuses it too
        assert 'admission webhook "pods.ferry.dev" denied the request' in in_cluster
        assert code == 1 and in_cluster.split("denied the request: ", 1)[1] in stderr, (in_cluster, stderr)
        assert case == "pod-yes"
        return
    assert code == 0, stderr
    assert previewed is not None
    assert is_injected(previewed) == in_cluster, (
        f"cluster injects: {in_cluster}; preview injects: {is_injected(previewed)}"
    )
    expected = case in ("pod-True", "pod-TRUE", "pod-true", "ns-labelled-and-annotated")
    assert in_cluster is expected, f"{case}: the cluster {'did not inject' if expected else 'injected'}"


# --- a user-set status annotation ------------------------------------------------------------


def test_user_set_status_never_lets_a_pod_start_without_secrets(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("status")
    manifest = opted_pod("app", "db", extra={"ferry.dev/status": "injected"})
    outcome = _create(serving_ferry, ns, manifest)
    if isinstance(outcome, str):
        assert 'admission webhook "pods.ferry.dev" denied the request' in outcome
    else:
        assert "ferry-init" in container_names(outcome)[0], "started without its secrets"


# --- found by this suite ---------------------------------------------------------------------


def test_pod_naming_secrets_without_opting_in_is_warned(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("no-opt-in")
    manifest = pod("forgot", annotations={"ferry.dev/objects": inline_objects("db"), "ferry.dev/region": "us-east-1"})
    result = serving_ferry.apply(ns, [manifest], check=True)
    assert "starts without secrets" in result.stderr, "kubectl showed no warning"
