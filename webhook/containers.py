"""Ferry's own containers: the init container and the refresh sidecar.

Why it exists: both run the same fetcher image with the same spec and differ
only by a mode flag (vault-k8s' "one config generator"), so one builder makes
both and the two can never drift apart. Each returns a plain dict that knows
nothing about patch paths. The containers meet the Pod Security Standard
"restricted" and carry requests and limits (Fargate sizes pods from them).
"""

from __future__ import annotations

from typing import Any, Literal

from fetcher.spec import SPEC_ENV_VAR, FetchSpec
from webhook.identity import Identity, apply_identity
from webhook.settings import Settings
from webhook.volumes import build_fetcher_mount

# Names of the containers Ferry adds; reserved in every injected pod.
INIT_CONTAINER_NAME = "ferry-init"
SIDECAR_NAME = "ferry-sidecar"
OWN_CONTAINER_NAMES = frozenset({INIT_CONTAINER_NAME, SIDECAR_NAME})

FetcherMode = Literal["init", "sidecar"]


def build_fetcher_container(
    mode: FetcherMode,
    spec: FetchSpec,
    settings: Settings,
    *,
    mount_path: str,
    run_as_user: int,
    identity: Identity | None = None,
    native_sidecar: bool = False,
) -> dict[str, Any]:
    """The fetcher in `mode`; the spec travels as one env var of canonical JSON."""
    container: dict[str, Any] = {
        "name": INIT_CONTAINER_NAME if mode == "init" else SIDECAR_NAME,
        "image": settings.fetcher_image,
        "imagePullPolicy": settings.fetcher_pull_policy,
        "command": ["python", "-m", "fetcher"],
        "args": [mode, "--dir", mount_path],
        "env": [
            {"name": SPEC_ENV_VAR, "value": _spec_json(spec)},
            # Read-only root filesystem: no .pyc writes; unbuffered so logs are never lost on exit.
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # The pod's own identity or none: boto3 must never fall through to the node's role via IMDS.
            {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
        ],
        "resources": settings.fetcher_resources(),
        "securityContext": build_security_context(run_as_user),
        "volumeMounts": [build_fetcher_mount(mount_path)],
        "terminationMessagePath": "/dev/termination-log",
        # The fetcher writes its error (object, AWS error code, region) there; logs are the fallback.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mode == "sidecar" and native_sidecar:
        container["restartPolicy"] = "Always"
    if identity:
        apply_identity(container, identity)
    return container


def build_init_container(
    spec: FetchSpec, settings: Settings, *, mount_path: str, run_as_user: int, identity: Identity | None = None
) -> dict[str, Any]:
    """Runs before every other init container and exits non-zero unless every file was written."""
    return build_fetcher_container(
        "init", spec, settings, mount_path=mount_path, run_as_user=run_as_user, identity=identity
    )


def build_sidecar(
    spec: FetchSpec,
    settings: Settings,
    *,
    mount_path: str,
    run_as_user: int,
    identity: Identity | None = None,
    native: bool,
) -> dict[str, Any]:
    """Keeps the files fresh; `native` makes it an init container with restartPolicy Always."""
    return build_fetcher_container(
        "sidecar",
        spec,
        settings,
        mount_path=mount_path,
        run_as_user=run_as_user,
        identity=identity,
        native_sidecar=native,
    )


# FetchSpecs come from resolve's cache, so the same object recurs: serialize it once.
_SPEC_JSON: dict[int, tuple[FetchSpec, str]] = {}
_SPEC_JSON_MAX = 512


def _spec_json(spec: FetchSpec) -> str:
    cached = _SPEC_JSON.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    if len(_SPEC_JSON) >= _SPEC_JSON_MAX:
        _SPEC_JSON.clear()
    text = spec.to_json()
    _SPEC_JSON[id(spec)] = (spec, text)
    return text


def build_security_context(run_as_user: int) -> dict[str, Any]:
    """Pod Security Standard "restricted", and a read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
