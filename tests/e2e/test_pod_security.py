"""Pod Security "restricted", enforced by the real PodSecurity admission plugin.

Why it exists: Ferry promises that the containers Ferry injects meet the
restricted profile. The hand-written checker in tests/reliability/pss.py
judges that in fast tests; here the API server's own plugin judges the stored
pods, and every example the checker is tested with goes through the plugin too,
so the two can never silently disagree.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.reliability.test_pss import BAD_EXAMPLES, _pod_seccomp, good_pod
from tests.support import pss
from tests.support.ferrylib import Ferry, app_container, is_injected, opted_pod

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
_NS: dict[str, str] = {}


def _restricted_namespace(ferry: Ferry) -> str:
    if "ns" not in _NS:
        _NS["ns"] = ferry.create_namespace("restricted", labels=RESTRICTED)
    return _NS["ns"]


def _variants() -> dict[str, dict[str, Any]]:
    plain = opted_pod("plain", "db")
    sidecar = opted_pod("sidecar", "db", extra={"ferry.dev/refresh-interval": "1m"})
    fs_group = opted_pod("fsgroup", "db")
    fs_group["spec"]["securityContext"].update({"fsGroup": 2000, "runAsGroup": 3000})
    two = opted_pod("two", "db", "api")
    two["spec"]["containers"] = [app_container("web"), app_container("worker")]
    inherits = opted_pod("container-level", "db")
    inherits["spec"]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    inherits["spec"]["containers"][0]["securityContext"].update({"runAsNonRoot": True, "runAsUser": 1234})
    return {"plain": plain, "sidecar": sidecar, "fsgroup": fs_group, "two-containers": two, "container-level": inherits}


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_restricted_namespace_accepts_every_injected_pod(serving_ferry: Ferry, variant: str) -> None:
    ns = _restricted_namespace(serving_ferry)
    stored = serving_ferry.create_pod(ns, _variants()[variant])
    assert is_injected(stored)
    # The hand-written checker agrees with the API server on the stored pod.
    assert pss.check_pod(stored) == []


def _admitted(ferry: Ferry, ns: str, pod: dict[str, Any]) -> tuple[bool, str]:
    try:
        ferry.create_pod(ns, pod, dry_run=True)
    except ApiException as exc:
        return False, str(exc.body)
    return True, ""


def test_checker_and_api_server_agree_on_the_compliant_example(serving_ferry: Ferry) -> None:
    pod = good_pod()
    _pod_seccomp(pod)
    assert pss.check_pod(pod) == []
    assert _admitted(serving_ferry, _restricted_namespace(serving_ferry), pod) == (True, "")


# Examples whose pod is not even valid: the API server's field validation refuses them before
# PodSecurity runs (e.g. hostProcess without hostNetwork). Every other example must be refused by
# PodSecurity itself, so the checker and the plugin are compared control by control.
INVALID_BEFORE_POD_SECURITY = {
    "Host Namespaces-spec.hostNetwork",  # the example's safe sysctl is not allowed with hostNetwork
    "HostProcess-windowsOptions.hostProcess",
    "HostProcess-spec.securityContext.windowsOptions",
    "Privileged Containers-privileged",  # privileged with allowPrivilegeEscalation: false
    "AppArmor-appArmorProfile",  # the field and the example's annotation disagree
    "/proc Mount Type-procMount",  # Unmasked needs hostUsers: false
}
EXAMPLE_IDS = [f"{c}-{f}" for c, f, _ in BAD_EXAMPLES]


@pytest.mark.parametrize(
    ("example", "mutate"), [(i, m) for i, (_, _, m) in zip(EXAMPLE_IDS, BAD_EXAMPLES, strict=True)], ids=EXAMPLE_IDS
)
def test_checker_and_api_server_agree_on_each_violation(serving_ferry: Ferry, example: str, mutate: Any) -> None:
    pod = copy.deepcopy(good_pod())
    _pod_seccomp(pod)
    mutate(pod)
    assert pss.check_pod(pod), f"the checker misses {example}"
    admitted, message = _admitted(serving_ferry, _restricted_namespace(serving_ferry), pod)
    assert not admitted, f"the API server admits {example} but the checker flags it"
    if example in INVALID_BEFORE_POD_SECURITY:
        assert '"reason":"Invalid"' in message, message
    else:
        assert 'violates PodSecurity \\"restricted:latest\\"' in message, message


def test_ferrys_own_webhook_pod_is_admitted_in_its_restricted_namespace(serving_ferry: Ferry) -> None:
    """The manifests' Deployment template, as a pod in ferry-system (enforce: restricted), dry run."""
    deployment = next(doc for doc in serving_ferry.objects if doc["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    webhook_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ferry-webhook-probe", **template["metadata"]},
        "spec": template["spec"],
    }
    labels = json.loads(serving_ferry.plane.kubectl("get", "ns", serving_ferry.namespace, "-o", "json").stdout)[
        "metadata"
    ]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert _admitted(serving_ferry, serving_ferry.namespace, webhook_pod) == (True, "")
    assert pss.check_pod(webhook_pod) == []
