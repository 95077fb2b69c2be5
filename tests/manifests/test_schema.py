"""The rendered manifests validate strictly against the Kubernetes schemas and are lint clean."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.manifests.render import (
    K8S_VERSIONS,
    LATEST_K8S,
    MANIFESTS,
    MWC_NAME,
    NAMESPACE,
    UNSCHEMAED_CUSTOM_RESOURCES,
    WEBHOOK_NAME,
    _ids,
    validate_object,
)
from tests.support.paths import REPO_ROOT


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
