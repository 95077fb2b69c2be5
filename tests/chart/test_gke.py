"""GKE installs: the chart's fetcher.gcp values and manifests/components/gke grant the same ServiceAccount reads.

Why it exists: the webhook reads ServiceAccounts (their iam.gke.io/gcp-service-account) only with GCP
settings, so only a GCP install may carry that grant: the chart adds it with fetcher.gcp.project, kustomize
users add the component next to the env patch that sets FERRY_GCP_*. An AWS-only install never has it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chart.rendering import COMPONENTS, MANIFESTS, Obj, load_objects, only, render, run, tool
from tests.chart.test_chart import K8S_VERSIONS, assert_same_objects, validate

GCP = {"fetcher": {"gcp": {"project": "my-project", "location": "us-central1", "cluster": "prod"}}}
# What a kustomize user writes next to the component (docs/gke.md, section 1).
ENV_PATCH = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ferry-webhook
  namespace: ferry-system
spec:
  template:
    spec:
      containers:
        - name: webhook
          env:
            - {name: FERRY_GCP_PROJECT, value: my-project}
            - {name: FERRY_GCP_LOCATION, value: us-central1}
            - {name: FERRY_GCP_CLUSTER, value: prod}
"""


def _gke_overlay(tmp_path: Path) -> list[Obj]:
    overlay = tmp_path / "gke-overlay"
    overlay.mkdir()
    (overlay / "gcp-env.yaml").write_text(ENV_PATCH)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(MANIFESTS, overlay)}\n"
        f"components:\n  - {os.path.relpath(COMPONENTS / 'gke', overlay)}\n"
        "patches:\n  - path: gcp-env.yaml\n"
    )
    return load_objects(run([tool("kubectl"), "kustomize", str(overlay)]).stdout)


def _service_account_grants(objects: list[Obj]) -> set[tuple[str, str]]:
    return {
        (role["metadata"]["name"], verb)
        for role in objects
        if role["kind"] in {"ClusterRole", "Role"}
        for rule in role.get("rules") or []
        if "serviceaccounts" in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def test_the_chart_with_gcp_values_is_the_kustomize_install_with_the_gke_component(tmp_path: Path) -> None:
    assert_same_objects(render(GCP, tmp_path), _gke_overlay(tmp_path))


def test_only_a_gcp_install_may_read_service_accounts(tmp_path: Path) -> None:
    assert _service_account_grants(render({}, tmp_path)) == set()
    expected = {("ferry-webhook-serviceaccounts", verb) for verb in ("get", "list", "watch")}
    assert _service_account_grants(render(GCP, tmp_path)) == expected
    binding = only(
        render(GCP, tmp_path, namespace="secrets-infra"), "ClusterRoleBinding", "ferry-webhook-serviceaccounts"
    )
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-webhook", "namespace": "secrets-infra"}]
    assert binding["roleRef"]["name"] == "ferry-webhook-serviceaccounts"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_gke_objects_validate_strictly(tmp_path: Path, version: str) -> None:
    objects: list[dict[str, Any]] = render(GCP, tmp_path) + _gke_overlay(tmp_path)
    for obj in objects:
        validate(obj, version)
