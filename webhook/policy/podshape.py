"""Stage 2: the pod's own shape. Is there room for Ferry's volume and containers, and who owns the files?"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from fetcher.contract import (
    ANNOTATION_CONTAINERS,
    ANNOTATION_INJECT,
    ANNOTATION_MOUNT_PATH,
    ANNOTATION_NOTIFY_SIGNAL,
    ANNOTATION_NOTIFY_URL,
    DEFAULT_MOUNT_PATH,
    listed,
    quote,
)
from webhook.policy.decide import Denial
from webhook.policy.request import OWN_CONTAINER_NAMES, PodRequest
from webhook.policy.volumes import GCP_TOKEN_VOLUME_NAME, KUBE_API_VOLUME_NAME, VOLUME_NAME
from webhook.settings import Settings

# Containers plus init containers in a pod Ferry injects into: far above any real pod, and a bound on the
# work (one mount per container, one patch op each) that a hostile or broken manifest can make admission do.
MAX_POD_CONTAINERS = 256
_OWN_VOLUMES = (VOLUME_NAME, KUBE_API_VOLUME_NAME, GCP_TOKEN_VOLUME_NAME)
# `isinstance(x, _OBJECT)` is `isinstance(x, Mapping)`, but a dict (what JSON and YAML decode to) answers at
# once, without the ABC's check, which ran some 60 times per admission here.
_OBJECT = (dict, Mapping)
# The Secrets Store CSI driver's name in a pod's csi volume.
CSI_DRIVER = "secrets-store.csi.k8s.io"

# The mount path may be neither one of these nor below one: system directories
# the image needs, and the token mounts of the service account and IRSA.
FORBIDDEN_MOUNT_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run/secrets",
    "/run/secrets",
)
# Nor exactly one of these (below them is fine): mounting there would hide the
# whole directory, e.g. the app's writable /tmp.
FORBIDDEN_MOUNT_PATHS = frozenset({"/", "/tmp", "/var", "/var/run", "/run", "/home", "/opt", "/srv", "/root"})
MAX_MOUNT_PATH_CHARS = 512
# A container name is a DNS label (63 characters); a longer one in ferry.dev/containers names nothing.
MAX_CONTAINER_NAME_CHARS = 63
# A denial names at most this many unknown containers, and lists at most this many of the pod's: the answer
# stays a few KiB whatever the pod holds, and the suggestion search (difflib) runs a bounded number of times.
MAX_REPORTED_NAMES = 5
MAX_LISTED_NAMES = 20


class PodShape(NamedTuple):
    """Where Ferry's volume goes, which containers get it, who owns its files; and what is wrong with the pod."""

    # None when the annotation is invalid (then `problems` says why).
    mount_path: str | None
    containers: tuple[str, ...]
    file_uid: int | None
    file_gid: int | None
    # uid Ferry's containers run as (the app's, else FERRY_DEFAULT_USER_ID).
    run_as_user: int
    # Reported together with the spec's own problems, so one edit fixes them all.
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def check_pod_shape(request: PodRequest, settings: Settings) -> PodShape | Denial:
    """The pod's shape, or a Denial when Ferry cannot inject into this pod at all."""
    spec, annotations = request.spec, request.annotations
    too_many = check_container_count(spec)
    if too_many:
        return Denial("too-many-containers", too_many)
    not_linux = check_os(spec)
    if not_linux:
        return Denial("not-linux", not_linux)
    problems: list[str] = []
    mount_path = check_mount_path(annotations.mount_path, problems)
    containers = select_containers(spec, annotations.containers, problems)
    check_reserved_names(spec, problems)
    check_own_volume_mounts(spec, problems)
    nested: list[str] = []
    if mount_path and containers:
        check_mount_conflicts(spec, containers, mount_path, problems)
        nested = nested_mount_warnings(spec, containers, mount_path)
    warnings = (
        *nested,
        *(
            f"spec.volumes: {name!r} still uses the Secrets Store CSI driver; remove the CSI volume and its "
            "volumeMounts, Ferry writes the same files"
            for name in csi_secret_volumes(spec)[:4]
        ),
    )
    if annotations.notify_signal and spec.get("shareProcessNamespace") is not True:
        problems.append(
            f"{ANNOTATION_NOTIFY_SIGNAL}: signalling a process needs spec.shareProcessNamespace: true so the sidecar "
            f"can see it; set it, or use {ANNOTATION_NOTIFY_URL} instead"
        )
    uid, gid = file_owner(spec, containers)
    return PodShape(
        mount_path=mount_path,
        containers=containers,
        file_uid=uid,
        file_gid=gid,
        run_as_user=uid if uid else settings.default_user_id,
        problems=tuple(problems),
        warnings=warnings,
    )


def check_container_count(spec: Mapping[str, Any]) -> str | None:
    """Why the pod has too many containers to inject into, or None."""
    count = sum(len(spec.get(group) or []) for group in ("initContainers", "containers"))
    if count <= MAX_POD_CONTAINERS:
        return None
    return (
        f"spec: the pod has {count} containers and init containers; Ferry injects into pods with at most "
        f"{MAX_POD_CONTAINERS}, so that admission stays well inside the API server's timeout. Split the pod"
    )


def check_os(spec: Mapping[str, Any]) -> str | None:
    """Why Ferry cannot inject into a pod for another OS than Linux, or None.

    Ferry's image is Linux-only, and its containers carry Linux-only securityContext fields that
    the API server rejects in a Windows pod, with a message that names none of what the user wrote.
    """
    pod_os = spec.get("os")
    name = pod_os.get("name") if isinstance(pod_os, _OBJECT) else None
    if name is None or name == "linux":
        return None
    shown = name if isinstance(name, str) and len(name) <= 32 and name.isprintable() else "not linux"
    return (
        f"spec.os.name: {shown!r}: Ferry's fetcher image is Linux-only and cannot run in this pod; "
        f'remove {ANNOTATION_INJECT} (or annotate the pod {ANNOTATION_INJECT}: "false") and deliver '
        "its secrets another way, or run it on Linux"
    )


def check_mount_path(raw: str | None, problems: list[str]) -> str | None:
    if raw is None:
        return DEFAULT_MOUNT_PATH
    path = raw.strip()
    label = ANNOTATION_MOUNT_PATH
    if not path.startswith("/"):
        problems.append(f"{label}: {quote(raw)} must be an absolute path like {DEFAULT_MOUNT_PATH}")
        return None
    if len(path) > MAX_MOUNT_PATH_CHARS or any(not ch.isprintable() for ch in path):
        problems.append(f"{label}: {quote(raw)} must be a printable path of at most {MAX_MOUNT_PATH_CHARS} characters")
        return None
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = normalized[1:]
    if normalized != path:
        problems.append(f"{label}: {raw!r} is not normalized; write it as {normalized!r}")
        return None
    if path in FORBIDDEN_MOUNT_PATHS:
        suggestion = posixpath.join(path, "secrets") if path != "/" else DEFAULT_MOUNT_PATH
        problems.append(f"{label}: {path!r} would hide that whole directory; use a subdirectory like {suggestion}")
        return None
    for tree in FORBIDDEN_MOUNT_TREES:
        if path == tree or path.startswith(tree + "/"):
            problems.append(
                f"{label}: {path!r} is in {tree}, which the image or the kubelet needs; use e.g. {DEFAULT_MOUNT_PATH}"
            )
            return None
    return path


def select_containers(spec: Mapping[str, Any], raw: str | None, problems: list[str]) -> tuple[str, ...]:
    app = [c.get("name") for c in spec.get("containers") or [] if isinstance(c, _OBJECT)]
    init = [c.get("name") for c in spec.get("initContainers") or [] if isinstance(c, _OBJECT)]
    known = [name for name in [*init, *app] if isinstance(name, str) and name not in OWN_CONTAINER_NAMES]
    if raw is None:
        return tuple(known)
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        problems.append(
            f"{ANNOTATION_CONTAINERS}: names no container; list container names separated by commas, "
            "or remove it to mount into all of them"
        )
        return ()
    chosen: list[str] = []
    known_set = frozenset(known)
    unknown = 0
    names_shown = False
    for name in names:
        if name in known_set:
            if name not in chosen:
                chosen.append(name)
            continue
        unknown += 1
        if unknown > MAX_REPORTED_NAMES:
            continue
        problem = f"{ANNOTATION_CONTAINERS}: no container named {quote(name)} in this pod"
        close = _closest(name, known)
        if close:
            problem += f"; did you mean {close}?"
        elif not names_shown:
            # The pod's names are listed once per denial, however many names are unknown.
            problem += f"; this pod has: {listed(known, MAX_LISTED_NAMES, 64) if known else 'no containers'}"
            names_shown = True
        problems.append(problem)
    if unknown > MAX_REPORTED_NAMES:
        problems.append(
            f"{ANNOTATION_CONTAINERS}: {unknown - MAX_REPORTED_NAMES} more names match no container in this pod"
        )
    return tuple(chosen)


def _closest(name: str, known: Sequence[str]) -> str | None:
    """The container name closest to `name`, if any is close; no search for a name no container can have."""
    if len(name) > MAX_CONTAINER_NAME_CHARS:
        return None
    close = difflib.get_close_matches(name, known[:MAX_POD_CONTAINERS], n=1, cutoff=0.6)
    return close[0] if close else None


def check_reserved_names(spec: Mapping[str, Any], problems: list[str]) -> None:
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if isinstance(container, _OBJECT) and container.get("name") in OWN_CONTAINER_NAMES:
                problems.append(
                    f"spec.{group}: the name {container.get('name')!r} is reserved for Ferry's own containers; "
                    "rename that container (a committed `ferry-webhook inject` preview? apply the original "
                    "manifest: Ferry injects at admission)"
                )
    for volume in spec.get("volumes") or []:
        if isinstance(volume, _OBJECT) and volume.get("name") in _OWN_VOLUMES:
            problems.append(f"spec.volumes: the name {volume.get('name')!r} is reserved for Ferry's volumes; rename it")


def csi_secret_volumes(spec: Mapping[str, Any]) -> list[str]:
    """Names of the pod's Secrets Store CSI driver volumes (left over from before the move to Ferry)."""
    return [
        str(volume.get("name"))
        for volume in spec.get("volumes") or []
        if isinstance(volume, _OBJECT)
        and isinstance(volume.get("csi"), _OBJECT)
        and volume["csi"].get("driver") == CSI_DRIVER
    ]


def check_own_volume_mounts(spec: Mapping[str, Any], problems: list[str]) -> None:
    """Deny any container that mounts one of Ferry's volumes itself (the files, or a token volume).

    The pod does not declare the volume (check_reserved_names), so such a mount would dangle and the API
    server would refuse it; but Ferry adds the volume, and then the mount becomes valid, writable, and
    reaches containers that ferry.dev/containers leaves out. Forcing readOnly would still hand secrets to an
    excluded container and silently change what the user wrote, so the pod is refused: Ferry alone mounts
    its volume, read-only, into the selected containers. The token volumes (the Kubernetes API's, the
    workload pool's) go to Ferry's own containers only, so a dangling mount of one is refused the same way.
    """
    # One walk over the containers, then the problems in the order of _OWN_VOLUMES.
    offenders: dict[str, list[str]] = {}
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if not isinstance(container, _OBJECT):
                continue
            mounts = container.get("volumeMounts") or []
            if not isinstance(mounts, list):
                continue
            mounted = {
                own
                for mount in mounts
                if isinstance(mount, _OBJECT) and isinstance(own := mount.get("name"), str) and own in _OWN_VOLUMES
            }
            if mounted:
                name = container.get("name")
                where = f"spec.{group}[{quote(name) if isinstance(name, str) else '?'}]"
                for volume in mounted:
                    offenders.setdefault(volume, []).append(where)
    for volume in _OWN_VOLUMES:
        if volume not in offenders:
            continue
        where = (
            f"Ferry mounts it read-only at {ANNOTATION_MOUNT_PATH} into the containers that {ANNOTATION_CONTAINERS} "
            "selects (all of them by default)"
            if volume == VOLUME_NAME
            else "it holds a token for Ferry's own containers only"
        )
        problems.append(
            f"{listed(offenders[volume], MAX_REPORTED_NAMES, 64)} mount the volume {volume!r}, which is Ferry's: "
            f"remove those volumeMounts. {where}"
        )


def check_mount_conflicts(
    spec: Mapping[str, Any], containers: Sequence[str], mount_path: str, problems: list[str]
) -> None:
    wanted = frozenset(containers)
    csi = frozenset(csi_secret_volumes(spec))
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if not isinstance(container, _OBJECT) or container.get("name") not in wanted:
                continue
            for mount in container.get("volumeMounts") or []:
                if isinstance(mount, _OBJECT) and _normalized(str(mount.get("mountPath", ""))) == mount_path:
                    if mount.get("name") in csi:
                        problems.append(
                            f"container {container.get('name')!r} still mounts the Secrets Store CSI volume "
                            f"{mount.get('name')!r} at {mount_path}: remove that volume from spec.volumes and its "
                            "volumeMounts; Ferry writes the same files at the same path"
                        )
                        continue
                    problems.append(
                        f"{ANNOTATION_MOUNT_PATH}: container {quote(container.get('name'))} already mounts volume "
                        f"{quote(mount.get('name'))} at {mount_path}; choose another path"
                    )


def nested_mount_warnings(spec: Mapping[str, Any], containers: Sequence[str], mount_path: str) -> list[str]:
    """Warn when Ferry's volume and one of the app's own mounts nest (`/app` over `/app/config`, or the reverse).

    Kubernetes allows it, so it is not denied, but the outer mount hides what the image or the other volume has
    under the inner path (a WORKDIR such as /app holding the code), which shows up later as a missing file.
    """
    wanted = frozenset(containers)
    found: list[str] = []
    for container in spec.get("containers") or []:
        if not isinstance(container, _OBJECT) or container.get("name") not in wanted:
            continue
        for mount in container.get("volumeMounts") or []:
            if not isinstance(mount, _OBJECT) or not isinstance(mount.get("mountPath"), str):
                continue
            other = _normalized(mount["mountPath"])
            if other == mount_path:
                continue  # the same path is a conflict (check_mount_conflicts), not a nesting
            if mount_path.startswith(other.rstrip("/") + "/"):
                volume = quote(mount.get("name"))
                where = f"inside its volume {volume} at {other}, hiding that volume's {mount_path}"
            elif other.startswith(mount_path.rstrip("/") + "/"):
                volume = quote(mount.get("name"))
                where = f"over its volume {volume} at {other}, hiding the image's files under {mount_path}"
            else:
                continue
            found.append(
                f"{ANNOTATION_MOUNT_PATH}: Ferry's volume at {mount_path} is mounted in container "
                f"{quote(container.get('name'))} {where}; if that is not intended, choose a path of its own"
            )
            if len(found) >= MAX_REPORTED_NAMES:
                return found
    return found


def file_owner(spec: Mapping[str, Any], containers: Sequence[str]) -> tuple[int | None, int | None]:
    """(uid, gid) the files should belong to: the pod's runAsUser/fsGroup, else its containers' if they agree."""
    pod_sc = spec.get("securityContext") or {}
    wanted = frozenset(containers)
    selected = [
        c
        for c in spec.get("containers") or []
        if isinstance(c, _OBJECT) and c.get("name") in wanted and isinstance(c.get("securityContext"), _OBJECT)
    ]

    def agreed(key: str) -> int | None:
        values = {c["securityContext"].get(key) for c in selected} - {None}
        value = values.pop() if len(values) == 1 else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    uid = pod_sc.get("runAsUser") if isinstance(pod_sc, _OBJECT) else None
    if not isinstance(uid, int) or isinstance(uid, bool):
        uid = agreed("runAsUser")
    gid = None
    if isinstance(pod_sc, _OBJECT):
        for key in ("fsGroup", "runAsGroup"):
            value = pod_sc.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                gid = value
                break
    if gid is None:
        gid = agreed("runAsGroup")
    # Root apps read any file; Ferry's containers never run as root, so no root ownership is asked for.
    return (uid if uid else None), gid


def _normalized(path: str) -> str:
    """`posixpath.normpath(path)`, at once for an absolute path it would leave as it is (most mount paths)."""
    if path[:1] == "/" and path[-1:] != "/" and "//" not in path and "/." not in path:
        return path  # no empty, "." or ".." part to drop
    return posixpath.normpath(path)
