"""Rendering and checking the install manifests: shared by the tests in this package.

Why it exists: every manifest test renders `manifests/` with `kubectl kustomize`
and validates strictly; the helpers and the names the manifests must use are
here once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.support import pss
from tests.support.paths import FIXTURES, REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests"
EXAMPLES = MANIFESTS / "examples"
CERT_MANAGER_COMPONENT = MANIFESTS / "components" / "cert-manager"
DOCS = REPO_ROOT / "docs"

NAMESPACE = "ferry-system"
WEBHOOK_NAME = "ferry-webhook"
MWC_NAME = "ferry"
TLS_SECRET = "ferry-webhook-tls"
POD_ENTRY = "pods.ferry.dev"
NAMESPACE_ENTRY = "ns.pods.ferry.dev"
WARN_ENTRY = "warn.pods.ferry.dev"
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
    crd = yaml.safe_load((FIXTURES / "secretproviderclass-crd.yaml").read_text())
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


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Pod Security Standard "restricted" violations of a Pod or PodSpec (the one checker in tests/support)."""
    return [str(violation) for violation in pss.check_pod(pod)]


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
