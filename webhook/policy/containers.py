"""Ferry's own containers: the init container and the refresh sidecar.

Both run the same fetcher image with the same spec and differ only by a mode flag (vault-k8s' "one config
generator"), so one builder makes both and they never drift apart; each is a plain dict that knows nothing of
patch paths. They meet the Pod Security Standard "restricted" and carry requests and limits (Fargate sizes
pods from them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from fetcher.contract import SPEC_ENV_VAR, FetchSpec, needs_kube_api, spec_to_json
from fetcher.contract.object_options import POD_SERVICE_ACCOUNT_ENV_VAR
from fetcher.contract.secret_objects import POD_NAME_ENV_VAR, POD_NAMESPACE_ENV_VAR, POD_UID_ENV_VAR
from webhook.policy.identity import Identity, apply_identity
from webhook.policy.request import INIT_CONTAINER_NAME, SIDECAR_NAME
from webhook.policy.review import encode_json
from webhook.policy.specbuild import ResolvedRequest
from webhook.policy.volumes import (
    GCP_TOKEN_VOLUME_NAME,
    TOKEN_EXPIRATION_SECONDS,
    build_app_mount,
    build_fetcher_mount,
    build_gcp_token_mount,
    build_kube_api_mount,
    build_kube_api_volume,
    build_volume,
)
from webhook.settings import Settings

FetcherMode = Literal["init", "sidecar"]


class FerryParts(NamedTuple):
    """Everything Ferry adds to a pod, built before the mutate stage places it; plain dicts that know no patch paths."""

    volumes: list[dict[str, Any]]
    # The read-only mount each selected app container gets.
    app_mount: dict[str, Any]
    # Ahead of the app's init containers: ferry-init, then the native sidecar.
    init_containers: list[dict[str, Any]]
    # After the app's containers: the regular sidecar, when there is one.
    containers: list[dict[str, Any]]
    # Each part's JSON text, when encoded once for every pod that gets these parts (`with_texts`).
    texts: PartTexts | None = None


class PartTexts(NamedTuple):
    """The compact JSON of each of Ferry's parts, in the order of `FerryParts`' lists."""

    volumes: tuple[str, ...]
    app_mount: str
    init_containers: tuple[str, ...]
    containers: tuple[str, ...]

    def size(self) -> int:
        """Characters of all the texts: what keeping these parts costs, about (the dicts take a few times more)."""
        parts = (*self.volumes, self.app_mount, *self.init_containers, *self.containers)
        return sum(len(text) for text in parts)


# `build_parts`, or a cache of it.
PartsMaker = Callable[[ResolvedRequest, Identity, Settings], FerryParts]


def build_parts(resolved: ResolvedRequest, identity: Identity, settings: Settings) -> FerryParts:
    """Ferry's volumes, the app's mount and Ferry's containers (with the pod's identity) for this request."""
    volumes = [build_volume(settings)]
    if needs_kube_api(resolved.spec):
        volumes.append(build_kube_api_volume())
    if resolved.spec.gcp is not None:
        volumes.append(build_gcp_token_volume(resolved.spec.gcp.workload_pool))
    build_args: dict[str, Any] = {
        "mount_path": resolved.mount_path,
        "run_as_user": resolved.run_as_user,
        "identity": identity,
        "spec_json": resolved.spec_json,
    }
    sidecar_args = {**build_args, "unhealthy_after": resolved.sidecar_unhealthy_after}
    own_init = [build_init_container(resolved.spec, settings, **build_args)]
    if resolved.sidecar == "native":
        own_init.append(build_sidecar(resolved.spec, settings, native=True, **sidecar_args))
    own_regular = (
        [build_sidecar(resolved.spec, settings, native=False, **sidecar_args)] if resolved.sidecar == "regular" else []
    )
    return FerryParts(volumes, build_app_mount(resolved.mount_path), own_init, own_regular)


def with_texts(parts: FerryParts) -> FerryParts:
    """`parts` with the JSON text of each part, for parts shared by many pods (never changed afterwards)."""
    return parts._replace(
        texts=PartTexts(
            tuple(encode_json(volume) for volume in parts.volumes),
            encode_json(parts.app_mount),
            tuple(encode_json(container) for container in parts.init_containers),
            tuple(encode_json(container) for container in parts.containers),
        )
    )


def build_fetcher_container(
    mode: FetcherMode,
    spec: FetchSpec,
    settings: Settings,
    *,
    mount_path: str,
    run_as_user: int,
    identity: Identity | None = None,
    native_sidecar: bool = False,
    spec_json: str = "",
) -> dict[str, Any]:
    """The fetcher in `mode`; the spec travels as one env var of canonical JSON (`spec_json` when known)."""
    container: dict[str, Any] = {
        "name": INIT_CONTAINER_NAME if mode == "init" else SIDECAR_NAME,
        "image": settings.fetcher_image,
        "imagePullPolicy": settings.fetcher_pull_policy,
        "command": ["python", "-m", "fetcher"],
        "args": [mode, "--dir", mount_path],
        "env": [
            {"name": SPEC_ENV_VAR, "value": spec_json or spec_to_json(spec)},
            # Read-only root filesystem: no .pyc writes; unbuffered so logs are never lost on exit.
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # The pod's own identity or none: boto3 must never fall through to the node's role via IMDS.
            {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
        ],
        "resources": settings.fetcher_resources(),
        "securityContext": build_security_context(run_as_user, spec.file_gid),
        "volumeMounts": [build_fetcher_mount(mount_path)],
        "terminationMessagePath": "/dev/termination-log",
        # The fetcher writes its error (object, AWS error code, region) there; logs are the fallback.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if needs_kube_api(spec):
        # secretObjects: the pod that writes (and owns) the Secrets, and the token it writes with.
        container["env"] += [
            {"name": env_name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}
            for env_name, field_path in (
                (POD_NAME_ENV_VAR, "metadata.name"),
                (POD_UID_ENV_VAR, "metadata.uid"),
                (POD_NAMESPACE_ENV_VAR, "metadata.namespace"),
            )
        ]
        container["volumeMounts"].append(build_kube_api_mount())
    if mode == "init" and settings.startup_deadline_seconds is not None:
        # How long the first delivery waits out throttling and slow credentials (fetcher/startup.py).
        container["env"].append({"name": "FERRY_STARTUP_DEADLINE", "value": f"{settings.startup_deadline_seconds:g}"})
    if any(obj.role is not None for obj in spec.objects):
        # A role per object: AssumeRole's session tags and name say which pod asks (fetcher/awsroles.py).
        present = {entry["name"] for entry in container["env"]}
        container["env"] += [
            {"name": env_name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}
            for env_name, field_path in (
                (POD_NAME_ENV_VAR, "metadata.name"),
                (POD_NAMESPACE_ENV_VAR, "metadata.namespace"),
                (POD_SERVICE_ACCOUNT_ENV_VAR, "spec.serviceAccountName"),
            )
            if env_name not in present
        ]
    if spec.gcp is not None:
        container["volumeMounts"].append(build_gcp_token_mount())
    if mode == "sidecar" and native_sidecar:
        container["restartPolicy"] = "Always"
    if identity:
        apply_identity(container, identity)
    return container


def build_init_container(
    spec: FetchSpec,
    settings: Settings,
    *,
    mount_path: str,
    run_as_user: int,
    identity: Identity | None = None,
    spec_json: str = "",
) -> dict[str, Any]:
    """Runs before every other init container and exits non-zero unless every file was written."""
    return build_fetcher_container(
        "init", spec, settings, mount_path=mount_path, run_as_user=run_as_user, identity=identity, spec_json=spec_json
    )


def build_sidecar(
    spec: FetchSpec,
    settings: Settings,
    *,
    mount_path: str,
    run_as_user: int,
    identity: Identity | None = None,
    native: bool,
    spec_json: str = "",
    unhealthy_after: float = 0.0,
) -> dict[str, Any]:
    """Keeps the files fresh; `native` makes it an init container with restartPolicy Always.

    With `unhealthy_after` (seconds), a liveness probe fails once refreshes have failed for that long
    without a break: the kubelet restarts the sidecar, so its restarts and the probe's reason show in
    `kubectl get/describe pod`. Never a readiness probe: the app keeps serving from the last good files.
    """
    container = build_fetcher_container(
        "sidecar",
        spec,
        settings,
        mount_path=mount_path,
        run_as_user=run_as_user,
        identity=identity,
        native_sidecar=native,
        spec_json=spec_json,
    )
    if unhealthy_after > 0:
        container["livenessProbe"] = build_liveness_probe(mount_path, unhealthy_after)
    return container


def build_liveness_probe(mount_path: str, unhealthy_after: float) -> dict[str, Any]:
    """`python -m fetcher status`: reads the sidecar's status entry in the volume, imports no AWS code."""
    return {
        "exec": {
            "command": [
                *("python", "-m", "fetcher", "status"),
                *("--dir", mount_path, "--unhealthy-after", str(int(unhealthy_after))),
            ]
        },
        # Once a minute: a probe is a short Python start, and a failure run lasts minutes anyway.
        "periodSeconds": 60,
        "timeoutSeconds": 10,
        "failureThreshold": 1,
    }


def build_security_context(run_as_user: int, run_as_group: int | None = None) -> dict[str, Any]:
    """Pod Security Standard "restricted", and a read-only root filesystem.

    `run_as_group` is the group the files must belong to (the spec's fileGid): the fetcher runs with
    it as its primary group, because without CAP_CHOWN it can only give files a group it is in. With
    a pod-level fsGroup that group is also a supplementary one, but a runAsGroup set only on the app
    container reaches no other container, so the fetcher must be given it here.
    """
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_group is not None:
        context["runAsGroup"] = run_as_group
    return context


# Built beside the containers: only they mount it.
def build_gcp_token_volume(workload_pool: str) -> dict[str, Any]:
    """A token whose audience is the workload pool (PROJECT.svc.id.goog): what Google's token exchange accepts.

    The kubelet renews it; the fetcher re-reads it at each exchange. It is the pod's own ServiceAccount, so
    Google sees the principal NAMESPACE/KSA, never the node.
    """
    token = {"audience": workload_pool, "expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}
    return {
        "name": GCP_TOKEN_VOLUME_NAME,
        "projected": {"defaultMode": 0o444, "sources": [{"serviceAccountToken": token}]},
    }
