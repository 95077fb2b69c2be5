"""The docs' shell blocks, run in order against a real control plane: a command that stops working fails here.

Why it exists: install guides drift. Every fenced ```sh block of README.md,
docs/install.md and docs/local-cluster.md is run with bash (`set -euo
pipefail`), with helm and kubectl from .venv/bin, against a control plane of
its own, in the order the page gives them. A block is skipped only when the
line above its fence says `<!-- not-tested: REASON -->`, and the reason must be
there. There is no kubelet: `devcluster.kubeletless` runs the webhook's
Deployment as a local process and reports its pods ready, as a kubelet would,
so `kubectl rollout status` and admission work as the docs say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devcluster.__main__ import install_chart
from devcluster.controlplane import ControlPlane, start_control_plane
from devcluster.eksidentity import IdentityWebhook
from devcluster.kubeletless import WebhookReplica
from tests.support.ferrylib import REPO_ROOT, wait_for

FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[A-Za-z]*)[ ]*$")
MARKER = re.compile(r"^\s*<!--\s*not-tested:\s*(?P<reason>.*?)\s*-->\s*$")
SHELL_LANGUAGES = {"sh", "bash", "shell"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    text: str
    skip_reason: str | None


def shell_blocks(page: str) -> list[Block]:
    """The page's ```sh blocks, with the not-tested reason written above each, if any."""
    lines = (REPO_ROOT / page).read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened or not opened.group("lang"):
            index += 1
            continue
        indent, start = opened.group("indent"), index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else lines[index])
            index += 1
        index += 1
        if opened.group("lang") not in SHELL_LANGUAGES:
            continue
        above = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marked = MARKER.match(above)
        blocks.append(Block(page, start + 1, "\n".join(body) + "\n", marked.group("reason") if marked else None))
    return blocks


def run_blocks(plane: ControlPlane, page: str, tmp_path: Path) -> list[Block]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "KUBERNETES_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["KUBECONFIG"] = plane.kubeconfig
    env["HOME"] = str(tmp_path)  # helm's and kubectl's caches, not the user's
    ran = []
    for block in shell_blocks(page):
        if block.skip_reason is not None:
            continue
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.text],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"{page}:{block.line}: the block failed (exit {result.returncode}):\n{block.text}\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
        ran.append(block)
    return ran


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    control_plane = start_control_plane(os.environ["KUBEBUILDER_ASSETS"])
    replica = WebhookReplica(control_plane)
    replica.start()
    try:
        yield control_plane
    finally:
        replica.stop()
        control_plane.stop()
        shutil.rmtree(control_plane.workdir, ignore_errors=True)


PAGES = ("README.md", "docs/install.md", "docs/local-cluster.md")


def test_every_skipped_block_says_why() -> None:
    blocks = [block for page in PAGES for block in shell_blocks(page)]
    assert len(blocks) >= 8
    for block in blocks:
        assert block.skip_reason is None or len(block.skip_reason) >= 20, f"{block.page}:{block.line}: no reason"


def test_the_install_guide(plane: ControlPlane, tmp_path: Path) -> None:
    ran = run_blocks(plane, "docs/install.md", tmp_path)
    assert any("helm install" in block.text for block in ran)
    assert any("--dry-run=server" in block.text for block in ran)
    assert any("helm uninstall" in block.text for block in ran)


def test_the_readme(plane: ControlPlane, tmp_path: Path) -> None:
    ran = run_blocks(plane, "README.md", tmp_path)
    assert any("helm install" in block.text for block in ran)


def _after_make_cluster(plane: ControlPlane) -> Callable[[], None]:
    """What `make cluster` has done before the page's first tested block: the chart, its webhook, EKS's stand-in."""
    install_chart(plane, [])

    def lookup(namespace: str, name: str) -> dict[str, object] | None:
        found = plane.kubectl("get", "serviceaccount", name, "-n", namespace, "-o", "json", check=False)
        return dict(json.loads(found.stdout)) if found.returncode == 0 else None

    identity = IdentityWebhook(lookup)
    plane.kubectl("apply", "-f", "-", input=json.dumps(identity.configuration()))
    wait_for(
        lambda: plane.kubectl("-n", "ferry-system", "rollout", "status", "deploy/ferry-webhook", "--timeout=5s",
                              check=False).returncode == 0,
        120,
        what="the chart's webhook to serve",
    )  # fmt: skip
    return identity.close


def test_the_local_cluster_quick_start(plane: ControlPlane, tmp_path: Path) -> None:
    close = _after_make_cluster(plane)
    try:
        ran = run_blocks(plane, "docs/local-cluster.md", tmp_path)
    finally:
        close()
    assert any("FerryWarning" in block.text for block in ran)
