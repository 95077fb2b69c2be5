"""Ferry on Fargate and beside sidecar-stripping webhooks, through the real API server's reinvocation.

Why it exists: the Fargate profile webhook and other mutating webhooks run
before or after Ferry depending on their configuration names. What the stored
pod requests (Fargate sizes the pod from it) and whether a pod with a broken
sidecar is refused can only be seen through the API server.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.identitywebhooks import MutatingServer
from tests.e2e.platformwebhooks import bind_to_fargate, strip_restart_policy
from tests.support.ferrylib import Ferry, app_container, opted_pod, wait_for
from webhook.policy.platform import FARGATE_SCHEDULER, describe_size
from webhook.policy.sizing import fargate_size, pod_request

# The EKS Fargate webhook's configuration is named 0500-amazon-eks-fargate-mutation...: before "ferry".
ORDERS = {"before": "0500-e2e-{}", "after": "zzz-e2e-{}"}


def _stand_in(ferry: Ferry, kind: str, order: str, mutate: Callable[[dict[str, Any]], None]) -> Iterator[str]:
    server = MutatingServer(mutate)
    config_name = ORDERS[order].format(kind)
    label = ("e2e.ferry.dev/platform", f"{kind}-{order}")
    ns = ferry.create_namespace(f"{kind}-{order}", labels=dict([label]))
    ferry.plane.kubectl("apply", "-f", "-", input=json.dumps(server.configuration(config_name, label)))
    try:
        yield ns
    finally:
        ferry.plane.kubectl("delete", "mutatingwebhookconfiguration", config_name, check=False)
        server.close()


@pytest.fixture(params=sorted(ORDERS))
def fargate_namespace(request: pytest.FixtureRequest, serving_ferry: Ferry) -> Iterator[str]:
    yield from _stand_in(serving_ferry, "fargate", request.param, bind_to_fargate)


@pytest.fixture(params=sorted(ORDERS))
def stripping_namespace(request: pytest.FixtureRequest, serving_ferry: Ferry) -> Iterator[str]:
    yield from _stand_in(serving_ferry, "strip", request.param, strip_restart_policy)


def _app(name: str, cpu: str, memory: str) -> dict[str, Any]:
    container = app_container(resources={"requests": {"cpu": cpu, "memory": memory}})
    return opted_pod(name, "db", extra={"ferry.dev/refresh-interval": "5m"}, containers=[container])


def _size(stored: dict[str, Any]) -> str:
    spec = stored["spec"]
    return describe_size(fargate_size(pod_request(spec, "cpu"), pod_request(spec, "memory")))


def _requests(stored: dict[str, Any], name: str) -> dict[str, str]:
    container = next(c for c in stored["spec"]["initContainers"] if c["name"] == name)
    return dict(container["resources"]["requests"])


def _until_fargate_schedules(ferry: Ferry, namespace: str, manifest: dict[str, Any]) -> None:
    """Wait until a dry-run create of `manifest` comes back with the Fargate stand-in's scheduler."""
    wait_for(
        lambda: ferry.create_pod(namespace, manifest, dry_run=True)["spec"].get("schedulerName") == FARGATE_SCHEDULER,
        30,
        what="the Fargate stand-in to be called",
    )


def test_ferry_never_moves_a_fargate_pod_to_a_bigger_size(serving_ferry: Ferry, fargate_namespace: str) -> None:
    manifest = _app("small", "250m", "512Mi")
    _until_fargate_schedules(serving_ferry, fargate_namespace, manifest)
    stored = serving_ferry.create_pod(fargate_namespace, manifest)
    assert stored["spec"]["schedulerName"] == FARGATE_SCHEDULER
    # 250m + Ferry's configured 10m would be 0.5 vCPU; the sidecar's CPU request goes to the floor (0) instead.
    assert _size(stored) == "0.25 vCPU / 1 GB"
    for name in ("ferry-init", "ferry-sidecar"):
        assert _requests(stored, name) == {"cpu": "0", "memory": "32Mi"}  # memory is never lowered (the default)


def test_a_pod_that_cannot_fit_gets_a_warning_with_both_sizes(serving_ferry: Ferry, fargate_namespace: str) -> None:
    manifest = _app("full", "250m", "1792Mi")  # fills 0.25 vCPU / 2 GB with Fargate's 256Mi
    _until_fargate_schedules(serving_ferry, fargate_namespace, manifest)
    result = serving_ferry.plane.kubectl(
        "create", "-n", fargate_namespace, "-f", "-", "-o", "json", input=json.dumps(manifest)
    )
    assert "0.25 vCPU / 2 GB without Ferry" in result.stderr and "0.5 vCPU / 3 GB" in result.stderr, result.stderr
    assert _size(json.loads(result.stdout)) == "0.5 vCPU / 3 GB"


def _create(ferry: Ferry, namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The stored pod and kubectl's stderr (where admission warnings show); fails if the pod is refused."""
    result = ferry.plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(manifest), check=False
    )
    assert result.returncode == 0, f"the API server refused the pod Ferry admitted: {result.stderr}"
    return json.loads(result.stdout), result.stderr


def _own(stored: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in stored["spec"]["initContainers"] if c["name"] == name)


def test_pods_with_pod_level_resources_are_admitted_and_keep_their_figures(serving_ferry: Ferry) -> None:
    ns = serving_ferry.create_namespace("pod-level")
    refresh = {"ferry.dev/refresh-interval": "5m"}

    # Guaranteed at pod level, and the app already requests all of it: no room for Ferry's sidecar.
    full = {"cpu": "250m", "memory": "256Mi"}
    manifest = opted_pod("full", "db", extra=refresh, containers=[app_container(resources={"requests": full})])
    manifest["spec"]["resources"] = {"requests": full, "limits": full}
    stored, warnings = _create(serving_ferry, ns, manifest)
    assert stored["status"]["qosClass"] == "Guaranteed", "Ferry must not change the pod's QoS class"
    assert _own(stored, "ferry-sidecar")["resources"]["requests"] == {"cpu": "0", "memory": "32Mi"}
    # CPU fits at the floor (0); memory is raised by the sidecar's 32Mi only, limits with it.
    assert stored["spec"]["resources"] == {
        "requests": {"cpu": "250m", "memory": "288Mi"},
        "limits": {"cpu": "250m", "memory": "288Mi"},
    }
    assert "spec.resources.requests.memory from 256Mi to 288Mi" in warnings, warnings

    # Only pod-level limits: the API server defaults the pod-level requests (to the app's total) before Ferry.
    app = {"cpu": "100m", "memory": "128Mi"}
    manifest = opted_pod("limits", "db", extra=refresh, containers=[app_container(resources={"requests": app})])
    manifest["spec"]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    stored, _ = _create(serving_ferry, ns, manifest)
    assert stored["spec"]["resources"]["requests"] == {"cpu": "100m", "memory": "160Mi"}
    assert stored["spec"]["resources"]["limits"] == {"cpu": "1500m", "memory": "1088Mi"}  # + the sidecar's limits

    # Room in the pod-level budget (the app's containers request nothing): nothing changes but Ferry's containers.
    manifest = opted_pod("roomy", "db", extra=refresh)
    manifest["spec"]["resources"] = {"requests": {"cpu": "500m", "memory": "512Mi"}}
    stored, warnings = _create(serving_ferry, ns, manifest)
    assert stored["spec"]["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}
    assert _own(stored, "ferry-sidecar")["resources"]["requests"] == {"cpu": "10m", "memory": "32Mi"}
    assert "pod-level" not in warnings

    # The init container alone, in a pod-level budget smaller than it.
    manifest = opted_pod("tiny", "db")
    manifest["spec"]["resources"] = {"requests": {"cpu": "5m", "memory": "16Mi"}}
    stored, _ = _create(serving_ferry, ns, manifest)
    assert _own(stored, "ferry-init")["resources"]["requests"] == {"cpu": "5m", "memory": "32Mi"}
    assert stored["spec"]["resources"]["requests"] == {"cpu": "5m", "memory": "32Mi"}


def test_pod_level_resources_on_fargate_keep_the_size(serving_ferry: Ferry, fargate_namespace: str) -> None:
    manifest = _app("pod-level", "250m", "512Mi")
    manifest["spec"]["resources"] = {"requests": {"cpu": "1", "memory": "2Gi"}}
    _until_fargate_schedules(serving_ferry, fargate_namespace, manifest)
    stored, warnings = _create(serving_ferry, fargate_namespace, manifest)
    assert stored["spec"]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert _size(stored) == "0.25 vCPU / 1 GB", "the size Fargate documents (container requests) is kept"
    assert _requests(stored, "ferry-sidecar") == {"cpu": "0", "memory": "32Mi"}
    assert "Warning" not in warnings, warnings


def test_a_stripped_native_sidecar_is_refused_and_the_job_says_why(
    serving_ferry: Ferry, stripping_namespace: str
) -> None:
    import kubernetes.client

    manifest = _app("batch", "100m", "128Mi")
    manifest["spec"]["restartPolicy"] = "Never"

    def refused() -> str:
        try:
            serving_ferry.create_pod(stripping_namespace, manifest, dry_run=True)
        except kubernetes.client.ApiException as exc:
            return str(exc.body)
        return ""

    message = wait_for(refused, 30, what="the stripping stand-in to be called")
    assert "restartPolicy: Always" in message and "Fix:" in message, message

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {"backoffLimit": 0, "template": {"metadata": manifest["metadata"], "spec": manifest["spec"]}},
    }
    serving_ferry.apply(stripping_namespace, [job], check=True)

    def failed_create() -> list[str]:
        events = json.loads(
            serving_ferry.plane.kubectl("get", "events", "-n", stripping_namespace, "-o", "json").stdout
        )["items"]
        return [e["message"] for e in events if e["involvedObject"]["kind"] == "Job" and e["reason"] == "FailedCreate"]

    assert "restartPolicy: Always" in wait_for(failed_create, 90, what="the Job's FailedCreate event")[0]
    pods = json.loads(serving_ferry.plane.kubectl("get", "pods", "-n", stripping_namespace, "-o", "json").stdout)
    assert pods["items"] == [], "no pod that could never finish was created"


def test_ferrys_request_arithmetic_is_the_api_servers(serving_ferry: Ferry) -> None:
    """pod_request (which the pod-level and Fargate fitting rest on) against the API server's own aggregate.

    A pod-level request of 1m makes the API server refuse each pod and state its aggregate of the containers'
    requests; random pods mix init containers, native sidecars in any order, and limits-only containers.
    """
    import random
    import re

    ns = serving_ferry.create_namespace("arith")
    shuffle = random.Random(20261206)
    for index in range(20):
        init_containers = []
        for i in range(shuffle.randint(0, 5)):
            container: dict[str, Any] = {"name": f"i{i}", "image": "x"}
            if shuffle.random() < 0.5:
                container["restartPolicy"] = "Always"
            kind = shuffle.choice(["requests", "limits", "none"])
            if kind != "none":
                container["resources"] = {kind: {"cpu": f"{shuffle.randint(1, 400)}m"}}
            init_containers.append(container)
        containers = [
            {"name": f"c{i}", "image": "x", "resources": {"requests": {"cpu": f"{shuffle.randint(1, 400)}m"}}}
            for i in range(shuffle.randint(1, 4))
        ]
        spec = {
            "initContainers": init_containers,
            "containers": containers,
            "resources": {"requests": {"cpu": "1m"}, "limits": {"cpu": "100"}},
        }
        manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"arith-{index}"}, "spec": spec}
        result = serving_ferry.plane.kubectl(
            "create", "--dry-run=server", "-n", ns, "-f", "-", input=json.dumps(manifest), check=False
        )
        match = re.search(r"aggregate container requests of (\d+)m", result.stderr)
        assert match is not None, result.stderr
        assert pod_request(spec, "cpu") == int(match.group(1)), (spec, result.stderr)
