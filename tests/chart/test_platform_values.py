"""The chart's platform settings: GKE's managed-namespace exclusion as GKE writes it, and the sizing values.

Why it exists: GKE rewrites a mutating webhook's namespaceSelector to exclude
its managed namespaces; a selector that already carries that exact expression
shows no drift in Helm or GitOps. The kustomize manifests must carry the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.chart.rendering import helm_template, render
from tests.manifests.render import env_of, only, webhook_container
from tests.support.paths import REPO_ROOT
from webhook.settings import Settings

GKE_EXPRESSION = {
    "key": "kubernetes.io/metadata.name",
    "operator": "NotIn",
    "values": ["kube-system", "gke-gmp-system", "gke-managed-cim"],
}


def _selectors(webhook_configuration: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {w["name"]: w["namespaceSelector"]["matchExpressions"] for w in webhook_configuration["webhooks"]}


def test_both_entries_carry_gkes_expression_in_chart_and_manifests(tmp_path: Path) -> None:
    chart = _selectors(only(render(None, tmp_path), "MutatingWebhookConfiguration"))
    manifest = _selectors(yaml.safe_load((REPO_ROOT / "manifests/mutatingwebhookconfiguration.yaml").read_text()))
    assert set(chart) == set(manifest) == {"pods.ferry.dev", "ns.pods.ferry.dev"}
    for name in chart:
        assert chart[name].count(GKE_EXPRESSION) == 1, chart[name]
        assert manifest[name].count(GKE_EXPRESSION) == 1, manifest[name]
        assert chart[name] == manifest[name], "the chart and the manifests scope Ferry alike"


def test_the_expression_follows_the_value_and_can_be_left_out(tmp_path: Path) -> None:
    values = {"webhook": {"platformManagedNamespaces": []}}
    selectors = _selectors(only(render(values, tmp_path), "MutatingWebhookConfiguration"))
    assert all(GKE_EXPRESSION not in expressions for expressions in selectors.values())
    more = {"webhook": {"platformManagedNamespaces": ["kube-system", "gke-managed-system"]}}
    selectors = _selectors(only(render(more, tmp_path), "MutatingWebhookConfiguration"))
    for expressions in selectors.values():
        assert {**GKE_EXPRESSION, "values": ["kube-system", "gke-managed-system"]} in expressions


def test_sizing_values_reach_the_webhook_as_settings_it_accepts(tmp_path: Path) -> None:
    sizing = {
        "cpuRequestFloor": "5m",
        "memoryRequestFloor": "48Mi",
        "fargate": "off",
        "fargateOversize": "deny",
        "autopilot": "no-bursting",
        "autopilotEphemeralStorage": "50Mi",
    }
    env = env_of(webhook_container(render({"fetcher": {"sizing": sizing}}, tmp_path)))
    values = {name: entry["value"] for name, entry in env.items() if "value" in entry}
    settings = Settings.from_env(values)
    assert settings.fetcher_cpu_request_floor == "5m" and settings.fetcher_memory_request_floor == "48Mi"
    assert (settings.fargate_sizing, settings.fargate_oversize, settings.autopilot) == ("off", "deny", "no-bursting")
    assert settings.autopilot_ephemeral_storage == "50Mi"
    defaults = env_of(webhook_container(render(None, tmp_path)))
    assert not {"FERRY_FARGATE_SIZING", "FERRY_AUTOPILOT", "FERRY_FETCHER_CPU_REQUEST_FLOOR"} & set(defaults)


def test_the_schema_refuses_a_misspelt_mode(tmp_path: Path) -> None:
    result = helm_template({"fetcher": {"sizing": {"autopilot": "yes"}}}, tmp_path, check=False)
    assert not isinstance(result, list) and result.returncode != 0 and "autopilot" in result.stderr
