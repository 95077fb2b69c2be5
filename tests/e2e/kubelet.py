"""The kubelet's part, for Ferry's containers: run one from a stored pod as a local process.

Why it exists: there is no kubelet or container runtime here, yet what matters
is whether the container Ferry injected does its job with exactly what the API
server stored: its command, args and env; its uid, gid and supplementary
groups (applied with `setpriv`, as the runtime would); its volume, an emptyDir
mapped to a temporary directory with the kubelet's modes and fsGroup
ownership. Only two things stand in for the node: the image's `python` is this
interpreter, and the AWS identity and endpoint (IRSA on EKS) are static moto
credentials.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]


def container_of(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            if container["name"] == name:
                return dict(container)
    raise KeyError(name)


def identity_of(pod: Mapping[str, Any], container: Mapping[str, Any]) -> Identity:
    """uid/gid/groups as a runtime sets them: the container's securityContext over the pod's."""
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid is None:
        raise AssertionError(f"container {container['name']} has no uid: the image's USER would decide")
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))  # a numeric uid without an image group: gid 0
    groups = [*(pod_sc.get("supplementalGroups") or [])]
    if pod_sc.get("fsGroup") is not None:
        groups.append(pod_sc["fsGroup"])
    return Identity(int(uid), int(gid), tuple(sorted(set(groups))))


def make_empty_dir(path: Path, pod: Mapping[str, Any]) -> Path:
    """An emptyDir as the kubelet prepares it: mode 0777, and group fsGroup with setgid when set."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    if fs_group is not None:
        os.chown(path, -1, fs_group)
        os.chmod(path, 0o2777)
    return path


def _env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif (ref := (entry.get("valueFrom") or {}).get("fieldRef")) is not None:
            path = ref["fieldPath"]
            section, _, key = path.partition(".")
            env[entry["name"]] = str(pod.get(section, {}).get(key, "")) if section in ("metadata", "spec") else ""
    return env


def command_for(
    pod: Mapping[str, Any],
    name: str,
    volumes: Mapping[str, Path],
    node_env: Mapping[str, str],
    termination_log: Path,
) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run container `name` as its uid/gid, with its volumes mapped to local folders."""
    container = container_of(pod, name)
    mapped = {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in container.get("volumeMounts") or []
        if mount["name"] in volumes
    }

    def remap(value: str) -> str:
        for mount_path, local in mapped.items():
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + value[len(mount_path) :]
        return value

    argv = [*container.get("command", []), *container.get("args", [])]
    if argv and argv[0] == "python":
        argv[0] = sys.executable  # the image's interpreter
    argv = [remap(arg) for arg in argv]
    env = {key: remap(value) for key, value in _env(pod, container).items()}
    env.update(node_env)
    env["FERRY_TERMINATION_LOG"] = str(termination_log)  # the kubelet's file behind terminationMessagePath
    env["PATH"] = "/usr/bin:/bin"
    who = identity_of(pod, container)
    sc = container.get("securityContext") or {}
    setpriv = shutil.which("setpriv") or "setpriv"
    wrapper = [setpriv, f"--reuid={who.uid}", f"--regid={who.gid}"]
    wrapper += [f"--groups={','.join(map(str, who.groups))}"] if who.groups else ["--clear-groups"]
    if sc.get("allowPrivilegeEscalation") is False:
        wrapper.append("--no-new-privs")
    if "ALL" in ((sc.get("capabilities") or {}).get("drop") or []):
        wrapper += ["--inh-caps=-all", "--bounding-set=-all"]
    return [*wrapper, *argv], env


def run_container(
    pod: Mapping[str, Any],
    name: str,
    volumes: Mapping[str, Path],
    node_env: Mapping[str, str],
    workdir: Path,
    *,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    termination_log = workdir / f"{name}.termination-log"
    termination_log.touch(mode=0o666)
    os.chmod(termination_log, 0o666)
    argv, env = command_for(pod, name, volumes, node_env, termination_log)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd="/")


def start_container(
    pod: Mapping[str, Any], name: str, volumes: Mapping[str, Path], node_env: Mapping[str, str], workdir: Path
) -> subprocess.Popen[str]:
    termination_log = workdir / f"{name}.termination-log"
    termination_log.touch(mode=0o666)
    os.chmod(termination_log, 0o666)
    argv, env = command_for(pod, name, volumes, node_env, termination_log)
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


def run_liveness_probe(
    pod: Mapping[str, Any], name: str, volumes: Mapping[str, Path], node_env: Mapping[str, str], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Container `name`'s exec liveness probe, run as the kubelet runs it: in the container, as its user."""
    container = container_of(pod, name)
    command = container["livenessProbe"]["exec"]["command"]
    probed = {
        **pod,
        "spec": {**pod["spec"], "initContainers": [], "containers": [{**container, "command": command, "args": []}]},
    }
    argv, env = command_for(probed, name, volumes, node_env, workdir / f"{name}.probe-termination-log")
    timeout = float(container["livenessProbe"].get("timeoutSeconds", 1)) * 6  # a busy test machine, not a node
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd="/")
