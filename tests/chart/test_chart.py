"""The Helm chart: lints, renders valid objects, matches the kustomize install, refuses typos.

Why it exists: most platform teams will install Ferry with `helm install`, so
the chart is the install. It must render exactly what `kubectl kustomize
manifests/` renders (one install, two front ends; a fix in one and not the
other is a bug), every value must land where it says, every rendered object
must be valid for the API server, and a typo in a value must stop `helm
install` instead of being silently ignored.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.chart.custom_resources import custom_resource_errors
from tests.chart.rendering import (
    CHART,
    NAMESPACE,
    REPO_ROOT,
    Obj,
    by_id,
    env_of,
    helm_template,
    kustomize,
    only,
    render,
    run,
    tool,
    webhook_container,
)

LATEST_K8S = kubernetes_validate.latest_version()
OLDEST_K8S = "1.28.0"  # the oldest Kubernetes Ferry supports (matchConditions)
K8S_VERSIONS = [LATEST_K8S] + ([OLDEST_K8S] if OLDEST_K8S in kv_utils.all_versions() else [])
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]

ALL_ADDONS = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    },
    "networkPolicy": {"enabled": True},
    "secretProviderClassCRD": {"install": True},
}

# Real sets of values, as users would write them.
VALUE_SETS: dict[str, Obj] = {
    "defaults": {},
    "no-namespace": {"namespace": {"create": False}},
    "cert-manager": {"certificates": {"mode": "cert-manager"}},
    "cert-manager-own-issuer": {
        "certificates": {
            "mode": "cert-manager",
            "certManager": {
                "issuerRef": {"kind": "ClusterIssuer", "name": "private-ca", "group": "cert-manager.io"},
                "duration": "720h",
                "renewBefore": "240h",
            },
        }
    },
    "monitoring": {
        "metrics": {
            "port": 9191,
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "dashboard": {"enabled": True, "namespace": "monitoring"},
        }
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "apiServerCIDRs": ["10.0.0.0/16", "fd00:10::/64"],
            "metricsFrom": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        }
    },
    "selectors": {
        "webhook": {
            "failurePolicy": "Ignore",
            "timeoutSeconds": 3,
            "namespaceSelector": {
                "matchLabels": {"team": "payments"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}],
            },
            "objectSelector": {"matchExpressions": [{"key": "ferry.dev/skip", "operator": "DoesNotExist"}]},
        }
    },
    "operations": {
        "labels": {"cost-center": "platform"},
        "annotations": {"owner": "platform-team"},
        "image": {"repository": "registry.example.com/ferry/webhook", "tag": "0.1.0-patched", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry-creds"}],
        "replicaCount": 3,
        "podDisruptionBudget": {"minAvailable": "50%"},
        "resources": {"requests": {"cpu": "200m", "memory": "192Mi"}, "limits": {"memory": "384Mi"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"sidecar.istio.io/inject": "false"},
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "extraEnv": [
            {"name": "FERRY_LOG_LEVEL", "value": "debug"},
            {"name": "FERRY_EXCLUDED_NAMESPACES", "value": "kube-system,kube-public,legacy"},
        ],
        "fetcher": {
            "image": {
                "repository": "registry.example.com/ferry/fetcher",
                "digest": "sha256:" + "a" * 64,
                "pullPolicy": "Always",
            },
            "resources": {"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"cpu": "250m", "memory": "96Mi"}},
            "volumeSizeLimit": "8Mi",
            "defaultRegion": "eu-west-1",
            "startupDeadline": "3m",
            "endpoints": {"allowedHosts": ["aws", "*.corp.internal"], "allowHttp": True},
            "refresh": {"minInterval": "30s", "nativeSidecars": "true", "unhealthyAfter": "5m"},
        },
    },
    "metrics-off": {"metrics": {"enabled": False}, "networkPolicy": {"enabled": True}},
    "external-url": {
        "webhook": {"url": "https://127.0.0.1:9443/mutate", "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n"},
        **ALL_ADDONS,
    },
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    return {name: render(values, tmp_path_factory.mktemp(name)) for name, values in VALUE_SETS.items()}


# --- helm lint ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["defaults", "cert-manager", "external-url", "operations"])
def test_helm_lint_strict(values: str, tmp_path: Path) -> None:
    args = [tool("helm"), "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if VALUE_SETS[values]:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(VALUE_SETS[values]))
        args += ["--values", str(tmp_path / "values.yaml")]
    result = run(args)
    assert "0 chart(s) failed" in result.stdout


# --- every object is valid -----------------------------------------------------------------


def validate(obj: Obj, version: str) -> None:
    errors = custom_resource_errors(obj)
    if errors is not None:
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: {errors}"
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {path}: {exc.message}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_rendered_object_validates(renders: dict[str, list[Obj]], values: str, version: str) -> None:
    for obj in renders[values]:
        validate(obj, version)


def test_custom_resource_schemas_catch_typos(renders: dict[str, list[Obj]]) -> None:
    """The hand-written schemas are strict: a misspelt field in each custom resource is reported."""
    objects = renders["monitoring"] + renders["cert-manager"]
    for kind, mutate in (
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(scrapeTimout="10s")),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update(fro="5m")),
        ("Certificate", lambda o: o["spec"].update(dnsName=["x"])),
        ("Issuer", lambda o: o["spec"].update(selfsigned={})),
    ):
        broken = copy.deepcopy(only(objects, kind))
        mutate(broken)
        errors = custom_resource_errors(broken)
        assert errors, kind


# --- default render == kustomize ---------------------------------------------------------------

_NAMED_LISTS = ("env", "volumeMounts", "ports")


def normalise(obj: Obj) -> Obj:
    """What may differ between the two renders, and only that.

    - Lists keyed by name (env, volumeMounts, volumes, ports) are compared as
      sets: kustomize's strategic merge puts a component's items first, the
      chart appends them; neither order means anything to Kubernetes here (no
      env var refers to another).
    - The chart keeps the SecretProviderClass CRD on `helm uninstall`
      (helm.sh/resource-policy: keep); kustomize has no such notion.
    """
    obj = copy.deepcopy(obj)
    annotations = obj["metadata"].get("annotations", {})
    if obj["kind"] == "CustomResourceDefinition" and annotations.pop("helm.sh/resource-policy", None) == "keep":
        if not annotations:
            del obj["metadata"]["annotations"]
    if obj["kind"] == "Service":
        obj["spec"]["ports"].sort(key=lambda p: p["name"])
    pod = obj.get("spec", {}).get("template", {}).get("spec")
    if pod:
        pod.get("volumes", []).sort(key=lambda v: v["name"])
        for container in pod.get("containers", []):
            for key in _NAMED_LISTS:
                container.get(key, []).sort(key=lambda item: item["name"])
    return obj


def assert_same_objects(chart: list[Obj], kustomized: list[Obj]) -> None:
    ours, theirs = by_id(chart), by_id(kustomized)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert normalise(ours[key]) == normalise(theirs[key]), key


def test_default_render_is_the_kustomize_install(renders: dict[str, list[Obj]], tmp_path: Path) -> None:
    assert_same_objects(renders["defaults"], kustomize([], tmp_path))


def test_namespace_can_be_left_to_the_user(renders: dict[str, list[Obj]]) -> None:
    """namespace.create=false (a namespace managed elsewhere, or Helm 3): everything but the Namespace."""
    assert [o for o in renders["defaults"] if o["kind"] == "Namespace"]
    without = by_id(renders["no-namespace"])
    assert sorted(without) == sorted(key for key in by_id(renders["defaults"]) if not key.startswith("Namespace/"))


COMPONENT_CASES = {
    "base": ({}, []),
    "cert-manager": ({"certificates": {"mode": "cert-manager"}}, ["cert-manager"]),
    "servicemonitor": ({"metrics": {"serviceMonitor": {"enabled": True}}}, ["servicemonitor"]),
    "prometheusrule": ({"metrics": {"prometheusRule": {"enabled": True}}}, ["prometheusrule"]),
    "grafana-dashboard": ({"metrics": {"dashboard": {"enabled": True}}}, ["grafana-dashboard"]),
    "networkpolicy": ({"networkPolicy": {"enabled": True}}, ["networkpolicy"]),
    "secretproviderclass-crd": ({"secretProviderClassCRD": {"install": True}}, ["secretproviderclass-crd"]),
    "everything": (
        {"certificates": {"mode": "cert-manager"}, **ALL_ADDONS},
        ["cert-manager", "servicemonitor", "prometheusrule", "grafana-dashboard", "networkpolicy",
         "secretproviderclass-crd"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(COMPONENT_CASES))
def test_chart_toggles_render_the_kustomize_components(case: str, tmp_path: Path) -> None:
    values, components = COMPONENT_CASES[case]
    assert_same_objects(render(values, tmp_path), kustomize(components, tmp_path))


def test_every_component_has_a_chart_toggle() -> None:
    components = {p.name for p in (REPO_ROOT / "manifests" / "components").iterdir() if p.is_dir()}
    tested = {name for _, names in COMPONENT_CASES.values() for name in names}
    tested.add("gke")  # with the env patch its users write: tests/chart/test_gke.py
    assert components == tested


def test_comparison_notices_a_difference(renders: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The equality check bites: one changed field in one object fails it."""
    kustomized = kustomize([], tmp_path)
    changed = copy.deepcopy(renders["defaults"])
    webhook_container(changed)  # sanity: the object is there
    only(changed, "Deployment", "ferry-webhook")["spec"]["template"]["spec"]["containers"][0]["args"].append("-v")
    with pytest.raises(AssertionError):
        assert_same_objects(changed, kustomized)


def test_dashboard_json_is_one_file_in_two_places() -> None:
    chart_copy = CHART / "files" / "ferry-dashboard.json"
    kustomize_copy = REPO_ROOT / "manifests" / "components" / "grafana-dashboard" / "ferry-dashboard.json"
    assert chart_copy.read_bytes() == kustomize_copy.read_bytes()


# --- values land where they say ------------------------------------------------------------------


def webhooks(objects: list[Obj]) -> dict[str, Obj]:
    return {w["name"]: w for w in only(objects, "MutatingWebhookConfiguration", "ferry")["webhooks"]}


def test_cert_manager_mode(renders: dict[str, list[Obj]]) -> None:
    objects = renders["cert-manager"]
    env = env_of(webhook_container(objects))
    assert env["FERRY_TLS_CERT_FILE"]["value"] == "/etc/ferry/tls/tls.crt"
    assert not [o for o in objects if o["kind"] in {"Role", "RoleBinding"}], "cert-manager mode writes no TLS Secret"
    mwc = only(objects, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/ferry-webhook"
    certificate = only(objects, "Certificate")
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": "ferry-selfsigned"}
    assert only(objects, "Issuer")["metadata"]["name"] == "ferry-selfsigned"

    own = renders["cert-manager-own-issuer"]
    assert not [o for o in own if o["kind"] == "Issuer"], "a user's issuer replaces the self-signed one"
    spec = only(own, "Certificate")["spec"]
    assert spec["issuerRef"] == {"kind": "ClusterIssuer", "name": "private-ca", "group": "cert-manager.io"}
    assert (spec["duration"], spec["renewBefore"]) == ("720h", "240h")


def test_monitoring_objects(renders: dict[str, list[Obj]]) -> None:
    objects = renders["monitoring"]
    container = webhook_container(objects)
    assert {"name": "metrics", "containerPort": 9191, "protocol": "TCP"} in container["ports"]
    assert env_of(container)["FERRY_METRICS_PORT"]["value"] == "9191"
    service = only(objects, "Service")
    assert {"name": "metrics", "port": 9191, "targetPort": "metrics", "protocol": "TCP"} in service["spec"]["ports"]
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "scheme": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert only(objects, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = only(objects, "ConfigMap", "ferry-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["ferry-webhook.json"] == (CHART / "files" / "ferry-dashboard.json").read_text()


def test_default_metrics_contract(renders: dict[str, list[Obj]]) -> None:
    """FERRY_METRICS_PORT=9090 on a container port named metrics; the Service gets it with a ServiceMonitor."""
    container = webhook_container(renders["defaults"])
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert env_of(container)["FERRY_METRICS_PORT"] == {"name": "FERRY_METRICS_PORT", "value": "9090"}
    off = webhook_container(renders["metrics-off"])
    assert [p["name"] for p in off["ports"]] == ["https"]
    assert env_of(off)["FERRY_METRICS_PORT"]["value"] == "0"
    policy = only(renders["metrics-off"], "NetworkPolicy")
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"port": 8443, "protocol": "TCP"}]]


def test_edge_settings_bind_metrics_narrowly_unless_scraped(renders: dict[str, list[Obj]], tmp_path: Path) -> None:
    """Metrics bind loopback (the code's default) unless a ServiceMonitor scrapes them; API-server addresses
    come from webhook.apiServerAddresses or, failing that, networkPolicy.apiServerCIDRs."""
    default = env_of(webhook_container(renders["defaults"]))
    assert "FERRY_METRICS_HOST" not in default and "FERRY_API_SERVER_ADDRESSES" not in default
    assert env_of(webhook_container(renders["monitoring"]))["FERRY_METRICS_HOST"]["value"] == "0.0.0.0"
    policy_env = env_of(webhook_container(renders["network-policy"]))
    assert policy_env["FERRY_API_SERVER_ADDRESSES"]["value"] == "10.0.0.0/16,fd00:10::/64"
    values = {
        "webhook": {"apiServerAddresses": ["192.0.2.10"]},
        "metrics": {"bindAddress": "0.0.0.0", "allowedSources": ["192.0.2.0/24", "198.51.100.7"]},
    }
    env = env_of(webhook_container(render(values, tmp_path)))
    assert env["FERRY_API_SERVER_ADDRESSES"]["value"] == "192.0.2.10"
    assert env["FERRY_METRICS_HOST"]["value"] == "0.0.0.0"
    assert env["FERRY_METRICS_ALLOWED_SOURCES"]["value"] == "192.0.2.0/24,198.51.100.7"


def test_network_policy(renders: dict[str, list[Obj]]) -> None:
    policy = only(renders["network-policy"], "NetworkPolicy")
    pod_labels = only(renders["network-policy"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admission, metrics = policy["spec"]["ingress"]
    assert admission == {
        "ports": [{"port": 8443, "protocol": "TCP"}],
        "from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "fd00:10::/64"}}],
    }
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert metrics["from"] == VALUE_SETS["network-policy"]["networkPolicy"]["metricsFrom"]
    # The documented default: the admission port from anywhere, metrics from inside the cluster only.
    default = only(renders["external-url"], "NetworkPolicy")
    assert "from" not in default["spec"]["ingress"][0]
    assert default["spec"]["ingress"][1]["from"] == [{"namespaceSelector": {}}]


def test_selectors_are_added_to_the_built_in_exclusions(renders: dict[str, list[Obj]]) -> None:
    defaults, custom = webhooks(renders["defaults"]), webhooks(renders["selectors"])
    assert set(custom) == {"pods.ferry.dev", "ns.pods.ferry.dev", "warn.pods.ferry.dev"}
    for name, entry in custom.items():
        assert entry["failurePolicy"] == "Ignore" and entry["timeoutSeconds"] == 3
        selector = entry["namespaceSelector"]
        assert selector["matchLabels"] == {"team": "payments"}
        built_in = defaults[name]["namespaceSelector"]["matchExpressions"]
        assert selector["matchExpressions"] == [
            *built_in,
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
        ]
        assert entry["objectSelector"] == {"matchExpressions": [{"key": "ferry.dev/skip", "operator": "DoesNotExist"}]}
        assert entry["matchConditions"] == defaults[name]["matchConditions"]
        assert "objectSelector" not in defaults[name]


def test_release_namespace_is_never_injected(tmp_path: Path) -> None:
    objects = render({}, tmp_path, namespace="secrets-infra")
    assert only(objects, "Namespace")["metadata"]["name"] == "secrets-infra"
    for entry in webhooks(objects).values():
        names = [e for e in entry["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"]
        assert names == [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                          "values": ["kube-system", "kube-public", "secrets-infra"]},
                         {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                          "values": ["kube-system", "gke-gmp-system", "gke-managed-cim"]}]  # fmt: skip
        assert entry["clientConfig"]["service"]["namespace"] == "secrets-infra"
    binding = only(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-webhook", "namespace": "secrets-infra"}]


def test_external_url(renders: dict[str, list[Obj]]) -> None:
    for entry in webhooks(renders["external-url"]).values():
        assert entry["clientConfig"] == {
            "url": "https://127.0.0.1:9443/mutate",
            "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIK",
        }


def test_operations_values(renders: dict[str, list[Obj]]) -> None:
    objects = renders["operations"]
    for obj in objects:
        assert obj["metadata"]["labels"]["cost-center"] == "platform", obj["kind"]
        assert obj["metadata"]["annotations"]["owner"] == "platform-team", obj["kind"]
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 3
    assert "cost-center" not in deployment["spec"]["selector"]["matchLabels"], "extra labels never reach selectors"
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    container = webhook_container(objects)
    assert container["image"] == "registry.example.com/ferry/webhook:0.1.0-patched"
    assert container["imagePullPolicy"] == "Always"
    # Helm merges maps with the defaults: the default CPU limit stays unless set to null.
    assert container["resources"] == {
        "requests": {"cpu": "200m", "memory": "192Mi"},
        "limits": {"cpu": "1", "memory": "384Mi"},
    }
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"


def test_fetcher_values_are_settings_the_webhook_accepts(renders: dict[str, list[Obj]]) -> None:
    """The chart's env vars go through the webhook's own parser: real names, parseable values."""
    from webhook.settings import Settings

    env = env_of(webhook_container(renders["operations"]))
    plain = {name: item["value"] for name, item in env.items() if "value" in item}
    settings = Settings.from_env(plain)
    assert settings.fetcher_image == "registry.example.com/ferry/fetcher@sha256:" + "a" * 64
    assert settings.fetcher_pull_policy == "Always"
    assert settings.fetcher_resources() == {
        "requests": {"cpu": "20m", "memory": "48Mi"},
        "limits": {"cpu": "250m", "memory": "96Mi"},
    }
    assert settings.volume_size_limit == "8Mi"
    assert settings.default_region == "eu-west-1"
    assert settings.min_refresh_seconds == 30
    assert settings.native_sidecars == "true"
    assert settings.startup_deadline_seconds == 180
    assert settings.endpoint_policy.allowed_hosts == ("aws", "*.corp.internal")
    assert settings.endpoint_policy.allow_http
    assert settings.log_level == "debug"
    assert "legacy" in settings.excluded_namespaces
    # Left empty, they are not set at all, so the webhook's documented defaults apply.
    default_env = set(env_of(webhook_container(renders["defaults"])))
    assert default_env == {"FERRY_NAMESPACE", "FERRY_FETCHER_IMAGE", "FERRY_METRICS_PORT"}


def test_spc_crd_is_kept_on_uninstall(renders: dict[str, list[Obj]]) -> None:
    crd = only(renders["external-url"], "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "secretproviderclasses.secrets-store.csi.x-k8s.io"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not [o for o in renders["defaults"] if o["kind"] == "CustomResourceDefinition"]


# --- one version ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["chart", "kustomize"])
def test_one_version_everywhere(source: str, tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == VERSION
    everything = COMPONENT_CASES["everything"]
    objects = render(everything[0], tmp_path) if source == "chart" else kustomize(everything[1], tmp_path)
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/version"] == VERSION, obj["kind"]
    container = webhook_container(objects)
    assert container["image"].endswith(f":{VERSION}")
    assert env_of(container)["FERRY_FETCHER_IMAGE"]["value"].endswith(f":{VERSION}")


# --- typos fail -------------------------------------------------------------------------------------

TYPOS = {
    "top-level typo": ({"replicaCont": 3}, "replicaCont"),
    "nested typo": ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
    "unknown mode": ({"certificates": {"mode": "vault"}}, "/certificates/mode"),
    "wrong type": ({"replicaCount": "two"}, "/replicaCount"),
    "bad quantity": ({"fetcher": {"resources": {"limits": {"memory": "lots"}}}}, "/fetcher/resources/limits/memory"),
    "bad failure policy": ({"webhook": {"failurePolicy": "fail"}}, "/webhook/failurePolicy"),
    "metrics on the admission port": ({"metrics": {"port": 8443}}, "/metrics/port"),
    "plain-http webhook url": ({"webhook": {"url": "http://example.com/mutate"}}, "/webhook/url"),
    "region typo": ({"fetcher": {"defaultRegion": "euwest1"}}, "/fetcher/defaultRegion"),
    "ServiceMonitor without metrics": (
        {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled=true needs metrics.enabled=true",
    ),
}


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_bad_values_fail_helm_with_a_message_naming_them(case: str, tmp_path: Path) -> None:
    values, named = TYPOS[case]
    result = helm_template(values, tmp_path, check=False)
    assert not isinstance(result, list)
    assert result.returncode != 0, f"helm accepted {values}"
    assert named in result.stderr, result.stderr
    assert len(result.stderr) < 2000, "the error stays short"


def test_every_value_in_values_yaml_is_in_the_schema() -> None:
    """values.yaml itself passes the schema (helm lint checks it too), and the schema forbids unknown keys."""
    import json

    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)

    def closed(node: Any, where: str) -> None:
        if isinstance(node, dict) and node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, where
            for key, child in node["properties"].items():
                closed(child, f"{where}.{key}")

    closed(schema, "values")


# --- docs -----------------------------------------------------------------------------------------------


def test_install_docs_lead_with_helm() -> None:
    install = (REPO_ROOT / "docs" / "install.md").read_text()
    for command in (
        "helm install ferry charts/ferry --namespace ferry-system --create-namespace",
        "helm upgrade ferry charts/ferry --namespace ferry-system",
        "helm uninstall ferry --namespace ferry-system",
        "kubectl apply -k manifests/",
    ):
        assert command in install, command
    assert install.index("helm install") < install.index("kubectl apply -k manifests/")
    readme = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Install\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README has an Install section"
    assert section.group(1).index("helm install") < section.group(1).index("kubectl apply -k")


def test_spc_crd_component_is_the_recorded_crd() -> None:
    """The optional CRD is the one a real cluster served (tests/fixtures), plus Ferry's labels."""
    recorded = yaml.safe_load(
        (REPO_ROOT / "tests/fixtures/kube-apiserver-v1.28/secretproviderclass-crd.yaml").read_text()
    )
    for path in (
        REPO_ROOT / "manifests/components/secretproviderclass-crd/secretproviderclass-crd.yaml",
        CHART / "files/secretproviderclass-crd.yaml",
    ):
        shipped = yaml.safe_load(path.read_text())
        assert shipped["spec"] == recorded["spec"], path
        assert shipped["metadata"]["name"] == recorded["metadata"]["name"], path


def test_fetcher_settings_reach_the_webhook_as_it_reads_them(renders: dict[str, list[Obj]]) -> None:
    """The chart's fetcher values become the env the webhook's own Settings parse (no typo in a name)."""
    from webhook.settings import Settings

    (deployment,) = [o for o in renders["operations"] if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    settings = Settings.from_env(env)
    assert settings.sidecar_unhealthy_after_seconds == 300.0
    assert settings.min_refresh_seconds == 30.0
    assert settings.default_region == "eu-west-1"
