"""The webhook Deployment, Service and PDB: hardened, probed, spread, restricted."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tests.manifests.render import (
    NAMESPACE,
    NAMESPACE_OPT_IN_LABEL,
    WEBHOOK_NAME,
    env_of,
    only,
    restricted_violations,
    webhook_container,
    webhook_deployment,
)

# --- Deployment, Service, PDB --------------------------------------------------------


# The Pod Security Standard "restricted" profile (baseline + restricted controls),
# written from the published profile; returns one line per violation.
def test_restricted_check_catches_bad_pods(base: list[dict[str, Any]]) -> None:
    good = webhook_deployment(base)["spec"]["template"]["spec"]
    assert restricted_violations(good) == []
    cases: list[Callable[[dict[str, Any]], None]] = [
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=[]),
        lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
        lambda p: p["containers"][0]["securityContext"].update(runAsUser=0),
        lambda p: p["containers"][0]["securityContext"].update(privileged=True),
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        lambda p: p["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        lambda p: p.update(hostNetwork=True),
        lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    ]
    for mutate in cases:
        bad = copy.deepcopy(good)
        mutate(bad)
        assert restricted_violations(bad), f"not caught: {bad}"


def test_webhook_deployment_is_hardened(base: list[dict[str, Any]]) -> None:
    deployment = webhook_deployment(base)
    pod = deployment["spec"]["template"]["spec"]
    container = webhook_container(base)
    assert restricted_violations(pod) == []
    assert deployment["spec"]["replicas"] == 2
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    assert container["image"] == "ghcr.io/ferry-dev/ferry-webhook:0.1.0"
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8443"]
    assert "command" not in container  # the image's ENTRYPOINT (python -m webhook) runs
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp]


def test_webhook_probes(base: list[dict[str, Any]]) -> None:
    container = webhook_container(base)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["scheme"] == "HTTPS"
        assert ports.get(get["port"], get["port"]) == 8443


def test_webhook_replicas_spread_and_survive_disruption(base: list[dict[str, Any]]) -> None:
    deployment = webhook_deployment(base)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    terms = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(
        t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for t in terms
    )
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = only(base, "PodDisruptionBudget", WEBHOOK_NAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_service_reaches_the_webhook_port(base: list[dict[str, Any]]) -> None:
    service = only(base, "Service", WEBHOOK_NAME)
    pod_labels = webhook_deployment(base)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]


def test_namespace_enforces_restricted_pod_security(base: list[dict[str, Any]]) -> None:
    labels = only(base, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert NAMESPACE_OPT_IN_LABEL[0] not in labels


def test_webhook_settings_in_the_deployment(base: list[dict[str, Any]]) -> None:
    env = env_of(webhook_container(base))
    assert env["FERRY_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert all(name.startswith("FERRY_") for name in env)
    # The fetcher image is released with the webhook image: same tag.
    webhook_tag = webhook_container(base)["image"].rsplit(":", 1)[1]
    assert env["FERRY_FETCHER_IMAGE"]["value"] == f"ghcr.io/ferry-dev/ferry-fetcher:{webhook_tag}"
