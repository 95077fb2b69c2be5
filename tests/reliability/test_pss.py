"""The restricted-profile checker must catch each violation on its own, or it proves nothing.

Why it exists: `test_security.py` trusts `pss.check_pod` to judge the
containers Ferry injects. A checker that silently passes everything would make
that test worthless, so each control is broken once here, on an otherwise
compliant pod, and must be reported with the field that breaks it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support import pss


def good_pod() -> dict[str, Any]:
    hardened = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "good", "annotations": {pss.APPARMOR_ANNOTATION_PREFIX + "app": "runtime/default"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "initContainers": [{"name": "init", "image": "x", "securityContext": copy.deepcopy(hardened)}],
            "containers": [
                {
                    "name": "app",
                    "image": "x",
                    "ports": [{"containerPort": 80}],
                    "securityContext": copy.deepcopy(hardened)
                    | {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
                },
                # Inherits runAsNonRoot and seccomp from the pod: allowed by the profile.
                {
                    "name": "inherits",
                    "image": "x",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                },
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                {"name": "token", "projected": {"sources": []}},
            ],
        },
    }


def _pod_seccomp(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}


def test_good_pod_has_no_violation() -> None:
    pod = good_pod()
    _pod_seccomp(pod)
    assert pss.check_pod(pod) == []
    assert pss.check_container(pod, "inherits") == []


def _set(path: str, value: Any) -> Any:
    """A mutation that sets a dotted path (list indices as numbers) on a pod."""

    def apply(pod: dict[str, Any]) -> None:
        node: Any = pod
        parts = path.split(".")
        for part in parts[:-1]:
            key: Any = int(part) if part.isdigit() else part
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
        last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        node[last] = value

    return apply


APP = "spec.containers.0.securityContext"
INIT = "spec.initContainers.0.securityContext"
# (control, field substring, mutation): each breaks exactly one control of a compliant pod.
BAD_EXAMPLES = [
    ("Host Namespaces", "spec.hostNetwork", _set("spec.hostNetwork", True)),
    ("Host Namespaces", "spec.hostPID", _set("spec.hostPID", True)),
    ("Host Namespaces", "spec.hostIPC", _set("spec.hostIPC", True)),
    ("HostProcess", "windowsOptions.hostProcess", _set(f"{APP}.windowsOptions", {"hostProcess": True})),
    (
        "HostProcess",
        "spec.securityContext.windowsOptions",
        _set("spec.securityContext.windowsOptions.hostProcess", True),
    ),
    ("Privileged Containers", "privileged", _set(f"{INIT}.privileged", True)),
    ("Capabilities", "capabilities.add", _set(f"{APP}.capabilities.add", ["SYS_ADMIN"])),
    ("Capabilities", "capabilities.add", _set(f"{APP}.capabilities.add", ["CHOWN"])),
    ("Capabilities", "capabilities.drop", _set(f"{INIT}.capabilities.drop", ["NET_RAW"])),
    # hostPath breaks the baseline control and is outside the restricted volume types too.
    ("HostPath Volumes+Volume Types", "hostPath", _set("spec.volumes.0", {"name": "h", "hostPath": {"path": "/"}})),
    ("Volume Types", "nfs", _set("spec.volumes.0", {"name": "n", "nfs": {"server": "a", "path": "/"}})),
    ("Host Ports", "hostPort", _set("spec.containers.0.ports.0.hostPort", 8080)),
    ("AppArmor", "appArmorProfile", _set(f"{APP}.appArmorProfile", {"type": "Unconfined"})),
    ("AppArmor", "annotations", _set("metadata.annotations", {pss.APPARMOR_ANNOTATION_PREFIX + "app": "unconfined"})),
    ("SELinux", "seLinuxOptions.type", _set(f"{APP}.seLinuxOptions", {"type": "spc_t"})),
    ("SELinux", "seLinuxOptions.user", _set("spec.securityContext.seLinuxOptions", {"user": "system_u"})),
    ("/proc Mount Type", "procMount", _set(f"{INIT}.procMount", "Unmasked")),
    ("Seccomp", "seccompProfile", _set(f"{APP}.seccompProfile", {"type": "Unconfined"})),
    ("Sysctls", "sysctls", _set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])),
    ("Privilege Escalation", "allowPrivilegeEscalation", _set(f"{APP}.allowPrivilegeEscalation", True)),
    (
        "Privilege Escalation",
        "allowPrivilegeEscalation",
        lambda pod: pod["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    ),
    ("Running as Non-root", "runAsNonRoot", _set(f"{APP}.runAsNonRoot", False)),
    ("Running as Non-root", "runAsNonRoot", lambda pod: pod["spec"]["securityContext"].pop("runAsNonRoot")),
    ("Running as Non-root user", "runAsUser", _set(f"{INIT}.runAsUser", 0)),
    ("Running as Non-root user", "runAsUser", _set("spec.securityContext.runAsUser", 0)),
]


@pytest.mark.parametrize(("control", "field", "mutate"), BAD_EXAMPLES, ids=[f"{c}-{f}" for c, f, _ in BAD_EXAMPLES])
def test_each_bad_example_is_reported(control: str, field: str, mutate: Any) -> None:
    pod = good_pod()
    _pod_seccomp(pod)
    mutate(pod)
    violations = pss.check_pod(pod)
    assert violations, f"{control} was not detected"
    assert {v.control for v in violations} == set(control.split("+")), violations
    assert any(field in v.field for v in violations), violations


def test_seccomp_missing_everywhere_is_a_violation_per_container() -> None:
    pod = good_pod()
    pod["spec"]["containers"][0]["securityContext"].pop("seccompProfile")
    violations = [v for v in pss.check_pod(pod) if v.control == "Seccomp"]
    # "app" lost its own profile and "inherits" never had one; "init" keeps its own.
    assert sorted(v.container for v in violations if v.container) == ["app", "inherits"]


def test_container_inherits_root_from_the_pod() -> None:
    pod = good_pod()
    _pod_seccomp(pod)
    pod["spec"]["securityContext"]["runAsUser"] = 0
    assert [v.control for v in pss.check_container(pod, "inherits")] == ["Running as Non-root user"]
    # "app" overrides with its own uid, so it is not running as root.
    assert pss.check_container(pod, "app") == []


def test_bare_pod_spec_is_accepted_and_unknown_container_raises() -> None:
    pod = good_pod()
    _pod_seccomp(pod)
    assert pss.check_pod(pod["spec"]) == []
    with pytest.raises(KeyError):
        pss.check_container(pod, "nope")
