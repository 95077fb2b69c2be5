"""A checker for the Kubernetes Pod Security Standard "restricted" profile.

Why it exists: Ferry promises that every container Ferry injects meets
"restricted", and a cluster that enforces it (``pod-security.kubernetes.io/
enforce: restricted``) would otherwise reject every opted-in pod at creation,
long after the webhook said yes. No kube-apiserver runs here, so the policy is
written out from the published profile
(https://kubernetes.io/docs/concepts/security/pod-security-standards/),
control by control, with the same field paths and allowed values. The
"restricted" profile includes every "baseline" control, so both are here.

It checks containers in the context of their pod: a container that leaves
``runAsNonRoot`` unset inherits the pod's value, exactly as the admission
plugin evaluates it. Windows-only exemptions (``spec.os.name: windows``) are
not modelled: Ferry's containers are Linux.

Entry points: ``check_pod(pod)`` for every violation with its field path, and
``check_container(pod, name)`` for the violations one container is
responsible for (its own fields and what it inherits from the pod).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Baseline "Capabilities": adding anything outside this list is a violation.
BASELINE_ADDABLE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Restricted "Capabilities": the only capability that may be added back.
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Baseline "Sysctls": the safe set (as of Kubernetes v1.29+).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# Restricted "Volume Types": the only volume sources allowed.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
# Baseline "SELinux": allowed seLinuxOptions.type values ("" and unset too).
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# Baseline "AppArmor" (field form) and restricted/baseline "Seccomp" allowed types.
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class Violation:
    """One broken control: which container (None for the pod itself), the field and why."""

    control: str
    container: str | None
    field: str
    message: str

    def __str__(self) -> str:
        who = f"container {self.container!r}" if self.container else "pod"
        return f"[{self.control}] {who}: {self.field} {self.message}"


def _pod_spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a Pod, or a bare PodSpec."""
    spec = pod.get("spec")
    if isinstance(spec, Mapping):
        return spec
    return pod


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def iter_containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    """(list name, index, container) for every container of every kind."""
    spec = _pod_spec(pod)
    for kind in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(kind) or []):
            if isinstance(container, Mapping):
                yield kind, index, container


def check_pod(pod: Mapping[str, Any]) -> list[Violation]:
    """Every restricted-profile violation in a Pod (or PodSpec)."""
    violations = list(_check_pod_level(pod))
    for kind, index, container in iter_containers(pod):
        violations.extend(_check_container(pod, kind, index, container))
    return violations


def check_container(pod: Mapping[str, Any], name: str) -> list[Violation]:
    """The violations of one named container, judged with the pod-level fields it inherits."""
    for kind, index, container in iter_containers(pod):
        if container.get("name") == name:
            return list(_check_container(pod, kind, index, container))
    raise KeyError(f"no container named {name!r} in the pod")


def check_volume(volume: Mapping[str, Any], where: str = "spec.volumes[]") -> list[Violation]:
    """Baseline HostPath volumes and restricted Volume Types for one volume."""
    violations = []
    name = volume.get("name", "?")
    sources = [key for key in volume if key != "name"]
    if "hostPath" in volume:
        violations.append(Violation("HostPath Volumes", None, f"{where}.hostPath", f"is set on volume {name!r}"))
    for source in sources:
        if source not in RESTRICTED_VOLUME_TYPES:
            violations.append(
                Violation("Volume Types", None, f"{where}.{source}", f"on volume {name!r} is not an allowed type")
            )
    return violations


def _check_pod_level(pod: Mapping[str, Any]) -> Iterator[Violation]:
    spec = _pod_spec(pod)
    psc = _mapping(spec.get("securityContext"))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            yield Violation("Host Namespaces", None, f"spec.{key}", "must be unset or false")
    if _mapping(psc.get("windowsOptions")).get("hostProcess") is True:
        yield Violation(
            "HostProcess", None, "spec.securityContext.windowsOptions.hostProcess", "must be unset or false"
        )
    for index, volume in enumerate(spec.get("volumes") or []):
        if isinstance(volume, Mapping):
            yield from check_volume(volume, f"spec.volumes[{index}]")
    yield from _check_selinux(psc, None, "spec.securityContext")
    apparmor = _mapping(psc.get("appArmorProfile")).get("type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        yield Violation("AppArmor", None, "spec.securityContext.appArmorProfile.type", f"is {apparmor!r}")
    annotations = _mapping(_mapping(pod.get("metadata")).get("annotations"))
    for key, value in annotations.items():
        if str(key).startswith(APPARMOR_ANNOTATION_PREFIX):
            if value != "runtime/default" and not str(value).startswith("localhost/"):
                yield Violation("AppArmor", None, f"metadata.annotations[{key}]", f"is {value!r}")
    seccomp = _mapping(psc.get("seccompProfile")).get("type")
    if seccomp is not None and seccomp not in SECCOMP_TYPES:
        yield Violation("Seccomp", None, "spec.securityContext.seccompProfile.type", f"is {seccomp!r}")
    if psc.get("runAsUser") == 0:
        yield Violation("Running as Non-root user", None, "spec.securityContext.runAsUser", "is 0 (root)")
    if psc.get("runAsNonRoot") is False:
        yield Violation("Running as Non-root", None, "spec.securityContext.runAsNonRoot", "is false")
    for index, sysctl in enumerate(psc.get("sysctls") or []):
        name = _mapping(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield Violation("Sysctls", None, f"spec.securityContext.sysctls[{index}].name", f"{name!r} is not safe")


def _check_selinux(sc: Mapping[str, Any], container: str | None, where: str) -> Iterator[Violation]:
    options = _mapping(sc.get("seLinuxOptions"))
    selinux_type = options.get("type")
    if selinux_type not in (None, "") and selinux_type not in SELINUX_TYPES:
        yield Violation("SELinux", container, f"{where}.seLinuxOptions.type", f"is {selinux_type!r}")
    for key in ("user", "role"):
        if options.get(key) not in (None, ""):
            yield Violation("SELinux", container, f"{where}.seLinuxOptions.{key}", "must be unset")


def _check_container(
    pod: Mapping[str, Any], kind: str, index: int, container: Mapping[str, Any]
) -> Iterator[Violation]:
    spec = _pod_spec(pod)
    psc = _mapping(spec.get("securityContext"))
    sc = _mapping(container.get("securityContext"))
    name = str(container.get("name", f"{kind}[{index}]"))
    where = f"spec.{kind}[{index}].securityContext"

    # --- Baseline. ---
    if _mapping(sc.get("windowsOptions")).get("hostProcess") is True:
        yield Violation("HostProcess", name, f"{where}.windowsOptions.hostProcess", "must be unset or false")
    if sc.get("privileged") is True:
        yield Violation("Privileged Containers", name, f"{where}.privileged", "must be unset or false")
    for port_index, port in enumerate(container.get("ports") or []):
        host_port = _mapping(port).get("hostPort")
        if host_port not in (None, 0):
            yield Violation("Host Ports", name, f"spec.{kind}[{index}].ports[{port_index}].hostPort", f"is {host_port}")
    apparmor = _mapping(sc.get("appArmorProfile")).get("type")
    if apparmor is not None and apparmor not in APPARMOR_TYPES:
        yield Violation("AppArmor", name, f"{where}.appArmorProfile.type", f"is {apparmor!r}")
    yield from _check_selinux(sc, name, where)
    proc_mount = sc.get("procMount")
    if proc_mount not in (None, "Default"):
        yield Violation("/proc Mount Type", name, f"{where}.procMount", f"is {proc_mount!r}")

    # --- Restricted. ---
    if sc.get("allowPrivilegeEscalation") is not False:
        yield Violation(
            "Privilege Escalation",
            name,
            f"{where}.allowPrivilegeEscalation",
            f"must be false, is {sc.get('allowPrivilegeEscalation')!r}",
        )
    non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if sc.get("runAsNonRoot") is False or non_root is not True:
        yield Violation(
            "Running as Non-root",
            name,
            f"{where}.runAsNonRoot",
            "must be true (on the container, or on the pod and not overridden)",
        )
    run_as_user = sc.get("runAsUser", psc.get("runAsUser"))
    if run_as_user == 0:
        yield Violation("Running as Non-root user", name, f"{where}.runAsUser", "resolves to 0 (root)")
    seccomp = _mapping(sc.get("seccompProfile")).get("type")
    pod_seccomp = _mapping(psc.get("seccompProfile")).get("type")
    effective = seccomp if seccomp is not None else pod_seccomp
    if effective not in SECCOMP_TYPES:
        yield Violation(
            "Seccomp",
            name,
            f"{where}.seccompProfile.type",
            f"must be RuntimeDefault or Localhost (here or on the pod), is {effective!r}",
        )
    capabilities = _mapping(sc.get("capabilities"))
    drop = capabilities.get("drop") or []
    if "ALL" not in drop:
        yield Violation("Capabilities", name, f"{where}.capabilities.drop", f"must include ALL, is {list(drop)!r}")
    for cap in capabilities.get("add") or []:
        if cap not in RESTRICTED_ADDABLE_CAPABILITIES:
            level = "baseline and restricted" if cap not in BASELINE_ADDABLE_CAPABILITIES else "restricted"
            yield Violation("Capabilities", name, f"{where}.capabilities.add", f"adds {cap!r} ({level} forbid it)")
