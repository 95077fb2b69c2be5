"""The install manifests: they render, validate, grant and scope exactly what they should.

Why it exists: `kubectl apply -k manifests/` is the whole install, and the
MutatingWebhookConfiguration decides which pods can be blocked when Ferry is
down. A mistake there does not fail any Python test, it fails a cluster. So
every rendered object is checked against the Kubernetes OpenAPI schema
(strict, newest version kubernetes-validate ships, and the oldest Kubernetes
Ferry supports), the RBAC is compared with the full allowed set, and the
webhook's selectors and CEL matchConditions are *evaluated* against sample
namespaces and pods (including the recorded ones) instead of only eyeballed.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
EXAMPLES = MANIFESTS / "examples"
CERT_MANAGER_COMPONENT = MANIFESTS / "components" / "cert-manager"
DOCS = REPO_ROOT / "docs"
SHARED_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "kube-apiserver-v1.28"

NAMESPACE = "ferry-system"
WEBHOOK_NAME = "ferry-webhook"
MWC_NAME = "ferry"
TLS_SECRET = "ferry-webhook-tls"
POD_ENTRY = "pods.ferry.dev"
NAMESPACE_ENTRY = "ns.pods.ferry.dev"
NAMESPACE_OPT_IN_LABEL = ("ferry.dev/inject", "enabled")
NEVER_INJECTED = {"kube-system", "kube-public", NAMESPACE}

LATEST_K8S = kubernetes_validate.latest_version()
# matchConditions are on by default from 1.28 (beta); Ferry supports 1.28+.
OLDEST_K8S = "1.28.0"
K8S_VERSIONS = [LATEST_K8S] + ([OLDEST_K8S] if OLDEST_K8S in kv_utils.all_versions() else [])

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


# --- Rendering ----------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is required to render manifests/")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert objects, f"kubectl kustomize {directory} rendered nothing"
    return objects


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS)


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    return kustomize(EXAMPLES)


@pytest.fixture(scope="module")
def cert_manager(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The base plus the cert-manager component, through an overlay as a user would write it."""
    overlay = tmp_path_factory.mktemp("cert-manager-overlay")
    # kustomize refuses absolute paths and overlays nested inside their base.
    to_base = os.path.relpath(MANIFESTS, overlay)
    to_component = os.path.relpath(CERT_MANAGER_COMPONENT, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {to_base}\ncomponents:\n  - {to_component}\n"
    )
    return kustomize(overlay)


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def webhook_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return only(objects, "Deployment", WEBHOOK_NAME)


def webhook_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = webhook_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["webhook"]
    return dict(containers[0])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# --- Schema validation ----------------------------------------------------------


def _strict_crd_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An apiextensions structural schema as a JSON Schema that rejects unknown fields.

    The API server prunes unknown fields, and `kubectl apply` (field validation
    Strict, the default) rejects them; additionalProperties: false models that.
    """
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in out:
        out["properties"] = {key: _strict_crd_schema(value) for key, value in out["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict_crd_schema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict_crd_schema(out["items"])
    return out


def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    crd = yaml.safe_load((SHARED_FIXTURES / "secretproviderclass-crd.yaml").read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    validators = {}
    for version in crd["spec"]["versions"]:
        if version["served"]:
            schema = _strict_crd_schema(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft202012Validator(schema)
    return validators


CRD_VALIDATORS = _crd_validators()
# Custom resources with no schema on this machine: checked structurally below,
# in test_cert_manager_component_is_consistent, not skipped silently.
UNSCHEMAED_CUSTOM_RESOURCES = {("cert-manager.io/v1", "Certificate"), ("cert-manager.io/v1", "Issuer")}


def validate_object(obj: dict[str, Any], version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_VALIDATORS:
        errors = sorted(CRD_VALIDATORS[key].iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
        return
    if key in UNSCHEMAED_CUSTOM_RESOURCES:
        pytest.skip(f"{key[1]} ({key[0]}) is a cert-manager custom resource; no CRD schema here")
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {path}: {exc.message}")


def _ids(objects: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_base_objects_validate_strictly(base: list[dict[str, Any]], version: str) -> None:
    for obj in base:
        validate_object(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_example_objects_validate_strictly(examples: list[dict[str, Any]], version: str) -> None:
    for obj in examples:
        validate_object(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_cert_manager_overlay_validates(cert_manager: list[dict[str, Any]], version: str) -> None:
    for obj in cert_manager:
        if (obj["apiVersion"], obj["kind"]) not in UNSCHEMAED_CUSTOM_RESOURCES:
            validate_object(obj, version)


def test_secret_provider_class_schema_check_bites() -> None:
    """The CRD-based check is strict: a typo'd field is caught like kubectl would."""
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"provider": "aws", "paramters": {"objects": "[]"}},
    }
    with pytest.raises(AssertionError, match="paramters"):
        validate_object(spc, LATEST_K8S)
    spc["spec"] = {"provider": "aws", "parameters": {"objects": ["not", "a", "string"]}}
    with pytest.raises(AssertionError):
        validate_object(spc, LATEST_K8S)


def test_base_contains_exactly_the_install(base: list[dict[str, Any]]) -> None:
    assert sorted(_ids(base)) == sorted(
        [
            f"Namespace/{NAMESPACE}",
            f"ServiceAccount/{WEBHOOK_NAME}",
            f"ClusterRole/{WEBHOOK_NAME}",
            f"ClusterRoleBinding/{WEBHOOK_NAME}",
            f"Role/{WEBHOOK_NAME}",
            f"RoleBinding/{WEBHOOK_NAME}",
            f"Service/{WEBHOOK_NAME}",
            f"Deployment/{WEBHOOK_NAME}",
            f"PodDisruptionBudget/{WEBHOOK_NAME}",
            f"MutatingWebhookConfiguration/{MWC_NAME}",
        ]
    )
    for obj in base:
        if obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]


def test_examples_are_not_part_of_the_base() -> None:
    base = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert not any("examples" in entry for entry in base.get("resources", []))


def _strict_yaml_loader() -> type[yaml.SafeLoader]:
    class StrictLoader(yaml.SafeLoader):
        pass

    def no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
    return StrictLoader


def test_manifest_yaml_is_lint_clean() -> None:
    """What yamllint would catch that kubectl silently accepts: duplicate keys, tabs, stray spaces."""
    loader = _strict_yaml_loader()
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text()
        list(yaml.load_all(text, Loader=loader))  # a SafeLoader subclass
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            assert "\t" not in line, f"{where}: tab"
            assert line == line.rstrip(), f"{where}: trailing whitespace"
            assert len(line) <= 120, f"{where}: longer than 120 characters"
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{path}: must end with exactly one newline"


# --- RBAC -------------------------------------------------------------------------

Grant = tuple[str, str, str, str | None]  # (apiGroup, resource, verb, resourceName or None)


def grants(role: dict[str, Any]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        out.add((group, resource, verb, name))
    return out


def test_cluster_role_grants_exactly_what_the_design_allows(base: list[dict[str, Any]]) -> None:
    assert grants(only(base, "ClusterRole", WEBHOOK_NAME)) == {
        ("", "namespaces", "get", None),
        ("", "namespaces", "list", None),
        ("", "namespaces", "watch", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "get", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "list", None),
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses", "watch", None),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", MWC_NAME),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", MWC_NAME),
    }


def test_role_grants_only_the_tls_secret(base: list[dict[str, Any]]) -> None:
    role = only(base, "Role", WEBHOOK_NAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == {
        # create cannot be limited by name; the Role confines it to ferry-system.
        ("", "secrets", "create", None),
        ("", "secrets", "get", TLS_SECRET),
        ("", "secrets", "update", TLS_SECRET),
    }


def test_rbac_has_no_wildcards_or_unenforceable_resource_names(
    base: list[dict[str, Any]], cert_manager: list[dict[str, Any]]
) -> None:
    for objects in (base, cert_manager):
        for role in (o for o in objects if o["kind"] in {"ClusterRole", "Role"}):
            for group, resource, verb, name in grants(role):
                assert "*" not in (group, resource, verb)
                # These requests carry no object name for the authorizer, so a
                # rule with resourceNames reads as a grant but never matches.
                assert not (name and verb in {"list", "watch", "create", "deletecollection"})


def test_bindings_give_the_roles_to_the_webhook_service_account_only(base: list[dict[str, Any]]) -> None:
    subject = [{"kind": "ServiceAccount", "name": WEBHOOK_NAME, "namespace": NAMESPACE}]
    crb = only(base, "ClusterRoleBinding", WEBHOOK_NAME)
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WEBHOOK_NAME}
    assert crb["subjects"] == subject
    rb = only(base, "RoleBinding", WEBHOOK_NAME)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WEBHOOK_NAME}
    assert rb["subjects"] == subject
    assert webhook_deployment(base)["spec"]["template"]["spec"]["serviceAccountName"] == WEBHOOK_NAME


def test_rbac_names_match_the_webhook_settings(base: list[dict[str, Any]]) -> None:
    """resourceNames and the webhook's FERRY_* names must point at the same objects."""
    from webhook import settings as settings_module

    environ = {
        name: item.get("value", NAMESPACE if "fieldRef" in item.get("valueFrom", {}) else "")
        for name, item in env_of(webhook_container(base)).items()
    }
    settings = settings_module.Settings.from_env(environ)
    assert settings.namespace == NAMESPACE
    assert settings.service_name == only(base, "Service")["metadata"]["name"]
    assert settings.webhook_config_name == only(base, "MutatingWebhookConfiguration")["metadata"]["name"]
    assert settings.tls_secret_name == TLS_SECRET
    assert settings.tls_cert_file is None and settings.tls_key_file is None  # self-managed TLS in the base
    for excluded in NEVER_INJECTED:
        assert settings.is_excluded_namespace(excluded)


# --- The webhook holds no AWS credentials and no Secrets --------------------------

AWS_CREDENTIAL_ENV = re.compile(
    r"^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|ROLE_ARN|WEB_IDENTITY_TOKEN_FILE|PROFILE|"
    r"CONTAINER_CREDENTIALS_FULL_URI|CONTAINER_CREDENTIALS_RELATIVE_URI|CONTAINER_AUTHORIZATION_TOKEN(_FILE)?|"
    r"SHARED_CREDENTIALS_FILE|CONFIG_FILE)$"
)


def test_webhook_has_no_aws_identity_and_no_secret_material(base: list[dict[str, Any]]) -> None:
    assert not [o for o in base if o["kind"] == "Secret"]
    sa = only(base, "ServiceAccount", WEBHOOK_NAME)
    assert not any(key.startswith("eks.amazonaws.com/") for key in sa["metadata"].get("annotations", {}))
    pod = webhook_deployment(base)["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        assert "envFrom" not in container
        for item in container.get("env", []):
            assert not item["name"].startswith("AWS_"), item
            assert not AWS_CREDENTIAL_ENV.match(item["name"])
            assert "secretKeyRef" not in item.get("valueFrom", {}), item
    for volume in pod.get("volumes", []):
        assert "secret" not in volume and "hostPath" not in volume, volume
        for source in volume.get("projected", {}).get("sources", []):
            assert "secret" not in source
            assert source.get("serviceAccountToken", {}).get("audience") not in {
                "sts.amazonaws.com",
                "pods.eks.amazonaws.com",
            }


# --- Deployment, Service, PDB --------------------------------------------------------


# The Pod Security Standard "restricted" profile (baseline + restricted controls),
# written from the published profile; returns one line per violation.
_RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    pod_sc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is true")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {sorted(kinds - _RESTRICTED_VOLUME_TYPES)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"unsafe sysctl {sysctl['name']}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    if pod_sc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        problems.append("pod seccompProfile is not RuntimeDefault/Localhost")
    containers = pod.get("initContainers", []) + pod.get("containers", []) + pod.get("ephemeralContainers", [])
    for c in containers:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{name}: hostProcess")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        se = sc.get("seLinuxOptions", pod_sc.get("seLinuxOptions", {}))
        if se.get("user") or se.get("role") or se.get("type", "container_t") not in {
            "container_t", "container_init_t", "container_kvm_t", "container_engine_t",
        }:  # fmt: skip
            problems.append(f"{name}: seLinuxOptions")
    return problems


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
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]


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


# --- MutatingWebhookConfiguration: structure --------------------------------------------


def webhooks(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    mwc = only(objects, "MutatingWebhookConfiguration", MWC_NAME)
    return {w["name"]: w for w in mwc["webhooks"]}


def test_mutating_webhook_structure(base: list[dict[str, Any]]) -> None:
    entries = webhooks(base)
    assert set(entries) == {POD_ENTRY, NAMESPACE_ENTRY}
    service = only(base, "Service", WEBHOOK_NAME)
    for name, hook in entries.items():
        assert hook["failurePolicy"] == "Fail", name
        assert hook["sideEffects"] == "None", name
        assert hook["reinvocationPolicy"] == "IfNeeded", name
        assert hook["admissionReviewVersions"] == ["v1"], name
        assert 1 <= hook["timeoutSeconds"] <= 10, name
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ], name
        ref = hook["clientConfig"]["service"]
        assert ref == {"name": WEBHOOK_NAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}, name
        assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}
        # The webhook (or cert-manager) fills caBundle; a stale one in git would break TLS.
        assert "caBundle" not in hook["clientConfig"], name
        assert "url" not in hook["clientConfig"], name
        assert hook["matchConditions"], name
        assert any("ferry.dev/inject" in c["expression"] for c in hook["matchConditions"]), name
        excluded = [
            e
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
        ]
        assert excluded and NEVER_INJECTED <= set(excluded[0]["values"]), name


# --- MutatingWebhookConfiguration: evaluated scoping ---------------------------------------
#
# The API server calls an entry when its namespaceSelector matches the pod's
# namespace labels, its objectSelector matches the pod's labels, and every
# matchCondition is true. Below: a label-selector evaluator and a small
# evaluator for the CEL subset these conditions use (has(), map `in`, index,
# ==, !=, !, &&, ||, string literals), with CEL's rule that reading a missing
# map key is an *error*. An error in a matchCondition with failurePolicy Fail
# rejects the pod, so the tests also assert the conditions never error.


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


class CelError(Exception):
    """Evaluation error (e.g. no such key); the API server applies failurePolicy."""


_CEL_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>&&|\|\||==|!=|[!().\[\]])|(?P<id>[A-Za-z_][A-Za-z0-9_]*))\s*"
)
Node = tuple[Any, ...]


class MiniCel:
    """Parser and evaluator for the CEL subset used in Ferry's matchConditions.

    Grammar: or := and ('||' and)* ; and := unary ('&&' unary)* ;
    unary := '!' unary | operand (('==' | '!=' | 'in') operand)? ;
    operand := 'string' | '(' or ')' | 'has' '(' select ')' | select ;
    select := ident ('.' ident | '[' or ']')*
    Anything else is rejected, so a new construct in the manifest fails loudly.
    """

    def __init__(self, expression: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        while pos < len(expression):
            match = _CEL_TOKEN.match(expression, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unsupported CEL at {expression[pos:]!r}")
            self.tokens.append(match.group(match.lastgroup or ""))
            pos = match.end()
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unsupported CEL: trailing {self.tokens[self.pos :]}")

    # -- parsing
    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self.tokens[self.pos]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, got {token!r}")
        self.pos += 1
        return token

    def _or(self) -> Node:
        node = self._and()
        while self._peek() == "||":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Node:
        node = self._unary()
        while self._peek() == "&&":
            self._take()
            node = ("and", node, self._unary())
        return node

    def _unary(self) -> Node:
        if self._peek() == "!":
            self._take()
            return ("not", self._unary())
        left = self._operand()
        if self._peek() in ("==", "!=", "in"):
            return (self._take(), left, self._operand())
        return left

    def _operand(self) -> Node:
        token = self._take()
        if token.startswith("'"):
            return ("lit", token[1:-1].replace("\\'", "'"))
        if token == "(":
            node = self._or()
            self._take(")")
            return node
        if token == "has":
            self._take("(")
            select = self._select(self._take())
            self._take(")")
            if not select[2] or select[2][-1][0] != "field":
                raise ValueError("has() needs a field selection")
            return ("has", select)
        if re.fullmatch(r"[A-Za-z_]\w*", token):
            return self._select(token)
        raise ValueError(f"unsupported CEL token {token!r}")

    def _select(self, name: str) -> Node:
        steps: list[tuple[str, Any]] = []
        while self._peek() in (".", "["):
            if self._take() == ".":
                steps.append(("field", self._take()))
            else:
                steps.append(("index", self._or()))
                self._take("]")
        return ("select", name, steps)

    # -- evaluation
    def evaluate(self, variables: dict[str, Any]) -> Any:
        return self._eval(self.tree, variables)

    def _eval(self, node: Node, env: dict[str, Any]) -> Any:
        op = node[0]
        if op in ("or", "and"):
            # CEL's && and || are commutative over errors: false && error is
            # false, true || error is true, in either order.
            decisive = op == "or"
            results: list[Any] = []
            for side in node[1:]:
                try:
                    results.append(bool(self._eval(side, env)))
                except CelError as exc:
                    results.append(exc)
            if decisive in results:
                return decisive
            for result in results:
                if isinstance(result, CelError):
                    raise result
            return not decisive
        if op == "not":
            return not self._eval(node[1], env)
        if op == "lit":
            return node[1]
        if op in ("==", "!="):
            equal = self._eval(node[1], env) == self._eval(node[2], env)
            return equal if op == "==" else not equal
        if op == "in":
            container = self._eval(node[2], env)
            if not isinstance(container, dict | list):
                raise CelError("'in' needs a map or a list")
            return self._eval(node[1], env) in container
        if op == "has":
            _, name, steps = node[1]
            parent = self._read(name, steps[:-1], env)
            return isinstance(parent, dict) and steps[-1][1] in parent
        if op == "select":
            return self._read(node[1], node[2], env)
        raise AssertionError(op)

    def _read(self, name: str, steps: list[tuple[str, Any]], env: dict[str, Any]) -> Any:
        if name not in env:
            raise CelError(f"undeclared reference to {name!r}")
        value = env[name]
        for kind, key in steps:
            if kind == "index":
                key = self._eval(key, env)
            if not isinstance(value, dict) or key not in value:
                raise CelError(f"no such key: {key}")
            value = value[key]
        return value


def called_entries(hooks: dict[str, dict[str, Any]], namespace: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    ns_labels = namespace["metadata"].get("labels", {})
    called = []
    for name, hook in hooks.items():
        if not selector_matches(hook.get("namespaceSelector"), ns_labels):
            continue
        if not selector_matches(hook.get("objectSelector"), pod["metadata"].get("labels", {})):
            continue
        results = [MiniCel(c["expression"]).evaluate({"object": pod}) for c in hook.get("matchConditions", [])]
        if all(results):
            called.append(name)
    return called


def _namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def _pod(annotations: dict[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "labels": {"app": "x"}}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "a", "image": "a"}]}}


def recorded_namespaces() -> dict[str, dict[str, Any]]:
    listing = json.loads((SHARED_FIXTURES / "namespaces-list.json").read_text())
    return {item["metadata"]["name"]: item for item in listing["items"]}


def test_mini_cel_follows_cel_error_semantics() -> None:
    pod = _pod(None)
    with pytest.raises(CelError):
        MiniCel("object.metadata.annotations['ferry.dev/inject'] == 'true'").evaluate({"object": pod})
    assert MiniCel("has(object.metadata.annotations)").evaluate({"object": pod}) is False
    assert MiniCel("has(object.metadata.name) && object.metadata.name == 'p'").evaluate({"object": pod}) is True
    assert MiniCel("!has(object.metadata.annotations) || object.metadata.annotations['x'] == 'y'").evaluate(
        {"object": pod}
    )


def test_recorded_namespaces_carry_the_opt_in_label() -> None:
    """The fixture models namespace-wide opt-in the way the manifests expect it."""
    namespaces = recorded_namespaces()
    assert namespaces["team-a"]["metadata"]["labels"]["ferry.dev/inject"] == "enabled"
    assert namespaces["team-a"]["metadata"]["annotations"]["ferry.dev/inject"] == "true"
    assert "ferry.dev/inject" not in namespaces["team-b"]["metadata"]["labels"]


OPTED_IN = {NAMESPACE_OPT_IN_LABEL[0]: NAMESPACE_OPT_IN_LABEL[1]}
SCOPING_CASES = [
    # (namespace, its extra labels, pod annotations, entries the API server calls)
    ("team-b", None, None, []),
    ("team-b", None, {}, []),
    ("team-b", None, {"ferry.dev/inject": "true"}, [POD_ENTRY]),
    ("team-b", None, {"ferry.dev/inject": "false"}, []),
    ("team-b", None, {"ferry.dev/inject": "True"}, []),  # CEL compares exactly: lowercase "true"
    ("team-b", None, {"ferry.dev/secret-provider-class": "db"}, []),  # naming an SPC is not opting in
    ("team-a", OPTED_IN, None, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"other": "x"}, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"ferry.dev/inject": "true"}, [NAMESPACE_ENTRY]),
    ("team-a", OPTED_IN, {"ferry.dev/inject": "false"}, []),
    ("team-a", {"ferry.dev/inject": "disabled"}, {"ferry.dev/inject": "true"}, [POD_ENTRY]),
    ("team-a", {"ferry.dev/inject": "disabled"}, None, []),
    ("kube-system", None, {"ferry.dev/inject": "true"}, []),
    ("kube-system", OPTED_IN, None, []),
    ("kube-public", OPTED_IN, {"ferry.dev/inject": "true"}, []),
    (NAMESPACE, None, {"ferry.dev/inject": "true"}, []),
    (NAMESPACE, OPTED_IN, {"ferry.dev/inject": "true"}, []),
]


@pytest.mark.parametrize(("namespace", "labels", "pod_annotations", "expected"), SCOPING_CASES)
def test_mutating_webhook_scoping(
    base: list[dict[str, Any]],
    namespace: str,
    labels: dict[str, str] | None,
    pod_annotations: dict[str, str] | None,
    expected: list[str],
) -> None:
    assert called_entries(webhooks(base), _namespace(namespace, labels), _pod(pod_annotations)) == expected


def test_each_pod_reaches_ferry_at_most_once(base: list[dict[str, Any]]) -> None:
    hooks = webhooks(base)
    namespaces = [*recorded_namespaces().values(), _namespace(NAMESPACE), _namespace("x", OPTED_IN)]
    values: list[dict[str, str] | None] = [None, {}, *({"ferry.dev/inject": v} for v in ("true", "false", "", "1"))]
    for namespace in namespaces:
        for pod_annotations in values:
            assert len(called_entries(hooks, namespace, _pod(pod_annotations))) <= 1


def test_recorded_admission_pods_are_routed_as_designed(base: list[dict[str, Any]]) -> None:
    """The pods the v1.28 API server actually sent, against the shipped configuration.

    The recording used a single annotation-only entry, under which the
    unannotated pod in team-a (review 7) never reached Ferry although team-a
    opted in namespace-wide. The shipped second entry routes it to Ferry.
    """
    hooks = webhooks(base)
    namespaces = recorded_namespaces()
    admission = SHARED_FIXTURES / "admission"
    for review_file, expected in (
        ("review-1-ferry-first-call.json", [NAMESPACE_ENTRY]),
        ("review-3-ferry-reinvoked-after-identity-webhook.json", [NAMESPACE_ENTRY]),
        ("review-7-unannotated-pod-identity-webhook-only.json", [NAMESPACE_ENTRY]),
    ):
        request = json.loads((admission / review_file).read_text())["request"]
        pod, namespace = request["object"], namespaces[request["namespace"]]
        assert called_entries(hooks, namespace, pod) == expected, review_file
        # The same pod in a namespace that did not opt in.
        plain = _namespace("team-b")
        annotated = pod["metadata"].get("annotations", {}).get("ferry.dev/inject") == "true"
        assert called_entries(hooks, plain, pod) == ([POD_ENTRY] if annotated else []), review_file


def test_recorded_match_condition_is_equivalent_to_ours(base: list[dict[str, Any]]) -> None:
    """The pod entry's condition agrees with the one a real v1.28 server accepted and applied."""
    recorded = next(
        doc
        for doc in yaml.safe_load_all(
            (SHARED_FIXTURES / "admission" / "mutatingwebhookconfigurations.yaml").read_text()
        )
        if doc["metadata"]["name"] == "a-ferry"
    )
    theirs = MiniCel(recorded["webhooks"][0]["matchConditions"][0]["expression"])
    ours = [MiniCel(c["expression"]) for c in webhooks(base)[POD_ENTRY]["matchConditions"]]
    for pod_annotations in (None, {}, {"ferry.dev/inject": "true"}, {"ferry.dev/inject": "false"}, {"a": "b"}):
        pod = {"object": _pod(pod_annotations)}
        assert all(c.evaluate(pod) for c in ours) == theirs.evaluate(pod), pod_annotations


# --- cert-manager component ------------------------------------------------------------------


def test_cert_manager_component_is_consistent(cert_manager: list[dict[str, Any]]) -> None:
    certificate = only(cert_manager, "Certificate")
    issuer = only(cert_manager, "Issuer")
    spec = certificate["spec"]
    assert certificate["metadata"]["namespace"] == issuer["metadata"]["namespace"] == NAMESPACE
    assert spec["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert "selfSigned" in issuer["spec"]
    service = only(cert_manager, "Service", WEBHOOK_NAME)
    svc = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert svc in spec["dnsNames"]
    assert spec["secretName"] != TLS_SECRET  # never the Secret the self-managed mode writes

    mwc = only(cert_manager, "MutatingWebhookConfiguration", MWC_NAME)
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    )
    pod = webhook_deployment(cert_manager)["spec"]["template"]["spec"]
    container = webhook_container(cert_manager)
    env = env_of(container)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for var, key in (("FERRY_TLS_CERT_FILE", "tls.crt"), ("FERRY_TLS_KEY_FILE", "tls.key")):
        path = Path(env[var]["value"])
        assert path.name == key
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == spec["secretName"]
    assert restricted_violations(pod) == []
    # Files mode: the webhook no longer writes Secrets, so it may not.
    assert not [o for o in cert_manager if o["kind"] in {"Role", "RoleBinding"}]
    # Nor patch its webhook configuration: cainjector fills the caBundle.
    base_grants = grants(only(kustomize(MANIFESTS), "ClusterRole"))
    patch_ca = {g for g in base_grants if g[1] == "mutatingwebhookconfigurations"}
    assert patch_ca and grants(only(cert_manager, "ClusterRole")) == base_grants - patch_ca


# --- Examples ------------------------------------------------------------------------------------


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in POD_TEMPLATE_KINDS:
            yield obj, obj["spec"]["template"]


def test_examples_cover_the_documented_cases(examples: list[dict[str, Any]]) -> None:
    templates = list(pod_templates(examples))
    annotations = [t["metadata"].get("annotations", {}) for _, t in templates]
    assert any("ferry.dev/secret-provider-class" in a for a in annotations)
    assert any("ferry.dev/objects" in a for a in annotations)
    assert any(o["kind"] == "Job" for o, _ in templates)
    assert any("ferry.dev/refresh-interval" in a and ("ferry.dev/notify-signal" in a or "ferry.dev/notify-url" in a)
               for a in annotations)  # fmt: skip


def test_examples_are_wired_correctly(examples: list[dict[str, Any]]) -> None:
    from fetcher import spec

    known_keys = set(spec.iter_annotation_keys())
    service_accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in examples
                        if o["kind"] == "ServiceAccount"}  # fmt: skip
    spcs = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in examples if o["kind"] == "SecretProviderClass"}
    namespaces = {o["metadata"]["name"]: o for o in examples if o["kind"] == "Namespace"}
    for obj, template in pod_templates(examples):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        ns = obj["metadata"]["namespace"]
        assert ns in namespaces, where
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("ferry.dev/inject") == "true", where
        ferry_keys = {k for k in annotations if k.startswith("ferry.dev/")}
        assert ferry_keys <= known_keys, f"{where}: unknown keys {ferry_keys - known_keys}"
        assert "ferry.dev/status" not in annotations, where  # the webhook writes it
        pod = template["spec"]
        sa = service_accounts.get((ns, pod.get("serviceAccountName", "")))
        assert sa is not None, f"{where}: serviceAccountName must name a ServiceAccount in the examples"
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::"), where
        if "ferry.dev/secret-provider-class" in annotations:
            assert (ns, annotations["ferry.dev/secret-provider-class"]) in spcs, where
        if "ferry.dev/notify-signal" in annotations:
            assert pod.get("shareProcessNamespace") is True, f"{where}: signalling needs shareProcessNamespace"
        if "ferry.dev/containers" in annotations:
            names = {c["name"] for c in pod["containers"]}
            assert set(annotations["ferry.dev/containers"].split(",")) <= names, where
        # The examples' namespace enforces restricted: the app pods must pass it too.
        if namespaces[ns]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted":
            assert restricted_violations(pod) == [], where


def test_example_objects_pass_the_spec_model(examples: list[dict[str, Any]]) -> None:
    """Every SecretProviderClass and inline `objects` in the examples is one Ferry accepts."""
    from fetcher import spec

    for obj in examples:
        if obj["kind"] == "SecretProviderClass":
            assert spec.spec_from_secret_provider_class(obj).objects
    for obj, template in pod_templates(examples):
        annotations = template["metadata"].get("annotations", {})
        if "ferry.dev/objects" in annotations:
            built = spec.build_spec(
                objects=annotations["ferry.dev/objects"],
                region=annotations.get("ferry.dev/region"),
                failover_region=annotations.get("ferry.dev/failover-region"),
                path_translation=annotations.get("ferry.dev/path-translation"),
                refresh_interval=annotations.get("ferry.dev/refresh-interval"),
                notify_url=annotations.get("ferry.dev/notify-url"),
                notify_signal=annotations.get("ferry.dev/notify-signal"),
            )
            assert built.objects, obj["metadata"]["name"]


# --- Docs agree with the manifests and the code ------------------------------------------------

CONTRACT_ENV_VARS = {
    "FERRY_NAMESPACE", "FERRY_SERVICE_NAME", "FERRY_WEBHOOK_CONFIG_NAME", "FERRY_TLS_SECRET_NAME",
    "FERRY_TLS_CERT_FILE", "FERRY_TLS_KEY_FILE", "FERRY_FETCHER_IMAGE", "FERRY_FETCHER_PULL_POLICY",
    "FERRY_FETCHER_CPU_REQUEST", "FERRY_FETCHER_MEMORY_REQUEST", "FERRY_FETCHER_CPU_LIMIT",
    "FERRY_FETCHER_MEMORY_LIMIT", "FERRY_DEFAULT_REGION", "FERRY_VOLUME_SIZE_LIMIT", "FERRY_MIN_REFRESH_INTERVAL",
    "FERRY_NATIVE_SIDECARS", "FERRY_DEFAULT_USER_ID", "FERRY_EXCLUDED_NAMESPACES", "FERRY_MAX_REQUEST_BYTES",
    "FERRY_LOG_LEVEL",
}  # fmt: skip


def test_configuration_doc_lists_every_setting_and_annotation(
    base: list[dict[str, Any]], cert_manager: list[dict[str, Any]]
) -> None:
    doc = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"`(FERRY_[A-Z_]+)`", doc))
    used = set(env_of(webhook_container(base))) | set(env_of(webhook_container(cert_manager)))
    settings_source = REPO_ROOT / "webhook" / "settings.py"
    if settings_source.exists():
        used |= set(re.findall(r"\"(FERRY_[A-Z_]+)\"", settings_source.read_text()))
    missing = (CONTRACT_ENV_VARS | used) - documented
    assert not missing, f"docs/configuration.md does not document {sorted(missing)}"
    from fetcher import spec

    annotations = set(spec.iter_annotation_keys())
    missing_annotations = {key for key in annotations if f"`{key}`" not in doc}
    assert not missing_annotations, f"docs/configuration.md does not document {sorted(missing_annotations)}"


def test_install_doc_commands_match_the_manifests(base: list[dict[str, Any]]) -> None:
    doc = (DOCS / "install.md").read_text()
    assert "kubectl apply -k manifests/" in doc
    for name in (NAMESPACE, WEBHOOK_NAME, POD_ENTRY, NAMESPACE_ENTRY, "ferry.dev/inject=enabled"):
        assert name in doc, name


def test_examples_inject_into_valid_restricted_pods(examples: list[dict[str, Any]], tmp_path: Path) -> None:
    """The examples through Ferry's own offline injector: still valid, still "restricted", actually injected."""
    rendered = tmp_path / "examples.yaml"
    rendered.write_text(yaml.safe_dump_all(examples, sort_keys=False))
    spcs = tmp_path / "spcs.yaml"
    spcs.write_text(yaml.safe_dump_all([o for o in examples if o["kind"] == "SecretProviderClass"], sort_keys=False))
    namespaces = tmp_path / "namespaces.yaml"
    namespaces.write_text(yaml.safe_dump_all([o for o in examples if o["kind"] == "Namespace"], sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "inject", "-f", str(rendered), "--secret-provider-class", str(spcs),
         "--namespace-annotations", str(namespaces), "--native-sidecars", "true"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    injected = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(_ids(injected)) == sorted(_ids(examples))
    for obj in injected:
        validate_object(obj, LATEST_K8S)
    for obj, template in pod_templates(injected):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert template["metadata"]["annotations"]["ferry.dev/status"] == "injected", where
        pod = template["spec"]
        assert pod["initContainers"][0]["name"] == "ferry-init", where
        assert restricted_violations(pod) == [], where
        refresh = "ferry.dev/refresh-interval" in template["metadata"]["annotations"]
        assert any(c.get("restartPolicy") == "Always" for c in pod["initContainers"]) == refresh, where
