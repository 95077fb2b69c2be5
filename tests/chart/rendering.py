"""Render the chart with helm and the manifests with kustomize, for the chart tests.

Why it exists: every chart test needs the same three things: the real `helm`
binary (installed into the venv by scripts/install-helm.sh), `kubectl
kustomize` for the manifests and their components, and a way to compare the
two renders object by object. Keeping them here keeps the tests about
behaviour, not subprocess plumbing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "ferry"
MANIFESTS = REPO_ROOT / "manifests"
COMPONENTS = MANIFESTS / "components"
NAMESPACE = "ferry-system"
RELEASE = "ferry"

Obj = dict[str, Any]


def tool(name: str) -> str:
    """The venv's copy first (scripts/install-helm.sh puts helm and kubectl there), then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run scripts/install-helm.sh (make does it) to put helm and kubectl in .venv/bin"
        )
    return found


def run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False, cwd=REPO_ROOT)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def load_objects(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(
    values: Obj | None = None, tmp_path: Path | None = None, *, namespace: str = NAMESPACE, check: bool = True
) -> list[Obj] | subprocess.CompletedProcess[str]:
    """`helm template` with a values file (written to tmp_path); objects, or the process when check=False."""
    args = [tool("helm"), "template", RELEASE, str(CHART), "--namespace", namespace]
    if values:
        assert tmp_path is not None, "values need a tmp_path for their file"
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values, sort_keys=False))
        args += ["--values", str(values_file)]
    result = run(args, check=check)
    if not check:
        return result
    objects = load_objects(result.stdout)
    assert objects, "helm template rendered nothing"
    return objects


def render(values: Obj | None, tmp_path: Path, *, namespace: str = NAMESPACE) -> list[Obj]:
    objects = helm_template(values, tmp_path, namespace=namespace)
    assert isinstance(objects, list)
    return objects


def kustomize(components: list[str], tmp_path: Path) -> list[Obj]:
    """`kubectl kustomize` of the base plus components, through an overlay as a user writes it."""
    overlay = tmp_path / "overlay"
    overlay.mkdir(exist_ok=True)
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines.append(f"  - {os.path.relpath(MANIFESTS, overlay)}")
    if components:
        lines.append("components:")
        lines += [f"  - {os.path.relpath(COMPONENTS / name, overlay)}" for name in components]
    (overlay / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    result = run([tool("kubectl"), "kustomize", str(overlay)])
    return load_objects(result.stdout)


def object_id(obj: Obj) -> str:
    namespace = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{namespace + '/' if namespace else ''}{obj['metadata']['name']}"


def by_id(objects: list[Obj]) -> dict[str, Obj]:
    ids = [object_id(o) for o in objects]
    assert len(ids) == len(set(ids)), f"duplicate objects: {sorted(ids)}"
    return dict(zip(ids, objects, strict=True))


def only(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def webhook_container(objects: list[Obj]) -> Obj:
    containers = only(objects, "Deployment", "ferry-webhook")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["webhook"]
    return dict(containers[0])


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}
