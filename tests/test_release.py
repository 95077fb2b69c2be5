"""One version everywhere, a licence, a changelog, and a release workflow that lints clean.

Why it exists: the version is typed once, in pyproject.toml, and a release is
only right if every place that shows it agrees: the image tags the manifests
deploy (the webhook's and the fetcher's it injects), the
`app.kubernetes.io/version` labels, the webhook's default fetcher image,
`--version` on both commands, the changelog's newest entry and the tags the
release workflow pushes. The workflow cannot run here; actionlint and the
checks below are what can be proved about it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.rendering import helm_template
from webhook.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"
REGISTRY = "ghcr.io/ferry-dev"


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found (apt-get install kubectl): `kubectl kustomize` renders the manifests")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, check=True, timeout=120)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return _kustomize(REPO_ROOT / "manifests")


def _split(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    return repository, tag


def _webhook_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "ferry-webhook"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook"]
    return dict(container)


def test_version_is_a_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_manifest_images_carry_the_version(rendered: list[dict[str, Any]]) -> None:
    container = _webhook_container(rendered)
    assert _split(container["image"]) == (f"{REGISTRY}/ferry-webhook", VERSION)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert _split(env["FERRY_FETCHER_IMAGE"]) == (f"{REGISTRY}/ferry-fetcher", VERSION)


def test_one_kustomize_images_entry_moves_both_images(tmp_path: Path) -> None:
    """Bumping the base's webhook entry moves the fetcher the webhook injects too."""
    base = tmp_path / "manifests"
    shutil.copytree(REPO_ROOT / "manifests", base)
    kustomization = base / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count(f"newTag: {VERSION}") == 1
    kustomization.write_text(text.replace(f"newTag: {VERSION}", "newTag: 9.9.9"))
    container = _webhook_container(_kustomize(base))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"].endswith(":9.9.9") and env["FERRY_FETCHER_IMAGE"].endswith(":9.9.9")


def test_version_labels_carry_the_version(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/version") == VERSION, f"{obj['kind']}/{obj['metadata']['name']}"


def test_webhook_default_fetcher_image_carries_the_version() -> None:
    assert _split(Settings().fetcher_image) == (f"{REGISTRY}/ferry-fetcher", VERSION)


@pytest.mark.parametrize("module", ["fetcher", "webhook"])
def test_version_option_on_both_commands(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ferry {VERSION}"


def test_console_scripts_name_the_two_commands() -> None:
    assert PROJECT["scripts"] == {"ferry-webhook": "webhook.__main__:main", "ferry-fetcher": "fetcher.__main__:main"}
    from fetcher.__main__ import main as fetcher_main
    from webhook.__main__ import main as webhook_main

    assert callable(fetcher_main) and callable(webhook_main)


def test_changelog_starts_at_this_release() -> None:
    headings = re.findall(r"^## (\S+)", (REPO_ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings and headings[0] == VERSION


def test_licence_is_the_one_pyproject_names() -> None:
    assert PROJECT["license"] == "Apache-2.0"  # an SPDX expression (a table is deprecated and warns)
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it


# --- Release workflow -------------------------------------------------------------------------


def _actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: install the dev extra")
    return found


def test_release_workflow_passes_actionlint() -> None:
    result = subprocess.run(
        [_actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint test is not vacuous: the binary runs and reports a real mistake."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ matrix.nothing }}\n"
    )
    result = subprocess.run([_actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "matrix" in result.stdout


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_release_builds_both_images_multi_arch_with_sbom_and_provenance(workflow: dict[Any, Any]) -> None:
    images = workflow["jobs"]["images"]
    assert images["strategy"]["matrix"]["image"] == ["fetcher", "webhook"]
    (build,) = [s for s in images["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    options = build["with"]
    assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert options["push"] is True and options["sbom"] is True
    assert str(options["provenance"]).startswith("mode=max")
    assert options["file"] == "Dockerfile.${{ matrix.image }}"
    # The registry and repositories the manifests deploy, tagged with the one version.
    assert images["env"]["IMAGE"] == f"{REGISTRY}/ferry-${{{{ matrix.image }}}}"
    assert options["tags"] == "${{ env.IMAGE }}:${{ env.VERSION }}"
    assert images["env"]["VERSION"] == "${{ needs.version.outputs.version }}"
    version_step = workflow["jobs"]["version"]["steps"][-1]["run"]
    assert 'tomllib.load(open("pyproject.toml", "rb"))["project"]["version"]' in version_step
    assert set(images["needs"]) == {"test", "version"}


def test_release_actions_are_pinned_by_commit(workflow: dict[Any, Any]) -> None:
    uses = [str(step["uses"]) for step in _steps(workflow) if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{ref}: pin actions by commit SHA"
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["images"]["permissions"] == {"contents": "read", "packages": "write"}


def test_the_documented_upgrade_overlay_moves_both_images(tmp_path: Path) -> None:
    """docs/install.md's overlay, built on the base: the one `newTag` edit moves the fetcher too."""
    doc = (REPO_ROOT / "docs" / "install.md").read_text()
    upgrade = doc[doc.index("## Upgrade") :]
    match = re.search(r"```yaml\n(.*?)```", upgrade, flags=re.DOTALL)
    assert match, "no yaml block in docs/install.md's Upgrade section"
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    body = "\n".join(line[2:] if line.startswith("  ") else line for line in match.group(1).splitlines())
    (overlay / "kustomization.yaml").write_text("resources: [../manifests]\n" + body)
    container = _webhook_container(_kustomize(overlay))
    env = {e["name"]: e.get("value") for e in container["env"]}
    new_tag = re.search(r"newTag: (\S+)", body)
    assert new_tag and new_tag.group(1) != VERSION
    assert _split(container["image"])[1] == _split(env["FERRY_FETCHER_IMAGE"])[1] == new_tag.group(1)


def test_chart_version_and_app_version_are_the_release() -> None:
    chart = yaml.safe_load((REPO_ROOT / "charts" / "ferry" / "Chart.yaml").read_text())
    assert chart["version"] == VERSION and str(chart["appVersion"]) == VERSION


def test_chart_images_default_to_the_app_version() -> None:
    """An empty `tag` in values.yaml means the chart's appVersion, so one edit (or `image.tag`) upgrades both."""
    values = yaml.safe_load((REPO_ROOT / "charts" / "ferry" / "values.yaml").read_text())
    assert values["image"]["tag"] == "" and values["fetcher"]["image"]["tag"] == ""
    objects = helm_template()
    assert isinstance(objects, list)
    container = _webhook_container(objects)
    assert _split(container["image"]) == (f"{REGISTRY}/ferry-webhook", VERSION)
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert _split(env["FERRY_FETCHER_IMAGE"]) == (f"{REGISTRY}/ferry-fetcher", VERSION)
