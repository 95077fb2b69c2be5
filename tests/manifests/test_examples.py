"""The examples are wired correctly, pass the spec model and inject into valid restricted pods."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.render import (
    LATEST_K8S,
    POD_TEMPLATE_KINDS,
    _ids,
    restricted_violations,
    validate_object,
)
from tests.support.paths import REPO_ROOT

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
    from fetcher import contract

    known_keys = set(contract.iter_annotation_keys())
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
    from fetcher import contract

    for obj in examples:
        if obj["kind"] == "SecretProviderClass":
            assert contract.spec_from_secret_provider_class(obj).objects
    for obj, template in pod_templates(examples):
        annotations = template["metadata"].get("annotations", {})
        if "ferry.dev/objects" in annotations:
            built = contract.build_spec(
                objects=annotations["ferry.dev/objects"],
                region=annotations.get("ferry.dev/region"),
                failover_region=annotations.get("ferry.dev/failover-region"),
                path_translation=annotations.get("ferry.dev/path-translation"),
                refresh_interval=annotations.get("ferry.dev/refresh-interval"),
                notify_url=annotations.get("ferry.dev/notify-url"),
                notify_signal=annotations.get("ferry.dev/notify-signal"),
            )
            assert built.objects, obj["metadata"]["name"]


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
        # A preview: no status annotation (webhook.policy.preview), but Ferry's containers are there.
        assert "ferry.dev/status" not in template["metadata"]["annotations"], where
        pod = template["spec"]
        assert pod["initContainers"][0]["name"] == "ferry-init", where
        assert restricted_violations(pod) == [], where
        refresh = "ferry.dev/refresh-interval" in template["metadata"]["annotations"]
        assert any(c.get("restartPolicy") == "Always" for c in pod["initContainers"]) == refresh, where


def test_each_class_and_namespace_comes_before_the_workloads_that_need_them(examples: list[dict[str, Any]]) -> None:
    """`kubectl apply -k manifests/examples` creates objects in this order; a class after its workload left
    the ReplicaSet's first pods denied (FailedCreate) on a first apply."""
    seen: set[tuple[str, str]] = set()
    for obj in examples:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            assert ("Namespace", obj["metadata"]["namespace"]) in seen, f"{kind}/{name} before its namespace"
            annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
            spc = annotations.get("ferry.dev/secret-provider-class")
            if spc:
                assert ("SecretProviderClass", spc) in seen, f"{kind}/{name} comes before SecretProviderClass/{spc}"
        seen.add((kind, name))
