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
from webhook.policy.sizing import FARGATE_SCHEDULER, describe_size, fargate_size, pod_request

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


def test_ferry_never_moves_a_fargate_pod_to_a_bigger_size(serving_ferry: Ferry, fargate_namespace: str) -> None:
    manifest = _app("small", "250m", "512Mi")
    wait_for(
        lambda: (
            serving_ferry.create_pod(fargate_namespace, manifest, dry_run=True)["spec"].get("schedulerName")
            == FARGATE_SCHEDULER
        ),
        30,
        what="the Fargate stand-in to be called",
    )
    stored = serving_ferry.create_pod(fargate_namespace, manifest)
    assert stored["spec"]["schedulerName"] == FARGATE_SCHEDULER
    # 250m + Ferry's configured 10m would be 0.5 vCPU; the sidecar's CPU request goes to the floor (0) instead.
    assert _size(stored) == "0.25 vCPU / 1 GB"
    for name in ("ferry-init", "ferry-sidecar"):
        assert _requests(stored, name) == {"cpu": "0", "memory": "32Mi"}  # memory is never lowered (the default)


def test_a_pod_that_cannot_fit_gets_a_warning_with_both_sizes(serving_ferry: Ferry, fargate_namespace: str) -> None:
    manifest = _app("full", "250m", "1792Mi")  # fills 0.25 vCPU / 2 GB with Fargate's 256Mi
    wait_for(
        lambda: (
            serving_ferry.create_pod(fargate_namespace, manifest, dry_run=True)["spec"].get("schedulerName")
            == FARGATE_SCHEDULER
        ),
        30,
        what="the Fargate stand-in to be called",
    )
    result = serving_ferry.plane.kubectl(
        "create", "-n", fargate_namespace, "-f", "-", "-o", "json", input=json.dumps(manifest)
    )
    assert "0.25 vCPU / 2 GB without Ferry" in result.stderr and "0.5 vCPU / 3 GB" in result.stderr, result.stderr
    assert _size(json.loads(result.stdout)) == "0.5 vCPU / 3 GB"


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
