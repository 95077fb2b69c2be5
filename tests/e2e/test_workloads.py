"""Deployments and Jobs turned into pods by the real kube-controller-manager.

Why it exists: users rarely create bare pods. The ReplicaSet and Job
controllers create them, so a denial shows up nowhere but in the owner's
events, and a sidecar that keeps running would keep a Job from finishing. These
tests check what the controllers' pods look like after Ferry, and where a
denial is visible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import yaml

from tests.support.ferrylib import REPO_ROOT, Ferry, opted_pod, wait_for


def _template(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    manifest = opted_pod(name, "db", extra=annotations)
    return {
        "metadata": {"labels": {"app": name}, "annotations": manifest["metadata"]["annotations"]},
        "spec": manifest["spec"],
    }


def deployment(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": _template(name, annotations)},
    }


def job(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    template = _template(name, annotations)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": template},
    }


def _pods(ferry: Ferry, namespace: str, selector: str) -> list[dict[str, Any]]:
    result = ferry.plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    return list(json.loads(result.stdout)["items"])


def _sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["initContainers"] if c["name"] == "ferry-sidecar")


def test_deployment_pods_get_a_native_sidecar(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("deploy")
    serving_ferry.apply(ns, [deployment("web", {"ferry.dev/refresh-interval": "5m"})], check=True)
    pods = wait_for(lambda: _pods(serving_ferry, ns, "app=web"), 90, what="the Deployment's pod")
    spec = pods[0]["spec"]
    assert [c["name"] for c in spec["initContainers"]][:2] == ["ferry-init", "ferry-sidecar"]
    assert _sidecar(pods[0])["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_job_pods_get_a_native_sidecar_so_the_job_can_finish(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("job")
    serving_ferry.apply(ns, [job("batch", {"ferry.dev/refresh-interval": "1m"})], check=True)
    pods = wait_for(lambda: _pods(serving_ferry, ns, "job-name=batch"), 90, what="the Job's pod")
    assert _sidecar(pods[0])["restartPolicy"] == "Always"
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"


def _events(ferry: Ferry, namespace: str, kind: str, reason: str) -> list[dict[str, Any]]:
    result = ferry.plane.kubectl("get", "events", "-n", namespace, "-o", "json")
    return [
        event
        for event in json.loads(result.stdout)["items"]
        if event["involvedObject"]["kind"] == kind and event["reason"] == reason
    ]


def test_denied_deployment_shows_ferrys_message_in_the_replicaset_events(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("denied")
    bad = deployment("broken", {"ferry.dev/objects": "- objectName: s\n  objectType: nope\n"})
    result = serving_ferry.apply(ns, [bad], check=True)
    assert "created" in result.stdout  # the Deployment itself is fine; its pods are not
    events = wait_for(lambda: _events(serving_ferry, ns, "ReplicaSet", "FailedCreate"), 90, what="a FailedCreate event")
    message = events[0]["message"]
    assert 'admission webhook "pods.ferry.dev" denied the request' in message
    assert "objectType" in message and "nope" in message
    assert _pods(serving_ferry, ns, "app=broken") == []


def test_denied_job_shows_ferrys_message_in_the_job_events(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("denied-job")
    serving_ferry.apply(ns, [job("broken", {"ferry.dev/refresh-interval": "1s"})], check=True)
    events = wait_for(lambda: _events(serving_ferry, ns, "Job", "FailedCreate"), 90, what="a FailedCreate event")
    assert "floor" in events[0]["message"]


def test_a_committed_preview_is_refused_with_the_fix_never_skipped(serving_ferry: Ferry) -> None:
    """`python -m webhook inject` output applied to the cluster is refused, saying to apply the original.

    Were it admitted as already injected, a later change to the class, annotations or Ferry's image would
    never reach its pods (and its automountServiceAccountToken: false would take the app's token away).
    """
    ns = serving_ferry.create_namespace("preview")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "inject", "-f", "-", "--namespace", ns],
        input=yaml.safe_dump(deployment("gitops", {"ferry.dev/refresh-interval": "5m"})),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    serving_ferry.apply(ns, [yaml.safe_load(result.stdout)], check=True)
    events = wait_for(lambda: _events(serving_ferry, ns, "ReplicaSet", "FailedCreate"), 90, what="a FailedCreate")
    assert "apply the original manifest" in events[0]["message"]
    assert _pods(serving_ferry, ns, "app=gitops") == []
    # The original manifest is injected, once.
    serving_ferry.apply(ns, [deployment("original", {"ferry.dev/refresh-interval": "5m"})], check=True)
    pods = wait_for(lambda: _pods(serving_ferry, ns, "app=original"), 90, what="the Deployment's pod")
    names = [c["name"] for c in pods[0]["spec"]["initContainers"]]
    assert names.count("ferry-init") == 1 and names.count("ferry-sidecar") == 1, names
