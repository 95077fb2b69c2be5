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

import os
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


def _job_steps(workflow: dict[Any, Any], job: str) -> list[dict[str, Any]]:
    return list(workflow["jobs"][job]["steps"])


def _runs(workflow: dict[Any, Any], job: str) -> str:
    return "\n".join(str(step.get("run", "")) for step in _job_steps(workflow, job))


def _uses(workflow: dict[Any, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in _job_steps(workflow, job) if str(s.get("uses", "")).startswith(action + "@")]


def _index(steps: list[dict[str, Any]], needle: str) -> int:
    (found,) = [i for i, step in enumerate(steps) if needle in str(step.get("run", "")) + str(step.get("uses", ""))]
    return found


def test_release_runs_only_for_version_tags(workflow: dict[Any, Any]) -> None:
    """No manual dispatch and no branch: a release starts from a pushed vX.Y.Z tag, and nothing else."""
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push"}, f"release triggers: {sorted(triggers)}; no workflow_dispatch, no branches"
    assert set(triggers["push"]) == {"tags"}
    (pattern,) = triggers["push"]["tags"]
    assert pattern == "v[0-9]+.[0-9]+.[0-9]+"
    version_run = _runs(workflow, "version")
    assert '"${GITHUB_REF_TYPE}" != "tag"' in version_run and '"${GITHUB_REF_NAME}" != "v${version}"' in version_run


def _writes(job: dict[str, Any]) -> bool:
    return any(level == "write" for level in (job.get("permissions") or {}).values())


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def test_every_job_that_writes_is_gated_on_a_tag_and_the_release_environment(workflow: dict[Any, Any]) -> None:
    jobs = workflow["jobs"]
    writers = {name for name, job in jobs.items() if _writes(job)}
    assert writers == {"images", "pypi", "chart", "notes"}
    tag_only = "github.ref_type == 'tag' && startsWith(github.ref, 'refs/tags/v')"
    for name in writers:
        job = jobs[name]
        assert job.get("environment") == "release", f"{name}: push only through the protected environment"
        assert job.get("if") == tag_only, f"{name}: gated on a tag ref"

        # ...and, through its needs, on the version check and the whole test suite.
        def upstream(job_name: str) -> set[str]:
            return {n for need in _needs(jobs[job_name]) for n in {need, *upstream(need)}}

        assert {"version", "test"} <= upstream(name), f"{name} must wait for the version check and the tests"
    assert jobs["version"]["if"] == tag_only
    assert workflow["permissions"] == {"contents": "read"}
    assert jobs["images"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert jobs["chart"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert jobs["pypi"]["permissions"] == {"id-token": "write"}
    assert jobs["notes"]["permissions"] == {"contents": "write"}
    for name, job in jobs.items():
        if name not in writers:
            assert "permissions" not in job and "environment" not in job, name


def test_release_actions_are_pinned_by_commit(workflow: dict[Any, Any]) -> None:
    for path in sorted(WORKFLOW.parent.glob("*.yml")):
        flow = yaml.safe_load(path.read_text())
        uses = [str(step["uses"]) for step in _steps(flow) if "uses" in step]
        assert uses, path.name
        for ref in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}: pin actions by commit SHA"
    assert _uses(workflow, "images", "sigstore/cosign-installer")
    assert _uses(workflow, "chart", "sigstore/cosign-installer")
    assert _uses(workflow, "pypi", "pypa/gh-action-pypi-publish")


def test_images_are_built_once_tested_then_pushed_unchanged(workflow: dict[Any, Any]) -> None:
    """The same recipe as the tests (the Dockerfiles, tests/images) and the very archive the tests ran is pushed."""
    from tests.support.paths import load_script

    builder = load_script("scripts/build_images.py", "build_images")
    job = workflow["jobs"]["images"]
    steps = _job_steps(workflow, "images")
    builds = _uses(workflow, "images", "docker/build-push-action")
    archives = job["env"]["ARCHIVES"]
    assert {b["with"]["file"] for b in builds} == set(builder.IMAGES.values())
    for build in builds:
        options = build["with"]
        name = options["file"].removeprefix("Dockerfile.")
        assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
        assert options["push"] is False and options["sbom"] is True
        assert str(options["provenance"]).startswith("mode=max")
        assert "build-args" not in options  # the Dockerfiles' own digest-pinned bases
        assert options["outputs"] == f"type=oci,dest=${{{{ env.ARCHIVES }}}}/ferry-{name}.tar"
        assert options["tags"] == f"${{{{ env.REGISTRY }}}}/ferry-{name}:${{{{ env.VERSION }}}}"
    test_step = steps[_index(steps, "pytest tests/images")]
    assert test_step["env"][builder.ARCHIVE_DIR_ENV] == "${{ env.ARCHIVES }}" and test_step["env"]["CI"] == "true"
    assert f"--preserve-env=CI,{builder.ARCHIVE_DIR_ENV}" in test_step["run"]
    push = steps[_index(steps, "skopeo copy")]
    assert '"oci-archive:${ARCHIVES}/ferry-${image}.tar"' in push["run"] and "--preserve-digests" in push["run"]
    assert archives.startswith("/")
    order = [_index(steps, "release-tag-absent"), *(steps.index(b) for b in builds), steps.index(test_step)]
    assert order == sorted(order) and order[-1] < steps.index(push), "check tags, build, test, then push"
    assert workflow["env"]["REGISTRY"] == REGISTRY
    version_step = workflow["jobs"]["version"]["steps"][-1]["run"]
    assert 'tomllib.load(open("pyproject.toml", "rb"))["project"]["version"]' in version_step


def test_images_are_signed_keyless_by_digest_and_their_digests_published(workflow: dict[Any, Any]) -> None:
    push = _runs(workflow, "images")
    assert '--digestfile "${ARCHIVES}/${image}.digest"' in push
    assert 'cosign sign --yes --recursive "${ref}@${digest}"' in push  # by digest, never by tag
    assert "--key" not in push  # keyless: the workflow's OIDC identity
    outputs = workflow["jobs"]["images"]["outputs"]
    assert set(outputs) == {"webhook-digest", "fetcher-digest"}
    notes = _runs(workflow, "notes")
    assert "scripts/release_digests.py" in notes and "release/digests.txt release/values-digests.yaml" in notes
    assert "gh release create" in notes and "--verify-tag" in notes and "--notes-file release/notes.md" in notes
    notes_env = workflow["jobs"]["notes"]["steps"][-1]["env"]
    assert notes_env["WEBHOOK_DIGEST"] == "${{ needs.images.outputs.webhook-digest }}"
    assert notes_env["CHART_DIGEST"] == "${{ needs.chart.outputs.chart-digest }}"


def test_nothing_released_is_ever_overwritten(workflow: dict[Any, Any]) -> None:
    images = _runs(workflow, "images")
    assert 'release-tag-absent "${REGISTRY}/ferry-fetcher:${VERSION}" "${REGISTRY}/ferry-webhook:${VERSION}"' in images
    chart_steps = _job_steps(workflow, "chart")
    check = _index(chart_steps, 'release-tag-absent "${CHART_REPOSITORY#oci://}/ferry:${VERSION}"')
    assert check < _index(chart_steps, "helm push")
    assert "skip-existing" not in str(_uses(workflow, "pypi", "pypa/gh-action-pypi-publish"))  # PyPI refuses re-uploads


def test_chart_is_published_to_an_oci_registry_pinned_and_signed(workflow: dict[Any, Any]) -> None:
    steps = _job_steps(workflow, "chart")
    pin = steps[_index(steps, "--pin-chart charts/ferry/values.yaml")]
    assert '--webhook-digest "${WEBHOOK_DIGEST}"' in pin["run"] and "helm lint --strict" in pin["run"]
    env = workflow["jobs"]["chart"]["env"]
    assert env["WEBHOOK_DIGEST"] == "${{ needs.images.outputs.webhook-digest }}"
    assert env["FETCHER_DIGEST"] == "${{ needs.images.outputs.fetcher-digest }}"
    push = steps[_index(steps, "helm push")]["run"]
    assert "helm package charts/ferry" in push and '"${CHART_REPOSITORY}"' in push
    assert 'cosign sign --yes "${CHART_REPOSITORY#oci://}/ferry@${digest}"' in push
    assert workflow["env"]["CHART_REPOSITORY"] == f"oci://{REGISTRY}/charts"
    assert _index(steps, "--pin-chart") < _index(steps, "helm push")


def test_cli_package_is_built_and_published_with_trusted_publishing(workflow: dict[Any, Any]) -> None:
    assert "-m build --outdir dist ." in _runs(workflow, "package")
    (publish,) = _uses(workflow, "pypi", "pypa/gh-action-pypi-publish")
    assert not publish.get("with", {}).get("password")  # OIDC, no stored token
    assert "permissions" not in workflow["jobs"]["package"]  # building needs no write access


def test_release_runs_the_api_server_suite(workflow: dict[Any, Any]) -> None:
    steps = _job_steps(workflow, "test")
    envtest = steps[_index(steps, ".ci/envtest")]
    assert envtest["run"] == 'echo "KUBEBUILDER_ASSETS=$(.ci/envtest)" >> "${GITHUB_ENV}"'
    run = steps[_index(steps, "bash .ci/run")]
    assert run["run"] == "sudo --preserve-env=CI,KUBEBUILDER_ASSETS bash .ci/run" and run["env"] == {"CI": "true"}
    assert _index(steps, "actions/setup-go") < steps.index(envtest) < steps.index(run)
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert "KUBEBUILDER_ASSETS=$(.ci/envtest)" in ci_run and '[ "${CI:-}" = "true" ]' in ci_run


def test_slow_tests_run_on_a_schedule() -> None:
    slow = yaml.safe_load((WORKFLOW.parent / "slow.yml").read_text())
    assert slow[True]["schedule"] and slow["permissions"] == {"contents": "read"}
    (job,) = slow["jobs"].values()
    assert job["env"]["CI"] == "true"
    runs = [str(step.get("run", "")) for step in job["steps"]]
    assert "make test-slow" in runs
    assert any(".ci/envtest" in run for run in runs)  # `pytest -m slow` walks tests/e2e: CI=true needs the plane
    assert "-m slow" in (REPO_ROOT / "Makefile").read_text().split("test-slow:", 1)[1].split("\n\n", 1)[0]
    result = subprocess.run(
        [_actionlint(), "-no-color", str(WORKFLOW.parent / "slow.yml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout


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


# --- Digests: the chart pins them, the release publishes them ---------------------------------

WEBHOOK_DIGEST = "sha256:" + "1" * 64
FETCHER_DIGEST = "sha256:" + "2" * 64


def _render_chart(chart: Path, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from tests.chart.rendering import NAMESPACE, RELEASE, load_objects, run, tool

    args = [tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp_path / "values.yaml")]
    return load_objects(run(args).stdout)


def _images(objects: list[dict[str, Any]]) -> tuple[str, str]:
    container = _webhook_container(objects)
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    return container["image"], env["FERRY_FETCHER_IMAGE"]


def test_chart_digest_values_pull_both_images_by_digest(tmp_path: Path) -> None:
    """`image.digest` and `fetcher.image.digest` render `repo@sha256:...`, win over a tag, and reach the settings."""
    values = {
        "image": {"tag": "9.9.9", "digest": WEBHOOK_DIGEST},
        "fetcher": {"image": {"tag": "9.9.9", "digest": FETCHER_DIGEST}},
    }
    webhook, fetcher = _images(_render_chart(REPO_ROOT / "charts" / "ferry", tmp_path, values))
    assert webhook == f"{REGISTRY}/ferry-webhook@{WEBHOOK_DIGEST}"
    assert fetcher == f"{REGISTRY}/ferry-fetcher@{FETCHER_DIGEST}"
    assert Settings.from_env({"FERRY_FETCHER_IMAGE": fetcher}).fetcher_image == fetcher


def test_chart_refuses_a_digest_that_is_not_one(tmp_path: Path) -> None:
    from tests.chart.rendering import helm_template

    for bad in ("sha256:abc", "latest", "sha256:" + "A" * 64):
        result = helm_template({"image": {"digest": bad}}, tmp_path, check=False)
        assert not isinstance(result, list) and result.returncode != 0 and "digest" in result.stderr, bad


def _release_digests() -> Any:
    from tests.support.paths import load_script

    return load_script("scripts/release_digests.py", "release_digests")


def test_release_pins_the_published_chart_and_writes_digest_files(tmp_path: Path) -> None:
    release = _release_digests()
    chart = tmp_path / "ferry"
    shutil.copytree(REPO_ROOT / "charts" / "ferry", chart)
    code = release.main(
        [
            *("--version", VERSION, "--webhook-digest", WEBHOOK_DIGEST, "--fetcher-digest", FETCHER_DIGEST),
            *("--pin-chart", str(chart / "values.yaml"), "--out", str(tmp_path / "out")),
        ]
    )
    assert code == 0
    pinned = (chart / "values.yaml").read_text()
    original = (REPO_ROOT / "charts" / "ferry" / "values.yaml").read_text()
    assert pinned.count("# --") == original.count("# --")  # comments kept: `helm show values` still documents
    assert _images(_render_chart(chart, tmp_path)) == (
        f"{REGISTRY}/ferry-webhook@{WEBHOOK_DIGEST}",
        f"{REGISTRY}/ferry-fetcher@{FETCHER_DIGEST}",
    )
    out = tmp_path / "out"
    assert (out / "digests.txt").read_text().splitlines() == [
        f"{REGISTRY}/ferry-webhook:{VERSION}@{WEBHOOK_DIGEST}",
        f"{REGISTRY}/ferry-fetcher:{VERSION}@{FETCHER_DIGEST}",
    ]
    # The values file users pass to a chart from a clone pins the same digests.
    values_file = yaml.safe_load((out / "values-digests.yaml").read_text())
    assert _images(_render_chart(REPO_ROOT / "charts" / "ferry", tmp_path, values_file))[1].endswith(FETCHER_DIGEST)
    notes = (out / "notes.md").read_text()
    assert WEBHOOK_DIGEST in notes and FETCHER_DIGEST in notes and "cosign verify" in notes
    assert f"oci://{REGISTRY}/charts/ferry --version {VERSION}" in notes


def test_release_digests_refuse_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = _release_digests()
    args = ["--version", VERSION, "--fetcher-digest", FETCHER_DIGEST, "--out", str(tmp_path / "out")]
    assert release.main([*args, "--webhook-digest", "sha256:" + "x" * 10_000]) == 2
    error = capsys.readouterr().err
    assert "--webhook-digest" in error and len(error) < 300 and not (tmp_path / "out").exists()
    twice = (REPO_ROOT / "charts" / "ferry" / "values.yaml").read_text() + '  digest: ""\n'
    with pytest.raises(release.ReleaseError, match="expected one empty webhook image digest, found 2"):
        release.pin_chart_values(twice, {"webhook": WEBHOOK_DIGEST, "fetcher": FETCHER_DIGEST})


# --- Never overwrite a tag: the registry check ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "code", "says"),
    [
        ('{"schemaVersion": 2}', 0, 1, "already exists"),
        ("manifest unknown: manifest unknown", 1, 0, "absent"),
        ("name unknown: repository name not known to registry", 1, 0, "absent"),
        ("pinging container registry ghcr.io: dial tcp: i/o timeout", 1, 1, "cannot tell"),
        ("unauthorized: authentication required", 1, 1, "cannot tell"),
    ],
)
def test_release_tag_check(tmp_path: Path, answer: str, status: int, code: int, says: str) -> None:
    """.ci/release-tag-absent reads skopeo's answer; anything but "unknown" stops the release (a stand-in skopeo)."""
    fake = tmp_path / "skopeo"
    fake.write_text(f"#!/bin/sh\necho '{answer}'\nexit {status}\n")
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / ".ci" / "release-tag-absent"), f"{REGISTRY}/ferry-fetcher:{VERSION}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert result.returncode == code and says in result.stdout, result.stdout + result.stderr


# --- The API-server suite never disappears in CI -----------------------------------------------


def _suite_run(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "KUBEBUILDER_ASSETS")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e", "tests/test_release.py::test_version_is_a_release_version"]
        + ["-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_ci_run_without_a_control_plane_fails_loudly() -> None:
    result = _suite_run({"CI": "true"})
    assert result.returncode == 1, result.stdout[-2000:]
    assert "CI=true but KUBEBUILDER_ASSETS is not set" in result.stdout and "FAILS" in result.stdout


def test_local_run_without_a_control_plane_passes_with_a_one_line_hint() -> None:
    result = _suite_run({})
    assert result.returncode == 0, result.stdout[-2000:]
    hint = [line for line in result.stdout.splitlines() if "KUBEBUILDER_ASSETS" in line]
    assert len(hint) == 1 and "tests/e2e" in hint[0]


def test_envtest_helper_refuses_a_folder_without_the_binaries(tmp_path: Path) -> None:
    script = REPO_ROOT / ".ci" / "envtest"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBEBUILDER_ASSETS": str(tmp_path)}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and result.stdout == "" and "no executable etcd" in result.stderr
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and result.stdout.strip() == str(tmp_path)


def test_release_archive_must_exist_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.paths import load_script

    builder = load_script("scripts/build_images.py", "build_images")
    monkeypatch.delenv(builder.ARCHIVE_DIR_ENV, raising=False)
    assert builder.release_archive("fetcher") is None
    monkeypatch.setenv(builder.ARCHIVE_DIR_ENV, str(tmp_path))
    with pytest.raises(builder.ImageBuildError, match="has no ferry-fetcher.tar"):
        builder.release_archive("fetcher")


def test_the_documented_kustomize_overlay_pins_both_digests(tmp_path: Path) -> None:
    """docs/release.md's overlay, built on the base: both images by digest, the fetcher through the setting."""
    doc = (REPO_ROOT / "docs" / "release.md").read_text()
    match = re.search(r"```yaml\n(resources: \[\.\./manifests\].*?)```", doc, flags=re.DOTALL)
    assert match, "no kustomize overlay in docs/release.md"
    body = match.group(1).replace("sha256:<webhook digest>", WEBHOOK_DIGEST)
    body = body.replace("sha256:<fetcher digest>", FETCHER_DIGEST)
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(body)
    assert _images(_kustomize(tmp_path / "overlay")) == (
        f"{REGISTRY}/ferry-webhook@{WEBHOOK_DIGEST}",
        f"{REGISTRY}/ferry-fetcher@{FETCHER_DIGEST}",
    )
