"""The published package: a wheel that builds without warnings and two CLIs that work from it.

Why it exists: users get `ferry-fetcher` and `ferry-webhook` with pipx or pip
(docs/install.md), not from a clone. So the wheel is built here as the release
workflow builds it, installed into a throwaway virtualenv with only the extras
the docs name, and run: `ferry-fetcher once` from the plain package against a
moto server, `ferry-webhook inject` with `[webhook]`. Also the command lines'
own polish: each `--help` names the command as it was typed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

from fetcher import command_name
from tests.conftest import MotoEndpoint
from tests.support.paths import REPO_ROOT

WARNING_MARKERS = ("SetuptoolsDeprecationWarning", "project.license", "License classifiers", "!!")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the wheel, the build's whole output) from `pip wheel . --no-deps`, as a user or the release builds it."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-w", str(out), "-v"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("ferry_secrets-*.whl")
    return wheel, result.stdout + result.stderr


def _venv(where: Path, wheel: Path, extra: str = "") -> Path:
    """A fresh virtualenv holding the wheel (with `extra`) and its dependencies, pinned by constraints.txt."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    requirement = f"ferry-secrets{extra} @ {wheel.as_uri()}"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "-c", "constraints.txt", requirement],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return where / "bin"


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH and not run from the clone: the installed package is what answers."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def test_wheel_builds_without_a_licence_warning(built: tuple[Path, str]) -> None:
    _, output = built
    found = [marker for marker in WARNING_MARKERS if marker in output]
    assert not found, f"the build warned ({found}):\n" + output[-4000:]


def test_wheel_metadata_names_the_licence_and_the_two_commands(built: tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert not any(line.startswith("License: ") for line in metadata.splitlines())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ferry-fetcher = fetcher.__main__:main" in entry_points
    assert "ferry-webhook = webhook.__main__:main" in entry_points
    # Only the product: no tests, bench or scripts in what users install.
    assert {n.split("/", 1)[0] for n in names if not n.startswith("ferry_secrets-")} == {"fetcher", "webhook"}


def test_plain_package_gives_a_working_fetcher_once(
    built: tuple[Path, str], tmp_path: Path, moto: MotoEndpoint
) -> None:
    """`pip install ferry-secrets` (no extra) is enough for `ferry-fetcher once`, as docs/install.md says."""
    wheel, _ = built
    bin_dir = _venv(tmp_path / "venv", wheel)
    help_text = subprocess.run(
        [bin_dir / "ferry-fetcher", "--help"], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: ferry-fetcher "), help_text.stdout
    moto.client("secretsmanager").create_secret(Name="app/db", SecretString=json.dumps({"password": "pw-wheel"}))
    objects = yaml.safe_dump([{"objectName": "app/db", "objectType": "secretsmanager"}])
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"provider": "aws", "parameters": {"objects": objects}},
    }
    (tmp_path / "spc.yaml").write_text(yaml.safe_dump(spc))
    out = tmp_path / "out"
    result = subprocess.run(
        [bin_dir / "ferry-fetcher", "once", "--secret-provider-class", "spc.yaml", "--dir", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(**moto.env()),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "app_db").read_text()) == {"password": "pw-wheel"}
    # The plain package pulls in nothing of the webhook's.
    site = next((tmp_path / "venv" / "lib").glob("python3.*/site-packages"))
    assert not (site / "fastapi").exists() and not (site / "kubernetes").exists()


def test_webhook_extra_gives_a_working_inject_preview(built: tuple[Path, str], tmp_path: Path) -> None:
    """`pip install 'ferry-secrets[webhook]'` is enough for `ferry-webhook inject`, with no cluster."""
    wheel, _ = built
    bin_dir = _venv(tmp_path / "venv", wheel, "[webhook]")
    example = REPO_ROOT / "manifests" / "examples" / "secretproviderclass-deployment.yaml"
    result = subprocess.run(
        [bin_dir / "ferry-webhook", "inject", "-f", str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (deployment,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert any(c["image"].startswith("ghcr.io/ferry-dev/ferry-fetcher:") for c in init)
    help_text = subprocess.run(
        [bin_dir / "ferry-webhook", "serve", "--help"], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert help_text.stdout.startswith("usage: ferry-webhook serve "), help_text.stdout


# --- The command lines' names and help --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/usr/local/bin/ferry-webhook", "ferry-webhook"),
        ("/home/me/.local/bin/ferry-fetcher", "ferry-fetcher"),
        ("/src/ferry/webhook/__main__.py", "python -m webhook"),
    ],
)
def test_command_name_is_what_was_typed(argv0: str, expected: str) -> None:
    package = "fetcher" if "fetcher" in expected else "webhook"
    assert command_name(package, argv0) == expected


@pytest.mark.parametrize("module", ["webhook", "fetcher"])
def test_python_dash_m_help_names_python_dash_m(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python -m {module} "), result.stdout


def _help(*argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", *argv, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _option_line(help_text: str, option: str) -> str:
    (line,) = [line for line in help_text.splitlines() if line.strip().startswith(option + " ")]
    return line


@pytest.mark.parametrize(
    ("command", "option", "default"),
    [("serve", "--host", "0.0.0.0"), ("serve", "--port", "8443"), ("certs", "--out-dir", ".")],
)
def test_options_have_help_and_show_their_default(command: str, option: str, default: str) -> None:
    line = _option_line(_help(command), option)
    assert f"(default: {default}" in line, line
    described = line.split(option, 1)[1].split(maxsplit=1)
    assert len(described) == 2 and len(described[1]) > 20, f"{option} has no help: {line!r}"


def test_certs_writes_into_the_default_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--dns-name", "ferry.test"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"tls.crt", "tls.key", "ca.crt"}


# --- The lock files name no package index ------------------------------------------------------


def test_locks_and_their_recipe_name_no_index() -> None:
    """pip-compile uses the index pip is configured with; neither the locks nor `make locks` name one."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nlocks:") :].split("\n\n", 1)[0]
    assert "pip-compile" in recipe and "--no-emit-index-url" in recipe
    for text in [recipe, *(path.read_text() for path in sorted((REPO_ROOT / "requirements").glob("*.txt")))]:
        assert "://" not in text and "--index-url=" not in text and "PIP_CONFIG_FILE" not in text
    for path in sorted((REPO_ROOT / "requirements").glob("*.txt")):
        assert "--hash=sha256:" in path.read_text()  # still hashed locks


def test_install_commands_in_the_docs_name_this_distribution() -> None:
    """`ferry` on the package index is another project: every documented pip/pipx install names ours."""
    import tomllib

    name = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert name == "ferry-secrets"
    texts = [REPO_ROOT / "README.md", REPO_ROOT / "docs" / "install.md", REPO_ROOT / "scripts" / "release_digests.py"]
    found = []
    for path in texts:
        for match in re.finditer(r"\b(?:pipx|pip) install '?([A-Za-z0-9_.-]+)", path.read_text()):
            if match.group(1) not in ("-q", "-e", "-c", "--user", "."):
                found.append((path.name, match.group(1)))
    assert found and all(package == name for _, package in found), found
